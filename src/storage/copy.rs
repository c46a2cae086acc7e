//! `kmsd storage copy`: every table of a store, as stored, into an empty
//! store of either engine (redb -> PostgreSQL to move to HA, PostgreSQL ->
//! redb for the way back).
//!
//! Rows keep their bytes: the record MACs (bound to table, key and bytes,
//! under the key derived from the vault data key) and the audit chain verify
//! in the copy as in the source, and the same KEK opens it (the wrapped data
//! key is a meta row like the others). Records are decoded only to fill the
//! PostgreSQL index columns beside them and redb's API-key hash index. The
//! schema version is each engine's own: redb's meta row is written by
//! [`Store::create`], PostgreSQL's is `kmsd_schema`.
//!
//! Invariants: the source is read in one transaction (one snapshot) whose
//! audit chain verified first. A PostgreSQL target is migrated, found
//! empty, written and verified in one transaction under the writer lock, and
//! committed only once it verified: a failure leaves nothing behind. A redb
//! target is written to the path the caller gives (a staging name, which
//! the caller puts in place or removes) and verified by opening it afresh.
//! Verified means: every record MAC checks under the source's record key,
//! the audit chain verifies with as many entries as the source's, and every
//! row of every table equals the source's.
//!
//! Not here: making sure no daemon writes the source meanwhile (the caller
//! checks redb's file lock and the PostgreSQL leader lease before opening
//! it), and the staging of a redb target. The whole snapshot is held in
//! memory, so a copy needs about twice the store's size in RAM.

use std::fmt::Display;
use std::path::PathBuf;

use redb::{MultimapTableHandle, ReadableTable, ReadableTableMetadata, TableHandle};
use tokio_postgres::types::ToSql;

use super::postgres::engine::PgEngine;
use super::postgres::migrate::TABLES;
use super::postgres::pool::Pool;
use super::txn::Txn;
use super::writer::{upsert, RecordRow, Rows};
use super::{
    integrity, table, Backend, Reader, Record, RecordKey, Sealed, StorageError, Store, Table, Writer, API_KEYS,
    API_KEY_HASHES, AUDIT, IDENTITIES, ISSUED, KEYS, META, META_SCHEMA, REVOKED, SESSIONS,
};
use crate::api_keys::ApiKeyRecord;
use crate::identities::IdentityRecord;
use crate::keys::KeyRecord;
use crate::tokens::{IssuedToken, SessionRecord};

/// Where a copy goes.
pub enum CopyTarget {
    /// A new redb file at this path (it must not exist).
    Redb(PathBuf),
    /// An empty PostgreSQL database (no kmsd schema, or one with no rows).
    Postgres(Pool),
}

