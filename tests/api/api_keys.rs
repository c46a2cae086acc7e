//! API keys over real HTTP: lifecycle, format checks before any lookup,
//! escalation, the admin boundary, failure throttling, the audit chain and
//! the CLI.

use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{bootstrap_key, client, run, text, Daemon};
use crate::support::call;

pub struct Api {
    pub base: String,
    pub key: String,
}

impl Api {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.base, &self.key, method, path, body).await
    }
}

pub async fn create_key(base: &str, with: &str, scopes: &[&str]) -> (u16, Value) {
    call(base, with, "POST", "/v1/api-keys", Some(json!({ "name": "test", "scopes": scopes }))).await
}

async fn lookups(d: &Daemon) -> u64 {
    let text = client().get(format!("{}/metrics", d.admin)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("kmsd_api_key_store_lookups_total ")).unwrap().trim().parse().unwrap()
}

async fn audit(d: &Daemon, key: &str) -> Vec<Value> {
    let (status, body) = call(&d.admin, key, "GET", "/v1/admin/audit?limit=1000", None).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_api_key_lives_from_create_to_revoke_and_its_secret_is_shown_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let (status, created) = create_key(&d.public, &admin, &["relayauth:api-key:read:*"]).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["apiKey"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rak_") && secret.len() == 53);
    assert_eq!(created["apiKey"]["prefix"], secret[..16]);
    assert_eq!(created["apiKey"]["revoked"], false);
    assert!(id.starts_with("ak_") && id.len() == 35);

    // The new key works, and no listing ever shows a secret or its hash.
    let user = Api { base: d.public.clone(), key: secret.clone() };
    let hash = kmsd::encoding::sha256_hex(secret.as_bytes());
    let mut seen_last_used = false;
    for _ in 0..100 {
        let (status, list) = user.call("GET", "/v1/api-keys", None).await;
        assert_eq!(status, 200, "{list}");
        let raw = list.to_string();
        assert!(!raw.contains(&secret[16..]) && !raw.contains(&hash), "secret material in a listing");
        let mine = list["data"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
        if mine.get("lastUsedAt").is_some() {
            seen_last_used = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_last_used, "lastUsedAt is recorded (off the request path)");

    let (status, revoked) = call(&d.public, &admin, "POST", &format!("/v1/api-keys/{id}/revoke"), None).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked"], true);
    let (status, body) = user.call("GET", "/v1/api-keys", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_api_key")));
    let (status, again) = call(&d.public, &admin, "POST", &format!("/v1/api-keys/{id}/revoke"), None).await;
    assert_eq!(status, 200);
    assert_eq!(again, revoked, "revoking twice changes nothing");
    let (status, body) =
        call(&d.public, &admin, "POST", "/v1/api-keys/ak_00000000000000000000000000000000/revoke", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("api_key_not_found")));

    let events = audit(&d, &admin).await;
    let count = |action: &str| events.iter().filter(|e| e["action"] == action && e["target"] == id.as_str()).count();
    assert_eq!((count("api_key.create"), count("api_key.revoke")), (1, 1));
}

#[tokio::test]
async fn malformed_keys_get_401_and_bad_checksums_never_reach_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let (_, created) = create_key(&d.public, &admin, &["relayauth:api-key:read:*"]).await;
    let good = created["key"].as_str().unwrap().to_owned();
    let flip = |s: &str, i: usize| {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'x' { b'y' } else { b'x' };
        String::from_utf8(b).unwrap()
    };
    let before = lookups(&d).await;
    for bad in [flip(&good, 20), flip(&good, 52), good[..52].to_owned(), format!("{good}A"), "rak_".to_owned()] {
        let (status, body) = call(&d.public, &bad, "GET", "/v1/api-keys", None).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_api_key")), "{bad}");
    }
    assert_eq!(lookups(&d).await, before, "format and checksum failures are decided without the store");
    let unknown = kmsd::api_keys::ApiKeySecret::generate().unwrap();
    let (status, _) = call(&d.public, unknown.expose(), "GET", "/v1/api-keys", None).await;
    assert_eq!(status, 401);
    assert_eq!(lookups(&d).await, before + 1, "a well-formed unknown key costs one lookup");
}

#[tokio::test]
async fn no_key_can_grant_more_than_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let (status, k) = create_key(&d.public, &admin, &["relayauth:api-key:manage:*", "relayfile:fs:read:/a/*"]).await;
    assert_eq!(status, 201, "{k}");
    let limited = k["key"].as_str().unwrap().to_owned();
    for (scope, code) in [
        ("*:*:*:*", "scope_escalation"),
        ("relayfile:fs:read:/*", "scope_escalation"),
        ("relayfile:fs:read:/ab/*", "scope_escalation"),
        ("relayfile:fs:write:/a/*", "scope_escalation"),
        ("relayfile:fs:read:/a/../b", "invalid_scope"),
    ] {
        let (status, body) = create_key(&d.public, &limited, &[scope]).await;
        assert_eq!(body["code"], code, "{scope}: {body}");
        assert_eq!(status, if code == "scope_escalation" { 403 } else { 400 });
    }
    let (status, body) = create_key(&d.public, &limited, &["relayfile:fs:read:/a/b/*"]).await;
    assert_eq!(status, 201, "{body}");
    let (_, list) = call(&d.public, &admin, "GET", "/v1/api-keys", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "only the two permitted keys were created");
}

#[tokio::test]
async fn the_admin_listener_refuses_non_admin_keys_and_the_public_one_has_no_admin_routes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let (_, k) = create_key(&d.public, &admin, &["relayauth:api-key:manage:*"]).await;
    let user = k["key"].as_str().unwrap();
    for path in ["/v1/admin/keys", "/v1/admin/audit"] {
        let (status, body) = call(&d.admin, user, "GET", path, None).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "{path}");
        assert_eq!(body["required"], "relayauth:admin:read:*");
        assert_eq!(body["requiredScopes"], json!(["relayauth:admin:read:*"]));
        assert_eq!(body["actual"], json!(["relayauth:api-key:manage:*"]));
        let (status, body) = call(&d.public, &admin, "GET", path, None).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{path} on public");
    }
    let resp = client().get(format!("{}/metrics", d.public)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_client_without_locking_out_valid_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("KMSD_AUTH__FAILURE_BURST", "5"),
        ("KMSD_AUTH__FAILURE_REFILL", "1h"),
        ("KMSD_AUTH__FAILURE_REPORT_INTERVAL", "1s"),
    ];
    let d = Daemon::start(tmp.path(), &env);
    let admin = bootstrap_key(&d.output());
    let (_, k) = create_key(&d.public, &admin, &["relayauth:api-key:read:*"]).await;
    let fresh = k["key"].as_str().unwrap().to_owned();
    let attacker = reqwest::Client::builder().no_proxy().local_address("127.0.0.7".parse().ok()).build().unwrap();
    let url = format!("{}/v1/api-keys", d.public);
    let bogus = kmsd::api_keys::ApiKeySecret::generate().unwrap();
    for _ in 0..5 {
        let resp = attacker.get(&url).header("x-api-key", bogus.expose()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    let resp = attacker.get(&url).header("x-api-key", bogus.expose()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");

    // A valid key always passes, even from the throttled client.
    let resp = attacker.get(&url).header("x-api-key", &admin).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Another client with a key never used before is unaffected.
    let (status, _) = call(&d.public, &fresh, "GET", "/v1/api-keys", None).await;
    assert_eq!(status, 200);

    // One aggregated audit row for the burst, not one per request.
    let mut rows = Vec::new();
    for _ in 0..60 {
        rows = audit(&d, &admin).await.into_iter().filter(|e| e["action"] == "auth.failures").collect();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["target"], "127.0.0.7");
    assert_eq!(rows[0]["detail"], json!({ "listener": "public", "failures": 5, "rejectedWhileLimited": 1 }));
}

#[tokio::test]
async fn malformed_bodies_get_json_errors_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let url = format!("{}/v1/api-keys", d.public);
    let big = format!("{{\"name\":\"{}\",\"scopes\":[]}}", "x".repeat(70 * 1024));
    for (body, status, code) in [
        ("{".to_owned(), 400, "invalid_json"),
        (r#"{"name":1,"scopes":[]}"#.to_owned(), 400, "invalid_request"),
        (r#"{"name":"a","scopes":["relayauth:api-key:read:*"],"bogus":1}"#.to_owned(), 400, "invalid_request"),
        (r#"{"name":"a","scopes":[]}"#.to_owned(), 400, "invalid_request"),
        (r#"{"name":"a","scopes":["x:y:z"],"expiresAt":"yesterday"}"#.to_owned(), 400, "invalid_request"),
        (big, 413, "payload_too_large"),
    ] {
        let resp = client().post(&url).header("x-api-key", &admin).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{}", &body[..body.len().min(80)]);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], code, "{v}");
    }
    let (_, list) = call(&d.public, &admin, "GET", "/v1/api-keys", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "only the bootstrap key exists");
}

#[tokio::test]
async fn listing_pages_with_a_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    for _ in 0..4 {
        assert_eq!(create_key(&d.public, &admin, &["relayauth:api-key:read:*"]).await.0, 201);
    }
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) =
            call(&d.public, &admin, "GET", &format!("/v1/api-keys?limit=2&cursor={cursor}"), None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["pagination"]["limit"], 2);
        ids.extend(page["data"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        if page["pagination"]["hasMore"] == false {
            assert!(page["pagination"]["cursor"].is_null());
            break;
        }
        cursor = page["pagination"]["cursor"].as_str().unwrap().to_owned();
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (5, 5));
    let (status, body) = call(&d.public, &admin, "GET", "/v1/api-keys?limit=0", None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")));
}

const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");

#[tokio::test]
async fn audit_verify_passes_on_a_live_store_and_names_an_edited_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    create_key(&d.public, &admin, &["relayauth:api-key:read:*"]).await;
    // The daemon holds the store: the CLI asks it to verify.
    let out = run(tmp.path(), &["audit", "verify", "--admin-url", &d.admin], &[("KMSD_ADMIN_API_KEY", &admin)]);
    assert!(out.status.success(), "{}", text(&out));
    let verified: u64 = text(&out).split("intact: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(verified >= 5, "init, keys and the new API key are audited: {}", text(&out));
    d.stop();
    // Stopped: the CLI reads the file itself.
    let out = run(tmp.path(), &["audit", "verify"], &[]);
    assert!(text(&out).contains(&format!("intact: {verified} entries")), "{}", text(&out));

    let path = tmp.path().join("kmsd-data").join("kmsd.redb");
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AUDIT).unwrap();
            let bytes = redb::ReadableTable::get(&table, 3).unwrap().unwrap().value().to_vec();
            let edited = String::from_utf8(bytes).unwrap().replacen("\"system\"", "\"mallory\"", 1);
            table.insert(3, edited.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = run(tmp.path(), &["audit", "verify"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("audit entry 3: hash does not match"), "{}", text(&out));
}

#[tokio::test]
async fn the_cli_manages_api_keys_through_the_admin_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let env = [("KMSD_ADMIN_API_KEY", admin.as_str())];
    let url = d.admin.clone();
    let cli = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(tmp.path(), &args, &env)
    };
    let out = cli(vec![
        "api-keys".into(),
        "create".into(),
        "--name".into(),
        "ci".into(),
        "--scope".into(),
        "relayauth:api-key:read:*".into(),
        "--admin-url".into(),
        url.clone(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["apiKey"]["id"].as_str().unwrap().to_owned();
    assert!(created["key"].as_str().unwrap().starts_with("rak_"));
    let out = cli(vec!["api-keys".into(), "list".into(), "--admin-url".into(), url.clone()]);
    assert!(text(&out).contains(&id), "{}", text(&out));
    let out = cli(vec!["api-keys".into(), "revoke".into(), id.clone(), "--admin-url".into(), url.clone()]);
    let revoked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked["revoked"], true);
    let out = cli(vec![
        "api-keys".into(),
        "create".into(),
        "--name".into(),
        "x".into(),
        "--scope".into(),
        "relayfile:fs:read:/a/../b".into(),
        "--admin-url".into(),
        url.clone(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("invalid_scope"), "{}", text(&out));
}
