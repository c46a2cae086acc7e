//! The PostgreSQL engine behind a [`Store`](crate::storage::Store): the same
//! transactions as the redb engine, over a pooled connection.
//!
//! A [`PgTxn`] is one PostgreSQL transaction on one connection of the pool.
//! Store transactions run on the blocking pool (see `storage`), so a
//! statement is sent and awaited with [`Handle::block_on`] on the runtime the
//! store was opened on; the connection's driver runs there.
//!
//! Read-modify-write guard, for every write: a write transaction takes the
//! transaction-scoped advisory lock [`WRITER_LOCK`] before its first
//! statement, so writers on every replica take turns exactly as redb's single
//! writer does, and each statement after the lock (READ COMMITTED) sees every
//! write committed before it. That one lock is what keeps the audit chain
//! from forking, a refresh token single use, `hs256_max_exp` a maximum, an
//! API-key or identity change from being lost, and one active key per
//! keyset, across replicas. The audit append also locks the chain head row
//! and the `audit` primary key refuses a repeated `seq` (see `audit`), so the
//! chain holds even against a writer that skipped the lock. Reads run in a
//! REPEATABLE READ, READ ONLY transaction: one snapshot, like a redb read.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::feed::ChangeKind;
use super::lease::Fence;
use super::pool::{Pool, PooledClient};
use super::PgError;
use crate::storage::engine::{FaultClass, FaultLog, StorageHealth};
use crate::storage::{
    integrity, is_bare_meta, table, Backend, RecordKey, StorageError, Writer, META_DATA_KEY, META_RECORD_MACS,
};

/// Advisory lock key every write transaction holds until it ends (`kmsd` in
/// ASCII, then `wr`).
pub const WRITER_LOCK: i64 = 0x6b6d_7364_7772;

/// Parameters of one statement.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) struct PgEngine {
    pool: Pool,
    handle: Handle,
    faults: Arc<Faults>,
    /// See [`PgTxn::limit`].
    limit: Duration,
}

/// Faults seen since the last successful commit, for health.
#[derive(Default)]
pub(crate) struct Faults(Mutex<FaultLog>);

impl Faults {
    fn log(&self) -> std::sync::MutexGuard<'_, FaultLog> {
        // A few plain fields, consistent after any single update.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, class: FaultClass, e: &PgError) {
        if self.log().record(class) {
            tracing::error!(error = %e, class = class.as_str(), "store failing: PostgreSQL cannot be used; retried on every request");
        }
    }
}

/// The fault class of an error that a retry later can get past: the server
/// unreachable or gone, a timeout, a full disk, a pool with no connection
/// free. A constraint violation or a corrupt row is none.
pub(crate) fn fault_class(e: &PgError) -> Option<FaultClass> {
    match e {
        PgError::Connect { .. } | PgError::PoolExhausted { .. } | PgError::Timeout { .. } => Some(FaultClass::Database),
        PgError::Db(e) => match e.as_db_error() {
            // No answer from the server: closed connection, I/O error.
            None => Some(FaultClass::Database),
            Some(db) => match &db.code().code()[..2] {
                "53" if db.code().code() == "53100" => Some(FaultClass::DiskFull),
                // connection exception, insufficient resources, operator
                // intervention (shutdown, statement timeout), system error
                "08" | "53" | "57" | "58" => Some(FaultClass::Database),
                _ => None,
            },
        },
        _ => None,
    }
}

impl PgEngine {
    /// An engine on `pool`, its statements run on the runtime of the caller.
    pub(crate) fn new(pool: Pool) -> Self {
        // Past the server's own statement timeout (which also ends a wait
        // for the writer lock), so that a live server always answers first.
        let limit = pool.config().statement_timeout.max(Duration::from_secs(1)) + Duration::from_secs(1);
        Self { pool, handle: Handle::current(), faults: Arc::default(), limit }
    }

    /// Begins a read transaction: one snapshot.
    pub(crate) fn begin_read(&self) -> Result<PgTxn, StorageError> {
        self.begin(false)
    }