/// What a copy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Rows per table: meta (without the schema version), keys, api_keys,
    /// identities, sessions, issued_tokens, revoked_tokens, audit.
    pub tables: Vec<(&'static str, usize)>,
    /// Audit entries verified in the source, and again in the copy.
    pub audit_entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source store: {0}")]
    Source(StorageError),
    #[error("target: {0}")]
    Target(#[from] StorageError),
    #[error("the target database is not empty (table {table} has rows); storage copy writes only into an empty one")]
    NotEmpty { table: &'static str },
    #[error("the copy does not match the source: table {table}: {reason}")]
    Mismatch { table: &'static str, reason: String },
}

type Stored = Vec<(String, Vec<u8>)>;

/// Every row of a store as stored, each table in key order.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Every meta row but the schema version (each engine has its own).
    meta: Stored,
    keys: Stored,
    api_keys: Stored,
    identities: Stored,
    sessions: Stored,
    issued: Stored,
    revoked: Vec<(String, i64)>,
    audit: Vec<(u64, Vec<u8>)>,
}

impl Snapshot {
    fn read(r: &Reader) -> Result<Self, StorageError> {
        if let Txn::Read(txn) = &r.txn {
            known_tables_only(txn)?;
        }
        let mut meta = r.txn.scan(&table::META)?;
        meta.retain(|(k, _)| k != META_SCHEMA);
        let audit = match &r.txn {
            Txn::Read(x) => stored_audit(&x.open_table(AUDIT)?)?,
            Txn::Write(x) => stored_audit(&x.open_table(AUDIT)?)?,
            Txn::Pg(p) => {
                let rows = p.query("SELECT seq, entry FROM audit ORDER BY seq", &[])?;
                rows.iter().map(|row| (u64::try_from(row.get::<_, i64>(0)).unwrap_or_default(), row.get(1))).collect()
            }
        };
        Ok(Self {
            meta,
            keys: r.txn.scan(&table::KEYS)?,
            api_keys: r.txn.scan(&table::API_KEYS)?,
            identities: r.txn.scan(&table::IDENTITIES)?,
            sessions: r.txn.scan(&table::SESSIONS)?,
            issued: r.txn.scan(&table::ISSUED)?,
            revoked: r.revoked_jtis()?,
            audit,
        })
    }

    fn counts(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("meta", self.meta.len()),
            ("keys", self.keys.len()),
            ("api_keys", self.api_keys.len()),
            ("identities", self.identities.len()),
            ("sessions", self.sessions.len()),
            ("issued_tokens", self.issued.len()),
            ("revoked_tokens", self.revoked.len()),
            ("audit", self.audit.len()),
        ]
    }

    /// Every table of `copy` holds exactly the rows of this one.
    fn check_copy(&self, copy: &Snapshot) -> Result<(), CopyError> {
        same("meta", &self.meta, &copy.meta)?;
        same("keys", &self.keys, &copy.keys)?;
        same("api_keys", &self.api_keys, &copy.api_keys)?;
        same("identities", &self.identities, &copy.identities)?;
        same("sessions", &self.sessions, &copy.sessions)?;
        same("issued_tokens", &self.issued, &copy.issued)?;
        same("revoked_tokens", &self.revoked, &copy.revoked)?;
        same("audit", &self.audit, &copy.audit)
    }

    /// Writes every row into the empty store of `w`.
    fn put_all(&self, w: &mut Writer) -> Result<(), StorageError> {
        let mac = w.mac.clone();
        put_table(w, &table::META, &[], &self.meta, |_, _| Ok(Vec::new()))?;
        put_table(w, &table::KEYS, &["keyset"], &self.keys, |k, v| {
            Ok(vec![Box::new(KeyRecord::decode(&mac, "keys", k, v)?.keyset.as_str().to_owned())])
        })?;
        put_table(w, &table::API_KEYS, &["org_id", "key_hash"], &self.api_keys, |k, v| {
            let rec = ApiKeyRecord::decode(&mac, "api_keys", k, v)?;
            Ok(vec![Box::new(rec.org_id.as_str().to_owned()), Box::new(rec.key_hash)])
        })?;
        put_table(w, &table::IDENTITIES, &["org_id", "name"], &self.identities, |k, v| {
            let rec = IdentityRecord::decode(&mac, "identities", k, v)?;
            Ok(vec![Box::new(rec.org_id.as_str().to_owned()), Box::new(rec.name)])
        })?;
        put_table(w, &table::SESSIONS, &["identity_id", "expires_at", "revoked"], &self.sessions, |k, v| {
            let rec = SessionRecord::decode("sessions", k, v)?;
            let identity = rec.identity_id.as_str().to_owned();
            Ok(vec![Box::new(identity), Box::new(rec.expires_at.unix()), Box::new(rec.revoked_at.is_some())])
        })?;
        put_table(w, &table::ISSUED, &["sid", "exp"], &self.issued, |k, v| {
            let rec = IssuedToken::decode("issued_tokens", k, v)?;
            Ok(vec![Box::new(rec.sid.as_str().to_owned()), Box::new(rec.exp.unix())])
        })?;
        match w.rows()? {
            Rows::Redb(x) => {
                let mut hashes = x.open_table(API_KEY_HASHES)?;
                for (k, v) in &self.api_keys {
                    hashes.insert(ApiKeyRecord::decode(&mac, "api_keys", k, v)?.key_hash.as_str(), k.as_str())?;
                }
                let mut revoked = x.open_table(REVOKED)?;
                for (jti, exp) in &self.revoked {
                    revoked.insert(jti.as_str(), *exp)?;
                }
                let mut audit = x.open_table(AUDIT)?;
                for (seq, entry) in &self.audit {
                    audit.insert(*seq, entry.as_slice())?;
                }
            }
            Rows::Pg(p) => {
                let rows: Vec<Vec<&(dyn ToSql + Sync)>> =
                    self.revoked.iter().map(|(jti, exp)| vec![jti as &(dyn ToSql + Sync), exp]).collect();
                upsert(p, "revoked_tokens", &["jti", "exp"], &rows)?;
                let seqs = self.audit.iter().map(|(seq, _)| pg_seq(*seq)).collect::<Result<Vec<_>, _>>()?;
                let rows: Vec<Vec<&(dyn ToSql + Sync)>> =
                    seqs.iter().zip(&self.audit).map(|(seq, (_, entry))| vec![seq as _, entry as _]).collect();
                upsert(p, "audit", &["seq", "entry"], &rows)?;
                let head = seqs.last().copied().unwrap_or(0);
                p.execute("UPDATE audit_head SET seq = $1 WHERE id = 1", &[&head])?;
            }
        }
        Ok(())
    }
}

/// Index column values of one record, for [`put_table`].
type Values = Vec<Box<dyn ToSql + Sync>>;

/// Writes `rows` into `t`, each with the values of `columns` that
/// `values(key, bytes)` takes from its record.
fn put_table(
    w: &Writer,
    t: &Table,
    columns: &[&str],
    rows: &Stored,
    values: impl Fn(&str, &[u8]) -> Result<Values, StorageError>,
) -> Result<(), StorageError> {
    let values: Vec<Values> = rows.iter().map(|(k, v)| values(k, v)).collect::<Result<_, _>>()?;
    let batch: Vec<RecordRow<'_>> = rows
        .iter()
        .zip(&values)
        .map(|((k, v), vals)| (k.as_str(), v.as_slice(), vals.iter().map(|b| b.as_ref()).collect()))
        .collect();
    w.put_rows(t, columns, &batch)
}

fn pg_seq(seq: u64) -> Result<i64, StorageError> {
    i64::try_from(seq).map_err(|_| StorageError::Corrupt {
        table: "audit",
        key: seq.to_string(),
        reason: "is past PostgreSQL's bigint".into(),
    })
}

fn stored_audit(t: &impl ReadableTable<u64, &'static [u8]>) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        out.push((k.value(), v.value().to_vec()));
    }
    Ok(out)
}

