//! The store's integrity at open: every authenticated record verifies, or the
//! store does not open. A store written before record MACs (format 1 records,
//! bare meta values, plain audit hashes) is upgraded first, in one write
//! transaction: every record is sealed, the `record_macs` marker (itself
//! sealed) records where the keyed audit chain starts, and the upgrade is
//! audited as `store.upgrade`, the first entry with a keyed hash.
//!
//! Once the marker exists, a record without a MAC is corruption: a record
//! cannot be downgraded to its unauthenticated format. A store that has MACs
//! or keyed audit hashes but no marker (the marker was deleted to get forged
//! records re-sealed) is refused, not upgraded. What this cannot catch is a
//! file rewritten wholesale into a consistent pre-upgrade store (every MAC
//! stripped, the keyed audit entries dropped): that is a rollback to an
//! unauthenticated store, like restoring an old backup.

use redb::{ReadableTable, TableDefinition};

use super::records::{has_mac, MAC_WITHOUT_MARKER};
use super::txn::Txn;
use super::{
    check_schema, is_bare_meta, table, Reader, Record, RecordKey, Sealed, StorageError, Writer, API_KEYS,
    API_KEY_HASHES, AUDIT, IDENTITIES, KEYS, META, META_RECORD_MACS, META_SCHEMA,
};
use crate::api_keys::ApiKeyRecord;
use crate::audit::{AuditAction, AuditEntry, AuditEvent, Link};
use crate::clock::Timestamp;
use crate::identities::IdentityRecord;
use crate::keys::KeyRecord;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// Checks, before the store is opened for writing (so that a refusal leaves
/// the file as it was), that every authenticated record verifies, or, for a
/// store from before record MACs, that it can be upgraded. Returns whether
/// it needs the upgrade.
pub(super) fn check(r: &Reader) -> Result<bool, StorageError> {
    let mac = &r.mac;
    r.txn.redb_read()?.open_table(META).map_err(super::open::no_meta)?;
    check_schema(r.meta(META_SCHEMA)?)?;
    if r.meta(META_RECORD_MACS)?.is_some() {
        check_all(r)?;
        return Ok(false);
    }
    unsealed::<KeyRecord>(&r.txn.redb_read()?.open_table(KEYS)?, "keys")?;
    unsealed::<IdentityRecord>(&r.txn.redb_read()?.open_table(IDENTITIES)?, "identities")?;
    unsealed::<ApiKeyRecord>(&r.txn.redb_read()?.open_table(API_KEYS)?, "api_keys")?;
    unsealed_meta(&r.txn.redb_read()?.open_table(META)?)?;
    plain_audit(&r.txn.redb_read()?.open_table(AUDIT)?, mac)?;
    Ok(true)
}

/// Seals every record of a store written before MACs, audited as
/// `store.upgrade`; returns how many records it sealed.
pub(super) fn upgrade(w: &mut Writer, now: Timestamp) -> Result<usize, StorageError> {
    let keys = reseal::<KeyRecord>(w, KEYS, "keys")?;
    let identities = reseal::<IdentityRecord>(w, IDENTITIES, "identities")?;
    let api_keys = reseal::<ApiKeyRecord>(w, API_KEYS, "api_keys")?;
    let values = unsealed_meta(&w.r.txn.redb_write()?.open_table(META)?)?;
    for (key, value) in &values {
        w.put_meta(key, value.as_bytes())?;
    }
    let keyed_from = plain_audit(&w.r.txn.redb_write()?.open_table(AUDIT)?, &w.mac)?;
    w.put_meta(META_RECORD_MACS, keyed_from.to_string().as_bytes())?;
    let event = AuditEvent::new(now, "system", AuditAction::StoreUpgrade).target("store").detail(serde_json::json!({
        "recordMacs": { "keys": keys, "identities": identities, "apiKeys": api_keys, "meta": values.len() },
        "auditKeyedFrom": keyed_from,
    }));
    w.audit(event)?;
    Ok(keys + identities + api_keys + values.len())
}

/// The first audit entry with a keyed hash (`None` for a store not yet upgraded).
pub(super) fn keyed_from(r: &Reader) -> Result<Option<u64>, StorageError> {
    let Some(value) = r.meta(META_RECORD_MACS)? else { return Ok(None) };
    let from = std::str::from_utf8(&value).ok().and_then(|v| v.parse().ok());
    from.map(Some).ok_or_else(|| StorageError::Corrupt {
        table: "meta",
        key: META_RECORD_MACS.into(),
        reason: "is not a sequence number".into(),
    })
}

