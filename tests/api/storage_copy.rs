//! `kmsd storage copy` through the real binary: a redb deployment moved onto
//! a throwaway PostgreSQL and back, each copy served by a real daemon that
//! must publish the same keys, take the same API keys, know the same
//! identities and tokens and hold the same intact audit chain. A target that
//! is not empty, and a source that a kmsd runs on, are refused without a
//! change; a URL's password never reaches any output.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{bootstrap_key, run, sha256_file, text, Daemon};
use crate::postgres::{client, harness, url_text};
use crate::support::{admin_keys, call, identity, introspect, issue, jwks_kids};

/// What the redb deployment held, to be found again in every copy.
struct Before {
    admin: String,
    api_key: String,
    identity: String,
    token: String,
    revoked: String,
    kids: Vec<String>,
    key_ids: Vec<String>,
    audit_entries: u64,
}

fn key_ids(keys: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = keys.iter().map(|k| k["keyId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// A redb daemon with an identity, an API key, a live and a revoked token,
/// and a rotated keyset; stopped before this returns.
async fn redb_deployment(dir: &Path) -> Before {
    let d = Daemon::start(dir, &[]);
    let admin = bootstrap_key(&d.output());
    let id = identity(&d.public, &admin, "copy-subject", &["relayfile:fs:read:*"]).await;
    let scopes =
        ["relayauth:identity:read:*", "relayauth:token:create:*", "relayauth:token:read:*", "relayfile:fs:read:*"];
    let body = json!({ "name": "copied", "scopes": scopes });
    let (status, made) = call(&d.public, &admin, "POST", "/v1/api-keys", Some(body)).await;
    assert_eq!(status, 201, "{made}");
    let token = issue(&d.public, &admin, &id).await["accessToken"].as_str().unwrap().to_owned();
    let revoked = issue(&d.public, &admin, &id).await["accessToken"].as_str().unwrap().to_owned();
    let jti = introspect(&d.public, &admin, &revoked).await["jti"].as_str().unwrap().to_owned();
    let (status, v) = call(&d.public, &admin, "POST", "/v1/tokens/revoke", Some(json!({ "tokenId": jti }))).await;
    assert_eq!(status, 204, "{v}");
    let (status, v) =
        call(&d.admin, &admin, "POST", "/v1/admin/keys/rotate", Some(json!({ "keyset": "access", "immediate": true })))
            .await;
    assert_eq!(status, 200, "{v}");
    let kids = jwks_kids(&d.public).await;
    let key_ids = key_ids(&admin_keys(&d.admin, &admin).await);
    assert!(key_ids.len() > 4, "the rotation added a key: {key_ids:?}");
    let (_, verified) = call(&d.admin, &admin, "GET", "/v1/admin/audit/verify", None).await;
    let audit_entries = verified["entries"].as_u64().unwrap();

    // Copying the store of a running daemon is refused.
    let out = run(dir, &["storage", "copy", "--to", "elsewhere.redb"], &[]);
    assert!(!out.status.success() && text(&out).contains("stop the daemon"), "{}", text(&out));
    assert!(!dir.join("elsewhere.redb").exists());
    d.stop();
    let api_key = made["key"].as_str().unwrap().to_owned();
    Before { admin, api_key, identity: id, token, revoked, kids, key_ids, audit_entries }
}

/// A daemon on a copy serves what the redb deployment held.
async fn serves_the_same(d: &Daemon, before: &Before, what: &str) {
    assert!(!d.output().contains("bootstrap admin API key"), "{what}: opened, not initialized:\n{}", d.output());
    assert_eq!(jwks_kids(&d.public).await, before.kids, "{what}: the same JWKS");
    assert_eq!(key_ids(&admin_keys(&d.admin, &before.admin).await), before.key_ids, "{what}: the same key versions");
    let path = format!("/v1/identities/{}", before.identity);
    let (status, v) = call(&d.public, &before.api_key, "GET", &path, None).await;
    assert_eq!((status, v["name"].as_str()), (200, Some("copy-subject")), "{what}: the copied API key reads it: {v}");
    let minted = issue(&d.public, &before.api_key, &before.identity).await;
    assert!(minted["accessToken"].is_string(), "{what}: the identity gets tokens");
    let claims = introspect(&d.public, &before.api_key, &before.token).await;
    assert_eq!(claims["sub"].as_str(), Some(before.identity.as_str()), "{what}: a token issued on redb: {claims}");
    assert_eq!(introspect(&d.public, &before.api_key, &before.revoked).await, Value::Null, "{what}: still revoked");
    let (status, v) = call(&d.admin, &before.admin, "GET", "/v1/admin/audit/verify", None).await;
    assert_eq!((status, v["intact"].as_bool()), (200, Some(true)), "{what}: {v}");
    assert!(v["entries"].as_u64().unwrap() >= before.audit_entries, "{what}: the chain goes on from the copy: {v}");
}

/// Row counts of the tables a copy writes, for "nothing changed".
async fn pg_counts(url: &kmsd::storage::postgres::PgUrl) -> Vec<i64> {
    let c = client(url).await;
    let mut counts = Vec::new();
    for t in ["meta", "keys", "api_keys", "identities", "sessions", "issued_tokens", "revoked_tokens", "audit"] {
        counts.push(c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redb_store_moves_to_postgres_and_back_serving_the_same_keys_credentials_and_audit_chain() {
    let a = tempfile::tempdir().unwrap();
    let before = redb_deployment(a.path()).await;
    let kek = a.path().join("kmsd-data").join("vault.kek");
    let kek = kek.to_str().unwrap();

    // redb -> PostgreSQL, the URL from the environment.
    let db = harness::fresh_db().await;
    let url = url_text(&db.url);
    let password = String::from_utf8(db.url.config().get_password().unwrap().to_vec()).unwrap();
    let out = run(a.path(), &["storage", "copy", "--to-env", "KMSD_COPY_URL"], &[("KMSD_COPY_URL", &url)]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let intact = format!("audit log intact: {} entries verified", before.audit_entries);
    assert!(shown.contains(&format!("source redb store kmsd-data/kmsd.redb: {intact}")), "{shown}");
    assert!(shown.contains(&format!("copy verified: every record MAC checks under the source's data key, {intact}")));
    for (table, rows) in [("api_keys", 2), ("identities", 1), ("sessions", 2), ("revoked_tokens", 1)] {
        assert!(shown.lines().any(|l| l.split_whitespace().eq([table, &rows.to_string()])), "{table}: {shown}");
    }
    assert!(shown.contains("to PostgreSQL postgres://postgres:***@127.0.0.1:"), "{shown}");
    let counts = pg_counts(&db.url).await;
    assert_eq!(counts[7], before.audit_entries as i64);
    let c = client(&db.url).await;
    let head: i64 = c.query_one("SELECT seq FROM audit_head", &[]).await.unwrap().get(0);
    assert_eq!(head, before.audit_entries as i64, "the chain head is the last entry");

    // A second copy into the same database is refused and changes nothing
    // (the URL, password and all, on the command line this time).
    let out = run(a.path(), &["storage", "copy", "--to", &url], &[]);
    let refused = text(&out);
    assert!(!out.status.success() && refused.contains("is not empty (table meta has rows)"), "{refused}");
    assert_eq!(refused.lines().filter(|l| !l.trim().is_empty()).count(), 1, "one line: {refused}");
    assert_eq!(pg_counts(&db.url).await, counts);

    // Served from PostgreSQL with the redb deployment's KEK.
    let pg_env =
        [("KMSD_STORAGE__ENGINE", "postgres"), ("KMSD_STORAGE_URL", url.as_str()), ("KMSD_VAULT__KEK_FILE", kek)];
    let b = tempfile::tempdir().unwrap();
    let d = Daemon::start(b.path(), &pg_env);
    serves_the_same(&d, &before, "on PostgreSQL").await;
    let (_, served) = d.stop();

    // While a replica holds the leader lease, the database is not copied.
    let back = tempfile::tempdir().unwrap();
    let data = back.path().join("kmsd-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let target = data.join("kmsd.redb");
    let to = target.to_str().unwrap();
    let lease = kmsd::storage::postgres::lease::LEADER_LEASE;
    let fence = kmsd::storage::postgres::lease::acquire(&c, lease, "replica-7", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the lease is free");
    let out = run(b.path(), &["storage", "copy", "--to", to], &pg_env);
    let held = text(&out);
    assert!(!out.status.success() && held.contains("replica \"replica-7\" holds the leader lease"), "{held}");
    assert!(!target.exists());
    kmsd::storage::postgres::lease::release(&c, &fence).await.unwrap();

    // PostgreSQL -> a new redb file; a second copy onto it is refused.
    let out = run(b.path(), &["storage", "copy", "--to", to], &pg_env);
    let back_out = text(&out);
    assert!(out.status.success(), "{back_out}");
    assert!(back_out.contains(&format!("to redb {to}")), "{back_out}");
    let sha = sha256_file(&target);
    let out = run(b.path(), &["storage", "copy", "--to", to], &pg_env);
    let exists = text(&out);
    assert!(!out.status.success() && exists.contains("refuses a non-empty target"), "{exists}");
    assert_eq!(sha256_file(&target), sha);
    let left: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["kmsd.redb"], "no staging file is left");

    // Served from the redb copy.
    let d = Daemon::start(back.path(), &[("KMSD_VAULT__KEK_FILE", kek)]);
    serves_the_same(&d, &before, "on the redb copy").await;
    d.stop();

    for output in [&shown, &refused, &served, &held, &back_out, &exists] {
        assert!(!output.contains(&password), "the password was shown:\n{output}");
    }
}