/// A redb table this kmsd does not know would be left out of the copy:
/// refused, never a silent gap.
fn known_tables_only(txn: &redb::ReadTransaction) -> Result<(), StorageError> {
    let known = [
        META.name(),
        KEYS.name(),
        API_KEYS.name(),
        API_KEY_HASHES.name(),
        AUDIT.name(),
        IDENTITIES.name(),
        SESSIONS.name(),
        ISSUED.name(),
        REVOKED.name(),
    ];
    let multimap = txn.list_multimap_tables()?.next().map(|t| t.name().to_owned());
    let unknown = txn.list_tables()?.map(|t| t.name().to_owned()).find(|n| !known.contains(&n.as_str()));
    match multimap.or(unknown) {
        Some(name) => Err(StorageError::Corrupt {
            table: "store",
            key: name,
            reason: "is a table this kmsd does not know; refusing a copy that would leave it out".into(),
        }),
        None => Ok(()),
    }
}

fn same<K: PartialEq + Display, V: PartialEq>(
    table: &'static str,
    source: &[(K, V)],
    copy: &[(K, V)],
) -> Result<(), CopyError> {
    if source.len() != copy.len() {
        let reason = format!("{} rows in the copy, {} in the source", copy.len(), source.len());
        return Err(CopyError::Mismatch { table, reason });
    }
    match source.iter().zip(copy).find(|(a, b)| a != b) {
        Some(((key, _), _)) => Err(CopyError::Mismatch { table, reason: format!("row {key} differs") }),
        None => Ok(()),
    }
}

