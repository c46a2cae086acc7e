//! The typed views of one transaction: [`Reader`] (a read transaction) and
//! [`Writer`] (a write transaction), each with the record key that seals and
//! checks authenticated records. Identity, session and token tables are in
//! `tokens`; everything else is here.

use std::ops::Deref;

use redb::ReadableTable;
use tokio_postgres::types::ToSql;

use super::postgres::engine::PgTxn;
use super::postgres::feed::ChangeKind;
use super::{
    integrity, is_bare_meta, table, MetaValue, Record, RecordKey, Sealed, StorageError, Table, API_KEY_HASHES, AUDIT,
};
use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::audit::{AuditEntry, AuditEvent, ChainError, Link};
use crate::keys::{KeyRecord, Kid};

/// Stored audit rows: sequence number and decoded entry (or why it did not decode).
pub type AuditRows = Vec<(u64, Result<AuditEntry, StorageError>)>;

/// One transaction of either engine. Everything above this type (records,
/// MACs, the audit chain) is the same for both; only the rows differ.
pub(super) enum Txn {
    Read(redb::ReadTransaction),
    /// Boxed: a redb write transaction is several times larger than the others.
    Write(Box<redb::WriteTransaction>),
    Pg(PgTxn),
}

/// `sql` with PostgreSQL's bytewise text order (redb's key order).
const C: &str = "COLLATE \"C\"";

impl Txn {
    /// The stored bytes of `key` in `t`.
    pub(super) fn get(&self, t: &Table, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        fn get_in(
            table: &impl ReadableTable<&'static str, &'static [u8]>,
            key: &str,
        ) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(table.get(key)?.map(|g| g.value().to_vec()))
        }
        match self {
            Txn::Read(x) => get_in(&x.open_table(t.redb)?, key),
            Txn::Write(x) => get_in(&x.open_table(t.redb)?, key),
            Txn::Pg(p) => {
                let sql = format!("SELECT {} FROM {} WHERE {} = $1", t.value, t.name, t.key);
                Ok(p.query(&sql, &[&key])?.first().map(|r| r.get(0)))
            }
        }
    }

    /// Every row of `t`, in key order.
    pub(super) fn scan(&self, t: &Table) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        fn scan_in(
            table: &impl ReadableTable<&'static str, &'static [u8]>,
        ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        }
        match self {
            Txn::Read(x) => scan_in(&x.open_table(t.redb)?),
            Txn::Write(x) => scan_in(&x.open_table(t.redb)?),
            Txn::Pg(p) => {
                p.records(&format!("SELECT {k}, {} FROM {} ORDER BY {k} {C}", t.value, t.name, k = t.key), &[])
            }
        }
    }

    /// The redb read transaction, for code that only redb has (the checks
    /// before open, the upgrade to record MACs).
    pub(super) fn redb_read(&self) -> Result<&redb::ReadTransaction, StorageError> {
        match self {
            Txn::Read(x) => Ok(x),
            _ => Err(StorageError::Engine("a redb read transaction was expected".into())),
        }
    }

    pub(super) fn redb_write(&self) -> Result<&redb::WriteTransaction, StorageError> {
        match self {
            Txn::Write(x) => Ok(x),
            _ => Err(StorageError::Engine("a redb write transaction was expected".into())),
        }
    }
}

/// Decodes `(key, bytes)` rows of records.
fn decode_all<R>(
    rows: Vec<(String, Vec<u8>)>,
    decode: impl Fn(&str, &[u8]) -> Result<R, StorageError>,
) -> Result<Vec<R>, StorageError> {
    rows.iter().map(|(k, v)| decode(k, v)).collect()
}

/// A read transaction, or the reading side of a [`Writer`] (which sees its
/// own writes).
pub struct Reader {
    pub(super) txn: Txn,
    pub(super) mac: RecordKey,
}

