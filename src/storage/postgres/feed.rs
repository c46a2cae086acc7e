//! The change feed: each committed change that a replica caches is announced
//! on the `kmsd_changes` channel as `kind:id`, and recorded in `changes`.
//!
//! - [`announce`] runs inside the writer's transaction, so the notification
//!   is delivered if and only if the change commits (PostgreSQL queues
//!   NOTIFY until commit).
//! - [`Listener`] holds a dedicated session with `LISTEN`, forwards each
//!   notification as [`FeedEvent::Changed`], and reconnects when the session
//!   ends. After every reconnect, and every `resync_every`, it sends
//!   [`FeedEvent::Resync`]: notifications sent while it was away are lost, so
//!   the consumer reloads everything it caches. `LISTEN` is in force before
//!   `Resync` is sent, so a change is either announced after the reload
//!   started or included in it: a missed notification delays, never loses, a
//!   revocation. A session that stops answering (a cut network swallows
//!   bytes without a reset) is found by a ping and replaced the same way.
//!
//! Nothing here reads then writes; `announce` appends only.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, GenericClient};

use super::{connect_raw, PgError, PgUrl};

pub const CHANNEL: &str = "kmsd_changes";

/// How long `LISTEN` may take on a new session.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// What changed; the stable strings are the payload's first part, the id
/// its second (a meta value's id is its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Key,
    ApiKey,
    Identity,
    Session,
    Token,
    Meta,
}

impl ChangeKind {
    pub const ALL: [Self; 6] = [Self::Key, Self::ApiKey, Self::Identity, Self::Session, Self::Token, Self::Meta];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::ApiKey => "api_key",
            Self::Identity => "identity",
            Self::Session => "session",
            Self::Token => "token",
            Self::Meta => "meta",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    Changed {
        kind: ChangeKind,
        id: String,
    },
    /// Reload everything: notifications may have been missed.
    Resync,
}

impl FeedEvent {
    /// The event a payload stands for; one that does not parse (a newer
    /// replica's kind) asks for a resync rather than being dropped.
    pub fn from_payload(payload: &str) -> Self {
        match payload.split_once(':').and_then(|(k, id)| Some((ChangeKind::parse(k)?, id))) {
            Some((kind, id)) => Self::Changed { kind, id: id.to_owned() },
            None => Self::Resync,
        }
    }
}

/// Records and announces a change, in the caller's transaction.
pub async fn announce(txn: &tokio_postgres::Transaction<'_>, kind: ChangeKind, id: &str) -> Result<(), PgError> {
    announce_all(txn, &[(kind, id.to_owned())]).await
}

/// Records and announces `changes` (each once), in the transaction open on
/// `db`, in one statement.
pub async fn announce_all(db: &impl GenericClient, changes: &[(ChangeKind, String)]) -> Result<(), PgError> {
    let mut seen: std::collections::HashSet<&(ChangeKind, String)> = std::collections::HashSet::new();
    let (kinds, ids): (Vec<&str>, Vec<&str>) =
        changes.iter().filter(|c| seen.insert(*c)).map(|(k, id)| (k.as_str(), id.as_str())).unzip();
    db.execute(
        "WITH c AS (INSERT INTO changes (kind, id) SELECT * FROM unnest($2::text[], $3::text[]) RETURNING kind, id)
         SELECT count(pg_notify($1, kind || ':' || id)) FROM c",
        &[&CHANNEL, &kinds, &ids],
    )
    .await?;
    Ok(())
}

/// Forgets recorded changes older than `age` (the feed never reads them
/// back; they are there for an operator asking what changed lately).
pub async fn forget_older_than(db: &impl GenericClient, age: Duration) -> Result<u64, PgError> {
    Ok(db
        .execute("DELETE FROM changes WHERE at < now() - $1::float8 * interval '1 second'", &[&age.as_secs_f64()])
        .await?)
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `application_name` of the listening session.
    pub application_name: String,
    /// Wait between reconnection attempts.
    pub retry_every: Duration,
    /// Periodic full resync, in case a notification was lost some other way.
    pub resync_every: Duration,
    /// How often the listening session is asked a trivial question, which
    /// must be answered within as long: a session whose network was cut
    /// (bytes swallowed, no reset) would otherwise look alive and lose every
    /// notification sent meanwhile without a word.
    pub ping_every: Duration,
}