/// Refuses a PostgreSQL target that holds any row (checked inside the
/// copy's transaction, under the writer lock).
fn refuse_non_empty(w: &Writer) -> Result<(), CopyError> {
    let Rows::Pg(p) = w.rows()? else { return Ok(()) };
    // `audit_head` always has its row: it must point at no entry.
    for &table in TABLES.iter().filter(|&&t| t != "audit_head") {
        if !p.query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])?.is_empty() {
            return Err(CopyError::NotEmpty { table });
        }
    }
    let head: i64 = p.query("SELECT seq FROM audit_head WHERE id = 1", &[])?.first().map_or(0, |r| r.get(0));
    if head != 0 {
        return Err(CopyError::NotEmpty { table: "audit_head" });
    }
    Ok(())
}

/// The audit chain and the rows of the copy are the source's (its record
/// MACs are checked by the caller, as each engine checks them at open).
fn check_target(r: &Reader, source: &Snapshot, entries: u64) -> Result<(), CopyError> {
    let verified = r.audit_intact()?;
    if verified != entries {
        let reason = format!("{verified} entries verify in the copy, {entries} in the source");
        return Err(CopyError::Mismatch { table: "audit", reason });
    }
    source.check_copy(&Snapshot::read(r)?)
}

impl Store {
    /// Copies every table of this store into `target` (see the module
    /// comment), after its audit chain verified; returns what was copied.
    pub async fn copy_to(&self, target: CopyTarget) -> Result<Copied, CopyError> {
        let (source, entries) = self
            .read(|r| {
                let entries = r.audit_intact()?;
                Ok((Snapshot::read(r)?, entries))
            })
            .await
            .map_err(CopyError::Source)?;
        let copied = Copied { tables: source.counts(), audit_entries: entries };
        let mac = self.mac.clone();
        match target {
            CopyTarget::Postgres(pool) => {
                let target = Self::with_engine(Backend::Pg(PgEngine::new(pool)), mac);
                target
                    .write(move |w| {
                        let Rows::Pg(p) = w.rows()? else {
                            return Err(StorageError::Engine("a PostgreSQL transaction was expected".into()).into());
                        };
                        p.with_client(super::postgres::migrate::apply)?;
                        refuse_non_empty(w)?;
                        source.put_all(w)?;
                        // What `Store::postgres` checks at open.
                        integrity::check_all(w)?;
                        check_target(w, &source, entries)
                    })
                    .await?;
            }
            CopyTarget::Redb(path) => {
                tokio::task::spawn_blocking(move || copy_to_redb(&path, mac, &source, entries))
                    .await
                    .map_err(|e| StorageError::Join(e.to_string()))??;
            }
        }
        Ok(copied)
    }
}

/// Creates the store at `path`, writes `source` into it in one
/// transaction, closes it, and checks it as it opens afresh (page
/// checksums, schema, every record MAC: what `Store::open` checks).
fn copy_to_redb(path: &std::path::Path, mac: RecordKey, source: &Snapshot, entries: u64) -> Result<(), CopyError> {
    let store = Store::create(path, mac.clone())?;
    store.write_now(|w| source.put_all(w))?;
    drop(store);
    Store::inspect(path, &mac, |r| {
        if integrity::check(r)? {
            return Err(StorageError::Engine("the new store has no record-MAC marker".into()));
        }
        let indexed = r.txn.redb_read()?.open_table(API_KEY_HASHES)?.len()?;
        if indexed != source.api_keys.len() as u64 {
            let reason = format!("{indexed} hashes indexed, {} API keys", source.api_keys.len());
            return Ok(Err(CopyError::Mismatch { table: "api_key_hashes", reason }));
        }
        Ok(check_target(r, source, entries))
    })?
}

#[cfg(test)]
mod tests;
