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

mod integrity;
mod mac;
pub mod postgres;
mod records;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};

pub use mac::RecordKey;
pub use records::{MetaValue, Record, Sealed};
pub use tokens::Collected;

use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::audit::{AuditEntry, AuditEvent, ChainError, Link};
use crate::clock::Timestamp;
use crate::keys::{KeyRecord, Kid};

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
    db: Arc<Database>,
    counters: Arc<Counters>,
    mac: RecordKey,
    /// Held from the start of a [`commit_then_apply`](Self::commit_then_apply)
    /// transaction until its memory update is done, so that memory sees those
    /// changes in commit order.
    apply_order: Arc<Mutex<()>>,
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

impl Store {
    /// Creates a new store file with every table, failing if one exists. Its
    /// records are authenticated under `mac` from the start.
    pub fn create(path: &Path, mac: RecordKey) -> Result<Self, StorageError> {
        if path.exists() {
            return Err(StorageError::Open {
                path: path.to_owned(),
                source: redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists",
                ))),
            });
        }
        let db = Database::create(path).map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StorageError::Redb(e.into()))?;
        }
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?.insert(META_SCHEMA, SCHEMA_VERSION)?;
            txn.open_table(META)?.insert(
                META_RECORD_MACS,
                MetaValue { value: "1".into() }.encode(&mac, "meta", META_RECORD_MACS).as_slice(),
            )?;
            txn.open_table(KEYS)?;
            txn.open_table(API_KEYS)?;
            txn.open_table(API_KEY_HASHES)?;
            txn.open_table(AUDIT)?;
            txn.open_table(IDENTITIES)?;
            txn.open_table(SESSIONS)?;
            txn.open_table(ISSUED)?;
            txn.open_table(REVOKED)?;
        }
        txn.commit()?;
        Ok(Self { db: Arc::new(db), counters: Arc::default(), mac, apply_order: Arc::default() })
    }

    /// Opens an existing store for reading and writing, with redb's cache of
    /// pages (read and pending writes together) bounded by `cache_bytes`, and
    /// checks every authenticated record under `mac`: a record that does not
    /// verify is [`StorageError::Corrupt`], naming it, and nothing is written.
    /// A store written before record MACs is upgraded first, in one
    /// transaction audited as `store.upgrade` at `now`.
    pub fn open(path: &Path, cache_bytes: usize, mac: RecordKey, now: Timestamp) -> Result<Self, StorageError> {
        let needs_upgrade = integrity::check(path, &mac)?;
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .open(path)
            .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        let store = Self { db: Arc::new(db), counters: Arc::default(), mac, apply_order: Arc::default() };
        if needs_upgrade {
            let sealed = store.write_now(|w| integrity::upgrade(w, now))?;
            tracing::warn!(
                records = sealed,
                "store upgraded: its records are now authenticated (audited as store.upgrade)"
            );
        }
        Ok(store)
    }

    /// Reads the store at `path` without opening it for writing, so that
    /// checks made before startup (the KEK) or beside a running daemon (audit
    /// verification) cannot change the file.
    ///
    /// After an unclean shutdown redb must repair the file before it can be
    /// read; that needs a writable open, so it is done first (repair restores
    /// the last committed state and changes no committed data).
    pub fn inspect<T>(
        path: &Path,
        mac: &RecordKey,
        f: impl FnOnce(&Reader) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let reader = Reader { txn: open_read_only(path)?.begin_read()?, mac: mac.clone() };
        check_schema(reader.meta(META_SCHEMA)?)?;
        f(&reader)
    }

    /// One bare meta value (the schema version or the wrapped data key), read
    /// as [`inspect`](Self::inspect) reads, before the record key is known.
    pub fn peek_meta(path: &Path, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if !is_bare_meta(key) {
            return Err(StorageError::Corrupt {
                table: "meta",
                key: key.into(),
                reason: "is sealed: read it through an opened store".into(),
            });
        }
        let txn = open_read_only(path)?.begin_read()?;
        check_schema(txn.open_table(META)?.get(META_SCHEMA)?.map(|g| g.value().to_vec()))?;
        let value = txn.open_table(META)?.get(key)?.map(|g| g.value().to_vec());
        Ok(value)
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
        let (db, mac) = (self.db.clone(), self.mac.clone());
        tokio::task::spawn_blocking(move || f(&Reader { txn: db.begin_read()?, mac }))
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
        let (db, mac) = (self.db.clone(), self.mac.clone());
        tokio::task::spawn_blocking(move || Self::write_blocking(&db, mac, f))
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
        let (db, mac, order) = (self.db.clone(), self.mac.clone(), self.apply_order.clone());
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere poisons nothing this lock guards (it holds no data).
            let _turn = order.lock().unwrap_or_else(PoisonError::into_inner);
            let out = Self::write_blocking(&db, mac, write)?;
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
        Self::write_blocking(&self.db, self.mac.clone(), f)
    }

    /// [`read`](Self::read) without a blocking task, for tests.
    #[cfg(test)]
    pub(crate) fn read_now<T>(&self, f: impl FnOnce(&Reader) -> Result<T, StorageError>) -> Result<T, StorageError> {
        f(&Reader { txn: self.db.begin_read()?, mac: self.mac.clone() })
    }

    fn write_blocking<T, E: From<StorageError>>(
        db: &Database,
        mac: RecordKey,
        f: impl FnOnce(&mut Writer) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut w = Writer { txn: db.begin_write().map_err(StorageError::from)?, mac };
        let out = f(&mut w)?;
        w.txn.commit().map_err(StorageError::from)?;
        Ok(out)
    }
}

