//! The PostgreSQL engine of the store (`[storage] engine = "postgres"`) and
//! the pieces of HA on it (issue 14): the leader lease and the change feed,
//! which `crate::ha` drives (the background work, the caches).
//!
//! - [`url`]: the connection string, password never shown.
//! - [`pool`]: a small pool of connections with a statement timeout.
//! - [`migrate`]: the schema, versioned and applied under an advisory lock.
//! - [`lease`]: the leader lease with a fencing epoch, and fenced writes.
//! - [`feed`]: the change feed (LISTEN/NOTIFY) with resync after reconnect.
//! - [`audit`]: the serialised audit append (row lock on the chain head).
//! - [`engine`]: the store's transactions on PostgreSQL (the writer lock).
//! - [`check`]: `kmsd check-config`: reachable, schema, privileges.
//! - [`tls`]: TLS to the server, verified (`storage.tls = "verify-full"`).
//!
//! Every read-modify-write here names the mechanism that makes it safe with
//! several writers, next to the statement. Errors carry the server's message
//! and the URL only in redacted form ([`PgUrl::redacted`]); the password never
//! reaches an error, a log line or `Debug`.

pub mod audit;
pub mod check;
pub mod engine;
pub mod feed;
pub mod lease;
pub mod migrate;
pub mod pool;
pub mod tls;
pub mod url;

/// A connection's driver, over TLS or not (see [`tls`]).
pub type Connection = tokio_postgres::Connection<tokio_postgres::Socket, tls::RustlsStream>;

use std::time::Duration;

pub use url::{PgUrl, UrlError};

/// What went wrong talking to PostgreSQL, and whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL {target}: cannot connect: {reason}")]
    Connect { target: String, reason: String },
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL: no connection free within {waited:?} (pool of {size})")]
    PoolExhausted { waited: Duration, size: usize },
    #[error(
        "PostgreSQL schema version {found} is newer than this kmsd understands (up to {supported}): \
         run a kmsd at least as new as the one that migrated it"
    )]
    SchemaTooNew { found: i32, supported: i32 },
    #[error("PostgreSQL: fenced write refused: lease {lease:?} epoch {epoch} is no longer held by {holder:?}")]
    Fenced { lease: String, holder: String, epoch: i64 },
    #[error("PostgreSQL: no answer within {waited:?}")]
    Timeout { waited: Duration },
    #[error("PostgreSQL: the role has no {privilege} privilege on {on}: grant it (kmsd needs it to run)")]
    Privilege { privilege: String, on: String },
    #[error("PostgreSQL: row {table}/{key} is corrupt: {reason}")]
    Corrupt { table: &'static str, key: String, reason: String },
}

impl PgError {
    /// A conflict that the same transaction, retried, may not meet again
    /// (serialization failure or deadlock).
    pub fn is_conflict(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(self, Self::Db(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
    }
}

/// One connection, its driver spawned on the runtime. `application_name`
/// names it in `pg_stat_activity` (operators, and the tests that cut a
/// connection, find it by that). Every statement on it is cancelled by the
/// server after `statement_timeout` (zero: no limit).
pub async fn connect(
    url: &PgUrl,
    application_name: &str,
    statement_timeout: Duration,
) -> Result<tokio_postgres::Client, PgError> {
    let (client, connection) = connect_raw(url, application_name).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    set_statement_timeout(&client, statement_timeout).await?;
    Ok(client)
}

/// A connection whose driver the caller runs (the lease and the feed watch
/// theirs, to notice a lost session at once).
pub async fn connect_raw(url: &PgUrl, application_name: &str) -> Result<(tokio_postgres::Client, Connection), PgError> {
    let mut config = url.config().clone();
    config.application_name(application_name);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    // The client's own timeout covers the socket connect only; a server
    // (or a cut network) that accepts and then says nothing must not hold
    // the start-up, or a reconnecting lease or feed, for ever.
    let limit = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(5));
    let connected = tokio::time::timeout(limit, config.connect(url.tls())).await;
    let target = url.redacted().to_owned();
    match connected {
        Ok(Ok(pair)) => Ok(pair),
        // The client's messages name the host and the server's complaint,
        // never the password; scrubbed all the same.
        Ok(Err(e)) => Err(PgError::Connect { target, reason: scrub_password(&describe(&e), url) }),
        Err(_) => Err(PgError::Connect { target, reason: format!("no answer to the start-up within {limit:?}") }),
    }
}

pub(crate) async fn set_statement_timeout(client: &tokio_postgres::Client, timeout: Duration) -> Result<(), PgError> {
    client.batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis())).await?;
    Ok(())
}

/// The server's own words for a database error (`tokio_postgres::Error`
/// shows only "db error"), else the client's message and its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn scrub_password(message: &str, url: &PgUrl) -> String {
    match url.config().get_password().map(String::from_utf8_lossy) {
        Some(pw) if !pw.is_empty() => message.replace(pw.as_ref(), "***"),
        _ => message.to_owned(),
    }
}
