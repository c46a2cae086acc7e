//! Online backup: a consistent copy of the live store, taken inside one read
//! transaction while kmsd keeps serving, written as a fresh redb file that
//! opens without repair. Restoring is offline ([`verify_backup`] first, then
//! the file replaces the store).
//!
//! Every table is copied row by row with its bytes unchanged, so the record
//! MACs (bound to table, id and bytes, under a key derived from the data key)
//! and the audit chain verify in the copy exactly as in the original. A table
//! this module does not know is an error, never a silent gap.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use redb::{
    MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::mac::RecordKey;
use super::{StorageError, Store, API_KEYS, API_KEY_HASHES, AUDIT, IDENTITIES, ISSUED, KEYS, META, REVOKED, SESSIONS};

impl Store {
    /// Writes a consistent copy of the store as of one read transaction to
    /// `dest`, created with mode 0600 (it must not exist), synced before this
    /// returns. Returns the number of rows copied. On failure `dest` is removed.
    pub async fn backup_to(&self, dest: PathBuf) -> Result<u64, StorageError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let super::Backend::Redb(engine) = &*engine else {
                return Err(StorageError::Engine(
                    "an online backup file is a redb store: back up PostgreSQL with its own tools (pg_dump)".into(),
                ));
            };
            let held = engine.hold()?;
            let txn = held.db()?.begin_read().map_err(|e| engine.observe(e))?;
            let copied = write_copy(&txn, &dest);
            if copied.is_err() {
                let _ = std::fs::remove_file(&dest);
            }
            copied
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
    }
}

fn write_copy(src: &ReadTransaction, dest: &Path) -> Result<u64, StorageError> {
    let io = |e: std::io::Error| StorageError::Redb(redb::Error::Io(e));
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(dest).map_err(io)?;
    let open = |source| StorageError::Open { path: dest.to_owned(), source };
    let copy = redb::Builder::new()
        .create_with_backend(redb::backends::FileBackend::new(file).map_err(open)?)
        .map_err(open)?;
    let dst = copy.begin_write()?;
    let mut rows = 0;
    if let Some(t) = src.list_multimap_tables()?.next() {
        return Err(unknown(t.name()));
    }
    for handle in src.list_tables()? {
        rows += match handle.name() {
            n if n == META.name() => copy_table(src, &dst, META)?,
            n if n == KEYS.name() => copy_table(src, &dst, KEYS)?,
            n if n == API_KEYS.name() => copy_table(src, &dst, API_KEYS)?,
            n if n == API_KEY_HASHES.name() => copy_table(src, &dst, API_KEY_HASHES)?,
            n if n == AUDIT.name() => copy_table(src, &dst, AUDIT)?,
            n if n == IDENTITIES.name() => copy_table(src, &dst, IDENTITIES)?,
            n if n == SESSIONS.name() => copy_table(src, &dst, SESSIONS)?,
            n if n == ISSUED.name() => copy_table(src, &dst, ISSUED)?,
            n if n == REVOKED.name() => copy_table(src, &dst, REVOKED)?,
            other => return Err(unknown(other)),
        };
    }
    dst.commit()?;
    drop(copy);
    // redb's durable commit synced the data; sync the directory entry too.
    if let Some(dir) = dest.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(rows)
}

fn unknown(table: &str) -> StorageError {
    StorageError::Corrupt {
        table: "backup",
        key: table.to_owned(),
        reason: "is a table this kmsd does not know; refusing a backup that would leave it out".into(),
    }
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StorageError> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    let mut rows = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        rows += 1;
    }
    Ok(rows)
}

/// Checks a backup file before it is restored, without writing to it: its
/// schema, every record MAC under `mac` (so the KEK that unlocked its data
/// key is the right one), and the audit chain. Returns the audit entries
/// verified.
pub fn verify_backup(path: &Path, mac: &RecordKey) -> Result<u64, StorageError> {
    Store::inspect(path, mac, |r| {
        super::integrity::check(r)?;
        r.audit_intact()
    })
}
