//! Online backup and restore: `GET /v1/admin/backup` streams a consistent
//! copy of the live store while issuance goes on; `kmsd restore` puts it back
//! offline after checking it (KEK, record MACs, audit chain). The restored
//! daemon knows every token whose 201 arrived before the backup started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::{bootstrap_key, client, run, text, Daemon};
use crate::support::call;

const API_KEYS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("api_keys");

/// Flips one letter of the first API key record, keeping its length.
fn edit_first_api_key(path: &std::path::Path) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(API_KEYS).unwrap();
        let (id, mut bytes) = {
            let mut rows = redb::ReadableTable::iter(&table).unwrap();
            let (k, v) = rows.next().unwrap().unwrap();
            (k.value().to_owned(), v.value().to_vec())
        };
        let at = bytes.windows(9).position(|w| w == b"bootstrap").expect("the bootstrap key's name");
        bytes[at] = b'B';
        table.insert(id.as_str(), bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

const DATA: &str = "kmsd-data";

async fn issue(base: &str, key: &str, id: &str) -> Option<String> {
    let (status, pair) = call(base, key, "POST", "/v1/tokens", Some(json!({ "identityId": id }))).await;
    (status == 201).then(|| pair["accessToken"].as_str().unwrap().to_owned())
}

async fn backup(d: &Daemon, key: &str) -> (u16, Vec<u8>) {
    let resp = client().get(format!("{}/v1/admin/backup", d.admin)).header("x-api-key", key).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn an_online_backup_taken_under_load_restores_every_token_issued_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let body = json!({ "name": "backup-subject", "sponsorId": "user_sponsor", "scopes": ["relayfile:fs:read:*"] });
    let (status, identity) = call(&d.public, &admin, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{identity}");
    let id = identity["id"].as_str().unwrap().to_owned();
    let mut before = Vec::new();
    for _ in 0..20 {
        before.push(issue(&d.public, &admin, &id).await.expect("201 before the backup"));
    }

    // A backup needs the manage scope: a read-only admin key gets 403.
    let (_, reader) = create_key(&d.admin, &admin, &["relayauth:admin:read:*"]).await;
    let (status, _) = backup(&d, reader["key"].as_str().unwrap()).await;
    assert_eq!(status, 403);

    // Issuance goes on during the backup (bounded in count and time).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (public, admin, id, stop) = (d.public.clone(), admin.clone(), id.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut n, deadline) = (0, Instant::now() + Duration::from_secs(20));
            while !stop.load(Ordering::Relaxed) && n < 400 && Instant::now() < deadline {
                assert!(issue(&public, &admin, &id).await.is_some(), "issuance failed during the backup");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, bytes) = backup(&d, &admin).await;
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(during > 0, "no token was issued while the backup ran");
    let saved = tmp.path().join("backup.redb");
    std::fs::write(&saved, &bytes).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join(DATA))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".backup"))
        .collect();
    assert!(leftovers.is_empty(), "backup temp files left in the data dir: {leftovers:?}");
    let (status, events) = call(&d.admin, &admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    assert_eq!(status, 200);
    assert!(events["events"].as_array().unwrap().iter().any(|e| e["action"] == "store.backup"), "{events}");
    drop(d);

    // Restore into a new data dir holding only the KEK.
    let new = tempfile::tempdir().unwrap();
    std::fs::create_dir(new.path().join(DATA)).unwrap();
    std::fs::set_permissions(new.path().join(DATA), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(tmp.path().join(DATA).join("vault.kek"), new.path().join(DATA).join("vault.kek")).unwrap();
    std::fs::set_permissions(
        new.path().join(DATA).join("vault.kek"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let from = saved.to_str().unwrap();
    let out = run(new.path(), &["restore", "--from", from], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit log intact"), "{}", text(&out));
    // A second restore over the restored store needs --force, and keeps the old one.
    let out = run(new.path(), &["restore", "--from", from], &[]);
    assert!(!out.status.success() && text(&out).contains("--force"), "{}", text(&out));

    let d = Daemon::start(new.path(), &[]);
    for token in &before {
        let (status, claims) =
            call(&d.public, &admin, "GET", &format!("/v1/tokens/introspect?token={token}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(claims["sub"], id.as_str(), "a token issued before the backup is unknown after the restore");
    }
    let (status, verified) = call(&d.admin, &admin, "GET", "/v1/admin/audit/verify", None).await;
    assert_eq!((status, verified["intact"].clone()), (200, Value::Bool(true)), "{verified}");

    // Restoring under a running daemon is refused, and the store is untouched.
    let store = new.path().join(DATA).join("kmsd.redb");
    let sha = crate::daemon::sha256_file(&store);
    let out = run(new.path(), &["restore", "--from", from, "--force"], &[]);
    assert!(!out.status.success() && text(&out).contains("running"), "{}", text(&out));
    assert_eq!(crate::daemon::sha256_file(&store), sha);
}

#[tokio::test]
async fn a_backup_that_does_not_verify_is_never_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let (status, bytes) = backup(&d, &admin).await;
    assert_eq!(status, 200);
    drop(d);

    // A wrong KEK: refused, nothing written.
    let new = tempfile::tempdir().unwrap();
    let saved = new.path().join("backup.redb");
    std::fs::write(&saved, &bytes).unwrap();
    let other = tempfile::tempdir().unwrap();
    let kek = other.path().join("other.kek");
    std::fs::write(&kek, kmsd::encoding::b64url(&[7u8; 32])).unwrap();
    std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let env = [("KMSD_VAULT__KEK_FILE", kek.to_str().unwrap())];
    let out = run(new.path(), &["restore", "--from", saved.to_str().unwrap()], &env);
    assert!(!out.status.success() && text(&out).contains("KEK"), "{}", text(&out));
    assert!(!new.path().join(DATA).join("kmsd.redb").exists());

    // An edited record (an API key's name, same length): refused.
    edit_first_api_key(&saved);
    std::fs::create_dir_all(new.path().join(DATA)).unwrap();
    std::fs::copy(tmp.path().join(DATA).join("vault.kek"), new.path().join(DATA).join("vault.kek")).unwrap();
    let out = run(new.path(), &["restore", "--from", saved.to_str().unwrap()], &[]);
    assert!(!out.status.success() && text(&out).contains("does not verify"), "{}", text(&out));
    assert!(!new.path().join(DATA).join("kmsd.redb").exists());
}
