//! A small connection pool: at most `size` connections, each with the
//! configured statement timeout, handed out one caller at a time. A caller
//! waits at most `acquire_timeout` for a free one ([`PgError::PoolExhausted`]).
//! A connection that the server closed (restart, `pg_terminate_backend`, a
//! cut network) is dropped on return and never handed out again; the next
//! caller gets a fresh one.
//!
//! Why not a pool crate: this is about eighty lines over tokio-postgres and a
//! semaphore; deadpool-postgres would add two crates for the same behaviour.
//!
//! The pool guards nothing but its idle list (a mutex held for a push or a
//! pop, never across an await).

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::{connect, PgError, PgUrl};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub size: usize,
    /// Server-side limit on every statement (`SET statement_timeout`).
    pub statement_timeout: Duration,
    /// How long a caller waits for a free connection.
    pub acquire_timeout: Duration,
    /// `application_name` of the pool's connections.
    pub application_name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            size: 8,
            statement_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            application_name: "kmsd".into(),
        }
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    url: PgUrl,
    config: PoolConfig,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("url", &self.inner.url).field("size", &self.inner.config.size).finish()
    }
}

impl Pool {
    /// A pool on `url`; no connection is opened until the first [`get`](Self::get).
    pub fn new(url: PgUrl, config: PoolConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.size.max(1)));
        Self { inner: Arc::new(Inner { url, config, idle: Mutex::new(Vec::new()), permits }) }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    pub fn url(&self) -> &PgUrl {
        &self.inner.url
    }

    /// A connection for this caller alone until the guard drops.
    pub async fn get(&self) -> Result<PooledClient, PgError> {
        let c = &self.inner.config;
        let permit = tokio::time::timeout(c.acquire_timeout, self.inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| PgError::PoolExhausted { waited: c.acquire_timeout, size: c.size.max(1) })?
            .map_err(|_| PgError::PoolExhausted { waited: Duration::ZERO, size: c.size.max(1) })?;
        let reused = loop {
            let next = self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match next {
                Some(client) if client.is_closed() => continue,
                other => break other,
            }
        };
        let client = match reused {
            Some(client) => client,
            None => connect(&self.inner.url, &c.application_name, c.statement_timeout).await?,
        };
        Ok(PooledClient { client: ManuallyDrop::new(client), inner: self.inner.clone(), _permit: permit, reuse: true })
    }

    /// Connections open and idle right now (for tests and metrics).
    pub fn idle(&self) -> usize {
        self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A pooled connection; derefs to the client. Returned to the pool on drop
/// unless the server closed it.
pub struct PooledClient {
    client: ManuallyDrop<Client>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    /// False while the connection may be inside a transaction that was
    /// neither committed nor rolled back: such a connection is closed on
    /// drop, never handed to the next caller.
    reuse: bool,
}

impl PooledClient {
    /// Whether the connection goes back to the pool on drop (see `reuse`).
    pub fn set_reuse(&mut self, reuse: bool) {
        self.reuse = reuse;
    }
}

impl Deref for PooledClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        // SAFETY: `client` is taken exactly once, here, and never used after.
        let client = unsafe { ManuallyDrop::take(&mut self.client) };
        if self.reuse && !client.is_closed() {
            self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        }
    }
}