/// An API key looked up through its hash: the index entry must lead to a
/// record for that very hash (the index has no MAC of its own).
pub(super) fn check_indexed(hash: &str, record: ApiKeyRecord) -> Result<ApiKeyRecord, StorageError> {
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
    /// A meta value: bare, or sealed (MAC checked).
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(bytes) = self.txn.get(&table::META, key)? else { return Ok(None) };
        if is_bare_meta(key) {
            return Ok(Some(bytes));
        }
        Ok(Some(MetaValue::decode(&self.mac, "meta", key, &bytes)?.value.into_bytes()))
    }

    /// Who holds the lease `name` now, and in which epoch (PostgreSQL; an
    /// embedded store has no leases).
    pub fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StorageError> {
        let Txn::Pg(p) = &self.txn else { return Ok(None) };
        p.with_client(|c| super::postgres::lease::holder(c, name))
    }

    pub fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        decode_all(self.txn.scan(&table::KEYS)?, |k, v| KeyRecord::decode(&self.mac, "keys", k, v))
    }

    pub fn key(&self, kid: &Kid) -> Result<Option<KeyRecord>, StorageError> {
        let row = self.txn.get(&table::KEYS, kid.as_str())?;
        row.map(|v| KeyRecord::decode(&self.mac, "keys", kid.as_str(), &v)).transpose()
    }

    pub fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        let id = match &self.txn {
            Txn::Pg(p) => p.query("SELECT id FROM api_keys WHERE key_hash = $1", &[&hash])?.first().map(|r| r.get(0)),
            Txn::Read(x) => x.open_table(API_KEY_HASHES)?.get(hash)?.map(|g| g.value().to_owned()),
            Txn::Write(x) => x.open_table(API_KEY_HASHES)?.get(hash)?.map(|g| g.value().to_owned()),
        };
        let Some(id): Option<String> = id else { return Ok(None) };
        self.api_key(&id)?.map(|rec| check_indexed(hash, rec)).transpose()
    }

    pub fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        let row = self.txn.get(&table::API_KEYS, id)?;
        row.map(|v| ApiKeyRecord::decode(&self.mac, "api_keys", id, &v)).transpose()
    }

    /// Up to `limit` keys of `org` with ids after `cursor`, in id order.
    pub fn api_keys_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
        org: &str,
    ) -> Result<Vec<ApiKeyRecord>, StorageError> {
        let decode = |k: &str, v: &[u8]| ApiKeyRecord::decode(&self.mac, "api_keys", k, v);
        if let Txn::Pg(p) = &self.txn {
            let sql =
                format!("SELECT id, record FROM api_keys WHERE org_id = $1 AND id {C} > $2 ORDER BY id {C} LIMIT $3");
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            return decode_all(p.records(&sql, &[&org, &cursor.unwrap_or(""), &limit])?, decode);
        }
        let mut out = Vec::new();
        for (k, v) in self.txn.scan(&table::API_KEYS)? {
            if out.len() == limit {
                break;
            }
            if cursor.is_some_and(|c| k.as_str() <= c) {
                continue;
            }
            let rec = decode(&k, &v)?;
            if rec.org_id.as_str() == org {
                out.push(rec);
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
        fn rows_in(
            table: &impl ReadableTable<u64, &'static [u8]>,
            after: u64,
            limit: usize,
        ) -> Result<AuditRows, StorageError> {
            let mut out = Vec::new();
            for row in table.range(after.saturating_add(1)..)?.take(limit) {
                let (k, v) = row?;
                let seq = k.value();
                out.push((seq, AuditEntry::decode("audit", &seq.to_string(), v.value())));
            }
            Ok(out)
        }
        match &self.txn {
            Txn::Read(x) => rows_in(&x.open_table(AUDIT)?, after, limit),
            Txn::Write(x) => rows_in(&x.open_table(AUDIT)?, after, limit),
            Txn::Pg(p) => {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                p.with_client(|c| super::postgres::audit::rows(c, after, limit))
            }
        }
    }

    /// Recomputes the whole audit chain: plain hashes before the store's
    /// upgrade to keyed hashes, keyed from its upgrade entry on. The outer
    /// error is a store that cannot be read; the inner one names the first
    /// broken entry. Returns how many entries verified.
    pub fn verify_audit(&self) -> Result<Result<u64, ChainError>, StorageError> {
        let keyed_from = integrity::keyed_from(self)?;
        Ok(crate::audit::verify_chain(self.audit_rows(0, usize::MAX)?, keyed_from, &self.mac))
    }

    /// [`verify_audit`](Self::verify_audit), a broken chain being
    /// [`StorageError::Corrupt`] naming its first broken entry.
    pub fn audit_intact(&self) -> Result<u64, StorageError> {
        self.verify_audit()?.map_err(|ChainError::Broken { seq, reason }| StorageError::Corrupt {
            table: "audit",
            key: seq.to_string(),
            reason,
        })
    }
}

pub struct Writer {
    pub(super) r: Reader,
    /// The request this transaction is for, if any: stamped on its audit events.
    pub(super) context: Option<std::sync::Arc<crate::context::RequestContext>>,
    /// Audit events written, logged and observed once the transaction commits.
    pub(super) audited: Vec<AuditEvent>,
    /// What this transaction changed that other replicas cache, announced
    /// on PostgreSQL's change feed as it commits (see [`Writer::changed`]).
    pub(super) changes: Vec<(ChangeKind, String)>,
}

/// A writer reads through its own transaction, seeing its own writes.
impl Deref for Writer {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.r
    }
}

