//! Stored records are authenticated: an edit of `kmsd.redb` made without the
//! vault's data key (a same-length byte patch, or a record copied under
//! another id) stops the next start with an error naming the record, and the
//! file is left as it was.

use redb::{ReadableDatabase, TableDefinition};

use crate::api_keys::create_key;
use crate::daemon::{bootstrap_key, sha256_file, Daemon};
use crate::support::call;
use crate::vault::store;

const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");

fn read_row(path: &std::path::Path, id: &str) -> Vec<u8> {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(API_KEYS).unwrap();
    let row = redb::ReadableTable::get(&table, id).unwrap().expect("the API key's row");
    row.value().to_vec()
}

fn write_row(path: &std::path::Path, id: &str, bytes: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(API_KEYS).unwrap().insert(id, bytes).unwrap();
    txn.commit().unwrap();
}

/// Starts a daemon, creates an API key holding only `relayauth:token:read:*`
/// and stops it. Returns the narrow key, its id and the admin key's id.
async fn store_with_a_narrow_key(dir: &std::path::Path) -> (String, String, String) {
    let d = Daemon::start(dir, &[]);
    let admin = bootstrap_key(&d.output());
    let (status, created) = create_key(&d.public, &admin, &["relayauth:token:read:*"]).await;
    assert_eq!(status, 201, "{created}");
    let (status, listed) = call(&d.public, &admin, "GET", "/v1/api-keys?limit=10", None).await;
    assert_eq!(status, 200, "{listed}");
    let admin_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "bootstrap-admin")
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let narrow = created["key"].as_str().unwrap().to_owned();
    let id = created["apiKey"]["id"].as_str().unwrap().to_owned();
    let (status, body) = call(&d.admin, &narrow, "GET", "/v1/admin/keys", None).await;
    assert_eq!(status, 403, "the narrow key is narrow before the edit: {body}");
    d.stop();
    (narrow, id, admin_id)
}

/// What a daemon that started on an edited store lets the narrow key do.
async fn escalation(d: &Daemon, narrow: &str) -> String {
    let (keys, _) = call(&d.admin, narrow, "GET", "/v1/admin/keys", None).await;
    let (created, _) = create_key(&d.public, narrow, &["*:*:*:*"]).await;
    format!("GET /v1/admin/keys -> {keys}, POST /v1/api-keys with *:*:*:* -> {created}")
}

#[tokio::test]
async fn a_same_length_edit_of_an_api_keys_scopes_stops_the_start_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (narrow, id, _) = store_with_a_narrow_key(tmp.path()).await;
    let path = store(tmp.path());
    let row = String::from_utf8(read_row(&path, &id)).unwrap();
    let original = r#""scopes":["relayauth:token:read:*"]"#;
    let forged = format!(r#""scopes":["*:*:*:*"{}]"#, " ".repeat(original.len() - r#""scopes":["*:*:*:*"]"#.len()));
    assert_eq!(forged.len(), original.len());
    assert!(row.contains(original), "{row}");
    write_row(&path, &id, row.replacen(original, &forged, 1).as_bytes());
    let before = sha256_file(&path);

    match Daemon::try_start(tmp.path(), &[]) {
        Ok(d) => panic!("kmsd started on an edited API key record; {}", escalation(&d, &narrow).await),
        Err((status, out)) => {
            assert!(status.is_some_and(|s| !s.success()), "non-zero exit: {status:?}\n{out}");
            assert!(out.contains(&format!("table api_keys, record {id}")), "names the record: {out}");
            assert!(out.contains("does not verify"), "says why: {out}");
            assert!(!out.contains("kmsd listening"), "{out}");
        }
    }
    assert_eq!(sha256_file(&path), before, "the refused start leaves the file byte-for-byte as it was");
}

