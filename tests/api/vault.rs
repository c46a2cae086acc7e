//! The local vault end to end: keys survive restarts, a wrong KEK or a
//! tampered record stops startup with a clear message and changes nothing,
//! rekey and passphrase KEKs work, and no secret reaches the output.

use redb::{ReadableDatabase, TableDefinition};
use serde_json::Value;

use crate::daemon::{bootstrap_key, client, keys_dir, run, sha256_file, text, Daemon};
use crate::support::jwks_kids;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

pub fn store(tmp: &std::path::Path) -> std::path::PathBuf {
    tmp.join("kmsd-data").join("kmsd.redb")
}

/// Reads every key record straight from the redb file.
fn records(path: &std::path::Path) -> Vec<(String, Value)> {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(KEYS).unwrap();
    let rows: Vec<(String, Value)> = redb::ReadableTable::iter(&table)
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_owned(), serde_json::from_slice(v.value()).unwrap())
        })
        .collect();
    rows
}

/// Writes `record` under `kid` with a valid record MAC, as only a holder of
/// the data key (unwrapped here with the KEK file) can: so what the test
/// then sees is the vault's own check of the sealed private key.
async fn write_record(dir: &std::path::Path, kid: &str, record: &Value) {
    use kmsd::storage::{Sealed, Store, META_DATA_KEY};
    let path = store(dir);
    let kek = kmsd::vault::KekSource::File(dir.join("kmsd-data").join("vault.kek"));
    let wrapped = kmsd::vault::WrappedDataKey::decode(&Store::peek_meta(&path, META_DATA_KEY).unwrap().unwrap());
    let mac = kek.unwrap(&wrapped.unwrap()).await.unwrap().record_key();
    let mut fields = record.clone();
    fields.as_object_mut().unwrap().retain(|k, _| k != "v" && k != "mac");
    let rec: kmsd::keys::KeyRecord = serde_json::from_value(fields).unwrap();
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(KEYS).unwrap().insert(kid, rec.encode(&mac, "keys", kid).as_slice()).unwrap();
    txn.commit().unwrap();
}

#[tokio::test]
async fn keys_of_all_three_algorithms_survive_a_restart_with_the_same_kids() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys_dir(tmp.path(), &[("r", "RS256", Some(2048)), ("e", "EdDSA", None), ("p", "ES256", None)]);
    let env = [("KMSD_KEYS_DIR", keys.to_str().unwrap())];
    let d = Daemon::start(tmp.path(), &env);
    let before = jwks_kids(&d.public).await;
    assert_eq!(before.len(), 3);
    let (status, _) = d.stop();
    assert!(status.success());
    let d = Daemon::start(tmp.path(), &env);
    assert_eq!(jwks_kids(&d.public).await, before, "the same keys are unsealed and served after a restart");
    assert!(!d.output().contains("bootstrap admin API key"), "init runs once");
    // What is on disk is sealed: no record holds PKCS#8 in the clear.
    d.stop();
    for (_, rec) in records(&store(tmp.path())) {
        assert_eq!(rec["handle"]["type"], "vault");
        let sealed = kmsd::encoding::b64url_decode(rec["handle"]["sealed"].as_str().unwrap()).unwrap();
        assert_eq!(sealed[0], 1, "sealed format version");
        assert!(!sealed.windows(3).any(|w| w == [0x02, 0x01, 0x00]), "no DER INTEGER 0 (PKCS#8 version) in clear");
    }
}

#[test]
fn a_wrong_kek_stops_serve_with_a_clear_message_and_leaves_the_store_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let before = sha256_file(&store(tmp.path()));
    // Another valid KEK file, in place of the right one.
    let other = tmp.path().join("other.kek");
    kmsd::vault::KekSource::File(other.clone()).create_if_missing().unwrap();
    let wrong = [("KMSD_VAULT__KEK_FILE", other.to_str().unwrap())];
    let err = Daemon::try_start(tmp.path(), &wrong).err().expect("serve must refuse a wrong KEK");
    assert!(err.0.is_some_and(|s| !s.success()), "non-zero exit: {:?}", err.0);
    assert!(err.1.contains("wrong KEK for this store"), "{}", err.1);
    assert_eq!(sha256_file(&store(tmp.path())), before, "store is byte-for-byte unchanged");
    // The right KEK still opens it.
    let d = Daemon::start(tmp.path(), &[]);
    drop(d);
}

#[tokio::test]
async fn a_flipped_byte_in_a_sealed_key_is_reported_as_corruption_and_never_used() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(run(tmp.path(), &["init"], &[]).status.success());
    let path = store(tmp.path());
    let (kid, mut rec) = records(&path).into_iter().find(|(_, r)| r["keyset"] == "edge").unwrap();
    let mut sealed = kmsd::encoding::b64url_decode(rec["handle"]["sealed"].as_str().unwrap()).unwrap();
    sealed[30] ^= 0x01;
    rec["handle"]["sealed"] = kmsd::encoding::b64url(&sealed).into();
    write_record(tmp.path(), &kid, &rec).await;
    let (status, out) = Daemon::try_start(tmp.path(), &[]).err().expect("must refuse a corrupt key");
    assert!(status.is_some_and(|s| !s.success()));
    assert!(out.contains(&format!("key {kid} (keyset edge)")), "{out}");
    assert!(out.contains("is corrupt"), "{out}");
    assert!(!out.contains("kmsd listening"), "{out}");
}