/// Every authenticated record verifies under the store's key (either engine).
pub(super) fn check_all(r: &Reader) -> Result<(), StorageError> {
    check_table::<KeyRecord>(r, &table::KEYS)?;
    check_table::<IdentityRecord>(r, &table::IDENTITIES)?;
    check_table::<ApiKeyRecord>(r, &table::API_KEYS)?;
    // PostgreSQL keeps the hash in the record's own row, checked on lookup.
    if let Txn::Read(txn) = &r.txn {
        for row in txn.open_table(API_KEY_HASHES)?.iter()? {
            let (hash, id) = row?;
            let record = r.api_key(id.value())?.ok_or_else(|| StorageError::Corrupt {
                table: "api_key_hashes",
                key: id.value().to_owned(),
                reason: "an index entry leads to an API key that does not exist".into(),
            })?;
            super::txn::check_indexed(hash.value(), record)?;
        }
    }
    for (key, _) in r.txn.scan(&table::META)? {
        r.meta(&key)?;
    }
    Ok(())
}

fn check_table<R: Sealed>(r: &Reader, t: &super::Table) -> Result<(), StorageError> {
    for (k, v) in r.txn.scan(t)? {
        R::decode(&r.mac, t.name, &k, &v)?;
    }
    Ok(())
}

/// Every record of `table` read in the format before MACs.
fn unsealed<R: Sealed>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
) -> Result<Vec<(String, R)>, StorageError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_owned(), R::decode_unsealed(name, k.value(), v.value())?));
    }
    Ok(out)
}

/// Rewrites every format-1 record of `table` in the sealed format.
fn reseal<R: Sealed>(w: &mut Writer, table: Table, name: &'static str) -> Result<usize, StorageError> {
    let mut t = w.r.txn.redb_write()?.open_table(table)?;
    let records = unsealed::<R>(&t, name)?;
    for (k, record) in &records {
        t.insert(k.as_str(), record.encode(&w.mac, name, k).as_slice())?;
    }
    Ok(records.len())
}

/// Every meta value that is not bare, as format 1 stored it (the value itself).
fn unsealed_meta(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, String)>, StorageError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let key = k.value().to_owned();
        if is_bare_meta(&key) {
            continue;
        }
        let corrupt = |reason: &str| StorageError::Corrupt { table: "meta", key: key.clone(), reason: reason.into() };
        if has_mac(v.value()) {
            return Err(corrupt(MAC_WITHOUT_MARKER));
        }
        let value = String::from_utf8(v.value().to_vec()).map_err(|_| corrupt("is not UTF-8 text"))?;
        out.push((key, value));
    }
    Ok(out)
}