/// Rows per statement of a multi-row [`upsert`] (PostgreSQL takes at most
/// 65535 parameters in one statement).
pub(super) const UPSERT_ROWS: usize = 1000;

/// One row for [`Writer::put_rows`]: its key, its record bytes, and the
/// values of the PostgreSQL index columns beside the record.
pub(super) type RecordRow<'a> = (&'a str, &'a [u8], Vec<&'a (dyn ToSql + Sync)>);

/// Stores `rows` in `table` on PostgreSQL, one statement per [`UPSERT_ROWS`]:
/// each row is the values of `names`, the first of them the primary key (a
/// row whose key is there already is replaced). One statement may not hold
/// one key twice.
pub(super) fn upsert(
    p: &PgTxn,
    table: &str,
    names: &[&str],
    rows: &[Vec<&(dyn ToSql + Sync)>],
) -> Result<(), StorageError> {
    let width = names.len();
    let updates: Vec<String> = names[1..].iter().map(|n| format!("{n} = EXCLUDED.{n}")).collect();
    for chunk in rows.chunks(UPSERT_ROWS) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|r| format!("({})", (1..=width).map(|i| format!("${}", r * width + i)).collect::<Vec<_>>().join(", ")))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
            names.join(", "),
            tuples.join(", "),
            names[0],
            updates.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flatten().copied().collect();
        p.execute(&sql, &params)?;
    }
    Ok(())
}

