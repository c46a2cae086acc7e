//! [`Writer`]: the writing side of one write transaction (it reads through
//! its [`Reader`]): the rows of either engine, the audit append, and the
//! record of what the transaction changed for the other replicas.

use std::ops::Deref;

use redb::ReadableTable;
use tokio_postgres::types::ToSql;

use super::postgres::engine::PgTxn;
use super::postgres::feed::ChangeKind;
use super::txn::Txn;
use super::{is_bare_meta, table, MetaValue, Reader, Record, Sealed, StorageError, Table, API_KEY_HASHES, AUDIT};
use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::audit::{AuditEntry, AuditEvent, Link};
use crate::keys::KeyRecord;

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
    /// must be UTF-8 text. Replicas are told (it may be a value they cache).
    pub fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.store_meta(key, value)?;
        self.changed(ChangeKind::Meta, key);
        Ok(())
    }

    /// [`put_meta`](Self::put_meta) without telling the replicas.
    fn store_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let bytes = if is_bare_meta(key) {
            value.to_vec()
        } else {
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| StorageError::Unencodable { key: key.into(), reason: "value is not UTF-8".into() })?;
            MetaValue { value }.encode(&self.mac, "meta", key)
        };
        self.put_row(&table::META, key, &bytes, &[])
    }

    /// Stores `value` (as decimal text) under `key` unless a larger one is
    /// there. Read inside write transactions only, never cached: replicas
    /// are not told of each new maximum.
    pub fn raise_meta_max(&mut self, key: &str, value: i64) -> Result<(), StorageError> {
        let current = self.meta(key)?.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok());
        if current.is_none_or(|c| c < value) {
            self.store_meta(key, value.to_string().as_bytes())?;
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
