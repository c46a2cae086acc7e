//! Group commit for the hot-path writes of issuance (a session and its issued
//! token rows). Requests queue their rows; one writer drains everything that
//! is waiting into a single durable redb transaction and then answers each
//! request. Under load, many issuances share one fsync; alone, a request waits
//! for exactly one commit.
//!
//! While other issuances are still being signed ([`GroupCommit::ticket`]),
//! the writer waits for them up to [`LINGER`] before it commits: a commit
//! costs about as much CPU for one issuance as for thirty (the fsync and the
//! pages around the rows), so under load a request waits a little longer and
//! the machine issues more. Nobody else in flight, nobody waits.
//!
//! The writer outlives any batch: a batch whose commit fails (a full disk)
//! or whose task panics fails exactly its own requests, and the writer goes
//! on with the next one.
//!
//! A request is answered only after its rows are durable, so a token that was
//! returned to a client is always on disk (introspectable, revocable). A crash
//! can lose only rows whose request had not been answered: those tokens never
//! left the process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::records::{IssuedToken, SessionRecord};
use crate::storage::{StorageError, Store, Writer};

/// Rows of one issuance or refresh.
pub struct Rows {
    pub session: SessionRecord,
    pub issued: Vec<IssuedToken>,
    /// The exp of an HS256 access token, so the migration's sunset covers it.
    pub hs256_exp: Option<crate::clock::Timestamp>,
}

impl Rows {
    /// Writes the rows: the one way token rows reach the store, batched here
    /// for issuance and in the refresh's own transaction.
    pub fn put(&self, w: &mut Writer) -> Result<(), StorageError> {
        Self::put_all(&[self], w)
    }

    /// Writes the rows of a batch: every session in one statement and every
    /// token row in another (on PostgreSQL; redb writes them one by one in
    /// its transaction), and the largest HS256 exp once.
    pub fn put_all(batch: &[&Rows], w: &mut Writer) -> Result<(), StorageError> {
        let sessions: Vec<&SessionRecord> = batch.iter().map(|r| &r.session).collect();
        w.put_sessions(&sessions)?;
        let issued: Vec<&IssuedToken> = batch.iter().flat_map(|r| &r.issued).collect();
        w.put_issued_all(&issued)?;
        if let Some(exp) = batch.iter().filter_map(|r| r.hs256_exp).max() {
            w.raise_meta_max(crate::migration::META_MAX_EXP, exp.unix())?;
        }
        Ok(())
    }
}

type Request = (Rows, oneshot::Sender<Result<(), String>>);

#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Request>,
    in_flight: Arc<AtomicUsize>,
}

/// An issuance on its way to the writer: counted from before it signs until
/// its rows are about to be queued (or it fails and the ticket is dropped).
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("token rows were not stored: {0}")]
pub struct CommitError(pub String);

const MAX_BATCH: usize = 512;

/// The longest a commit waits for issuances still being signed.
pub const LINGER: Duration = Duration::from_millis(2);

impl GroupCommit {
    /// Starts the writer task; it stops when every handle is dropped.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel::<Request>(4096);
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(writer(store, rx, in_flight.clone()));
        Self { tx, in_flight }
    }

    /// Announces an issuance whose rows will follow (take it before signing).
    pub fn ticket(&self) -> Ticket {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ticket(self.in_flight.clone())
    }

    /// Queues `rows` and waits until they are durable.
    pub async fn commit(&self, rows: Rows, ticket: Ticket) -> Result<(), CommitError> {
        // Released before sending: a writer that sees the rows must never
        // still count them as in flight, or a lone request would wait.
        drop(ticket);
        let (done, wait) = oneshot::channel();
        self.tx.send((rows, done)).await.map_err(|_| CommitError("writer stopped".into()))?;
        wait.await.map_err(|_| CommitError("the batch holding these rows failed".into()))?.map_err(CommitError)
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<Request>, in_flight: Arc<AtomicUsize>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if batch.len() >= MAX_BATCH || in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        // In its own task: should it panic, its waiters are dropped (their
        // requests fail) and this loop goes on.
        if let Err(e) = tokio::spawn(commit_batch(store.clone(), batch)).await {
            tracing::error!(error = %e, "a group commit batch failed; its requests were refused");
        }
    }
}

/// Commits one batch and answers each of its requests with the outcome.
async fn commit_batch(store: Store, batch: Vec<Request>) {
    let (rows, waiters): (Vec<Rows>, Vec<_>) = batch.into_iter().unzip();
    let result =
        store.write(move |w| Rows::put_all(&rows.iter().collect::<Vec<_>>(), w)).await.map_err(|e| e.to_string());
    if let Err(e) = &result {
        tracing::error!(error = %e, "group commit of token rows failed");
    }
    for w in waiters {
        let _ = w.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::keys::Algorithm;
    use crate::tokens::TokenType;

    fn rows(n: u32) -> Rows {
        let at = Timestamp::from_unix(1_000);
        let session = SessionRecord {
            sid: format!("sess_{n}").into(),
            identity_id: "agent_1".into(),
            org_id: "org_1".into(),
            scopes: vec!["a:b:c".into()],
            audience: vec!["a".into()],
            algorithm: Algorithm::EdDsa,
            access_ttl: 60,
            refresh_ttl: 60,
            refresh_jti: format!("tok_r{n}").into(),
            previous_refresh_jti: None,
            rotated_at: None,
            created_at: at,
            expires_at: at,
            revoked_at: None,
        };
        let issued = IssuedToken {
            jti: format!("tok_a{n}").into(),
            sid: session.sid.clone(),
            identity_id: "agent_1".into(),
            org_id: "org_1".into(),
            kind: TokenType::Access,
            exp: at,
            kid: None,
            iat: None,
            input_sha256: None,
        };
        Rows { session, issued: vec![issued], hs256_exp: None }
    }

    // The clock is paused: waiting shows up as virtual time, exactly.
    #[tokio::test(start_paused = true)]
    async fn a_commit_waits_for_issuances_in_flight_and_a_lone_one_does_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s.redb"), crate::storage::RecordKey::derive(&[1; 32])).unwrap();
        let commit = GroupCommit::start(store.clone());

        let started = tokio::time::Instant::now();
        commit.commit(rows(1), commit.ticket()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "nobody else in flight: no waiting");
        assert_eq!(store.writes(), 1);

        let (first, second) = (commit.ticket(), commit.ticket());
        let early = tokio::spawn({
            let commit = commit.clone();
            async move { commit.commit(rows(2), first).await }
        });
        tokio::time::sleep(Duration::from_micros(500)).await;
        commit.commit(rows(3), second).await.unwrap();
        early.await.unwrap().unwrap();
        assert_eq!(store.writes(), 2, "the early issuance waited for the one still signing: one commit for both");

        let (first, stuck) = (commit.ticket(), commit.ticket());
        let started = tokio::time::Instant::now();
        commit.commit(rows(4), first).await.unwrap();
        assert!(started.elapsed() >= LINGER && started.elapsed() < LINGER * 2, "{:?}", started.elapsed());
        drop(stuck);
        let stored = store.read(|r| Ok((r.session("sess_2")?, r.session("sess_3")?, r.session("sess_4")?))).await;
        assert!(matches!(stored, Ok((Some(_), Some(_), Some(_)))));
    }
}
