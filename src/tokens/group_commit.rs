//! Group commit for the hot-path writes of issuance (a session and its issued
//! token rows). Requests queue their rows; one writer drains everything that
//! is waiting into a single durable redb transaction and then answers each
//! request. Under load, many issuances share one fsync; alone, a request waits
//! for exactly one commit.
//!
//! A request is answered only after its rows are durable, so a token that was
//! returned to a client is always on disk (introspectable, revocable). A crash
//! can lose only rows whose request had not been answered: those tokens never
//! left the process.

use tokio::sync::{mpsc, oneshot};

use super::records::{IssuedToken, SessionRecord};
use crate::storage::{StorageError, Store};

/// Rows of one issuance or refresh.
pub struct Rows {
    pub session: SessionRecord,
    pub issued: Vec<IssuedToken>,
    /// The exp of an HS256 access token, so the migration's sunset covers it.
    pub hs256_exp: Option<crate::clock::Timestamp>,
}

type Request = (Rows, oneshot::Sender<Result<(), String>>);

#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Request>,
}

#[derive(Debug, thiserror::Error)]
#[error("token rows were not stored: {0}")]
pub struct CommitError(pub String);

const MAX_BATCH: usize = 512;

impl GroupCommit {
    /// Starts the writer task; it stops when every handle is dropped.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel::<Request>(4096);
        tokio::spawn(writer(store, rx));
        Self { tx }
    }

    /// Queues `rows` and waits until they are durable.
    pub async fn commit(&self, rows: Rows) -> Result<(), CommitError> {
        let (done, wait) = oneshot::channel();
        self.tx.send((rows, done)).await.map_err(|_| CommitError("writer stopped".into()))?;
        wait.await.map_err(|_| CommitError("writer stopped".into()))?.map_err(CommitError)
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (rows, waiters): (Vec<Rows>, Vec<_>) = batch.into_iter().unzip();
        let result = store
            .write(move |w| {
                let mut hs256_max = None;
                for r in &rows {
                    w.put_session(&r.session)?;
                    for t in &r.issued {
                        w.put_issued(t)?;
                    }
                    hs256_max = hs256_max.max(r.hs256_exp);
                }
                if let Some(exp) = hs256_max {
                    w.raise_meta_max(crate::migration::META_MAX_EXP, exp.unix())?;
                }
                Ok::<_, StorageError>(())
            })
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "group commit of token rows failed");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
