//! The redb store: one file under the data dir. Every table is declared here
//! and nowhere else; every record is JSON with a format version `v`, checked on
//! read. A state change and the audit event that records it are written in one
//! transaction ([`Writer::audit`]). All redb work runs on the blocking pool
//! ([`Store::read`], [`Store::write`]), never on the async runtime's workers.
//!
//! Security-relevant records (keys, API keys, identities, meta values) carry
//! a MAC under the store's [`RecordKey`] (derived from the vault data key),
//! checked on every read; a store opens only once every such record verifies
//! (see `integrity`, which also upgrades a store written before MACs).
//!
//! A change that memory must show as soon as the store holds it (a
//! revocation, an identity's state, a key record) goes through
//! [`Store::commit_then_apply`]: the commit and the memory update run as one
//! blocking task, so a request dropped mid-way (client gone, timeout) cannot
//! leave the store ahead of memory until a restart.

mod backup;
mod copy;
mod engine;
mod integrity;
mod mac;
mod open;
mod overlay;
pub mod postgres;
mod records;
mod run;
mod tokens;
mod txn;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redb::TableDefinition;

pub use backup::verify_backup;
pub use copy::{Copied, CopyError, CopyTarget};
pub use engine::{Failing, FaultClass, StorageHealth};
pub use mac::RecordKey;
pub use records::{MetaValue, Record, Sealed};
pub use tokens::Collected;
pub use txn::{AuditRows, Reader};
pub use writer::Writer;

use run::Backend;

use crate::audit::AuditEvent;
use crate::context::RequestContext;

/// Told of every audit event once its transaction has committed (metrics).
pub type AuditObserver = Box<dyn Fn(&AuditEvent) + Send + Sync>;

/// Small named values: schema version, the wrapped vault data key (both
/// stored bare, see [`is_bare_meta`]), and sealed [`MetaValue`]s.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// kid -> [`KeyRecord`].
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// API key id -> [`ApiKeyRecord`].
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// SHA-256 hex of an API key -> its id.
const API_KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("api_key_hashes");
/// sequence number -> hash-chained [`AuditEntry`].
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// identity id -> [`IdentityRecord`].
const IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("identities");
/// session id -> [`SessionRecord`].
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// jti -> [`IssuedToken`].
const ISSUED: TableDefinition<&str, &[u8]> = TableDefinition::new("issued_tokens");
/// revoked jti -> the token's `exp` (unix seconds), for garbage collection.
const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_tokens");

/// A table of records keyed by text, as each engine names it: the redb
/// table, and the PostgreSQL table (also its name in errors) with its key
/// and record columns.
pub(super) struct Table {
    redb: TableDefinition<'static, &'static str, &'static [u8]>,
    name: &'static str,
    key: &'static str,
    value: &'static str,
}

/// The record tables both engines read the same way.
mod table {
    use super::Table;

    pub(super) const META: Table = Table { redb: super::META, name: "meta", key: "name", value: "value" };
    pub(super) const KEYS: Table = Table { redb: super::KEYS, name: "keys", key: "kid", value: "record" };
    pub(super) const API_KEYS: Table = Table { redb: super::API_KEYS, name: "api_keys", key: "id", value: "record" };
    pub(super) const IDENTITIES: Table =
        Table { redb: super::IDENTITIES, name: "identities", key: "id", value: "record" };
    pub(super) const SESSIONS: Table = Table { redb: super::SESSIONS, name: "sessions", key: "sid", value: "record" };
    pub(super) const ISSUED: Table = Table { redb: super::ISSUED, name: "issued_tokens", key: "jti", value: "record" };
}

pub const META_SCHEMA: &str = "schema_version";
pub const META_DATA_KEY: &str = "vault_data_key";
/// Present once every security-relevant record has a MAC; its value is the
/// sequence number of the first audit entry with a keyed hash.
const META_RECORD_MACS: &str = "record_macs";
const SCHEMA_VERSION: &[u8] = b"1";

/// Meta values stored without a MAC: the schema version (read before the key
/// is known) and the wrapped data key (authenticated by its AEAD under the KEK).
fn is_bare_meta(key: &str) -> bool {
    key == META_SCHEMA || key == META_DATA_KEY
}