/// The listening task; events arrive on [`recv`](Self::recv). Dropping it
/// stops the task and closes the session.
pub struct Listener {
    events: mpsc::Receiver<FeedEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Connects and listens. Returns once `LISTEN` is in force on the first
    /// session (an error if that first connection fails), so a change
    /// committed after this returns is delivered.
    pub async fn start(url: PgUrl, config: ListenerConfig) -> Result<Self, PgError> {
        let first = listen(&url, &config.application_name).await?;
        let (tx, events) = mpsc::channel(1024);
        let task = tokio::spawn(run(url, config, first, tx));
        Ok(Self { events, task })
    }

    /// The next event; `None` once the task has stopped.
    pub async fn recv(&mut self) -> Option<FeedEvent> {
        self.events.recv().await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A session with `LISTEN` in force: its notifications, and the client
/// that keeps it open.
struct Session {
    client: tokio_postgres::Client,
    notifications: mpsc::UnboundedReceiver<String>,
}

async fn listen(url: &PgUrl, application_name: &str) -> Result<Session, PgError> {
    let (client, mut connection) = connect_raw(url, application_name).await?;
    let (tx, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Drives the session; ends (closing `notifications`) when it does.
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "change feed session failed");
                    return;
                }
            }
        }
    });
    let listened = tokio::time::timeout(LISTEN_TIMEOUT, client.batch_execute(&format!("LISTEN {CHANNEL}"))).await;
    listened.map_err(|_| PgError::Timeout { waited: LISTEN_TIMEOUT })??;
    Ok(Session { client, notifications })
}

async fn run(url: PgUrl, c: ListenerConfig, first: Session, tx: mpsc::Sender<FeedEvent>) {
    let mut session = Some(first);
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + c.resync_every, c.resync_every);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + c.ping_every, c.ping_every);
    loop {
        let Some(s) = session.as_mut() else {
            tokio::time::sleep(c.retry_every).await;
            // As long as a ping may take (at least a second): an attempt
            // begun while the network was still cut is not waited out.
            let bound = c.ping_every.max(Duration::from_secs(1));
            let attempt = tokio::time::timeout(bound, listen(&url, &c.application_name)).await;
            match attempt.unwrap_or(Err(PgError::Timeout { waited: bound })) {
                Ok(s) => {
                    tracing::info!("change feed reconnected; resyncing");
                    session = Some(s);
                    if tx.send(FeedEvent::Resync).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "change feed cannot reconnect"),
            }
            continue;
        };
        let event = tokio::select! {
            n = s.notifications.recv() => match n {
                Some(payload) => FeedEvent::from_payload(&payload),
                None => {
                    tracing::warn!("change feed session lost; reconnecting");
                    session = None;
                    continue;
                }
            },
            _ = resync.tick() => FeedEvent::Resync,
            _ = ping.tick() => {
                let answered = tokio::time::timeout(c.ping_every, s.client.simple_query("SELECT 1")).await;
                if !matches!(answered, Ok(Ok(_))) {
                    tracing::warn!("change feed session does not answer; reconnecting");
                    session = None;
                }
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_unknown_ones_ask_for_a_resync() {
        for kind in ChangeKind::ALL {
            let p = format!("{}:id:with:colons", kind.as_str());
            assert_eq!(FeedEvent::from_payload(&p), FeedEvent::Changed { kind, id: "id:with:colons".into() });
        }
        for bad in ["", "key", "hologram:1", ":x"] {
            assert_eq!(FeedEvent::from_payload(bad), FeedEvent::Resync, "{bad:?}");
        }
    }
}