    /// Begins a write transaction: it holds [`WRITER_LOCK`] and, for leader
    /// work, has checked `fence` (and holds its lease row until it ends, so
    /// no other replica can take the lease before this commits).
    pub(crate) fn begin_write(&self, fence: Option<&Fence>) -> Result<PgTxn, StorageError> {
        let txn = self.begin(true)?;
        if let Some(fence) = fence {
            txn.with_client(|c| fence.check(c))?;
        }
        Ok(txn)
    }

    /// Begins a transaction: a write one holds [`WRITER_LOCK`].
    fn begin(&self, write: bool) -> Result<PgTxn, StorageError> {
        let txn = PgTxn {
            client: None,
            handle: self.handle.clone(),
            faults: self.faults.clone(),
            failed: Cell::new(false),
            limit: self.limit,
        };
        let mut client = txn.run(self.pool.get())?;
        client.set_reuse(false);
        let txn = PgTxn { client: Some(client), ..txn };
        // One round trip each (the simple protocol, nothing to prepare).
        if write {
            txn.batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"))?;
        } else {
            txn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        }
        Ok(txn)
    }

    pub(crate) fn health(&self) -> StorageHealth {
        self.faults.log().health()
    }

    pub(crate) fn failing_and_quiet_for(&self, quiet: Duration) -> bool {
        self.faults.log().quiet_for(quiet)
    }
}

/// One PostgreSQL transaction (see the module comment). Its connection goes
/// back to the pool only after a commit or rollback that the server
/// answered; dropped in any other state, the connection is closed, which
/// rolls the transaction back.
pub struct PgTxn {
    client: Option<PooledClient>,
    handle: Handle,
    faults: Arc<Faults>,
    /// A statement of this transaction failed: PostgreSQL has aborted it, and
    /// a COMMIT would quietly roll back, so [`commit`](Self::commit) refuses.
    failed: Cell<bool>,
    /// How long one operation may take before it is abandoned as
    /// [`PgError::Timeout`]: a server that stopped answering (a cut network
    /// swallows packets; the server's statement timeout cannot fire) must
    /// not hold a request, or the writer lock's turn, for ever. The
    /// connection is then closed on drop, never reused.
    limit: Duration,
}

impl PgTxn {
    /// Runs `f` to completion on the store's runtime, recording a fault.
    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, PgError>>) -> Result<T, StorageError> {
        let limit = self.limit;
        let bounded = async { tokio::time::timeout(limit, f).await.unwrap_or(Err(PgError::Timeout { waited: limit })) };
        self.handle.block_on(bounded).map_err(|e| {
            self.failed.set(true);
            if let Some(class) = fault_class(&e) {
                self.faults.record(class, &e);
            }
            StorageError::Pg(e)
        })
    }

    fn client(&self) -> Result<&PooledClient, StorageError> {
        self.client.as_ref().ok_or(StorageError::Unavailable { class: FaultClass::Database.as_str() })
    }

    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StorageError> {
        let client = self.client()?;
        self.run(async { Ok(client.query(sql, params).await?) })
    }

    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StorageError> {
        let client = self.client()?;
        self.run(async { Ok(client.execute(sql, params).await?) })
    }

    /// Statements without parameters, in one round trip (simple protocol).
    fn batch(&self, sql: &str) -> Result<(), StorageError> {
        let client = self.client()?;
        self.run(async { Ok(client.batch_execute(sql).await?) })
    }

    /// Rows of `(text, bytea)`, for record queries.
    pub fn records(&self, sql: &str, params: Params<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        Ok(self.query(sql, params)?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Runs an async operation on this transaction's connection.
    pub(crate) fn with_client<'s, T, F>(
        &'s self,
        f: impl FnOnce(&'s tokio_postgres::Client) -> F,
    ) -> Result<T, StorageError>
    where
        F: std::future::Future<Output = Result<T, PgError>> + 's,
    {
        let client: &tokio_postgres::Client = self.client()?;
        self.run(f(client))
    }

    /// Announces `changes` on the change feed, in this transaction (so the
    /// other replicas hear of them exactly when they commit): one statement
    /// records them all and notifies each (see `feed`).
    pub(crate) fn announce(&self, changes: &[(ChangeKind, String)]) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.with_client(|c| super::feed::announce_all(c, changes))
    }

    pub(crate) fn commit(mut self) -> Result<(), StorageError> {
        if self.failed.get() {
            return Err(StorageError::Engine(
                "a statement of this PostgreSQL transaction failed: it was rolled back".into(),
            ));
        }
        self.batch("COMMIT")?;
        self.faults.log().committed();
        self.release();
        Ok(())
    }

    pub(crate) fn rollback(mut self) -> Result<(), StorageError> {
        self.batch("ROLLBACK")?;
        self.release();
        Ok(())
    }

    /// The transaction has ended: the connection may serve the next caller.
    fn release(&mut self) {
        if let Some(c) = self.client.as_mut() {
            c.set_reuse(true);
        }
    }
}