/// The store's file name inside the data dir.
pub const STORE_FILE: &str = "kmsd.redb";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("store: {0}")]
    Redb(#[from] redb::Error),
    #[error("store is corrupt: table {table}, record {key}: {reason}")]
    Corrupt { table: &'static str, key: String, reason: String },
    #[error("store schema version {found:?} is not supported by this kmsd (expects 1)")]
    Schema { found: String },
    #[error("store: meta value {key} cannot be stored: {reason}")]
    Unencodable { key: String, reason: String },
    #[error("store task failed: {0}")]
    Join(String),
    /// An I/O fault (see [`Store::health`]) closed the store; it is reopened
    /// once the fault clears.
    #[error("store is unavailable after an I/O fault ({class}); retry later")]
    Unavailable { class: &'static str },
    #[error("store: {0}")]
    Pg(#[from] postgres::PgError),
    /// An operation the store's engine cannot do (a bug, or a redb-only
    /// tool run on PostgreSQL).
    #[error("store: {0}")]
    Engine(String),
}

impl StorageError {
    /// Whether the failure is an I/O fault of the store (a full disk, a
    /// store being reopened), which a retry after a while can get past;
    /// not a corrupt record or a bug.
    pub fn is_fault(&self) -> bool {
        match self {
            StorageError::Unavailable { .. } => true,
            StorageError::Redb(e) => FaultClass::of(e).is_some(),
            StorageError::Pg(e) => postgres::engine::fault_class(e).is_some(),
            _ => false,
        }
    }

    /// Whether the store file is held by another process (a running kmsd):
    /// redb's file lock keeps a second opener out.
    pub fn is_in_use(&self) -> bool {
        matches!(self, StorageError::Open { source: redb::DatabaseError::DatabaseAlreadyOpen, .. })
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self { Self::Redb(e.into()) }
        }
    )*};
}
redb_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

#[derive(Clone)]
pub struct Store {
    engine: Arc<Backend>,
    counters: Arc<Counters>,
    mac: RecordKey,
    /// Held from the start of a [`commit_then_apply`](Self::commit_then_apply)
    /// transaction until its memory update is done, so that memory sees those
    /// changes in commit order.
    apply_order: Arc<Mutex<()>>,
    observer: Arc<OnceLock<AuditObserver>>,
}

/// What a write takes from the calling task before it moves to the blocking
/// pool (where there is no task-local state): the request being served, and
/// the lease fence of leader work.
pub(super) struct Ambient {
    context: Option<Arc<RequestContext>>,
    fence: Option<postgres::lease::Fence>,
}

fn ambient() -> Ambient {
    Ambient { context: crate::context::current(), fence: postgres::lease::current() }
}

/// Transactions run through [`Store::read`] and [`Store::write`], for
/// `/metrics` (and the benchmark's "no storage read on this path" checks).
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// A failing store that saw no fault for this long is probed with an empty
/// write by [`Store::health`] (traffic may have stopped because health said
/// it was failing).
const PROBE_QUIET: Duration = Duration::from_secs(5);

impl Store {
    fn with_engine(engine: Backend, mac: RecordKey) -> Self {
        Self {
            engine: Arc::new(engine),
            counters: Arc::default(),
            mac,
            apply_order: Arc::default(),
            observer: Arc::default(),
        }
    }

    /// Sets the observer of committed audit events (once; later calls are ignored).
    pub fn observe_audit(&self, observer: AuditObserver) {
        let _ = self.observer.set(observer);
    }

    /// Whether the store works, or has failed (an I/O fault) and not
    /// written successfully since. A failing store that has seen no fault for
    /// a while is probed with an empty write transaction first, so that it
    /// recovers without traffic.
    pub async fn health(&self) -> StorageHealth {
        if self.engine.failing_and_quiet_for(PROBE_QUIET) {
            let _ = self.write(|_| Ok::<_, StorageError>(())).await;
        }
        self.engine.health()
    }

    /// Times the store was reopened after an I/O fault.
    pub fn reopens(&self) -> u64 {
        match &*self.engine {
            Backend::Redb(e) => e.reopens(),
            Backend::Pg(_) => 0,
        }
    }

    /// Whether other processes share this store (PostgreSQL): memory may
    /// then lag what they committed by the change feed's delay.
    pub fn is_shared(&self) -> bool {
        matches!(&*self.engine, Backend::Pg(_))
    }

    /// The engine's name, for health and logs (decisions use
    /// [`is_shared`](Self::is_shared)).
    pub fn engine_name(&self) -> &'static str {
        match &*self.engine {
            Backend::Redb(_) => "redb",
            Backend::Pg(_) => "postgres",
        }
    }

    /// Read transactions run so far by [`read`](Self::read).
    pub fn reads(&self) -> u64 {
        self.counters.reads.load(Ordering::Relaxed)
    }

    /// Write transactions run so far by [`write`](Self::write).
    pub fn writes(&self) -> u64 {
        self.counters.writes.load(Ordering::Relaxed)
    }

    pub async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> Result<T, StorageError> + Send + 'static,
    {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let (engine, mac) = (self.engine.clone(), self.mac.clone());
        tokio::task::spawn_blocking(move || Self::read_blocking(&engine, mac, f))
            .await
            .map_err(|e| StorageError::Join(e.to_string()))?
    }

    /// Runs `f` in one durable write transaction: everything it writes commits
    /// together, or (if it returns an error) nothing does.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
    {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        let (engine, mac) = (self.engine.clone(), self.mac.clone());
        let (observer, ambient) = (self.observer.clone(), ambient());
        tokio::task::spawn_blocking(move || Self::write_blocking(&engine, mac, (ambient, &observer), f))
            .await
            .map_err(|e| StorageError::Join(e.to_string()))?
    }

    /// Runs `write` in one durable write transaction and, once it has
    /// committed, `apply` with its result (to update memory), both in one
    /// blocking task. Such a task runs to completion even if the future
    /// awaiting it is dropped, so a committed change is always applied. If
    /// `write` fails nothing commits and `apply` does not run.
    ///
    /// These changes commit and apply one at a time, in commit order: two
    /// updates of one record cannot reach memory in the opposite order to the
    /// store, and `write` may rely on memory showing every change made
    /// through this helper so far.
    pub async fn commit_then_apply<T, E, W, A>(&self, write: W, apply: A) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        W: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        let (engine, mac, order) = (self.engine.clone(), self.mac.clone(), self.apply_order.clone());
        let (observer, ambient) = (self.observer.clone(), ambient());
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere poisons nothing this lock guards (it holds no data).
            let _turn = order.lock().unwrap_or_else(PoisonError::into_inner);
            let out = Self::write_blocking(&engine, mac, (ambient, &observer), write)?;
            apply(&out);
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
    }

    /// Runs `read` in one read transaction and `apply` with its result, both
    /// in one blocking task and in turn with every
    /// [`commit_then_apply`](Self::commit_then_apply): no change of this
    /// process commits between the read and the apply, so `apply` cannot
    /// put back an older state over one that was applied meanwhile. How a
    /// replica takes in what another replica changed (the change feed).
    pub async fn read_then_apply<T, R, A>(&self, read: R, apply: A) -> Result<T, StorageError>
    where
        T: Send + 'static,
        R: FnOnce(&Reader) -> Result<T, StorageError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let (engine, mac, order) = (self.engine.clone(), self.mac.clone(), self.apply_order.clone());
        tokio::task::spawn_blocking(move || {
            let _turn = order.lock().unwrap_or_else(PoisonError::into_inner);
            let out = Self::read_blocking(&engine, mac, read)?;
            apply(&out);
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
    }

    /// [`write`](Self::write) for callers already off the runtime (CLI tools,
    /// tests). A blocking task that must update memory right after the
    /// commit uses [`commit_then_apply`](Self::commit_then_apply) instead.
    pub fn write_now<T, E: From<StorageError>>(&self, f: impl FnOnce(&mut Writer) -> Result<T, E>) -> Result<T, E> {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Self::write_blocking(&self.engine, self.mac.clone(), (ambient(), &self.observer), f)
    }

    /// [`read`](Self::read) without a blocking task, for tests.
    #[cfg(test)]
    pub(crate) fn read_now<T>(&self, f: impl FnOnce(&Reader) -> Result<T, StorageError>) -> Result<T, StorageError> {
        Self::read_blocking(&self.engine, self.mac.clone(), f)
    }
}

fn check_schema(found: Option<Vec<u8>>) -> Result<(), StorageError> {
    match found {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        other => Err(StorageError::Schema {
            found: other.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod contract;
/// The throwaway PostgreSQL of the black-box tests, for unit tests that need
/// a real server (the store contract, the key ring's fence).
#[cfg(test)]
#[allow(dead_code)] // not every helper is used by the unit tests
#[path = "../../tests/api/postgres/harness.rs"]
pub(crate) mod pg_harness;
#[cfg(test)]
mod tests;