/// The write side of one transaction, for the engine-specific statements.
pub(super) enum Rows<'a> {
    Redb(&'a redb::WriteTransaction),
    Pg(&'a PgTxn),
}

impl Writer {
    /// Records that this transaction changed something replicas cache: the
    /// writes below call it for every such record (a key, a meta value, an
    /// identity, a revoked API key, session or token), so no caller can
    /// forget to. Only PostgreSQL announces them; redb has one process.
    pub(super) fn changed(&mut self, kind: ChangeKind, id: &str) {
        if matches!(self.r.txn, Txn::Pg(_)) {
            self.changes.push((kind, id.to_owned()));
        }
    }

    pub(super) fn rows(&self) -> Result<Rows<'_>, StorageError> {
        match &self.r.txn {
            Txn::Write(x) => Ok(Rows::Redb(x)),
            Txn::Pg(p) => Ok(Rows::Pg(p)),
            Txn::Read(_) => Err(StorageError::Engine("a write on a read transaction".into())),
        }
    }

    /// Stores `bytes` under `key` in `t`; `columns` are the PostgreSQL
    /// index columns beside the record, after its key and value.
    pub(super) fn put_row(
        &self,
        t: &Table,
        key: &str,
        bytes: &[u8],
        columns: &[(&str, &(dyn ToSql + Sync))],
    ) -> Result<(), StorageError> {
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        self.put_rows(t, &names, &[(key, bytes, columns.iter().map(|c| c.1).collect())])
    }

    /// Stores `rows` in `t`, each with the values of the PostgreSQL index
    /// columns `columns` (on PostgreSQL in one statement per [`UPSERT_ROWS`],
    /// so a key may appear only once).
    pub(super) fn put_rows(&self, t: &Table, columns: &[&str], rows: &[RecordRow<'_>]) -> Result<(), StorageError> {
        match self.rows()? {
            Rows::Redb(x) => {
                let mut table = x.open_table(t.redb)?;
                for (key, bytes, _) in rows {
                    table.insert(*key, *bytes)?;
                }
            }
            Rows::Pg(p) => {
                let names: Vec<&str> = [t.key, t.value].into_iter().chain(columns.iter().copied()).collect();
                let params: Vec<Vec<&(dyn ToSql + Sync)>> = rows
                    .iter()
                    .map(|(key, bytes, values)| {
                        [key as _, bytes as _].into_iter().chain(values.iter().copied()).collect()
                    })
                    .collect();
                upsert(p, t.name, &names, &params)?;
            }
        }
        Ok(())
    }

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
        self.put_row(&table::META, key, &bytes, &[])?;
        self.changed(ChangeKind::Meta, key);
        Ok(())
    }

    /// Stores `value` (as decimal text) under `key` unless a larger one is there.
    pub fn raise_meta_max(&mut self, key: &str, value: i64) -> Result<(), StorageError> {
        let current = self.meta(key)?.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok());
        if current.is_none_or(|c| c < value) {
            self.put_meta(key, value.to_string().as_bytes())?;
            // Read inside write transactions only, never cached: no need to
            // tell the replicas of each new maximum.
            self.changes.retain(|(kind, id)| !(*kind == ChangeKind::Meta && id == key));
        }
        Ok(())
    }

    pub fn put_key(&mut self, record: &KeyRecord) -> Result<(), StorageError> {
        let bytes = record.encode(&self.mac, "keys", record.kid.as_str());
        self.put_row(&table::KEYS, record.kid.as_str(), &bytes, &[("keyset", &record.keyset.as_str())])?;
        self.changed(ChangeKind::Key, record.kid.as_str());
        Ok(())
    }

    pub fn api_key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StorageError> {
        self.r.api_key(id.as_str())
    }

    pub fn put_api_key(&mut self, record: &ApiKeyRecord) -> Result<(), StorageError> {
        let bytes = record.encode(&self.mac, "api_keys", record.id.as_str());
        let (org, hash) = (record.org_id.as_str(), record.key_hash.as_str());
        self.put_row(&table::API_KEYS, record.id.as_str(), &bytes, &[("org_id", &org), ("key_hash", &hash)])?;
        if let Rows::Redb(x) = self.rows()? {
            x.open_table(API_KEY_HASHES)?.insert(record.key_hash.as_str(), record.id.as_str())?;
        }
        // A new key is found in the store on its first use; only a revoked
        // one must leave the other replicas' caches.
        if record.revoked_at.is_some() {
            self.changed(ChangeKind::ApiKey, record.id.as_str());
        }
        Ok(())
    }

    /// Appends `event` to the audit log with a keyed hash, in this transaction.
    pub fn audit(&mut self, event: AuditEvent) -> Result<AuditEntry, StorageError> {
        let event = event.stamped(self.context.as_deref());
        let entry = match self.rows()? {
            Rows::Redb(x) => {
                let mut table = x.open_table(AUDIT)?;
                let prev = match table.last()? {
                    Some((k, v)) => Some(AuditEntry::decode("audit", &k.value().to_string(), v.value())?),
                    None => None,
                };
                let entry = AuditEntry::chain(prev.as_ref(), event, Link::Keyed(&self.mac));
                table.insert(entry.seq, entry.encode().as_slice())?;
                entry
            }
            Rows::Pg(p) => p.with_client(|c| super::postgres::audit::append(c, event, &self.r.mac))?,
        };
        self.audited.push(entry.event.clone());
        Ok(entry)
    }
}
