//! Creating and opening the store file. A store is opened for writing only
//! after a look that cannot write it has found it sound: redb repairs it (after
//! an unclean shutdown) and checks the checksum of every page of its committed
//! trees over an [`Overlay`] that keeps every write in memory, then the schema
//! and every authenticated record are checked (see `integrity`). A store
//! refused at any step is left byte for byte as it was, and a damaged file is
//! an error naming the file, never a panic inside redb (a plain redb open
//! trusts the file and may panic on one altered outside redb).

use std::path::Path;

use redb::{Database, ReadableDatabase};

use super::engine::Engine;
use super::overlay::Overlay;
use super::txn::Txn;
use super::{
    check_schema, integrity, is_bare_meta, Backend, MetaValue, Reader, RecordKey, Sealed, StorageError, Store,
    API_KEYS, API_KEY_HASHES, AUDIT, IDENTITIES, ISSUED, KEYS, META, META_RECORD_MACS, META_SCHEMA, REVOKED,
    SCHEMA_VERSION, SESSIONS,
};
use crate::clock::Timestamp;

/// redb's page cache for the checks made before opening (they read each
/// page once).
const CHECK_CACHE_BYTES: usize = 16 << 20;

/// The cache of a store made by [`Store::create`] (init, tests).
const CREATE_CACHE_BYTES: usize = 64 << 20;

fn open_error(path: &Path) -> impl Fn(redb::DatabaseError) -> StorageError + '_ {
    move |source| StorageError::Open { path: path.to_owned(), source }
}

/// The store at `path`, repaired and checked page by page in memory: the
/// file is never written. A file redb does not accept (bad checksums, a
/// truncated or foreign file) is [`StorageError::Open`]; another process
/// that has it open for writing is `DatabaseAlreadyOpen`.
pub(super) fn open_checked(path: &Path) -> Result<Database, StorageError> {
    let overlay = Overlay::open(path).map_err(|e| open_error(path)(redb::DatabaseError::Storage(e.into())))?;
    // An empty file would be made into a new store (in memory): it is none.
    if overlay_len(&overlay)? == 0 {
        return Err(StorageError::Schema { found: String::new() });
    }
    redb::Builder::new()
        .set_cache_size(CHECK_CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create_with_backend(overlay)
        .map_err(open_error(path))
}

/// A store without the meta table is no kmsd store (or an emptied one).
pub(super) fn no_meta(e: redb::TableError) -> StorageError {
    match e {
        redb::TableError::TableDoesNotExist(_) => StorageError::Schema { found: String::new() },
        other => other.into(),
    }
}

fn overlay_len(o: &Overlay) -> Result<u64, StorageError> {
    redb::StorageBackend::len(o).map_err(|e| StorageError::Redb(e.into()))
}

impl Store {
    /// Creates a new store file with every table, failing if one exists. Its
    /// records are authenticated under `mac` from the start.
    pub fn create(path: &Path, mac: RecordKey) -> Result<Self, StorageError> {
        if path.exists() {
            return Err(open_error(path)(redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists",
            )))));
        }
        let db = redb::Builder::new().set_cache_size(CREATE_CACHE_BYTES).create(path).map_err(open_error(path))?;
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
        Ok(Self::with_engine(Backend::Redb(Engine::new(path.to_owned(), CREATE_CACHE_BYTES, db)), mac))
    }

    /// Opens an existing store for reading and writing, with redb's cache of
    /// pages (read and pending writes together) bounded by `cache_bytes`.
    /// First, without writing the file, redb's page checksums, the schema and
    /// every authenticated record under `mac` are checked: a file that fails
    /// is an error ([`StorageError::Corrupt`] naming the record, or
    /// [`StorageError::Open`]) and nothing is written. A store written before
    /// record MACs is upgraded then, in one transaction audited as
    /// `store.upgrade` at `now`.
    pub fn open(path: &Path, cache_bytes: usize, mac: RecordKey, now: Timestamp) -> Result<Self, StorageError> {
        let needs_upgrade = {
            let checked = open_checked(path)?;
            integrity::check(&Reader { txn: Txn::Read(checked.begin_read()?), mac: mac.clone() })?
        };
        let db = redb::Builder::new().set_cache_size(cache_bytes).open(path).map_err(open_error(path))?;
        let store = Self::with_engine(Backend::Redb(Engine::new(path.to_owned(), cache_bytes, db)), mac);
        if needs_upgrade {
            let sealed = store.write_now(|w| integrity::upgrade(w, now))?;
            tracing::warn!(
                records = sealed,
                "store upgraded: its records are now authenticated (audited as store.upgrade)"
            );
        }
        Ok(store)
    }

    /// Reads the store at `path` without ever writing it (see
    /// [`open_checked`]), so that checks made before startup (the KEK) or
    /// beside a stopped daemon (audit verification) cannot change the file.
    pub fn inspect<T>(
        path: &Path,
        mac: &RecordKey,
        f: impl FnOnce(&Reader) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        // Held until the reader is done: closing the database ends its reads.
        let db = open_checked(path)?;
        let reader = Reader { txn: Txn::Read(db.begin_read()?), mac: mac.clone() };
        reader.txn.redb_read()?.open_table(META).map_err(no_meta)?;
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
        let db = open_checked(path)?;
        let txn = db.begin_read()?;
        let table = txn.open_table(META).map_err(no_meta)?;
        check_schema(table.get(META_SCHEMA)?.map(|g| g.value().to_vec()))?;
        let value = table.get(key)?.map(|g| g.value().to_vec());
        Ok(value)
    }

    /// Whether another process (a running kmsd) has the store file at
    /// `path` open (see [`StorageError::is_in_use`]). Nothing is written.
    pub fn in_use(path: &Path) -> bool {
        matches!(Self::peek_meta(path, META_SCHEMA), Err(e) if e.is_in_use())
    }
}
