//! The typed views of one transaction: [`Reader`] (a read transaction) and
//! [`Writer`] (a write transaction), each with the record key that seals and
//! checks authenticated records. Identity, session and token tables are in
//! `tokens`; everything else is here.

use redb::ReadableTable;

use super::{
    integrity, is_bare_meta, MetaValue, Record, RecordKey, Sealed, StorageError, API_KEYS, API_KEY_HASHES, AUDIT, KEYS,
    META,
};
use crate::api_keys::{ApiKeyId, ApiKeyRecord};
use crate::audit::{AuditEntry, AuditEvent, ChainError, Link};
use crate::keys::{KeyRecord, Kid};

/// Stored audit rows: sequence number and decoded entry (or why it did not decode).
pub type AuditRows = Vec<(u64, Result<AuditEntry, StorageError>)>;

pub struct Reader {
    pub(super) txn: redb::ReadTransaction,
    pub(super) mac: RecordKey,
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
            if rec.org_id.as_str() == org {
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
    pub(super) txn: redb::WriteTransaction,
    pub(super) mac: RecordKey,
    /// The request this transaction is for, if any: stamped on its audit events.
    pub(super) context: Option<std::sync::Arc<crate::context::RequestContext>>,
    /// Audit events written, logged and observed once the transaction commits.
    pub(super) audited: Vec<AuditEvent>,
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
        let event = event.stamped(self.context.as_deref());
        let entry = AuditEntry::chain(prev.as_ref(), event, Link::Keyed(&self.mac));
        table.insert(entry.seq, entry.encode().as_slice())?;
        self.audited.push(entry.event.clone());
        Ok(entry)
    }
}
