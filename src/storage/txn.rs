//! The typed views of one transaction: [`Reader`] (a read transaction, and
//! the reading side of a write one) with the record key that seals and
//! checks authenticated records; the writing side is in `writer`. Identity,
//! session and token tables are in `tokens`; everything else is here.

use redb::ReadableTable;

use super::postgres::engine::PgTxn;
use super::{
    integrity, is_bare_meta, table, MetaValue, Record, RecordKey, Sealed, StorageError, Table, API_KEY_HASHES, AUDIT,
};
use crate::api_keys::ApiKeyRecord;
use crate::audit::{AuditEntry, ChainError};
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