#[tokio::test]
async fn an_api_key_record_copied_under_another_id_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (narrow, id, admin_id) = store_with_a_narrow_key(tmp.path()).await;
    let path = store(tmp.path());
    // The admin record, under the narrow key's id: its own MAC, but bound to another id.
    write_row(&path, &id, &read_row(&path, &admin_id));
    match Daemon::try_start(tmp.path(), &[]) {
        Ok(d) => panic!("kmsd started with a record moved to another id; {}", escalation(&d, &narrow).await),
        Err((_, out)) => {
            assert!(out.contains(&format!("table api_keys, record {id}")), "names the moved-to record: {out}");
            assert!(!out.contains(&format!("record {admin_id}")), "the intact record is not blamed: {out}");
        }
    }
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Rewrites a store as kmsd wrote it before record MACs: format 1 records,
/// bare meta values, no `record_macs` marker, a plain SHA-256 audit chain.
fn downgrade_to_format_1(path: &std::path::Path) {
    use kmsd::audit::{AuditEntry, Link};
    use kmsd::storage::Record;
    let unseal = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).unwrap();
        let (body, _mac) = text.rsplit_once(r#","mac":""#).unwrap();
        format!("{}}}", body.replacen(r#"{"v":2,"#, r#"{"v":1,"#, 1))
    };
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    for name in ["keys", "api_keys", "identities"] {
        let mut table = txn.open_table(TableDefinition::<&str, &[u8]>::new(name)).unwrap();
        let rows: Vec<(String, String)> = redb::ReadableTable::iter(&table)
            .unwrap()
            .map(|r| r.unwrap())
            .map(|(k, v)| (k.value().to_owned(), unseal(v.value())))
            .collect();
        for (k, v) in rows {
            table.insert(k.as_str(), v.as_bytes()).unwrap();
        }
    }
    let mut meta = txn.open_table(META).unwrap();
    meta.remove("record_macs").unwrap();
    let rows: Vec<(String, Vec<u8>)> = redb::ReadableTable::iter(&meta)
        .unwrap()
        .map(|r| r.unwrap())
        .map(|(k, v)| (k.value().to_owned(), v.value().to_vec()))
        .collect();
    for (k, v) in rows.into_iter().filter(|(k, _)| k != "schema_version" && k != "vault_data_key") {
        let sealed: serde_json::Value = serde_json::from_slice(&v).unwrap();
        meta.insert(k.as_str(), sealed["value"].as_str().unwrap().as_bytes()).unwrap();
    }
    drop(meta);
    let mut audit = txn.open_table(AUDIT).unwrap();
    let entries: Vec<AuditEntry> = redb::ReadableTable::iter(&audit)
        .unwrap()
        .map(|r| r.unwrap())
        .map(|(k, v)| AuditEntry::decode("audit", &k.value().to_string(), v.value()).unwrap())
        .collect();
    let mut prev: Option<AuditEntry> = None;
    for e in entries {
        let plain = AuditEntry::chain(prev.as_ref(), e.event, Link::Sha256);
        audit.insert(plain.seq, plain.encode().as_slice()).unwrap();
        prev = Some(plain);
    }
    drop(audit);
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_store_from_before_record_macs_is_upgraded_at_start_and_keeps_its_kids_and_api_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let (_, created) = create_key(&d.public, &admin, &["relayauth:token:read:*"]).await;
    let narrow = created["key"].as_str().unwrap().to_owned();
    let kids = crate::support::jwks_kids(&d.public).await;
    d.stop();
    let path = store(tmp.path());
    downgrade_to_format_1(&path);
    let out = crate::daemon::run(tmp.path(), &["audit", "verify"], &[]);
    let entries: u64 =
        crate::daemon::text(&out).split("intact: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();

    let d = Daemon::start(tmp.path(), &[]);
    assert!(d.output().contains("store upgraded: its records are now authenticated"), "{}", d.output());
    assert_eq!(crate::support::jwks_kids(&d.public).await, kids, "the same keys sign and are published");
    let (status, body) = call(&d.admin, &admin, "GET", "/v1/admin/keys", None).await;
    assert_eq!(status, 200, "the admin key still works: {body}");
    let (status, body) = call(&d.admin, &narrow, "GET", "/v1/admin/keys", None).await;
    assert_eq!(status, 403, "the narrow key is still narrow: {body}");
    let (_, events) = call(&d.admin, &admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    let upgrade = events["events"].as_array().unwrap().iter().find(|e| e["action"] == "store.upgrade").cloned();
    assert_eq!(upgrade.unwrap()["seq"], entries + 1, "the upgrade is audited right after the old entries");
    d.stop();
    let out = crate::daemon::run(tmp.path(), &["audit", "verify"], &[]);
    assert!(crate::daemon::text(&out).contains("intact"), "plain entries, then keyed: {}", crate::daemon::text(&out));

    // Once upgraded, a record in the old format (a downgrade) stops the start.
    let id = created["apiKey"]["id"].as_str().unwrap().to_owned();
    let row = String::from_utf8(read_row(&path, &id)).unwrap();
    let (body, _) = row.rsplit_once(r#","mac":""#).unwrap();
    write_row(&path, &id, format!("{}}}", body.replacen(r#"{"v":2,"#, r#"{"v":1,"#, 1)).as_bytes());
    let (_, out) = Daemon::try_start(tmp.path(), &[]).err().expect("a downgraded record is refused");
    assert!(out.contains(&format!("table api_keys, record {id}: has no MAC")), "{out}");
}