/// Opens `path` read-only. After an unclean shutdown redb must repair the
/// file first; that needs a writable open (repair restores the last committed
/// state and changes no committed data).
fn open_read_only(path: &Path) -> Result<ReadOnlyDatabase, StorageError> {
    let open = || ReadOnlyDatabase::open(path).map_err(|source| StorageError::Open { path: path.to_owned(), source });
    match open() {
        Err(StorageError::Open { source: redb::DatabaseError::RepairAborted, .. }) => {
            tracing::warn!(path = %path.display(), "store was not shut down cleanly; repairing it");
            drop(Database::open(path).map_err(|source| StorageError::Open { path: path.to_owned(), source })?);
            open()
        }
        other => other,
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

/// Stored audit rows: sequence number and decoded entry (or why it did not decode).
pub type AuditRows = Vec<(u64, Result<AuditEntry, StorageError>)>;

pub struct Reader {
    txn: redb::ReadTransaction,
    mac: RecordKey,
}

/// Reads a meta value from `table`: bare, or sealed (MAC checked).
fn read_meta(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    mac: &RecordKey,
    key: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(row) = table.get(key)? else { return Ok(None) };
    if is_bare_meta(key) {
        return Ok(Some(row.value().to_vec()));
    }
    Ok(Some(MetaValue::decode(mac, "meta", key, row.value())?.value.into_bytes()))
}

/// An API key looked up through its hash: the index entry must lead to a
/// record for that very hash (the index has no MAC of its own).
fn check_indexed(hash: &str, record: ApiKeyRecord) -> Result<ApiKeyRecord, StorageError> {
    if aws_lc_rs::constant_time::verify_slices_are_equal(record.key_hash.as_bytes(), hash.as_bytes()).is_err() {
        return Err(StorageError::Corrupt {
            table: "api_key_hashes",
            key: record.id.as_str().to_owned(),
            reason: "an index entry leads to this API key, whose record has another key hash".into(),
        });
    }
    Ok(record)
}

impl Reader {
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        read_meta(&self.txn.open_table(META)?, &self.mac, key)
    }

    pub fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        let table = self.txn.open_table(KEYS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push(KeyRecord::decode(&self.mac, "keys", k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        let Some(id) = self.txn.open_table(API_KEY_HASHES)?.get(hash)?.map(|g| g.value().to_owned()) else {
            return Ok(None);
        };
        self.api_key(&id)?.map(|rec| check_indexed(hash, rec)).transpose()
    }

    pub fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        let table = self.txn.open_table(API_KEYS)?;
        let row = table.get(id)?;
        row.map(|g| ApiKeyRecord::decode(&self.mac, "api_keys", id, g.value())).transpose()
    }

    /// Up to `limit` keys of `org` with ids after `cursor`, in id order.
    pub fn api_keys_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
        org: &str,
    ) -> Result<Vec<ApiKeyRecord>, StorageError> {
        let table = self.txn.open_table(API_KEYS)?;
        let range = match cursor {
            Some(c) => table.range::<&str>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        let mut out = Vec::new();
        for row in range {
            let (k, v) = row?;
            let rec = ApiKeyRecord::decode(&self.mac, "api_keys", k.value(), v.value())?;
            if rec.org_id == org {
                out.push(rec);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Audit entries with `seq > after`, at most `limit`.
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StorageError> {
        self.audit_rows(after, limit)?.into_iter().map(|(_, entry)| entry).collect()
    }

    /// Like [`audit`](Self::audit), but one decode result per stored row, so a
    /// verifier can name the row that does not decode.
    pub fn audit_rows(&self, after: u64, limit: usize) -> Result<AuditRows, StorageError> {
        let table = self.txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = row?;
            let seq = k.value();
            out.push((seq, AuditEntry::decode("audit", &seq.to_string(), v.value())));
        }
        Ok(out)
    }

    /// Recomputes the whole audit chain: plain hashes before the store's
    /// upgrade to keyed hashes, keyed from its upgrade entry on. The outer
    /// error is a store that cannot be read; the inner one names the first
    /// broken entry. Returns how many entries verified.
    pub fn verify_audit(&self) -> Result<Result<u64, ChainError>, StorageError> {
        let keyed_from = integrity::keyed_from(self)?;
        Ok(crate::audit::verify_chain(self.audit_rows(0, usize::MAX)?, keyed_from, &self.mac))
    }
}

pub struct Writer {
    txn: redb::WriteTransaction,
    mac: RecordKey,
}

impl Writer {
    /// Stores a meta value; every value but the bare ones is sealed, so it
    /// must be UTF-8 text.
    pub fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let bytes = if is_bare_meta(key) {
            value.to_vec()
        } else {
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| StorageError::Unencodable { key: key.into(), reason: "value is not UTF-8".into() })?;
            MetaValue { value }.encode(&self.mac, "meta", key)
        };
        self.txn.open_table(META)?.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        read_meta(&self.txn.open_table(META)?, &self.mac, key)
    }

    /// Stores `value` (as decimal text) under `key` unless a larger one is there.
    pub fn raise_meta_max(&mut self, key: &str, value: i64) -> Result<(), StorageError> {
        let current = self.meta(key)?.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok());
        if current.is_none_or(|c| c < value) {
            self.put_meta(key, value.to_string().as_bytes())?;
        }
        Ok(())
    }

    pub fn put_key(&mut self, record: &KeyRecord) -> Result<(), StorageError> {
        let bytes = record.encode(&self.mac, "keys", record.kid.as_str());
        self.txn.open_table(KEYS)?.insert(record.kid.as_str(), bytes.as_slice())?;
        Ok(())
    }

    pub fn key(&self, kid: &Kid) -> Result<Option<KeyRecord>, StorageError> {
        let table = self.txn.open_table(KEYS)?;
        let row = table.get(kid.as_str())?;
        row.map(|g| KeyRecord::decode(&self.mac, "keys", kid.as_str(), g.value())).transpose()
    }

    pub fn api_key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StorageError> {
        let table = self.txn.open_table(API_KEYS)?;
        let row = table.get(id.as_str())?;
        row.map(|g| ApiKeyRecord::decode(&self.mac, "api_keys", id.as_str(), g.value())).transpose()
    }

    pub fn put_api_key(&mut self, record: &ApiKeyRecord) -> Result<(), StorageError> {
        let bytes = record.encode(&self.mac, "api_keys", record.id.as_str());
        self.txn.open_table(API_KEYS)?.insert(record.id.as_str(), bytes.as_slice())?;
        self.txn.open_table(API_KEY_HASHES)?.insert(record.key_hash.as_str(), record.id.as_str())?;
        Ok(())
    }

    /// Appends `event` to the audit log with a keyed hash, in this transaction.
    pub fn audit(&mut self, event: AuditEvent) -> Result<AuditEntry, StorageError> {
        let mut table = self.txn.open_table(AUDIT)?;
        let prev = match table.last()? {
            Some((k, v)) => Some(AuditEntry::decode("audit", &k.value().to_string(), v.value())?),
            None => None,
        };
        let entry = AuditEntry::chain(prev.as_ref(), event, Link::Keyed(&self.mac));
        table.insert(entry.seq, entry.encode().as_slice())?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests;
