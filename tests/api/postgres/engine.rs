//! `[storage] engine = "postgres"`: `kmsd serve` on a real PostgreSQL. The
//! first start initializes the database (the bootstrap key printed once);
//! a second replica with the same KEK joins it and serves the same JWKS,
//! the same API keys and the tokens the first issued; a restart keeps every
//! record; a replica with another KEK refuses to start and writes nothing;
//! the URL's password appears in no output; `check-config` says whether the
//! database can be used (reachable, schema, privileges).

use std::path::Path;

use super::{client, harness, url_text};
use crate::daemon::{bootstrap_key, run, text, Daemon};
use crate::support::{call, identity, introspect, issue, jwks_kids};

/// What the database holds, for "nothing was written" checks.
async fn rows(db: &harness::TestDb) -> Vec<i64> {
    let c = client(&db.url).await;
    let mut out = Vec::new();
    for table in ["meta", "keys", "api_keys", "identities", "sessions", "issued_tokens", "audit"] {
        out.push(c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0));
    }
    out
}

fn env<'a>(url: &'a str, kek: &'a Path) -> [(&'a str, &'a str); 3] {
    [("KMSD_STORAGE__ENGINE", "postgres"), ("KMSD_STORAGE_URL", url), ("KMSD_VAULT__KEK_FILE", kek.to_str().unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_share_keys_api_keys_and_tokens_and_a_restart_keeps_them() {
    let db = harness::fresh_db().await;
    let url = url_text(&db.url);
    let password = String::from_utf8(db.url.config().get_password().unwrap().to_vec()).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kek = dir_a.path().join("vault.kek");

    let a = Daemon::start(dir_a.path(), &env(&url, &kek));
    let admin_key = bootstrap_key(&a.output());
    let id = identity(&a.public, &admin_key, "bot", &["relay:read"]).await;
    let pair = issue(&a.public, &admin_key, &id).await;
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&a.public, &admin_key, &access).await["sub"], id.as_str());
    let kids = jwks_kids(&a.public).await;
    assert!(!kids.is_empty());
    assert!(!dir_a.path().join("kmsd-data").join("kmsd.redb").exists(), "no redb store was made");

    // A second replica: same database, same KEK, a data dir of its own.
    let b = Daemon::start(dir_b.path(), &env(&url, &kek));
    assert!(!b.output().contains("bootstrap admin API key"), "only the first start makes one:\n{}", b.output());
    assert_eq!(jwks_kids(&b.public).await, kids, "one key set on every replica");
    assert_eq!(introspect(&b.public, &admin_key, &access).await["sub"], id.as_str(), "a token from A is active on B");
    let pair_b = issue(&b.public, &admin_key, &id).await;
    let access_b = pair_b["accessToken"].as_str().unwrap();
    assert_eq!(introspect(&a.public, &admin_key, access_b).await["sub"], id.as_str(), "a token from B is active on A");

    // The redb file tools do not apply: a clear refusal, not a retry.
    let (status, v) = call(&a.admin, &admin_key, "GET", "/v1/admin/backup", None).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("pg_dump"), "{v}");
    let out = run(dir_a.path(), &["restore", "--from", "/nonexistent"], &env(&url, &kek));
    assert!(!out.status.success() && text(&out).contains("pg_restore"), "{}", text(&out));

    // A restart of A keeps every record.
    let (_, out_a) = a.stop();
    let a = Daemon::start(dir_a.path(), &env(&url, &kek));
    assert_eq!(jwks_kids(&a.public).await, kids);
    assert_eq!(introspect(&a.public, &admin_key, &access).await["sub"], id.as_str());
    let (_, out_b) = b.stop();
    let (_, out_a2) = a.stop();
    for out in [&out_a, &out_b, &out_a2] {
        assert!(!out.contains(&password), "the database password is in the output:\n{out}");
    }
    let audit: i64 = client(&db.url).await.query_one("SELECT count(*) FROM audit", &[]).await.unwrap().get(0);
    assert!(audit >= 4, "init, bootstrap key, first keys and the identity were audited: {audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_kek_refuses_to_start_and_writes_nothing() {
    let db = harness::fresh_db().await;
    let url = url_text(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("vault.kek");
    let out = run(dir.path(), &["init"], &env(&url, &kek));
    assert!(out.status.success(), "{}", text(&out));
    let before = rows(&db).await;

    // Another KEK: the one a redb `kmsd init` made elsewhere.
    let other = tempfile::tempdir().unwrap();
    let made = run(other.path(), &["init"], &[]);
    assert!(made.status.success(), "{}", text(&made));
    let other_kek = other.path().join("kmsd-data").join("vault.kek");
    let refused = Daemon::try_start(other.path(), &env(&url, &other_kek));
    let Err((status, output)) = refused else { panic!("a replica with another KEK started") };
    assert!(status.is_some_and(|s| !s.success()), "{output}");
    assert!(output.to_lowercase().contains("kek") || output.contains("unwrap"), "{output}");
    assert_eq!(rows(&db).await, before, "nothing was written");

    // `init` again is refused: the database is initialized.
    let again = run(dir.path(), &["init"], &env(&url, &kek));
    assert!(!again.status.success() && text(&again).contains("already initialized"), "{}", text(&again));
    assert_eq!(rows(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_an_unreachable_database_and_a_missing_privilege_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("vault.kek");
    let check = |url: &str| {
        let out = run(dir.path(), &["check-config"], &env(url, &kek));
        (out.status.success(), text(&out))
    };
    let secret = "pw-of-an-unreachable-db";
    let (ok, msg) = check(&format!("postgres://kmsd:{secret}@127.0.0.1:1/kmsd?connect_timeout=2"));
    assert!(!ok && msg.contains("cannot connect") && msg.contains("127.0.0.1"), "{msg}");
    assert!(!msg.contains(secret), "{msg}");

    let db = harness::fresh_db().await;
    let owner = url_text(&db.url);
    let (ok, msg) = check(&owner);
    assert!(ok && msg.contains("no kmsd schema yet"), "{msg}");

    // A role that may connect but not create tables (PostgreSQL 15's default
    // for a database's public schema), then not read them either.
    let role = format!("lim_{}", db.name);
    let admin = client(&harness::admin_url()).await;
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'limited-pw'")).await.unwrap();
    let password = String::from_utf8(db.url.config().get_password().unwrap().to_vec()).unwrap();
    let limited = owner.replace(&format!("postgres:{password}@"), &format!("{role}:limited-pw@"));
    assert_ne!(limited, owner);
    let (ok, msg) = check(&limited);
    assert!(!ok && msg.contains("no CREATE privilege on the current schema"), "{msg}");
    assert!(!msg.contains("limited-pw"), "{msg}");

    let out = run(dir.path(), &["init"], &env(&owner, &kek));
    assert!(out.status.success(), "{}", text(&out));
    let (ok, msg) = check(&owner);
    assert!(ok && msg.contains("kmsd schema version 1"), "{msg}");
    let (ok, msg) = check(&limited);
    assert!(!ok && msg.contains("no SELECT privilege on table kmsd_schema"), "{msg}");
}