#[tokio::test]
async fn a_sealed_key_moved_into_another_kids_record_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys_dir(tmp.path(), &[("one", "EdDSA", None), ("two", "EdDSA", None)]);
    let env = [("KMSD_KEYS_DIR", keys.to_str().unwrap())];
    assert!(run(tmp.path(), &["init"], &env).status.success());
    let path = store(tmp.path());
    let recs = records(&path);
    let (kid_one, one) = recs.iter().find(|(_, r)| r["keyset"] == "one").unwrap().clone();
    let (kid_two, mut two) = recs.iter().find(|(_, r)| r["keyset"] == "two").unwrap().clone();
    two["handle"] = one["handle"].clone();
    write_record(tmp.path(), &kid_two, &two).await;
    let (_, out) = Daemon::try_start(tmp.path(), &env).err().expect("must refuse a moved key");
    assert!(out.contains(&kid_two) && out.contains("moved from another record"), "{out}");
    assert!(!out.contains(&format!("key {kid_one}")), "the intact key is not blamed: {out}");
}

#[tokio::test]
async fn rekey_rewraps_the_data_key_so_only_the_new_kek_opens_the_vault() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(run(tmp.path(), &["init"], &[]).status.success());
    let d = Daemon::start(tmp.path(), &[]);
    let before = jwks_kids(&d.public).await;
    // The store is locked while the daemon runs: rekey refuses, changing nothing.
    let new = tmp.path().join("new.kek");
    let out = run(tmp.path(), &["vault", "rekey", "--to", &format!("file:{}", new.display())], &[]);
    assert!(!out.status.success(), "rekey must not run beside a live daemon");
    d.stop();
    let out = run(tmp.path(), &["vault", "rekey", "--to", &format!("file:{}", new.display())], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let old = Daemon::try_start(tmp.path(), &[]).err().expect("old KEK no longer opens the vault");
    assert!(old.1.contains("wrong KEK"), "{}", old.1);
    let d = Daemon::start(tmp.path(), &[("KMSD_VAULT__KEK_FILE", new.to_str().unwrap())]);
    assert_eq!(jwks_kids(&d.public).await, before);
}

#[tokio::test]
async fn a_passphrase_kek_opens_only_with_the_same_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("KMSD_VAULT__KEK", "passphrase"), ("KMSD_VAULT_PASSPHRASE", "correct horse battery staple")];
    let d = Daemon::start(tmp.path(), &env);
    let before = jwks_kids(&d.public).await;
    d.stop();
    assert!(!tmp.path().join("kmsd-data").join("vault.kek").exists(), "no key file for a passphrase KEK");
    let wrong = [("KMSD_VAULT__KEK", "passphrase"), ("KMSD_VAULT_PASSPHRASE", "incorrect horse battery staple")];
    let (_, out) = Daemon::try_start(tmp.path(), &wrong).err().expect("wrong passphrase refused");
    assert!(out.contains("wrong KEK"), "{out}");
    assert!(!out.contains("incorrect horse"), "the passphrase is never echoed: {out}");
    let d = Daemon::start(tmp.path(), &env);
    assert_eq!(jwks_kids(&d.public).await, before);
}

#[tokio::test]
async fn no_secret_ever_reaches_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("KMSD_LOG", "debug")];
    let init = run(tmp.path(), &["init"], &env);
    assert!(init.status.success());
    let init_out = text(&init);
    let key = bootstrap_key(&init_out);
    let d = Daemon::start(tmp.path(), &env);
    let c = client();
    for (url, api_key) in [
        (format!("{}/v1/admin/keys", d.admin), key.as_str()),
        (format!("{}/v1/admin/keys", d.admin), "rak_definitelyNotAValidKeyButLooksLikeOneAAAAAAAAAAAAA"),
        (format!("{}/.well-known/jwks.json", d.public), key.as_str()),
        (format!("{}/v1/health", d.public), key.as_str()),
    ] {
        c.get(url).header("x-api-key", api_key).send().await.unwrap();
    }
    let (_, serve_out) = d.stop();
    let all = format!("{init_out}{serve_out}");
    assert_eq!(all.matches(&key).count(), 1, "the bootstrap key is printed once, by init:\n{all}");
    assert!(!serve_out.contains(&key[4..20]), "no part of the key in the daemon's logs");
    let kek = std::fs::read_to_string(tmp.path().join("kmsd-data").join("vault.kek")).unwrap();
    assert!(!all.contains(kek.trim()), "KEK leaked");
    for needle in ["PRIVATE KEY", "MC4CAQAwBQYDK2VwBCIEI", "MIIG", "BEGIN", "x-api-key: rak_"] {
        assert!(!all.contains(needle), "{needle:?} found in output:\n{all}");
    }
    assert!(serve_out.contains("DEBUG"), "debug logging was on, so the check saw real log lines");
}