impl crate::storage::Store {
    /// A store on PostgreSQL: the schema migrated (a newer one is refused
    /// before anything is written), then, in one write transaction, every
    /// authenticated record checked under `mac`. A database without records
    /// gets the record-MAC marker; one with records but no marker is refused
    /// (every PostgreSQL store is written with MACs from its first record).
    pub async fn postgres(pool: Pool, mac: RecordKey) -> Result<Self, StorageError> {
        let store = Self::migrated(pool, mac).await?;
        store
            .write(|w| {
                if w.meta(META_RECORD_MACS)?.is_none() {
                    let empty = [&table::KEYS, &table::API_KEYS, &table::IDENTITIES]
                        .into_iter()
                        .try_fold(w.audit_rows(0, 1)?.is_empty(), |empty, t| {
                            Ok::<_, StorageError>(empty && w.txn.scan(t)?.is_empty())
                        })?;
                    if !empty {
                        return Err(StorageError::Corrupt {
                            table: "meta",
                            key: META_RECORD_MACS.into(),
                            reason: "is missing from a database that holds records".into(),
                        });
                    }
                    w.put_meta(META_RECORD_MACS, b"1")?;
                }
                integrity::check_all(w)
            })
            .await?;
        Ok(store)
    }

    /// Initializes the store on `pool` unless it is already: in one write
    /// transaction (under the writer lock, so replicas starting at once take
    /// turns) that finds no wrapped data key, the record-MAC marker and what
    /// `init` writes (the data key, the bootstrap API key, their audit
    /// events) commit together. `None`: another process initialized it
    /// first, and nothing was written.
    pub async fn postgres_init<T, E>(
        pool: Pool,
        mac: RecordKey,
        init: impl FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
    ) -> Result<Option<(Self, T)>, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let store = Self::migrated(pool, mac).await?;
        let made = store
            .write(move |w| {
                if w.meta(META_DATA_KEY)?.is_some() {
                    return Ok(None);
                }
                w.put_meta(META_RECORD_MACS, b"1")?;
                init(w).map(Some)
            })
            .await?;
        Ok(made.map(|t| (store, t)))
    }

    /// A store on `pool` once its schema is migrated (a newer one is
    /// refused before anything is written); nothing else is checked yet.
    async fn migrated(pool: Pool, mac: RecordKey) -> Result<Self, StorageError> {
        let mut client = pool.get().await?;
        super::migrate::migrate(&mut client).await?;
        drop(client);
        Ok(Self::with_engine(Backend::Pg(PgEngine::new(pool)), mac))
    }

    /// A bare meta value (the wrapped data key) of the store on `pool`, read
    /// before the record key is known; `None` if the schema or the value is
    /// not there yet. Nothing is written.
    pub async fn peek_postgres(pool: &Pool, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if !is_bare_meta(key) {
            return Err(StorageError::Engine(format!("meta value {key} is sealed: read it through an opened store")));
        }
        let client = pool.get().await?;
        if super::migrate::version(&client).await? == 0 {
            return Ok(None);
        }
        let row = client.query_opt("SELECT value FROM meta WHERE name = $1", &[&key]).await.map_err(PgError::from)?;
        Ok(row.map(|r| r.get(0)))
    }
}