/// The sequence number the keyed chain starts at, after checking that no
/// entry already has a keyed hash (which only an upgraded store writes).
fn plain_audit(table: &impl ReadableTable<u64, &'static [u8]>, mac: &RecordKey) -> Result<u64, StorageError> {
    let mut prev: Option<AuditEntry> = None;
    for row in table.iter()? {
        let (k, v) = row?;
        let seq = k.value().to_string();
        let entry = AuditEntry::decode("audit", &seq, v.value())?;
        if entry.is_intact_after(prev.as_ref(), Link::Keyed(mac)) {
            return Err(StorageError::Corrupt {
                table: "audit",
                key: seq,
                reason: "has a keyed hash, but the store has no record-MAC marker (the marker was removed)".into(),
            });
        }
        prev = Some(entry);
    }
    Ok(prev.map_or(1, |p| p.seq + 1))
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;
    use crate::storage::records::tests::{
        api_key_record, identity_record, identity_v1, key_record, zero_key, AK, API_V1, KEY_V1, KID,
    };
    use crate::storage::Store;

    const MIGRATION: &str = r#"{"phase":"asymmetric","started_at":1,"cutover_at":2,"sunset_at":null}"#;

    fn raw_put(path: &std::path::Path, table: Table, key: &str, bytes: &[u8]) {
        let db = Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert(key, bytes).unwrap();
        txn.commit().unwrap();
    }

    fn raw_get(path: &std::path::Path, table: Table, key: &str) -> Vec<u8> {
        let db = Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(table).unwrap();
        let row = t.get(key).unwrap().unwrap();
        row.value().to_vec()
    }

    fn sha(path: &std::path::Path) -> String {
        crate::encoding::sha256_hex(&std::fs::read(path).unwrap())
    }

    fn open(path: &std::path::Path) -> Result<Store, StorageError> {
        Store::open(path, 1 << 20, zero_key(), Timestamp::from_unix(1000))
    }

    /// A store as kmsd wrote it before record MACs: format 1 records, bare
    /// meta values, and a plain-SHA-256 audit chain of two entries.
    fn v1_store(path: &std::path::Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", b"1".as_slice()).unwrap();
            meta.insert("vault_data_key", br#"{"v":2,"kek":"file"}"#.as_slice()).unwrap();
            meta.insert("hs256_migration", MIGRATION.as_bytes()).unwrap();
            meta.insert("hs256_max_exp", b"1700000000".as_slice()).unwrap();
            meta.insert("rotation_paused", b"1".as_slice()).unwrap();
            txn.open_table(KEYS).unwrap().insert(KID, KEY_V1.as_bytes()).unwrap();
            txn.open_table(API_KEYS).unwrap().insert(AK, API_V1.as_bytes()).unwrap();
            txn.open_table(API_KEY_HASHES).unwrap().insert("ab".repeat(32).as_str(), AK).unwrap();
            txn.open_table(IDENTITIES).unwrap().insert("agent_1", identity_v1().as_bytes()).unwrap();
            let mut audit = txn.open_table(AUDIT).unwrap();
            let first = AuditEntry::chain(
                None,
                AuditEvent::new(Timestamp::from_unix(1), "system", AuditAction::VaultInit),
                Link::Sha256,
            );
            let second = AuditEntry::chain(
                Some(&first),
                AuditEvent::new(Timestamp::from_unix(2), "cli", AuditAction::ApiKeyCreate),
                Link::Sha256,
            );
            audit.insert(1, first.encode().as_slice()).unwrap();
            audit.insert(2, second.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_store_from_before_record_macs_is_upgraded_once_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.redb");
        v1_store(&path);
        let store = open(&path).unwrap();
        let check = |store: &Store| {
            store
                .read_now(|r| {
                    assert_eq!(r.keys()?, vec![key_record()], "the kid and its record survive");
                    assert_eq!(r.api_key_by_hash(&"ab".repeat(32))?, Some(api_key_record()));
                    assert_eq!(r.identities()?, vec![identity_record()]);
                    assert_eq!(r.meta("hs256_migration")?.unwrap(), MIGRATION.as_bytes());
                    assert_eq!(r.meta("hs256_max_exp")?.unwrap(), b"1700000000");
                    assert_eq!(r.meta("rotation_paused")?.unwrap(), b"1");
                    assert_eq!(r.meta("vault_data_key")?.unwrap(), br#"{"v":2,"kek":"file"}"#, "bare, as before");
                    r.audit(0, 100)
                })
                .unwrap()
        };
        let audit = check(&store);
        assert_eq!(audit.len(), 3);
        assert_eq!((audit[2].seq, audit[2].event.action.as_str()), (3, "store.upgrade"));
        assert_eq!(
            audit[2].event.detail["recordMacs"],
            serde_json::json!({"keys":1,"identities":1,"apiKeys":1,"meta":3})
        );
        assert_eq!(store.read_now(|r| r.verify_audit()).unwrap(), Ok(3), "plain entries 1-2, keyed from 3");
        drop(store);
        assert!(has_mac(&raw_get(&path, API_KEYS, AK)), "stored sealed");

        // A second open checks, and does not upgrade again.
        let store = open(&path).unwrap();
        assert_eq!(check(&store).len(), 3);
        drop(store);

        // Once upgraded, a record in the old format is corruption, not a record to re-seal.
        raw_put(&path, API_KEYS, AK, API_V1.as_bytes());
        let err = open(&path).err().unwrap().to_string();
        assert!(err.contains(&format!("table api_keys, record {AK}: has no MAC")), "{err}");
    }

    #[test]
    fn removing_the_marker_does_not_get_forged_records_resealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.redb");
        v1_store(&path);
        drop(open(&path).unwrap());
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove(META_RECORD_MACS).unwrap();
        txn.commit().unwrap();
        drop(db);
        let before = sha(&path);
        let err = open(&path).err().unwrap().to_string();
        assert!(err.contains("record-MAC marker"), "{err}");
        assert_eq!(sha(&path), before, "the refused upgrade wrote nothing");
    }

    /// A store with one record of each authenticated kind, written by kmsd.
    fn sealed_store(path: &std::path::Path) {
        let store = Store::create(path, zero_key()).unwrap();
        store
            .write_now(|w| {
                w.put_key(&key_record())?;
                w.put_api_key(&api_key_record())?;
                let mut other = api_key_record();
                other.id = crate::api_keys::ApiKeyId::parse("ak_ffffffffffffffffffffffffffffffff").unwrap();
                other.scopes = vec!["relayauth:token:read:*".into()];
                other.key_hash = "cd".repeat(32);
                w.put_api_key(&other)?;
                w.put_identity(&identity_record())?;
                w.put_meta("hs256_migration", MIGRATION.as_bytes())?;
                w.put_meta("hs256_max_exp", b"1700000000")?;
                w.put_meta("rotation_paused", b"0")?;
                Ok::<_, StorageError>(())
            })
            .unwrap();
    }

    #[test]
    fn an_in_place_edit_of_any_authenticated_record_stops_the_open_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.redb");
        sealed_store(&path);
        drop(open(&path).unwrap());
        let edits: [(Table, &str, &str, &str, &str); 6] = [
            (
                API_KEYS,
                "api_keys",
                "ak_ffffffffffffffffffffffffffffffff",
                r#"["relayauth:token:read:*"]"#,
                r#"["*:*:*:*"              ]"#,
            ),
            (IDENTITIES, "identities", "agent_1", r#""status":"active""#, r#""status":"retired""#),
            (KEYS, "keys", KID, r#""removed_at":500"#, r#""removed_at":900"#),
            (META, "meta", "hs256_migration", r#"\"phase\":\"asymmetric\""#, r#"\"phase\":\"hs256\"     "#),
            (META, "meta", "hs256_max_exp", "1700000000", "1000000000"),
            (META, "meta", "rotation_paused", r#""value":"0""#, r#""value":"1""#),
        ];
        for (table, name, key, from, to) in edits {
            let original = raw_get(&path, table, key);
            let text = String::from_utf8(original.clone()).unwrap();
            assert!(text.contains(from), "{name}/{key}: {text}");
            let edited = text.replacen(from, to, 1);
            if from.len() == to.len() {
                assert_eq!(edited.len(), text.len(), "a same-length edit");
            }
            raw_put(&path, table, key, edited.as_bytes());
            let before = sha(&path);
            let err = open(&path).err().unwrap_or_else(|| panic!("{name}/{key}: the edited store opened"));
            assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&format!("table {name}, record {key}: its MAC does not verify")), "{err}");
            assert_eq!(sha(&path), before, "{name}/{key}: nothing written");
            raw_put(&path, table, key, &original);
        }
        drop(open(&path).unwrap());
    }

    #[test]
    fn a_record_copied_under_another_id_or_a_repointed_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.redb");
        sealed_store(&path);
        let narrow = "ak_ffffffffffffffffffffffffffffffff";
        let narrow_bytes = raw_get(&path, API_KEYS, narrow);
        raw_put(&path, API_KEYS, narrow, &raw_get(&path, API_KEYS, AK));
        let err = open(&path).err().unwrap().to_string();
        assert!(err.contains(&format!("table api_keys, record {narrow}: its MAC does not verify")), "{err}");
        raw_put(&path, API_KEYS, narrow, &narrow_bytes);

        // The narrow key's hash pointed at the admin record.
        let hashes = TableDefinition::<&str, &str>::new("api_key_hashes");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(hashes).unwrap().insert("cd".repeat(32).as_str(), AK).unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = open(&path).err().unwrap().to_string();
        assert!(err.contains(&format!("table api_key_hashes, record {AK}")), "{err}");
    }

    #[test]
    fn a_store_opened_with_another_data_key_refuses_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.redb");
        sealed_store(&path);
        let err = Store::open(&path, 1 << 20, RecordKey::derive(&[9; 32]), Timestamp::from_unix(1)).err().unwrap();
        assert!(err.to_string().contains("its MAC does not verify"), "{err}");
        let keyed = Store::inspect(&path, &zero_key(), |r| r.verify_audit()).unwrap();
        assert_eq!(keyed, Ok(0));
    }
}
