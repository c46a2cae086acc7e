//! State changes that must stick, and principals that must not reach further
//! than their scopes, over real HTTP: a revocation survives the client hanging
//! up mid-request, a suspension survives a concurrent PATCH, a principal cannot
//! act on a stronger one, kmsd authorizes with the identity's current state,
//! scopes outside the alphabet are refused, and failed authentications never
//! lock out a valid key.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::client;
use crate::support::call;
use crate::tokens::{part, start, Env};

async fn audit_has(e: &Env, action: &str, target: &str) -> bool {
    let (status, body) = call(&e.d.admin, &e.admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().iter().any(|ev| ev["action"] == action && ev["target"] == target)
}

/// Sends `POST /v1/tokens/revoke` with `body` on a raw connection and closes
/// it `after` sending, without reading the reply.
fn revoke_and_hang_up(e: &Env, body: &Value, after: Duration) {
    let addr = e.d.public.strip_prefix("http://").unwrap();
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST /v1/tokens/revoke HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        e.admin,
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(after);
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Polls until `f` holds, for at most `limit`.
async fn eventually<F: std::future::Future<Output = bool>>(limit: Duration, mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_revocation_committed_for_a_client_that_hung_up_takes_effect_without_a_restart() {
    let e = start(&[]);
    let id = e.identity("hangs-up", &["relayfile:fs:read:/a/*"]).await;
    // Where the hang-up lands is up to the scheduler: before kmsd reads the
    // request (nothing commits), during the revocation (what this is about),
    // or after it. Several rounds at a few delays make each likely.
    let mut committed = 0;
    let delays = [0, 0, 100, 300, 1000].map(Duration::from_micros);
    for round in 0..15 {
        let (status, p) = e.issue(&e.admin, json!({ "identityId": id })).await;
        assert_eq!(status, 201, "{p}");
        let access = p["accessToken"].as_str().unwrap().to_owned();
        let claims = part(&access, 1);
        assert_ne!(e.introspect(&access).await, Value::Null);
        // Alternate a token revocation and a session revocation.
        let (body, action, target) = if round % 2 == 0 {
            (json!({ "tokenId": claims["jti"] }), "token.revoke", claims["jti"].as_str().unwrap().to_owned())
        } else {
            (json!({ "sessionId": claims["sid"] }), "token.revoke_session", claims["sid"].as_str().unwrap().to_owned())
        };
        revoke_and_hang_up(&e, &body, delays[round % delays.len()]);
        if !eventually(Duration::from_secs(1), || audit_has(&e, action, &target)).await {
            continue; // kmsd dropped the request before committing: nothing to check.
        }
        committed += 1;
        let gone = eventually(Duration::from_secs(3), || async { e.introspect(&access).await == Value::Null }).await;
        assert!(gone, "round {round}: the store says {action} {target}, but the token still introspects");
    }
    eprintln!("{committed} of 15 hung-up revocations committed");
    assert!(committed >= 1, "none of the revocations committed; the test checked nothing");
}

/// `DELETE /v1/identities/{id}` with the confirmation header; the status.
pub async fn delete_identity(base: &str, key: &str, id: &str) -> u16 {
    let url = format!("{base}/v1/identities/{id}");
    let resp = client().delete(url).header("x-api-key", key).header("x-confirm-delete", "true").send().await.unwrap();
    resp.status().as_u16()
}

async fn identity_view(e: &Env, id: &str) -> Value {
    let (status, v) = call(&e.d.public, &e.admin, "GET", &format!("/v1/identities/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn a_suspension_or_retirement_survives_a_concurrent_patch() {
    let e = start(&[]);
    let base = e.d.public.clone();
    let id = e.identity("racer", &["relayfile:fs:read:/a/*"]).await;
    let (suspend_path, path) = (format!("/v1/identities/{id}/suspend"), format!("/v1/identities/{id}"));
    for round in 0..40 {
        let suspend = call(&base, &e.admin, "POST", &suspend_path, Some(json!({ "reason": "race" })));
        let metadata = json!({ "metadata": { "round": round.to_string() } });
        let patch = call(&base, &e.admin, "PATCH", &path, Some(metadata));
        let ((s1, v1), (s2, v2)) = tokio::join!(suspend, patch);
        assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
        let v = identity_view(&e, &id).await;
        assert_eq!(v["status"], "suspended", "round {round}: the suspension was lost: {v}");
        assert_eq!(v["metadata"]["round"], round.to_string(), "round {round}: the patch was lost: {v}");
        let (status, body) = e.issue(&e.admin, json!({ "identityId": id })).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("identity_suspended")), "round {round}");
        let (status, v) = call(&base, &e.admin, "POST", &format!("/v1/identities/{id}/reactivate"), None).await;
        assert_eq!(status, 200, "{v}");
    }
    for round in 0..20 {
        let id = e.identity(&format!("retiree-{round}"), &["relayfile:fs:read:/a/*"]).await;
        let (retire_path, path) = (format!("/v1/identities/{id}/retire"), format!("/v1/identities/{id}"));
        let retire = call(&base, &e.admin, "POST", &retire_path, None);
        let patch = call(&base, &e.admin, "PATCH", &path, Some(json!({ "roles": ["r"] })));
        let ((s1, v1), (s2, v2)) = tokio::join!(retire, patch);
        assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
        let v = identity_view(&e, &id).await;
        assert_eq!(v["status"], "retired", "round {round}: the retirement was lost: {v}");
        let (status, body) = e.issue(&e.admin, json!({ "identityId": id })).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("identity_suspended")), "round {round}");
    }
}

#[tokio::test]
async fn a_principal_cannot_act_on_one_holding_scopes_it_lacks() {
    let e = start(&[]);
    let base = e.d.public.clone();
    // An API-key manager cannot revoke a stronger key, the bootstrap key included.
    let (_, k) = create_key(&base, &e.admin, &["relayauth:api-key:manage:*"]).await;
    let manager = k["key"].as_str().unwrap().to_owned();
    let (_, list) = call(&base, &e.admin, "GET", "/v1/api-keys", None).await;
    let bootstrap_id = list["data"].as_array().unwrap().iter().find(|k| k["name"] == "bootstrap-admin").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = call(&base, &manager, "POST", &format!("/v1/api-keys/{bootstrap_id}/revoke"), None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("scope_escalation")), "{body}");
    assert_eq!(call(&base, &e.admin, "GET", "/v1/api-keys", None).await.0, 200, "the bootstrap key still works");
    let (_, weak) = create_key(&base, &e.admin, &["relayauth:api-key:read:*"]).await;
    let weak_id = weak["apiKey"]["id"].as_str().unwrap();
    let (status, body) = call(&base, &manager, "POST", &format!("/v1/api-keys/{weak_id}/revoke"), None).await;
    assert_eq!(status, 200, "a key it covers can be revoked: {body}");

    // An identity manager cannot touch a `*:*:*:*` identity.
    let strong = e.identity("strong", &["*:*:*:*"]).await;
    let (_, k) = create_key(
        &base,
        &e.admin,
        &["relayauth:identity:manage:*", "relayauth:token:manage:*", "relayfile:fs:read:/a/*"],
    )
    .await;
    let im = k["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/identities/{strong}");
    for (method, p, body) in [
        ("POST", format!("{path}/suspend"), Some(json!({ "reason": "takeover" }))),
        ("POST", format!("{path}/retire"), None),
        ("PATCH", path.clone(), Some(json!({ "scopes": ["relayfile:fs:read:/a/*"] }))),
        ("PATCH", path.clone(), Some(json!({ "name": "renamed" }))),
        ("POST", "/v1/tokens/revoke".to_owned(), Some(json!({ "identityId": strong }))),
    ] {
        let (status, v) = call(&base, &im, method, &p, body).await;
        assert_eq!((status, v["code"].as_str()), (403, Some("scope_escalation")), "{method} {p}: {v}");
    }
    assert_eq!(delete_identity(&base, &im, &strong).await, 403, "delete");
    let v = identity_view(&e, &strong).await;
    assert_eq!((v["status"].as_str(), v["name"].as_str()), (Some("active"), Some("strong")), "{v}");
    assert_eq!(v["scopes"], json!(["*:*:*:*"]));
    // Suspended by the admin, it cannot be reactivated by the weaker manager either.
    let (status, _) = call(&base, &e.admin, "POST", &format!("{path}/suspend"), Some(json!({ "reason": "x" }))).await;
    assert_eq!(status, 200);
    let (status, v) = call(&base, &im, "POST", &format!("{path}/reactivate"), None).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("scope_escalation")), "{v}");
    // One it covers it can manage.
    let weak = e.identity("weak", &["relayfile:fs:read:/a/b/*"]).await;
    let (status, v) =
        call(&base, &im, "POST", &format!("/v1/identities/{weak}/suspend"), Some(json!({ "reason": "ok" }))).await;
    assert_eq!(status, 200, "{v}");
}

async fn bearer(base: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn kmsd_authorizes_bearers_and_the_keys_they_minted_with_the_identitys_current_state() {
    let e = start(&[]);
    let base = e.d.public.clone();
    let scopes = ["relayauth:api-key:manage:*", "relayauth:identity:read:*"];
    let id = e.identity("minter", &scopes).await;
    let (status, p) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(status, 201, "{p}");
    let token = p["accessToken"].as_str().unwrap().to_owned();
    let body = json!({ "name": "minted", "scopes": scopes });
    let (status, k) = bearer(&base, &token, "POST", "/v1/api-keys", Some(body)).await;
    assert_eq!(status, 201, "{k}");
    let minted = k["key"].as_str().unwrap().to_owned();
    // A key minted by that key is tied to the same identity; one an admin minted is not.
    let (status, k) = create_key(&base, &minted, &["relayauth:identity:read:*"]).await;
    assert_eq!(status, 201, "{k}");
    let chained = k["key"].as_str().unwrap().to_owned();
    let (status, k) = create_key(&base, &e.admin, &["relayauth:identity:read:*"]).await;
    assert_eq!(status, 201, "{k}");
    let independent = k["key"].as_str().unwrap().to_owned();
    assert_eq!(call(&base, &minted, "GET", "/v1/identities", None).await.0, 200);

    // Suspended: the minted key stops authenticating; an admin's key does not care.
    let (status, _) =
        call(&base, &e.admin, "POST", &format!("/v1/identities/{id}/suspend"), Some(json!({ "reason": "x" }))).await;
    assert_eq!(status, 200);
    for key in [&minted, &chained] {
        let (status, v) = call(&base, key, "GET", "/v1/identities", None).await;
        assert_eq!((status, v["code"].as_str()), (401, Some("invalid_api_key")), "{v}");
    }
    assert_eq!(call(&base, &independent, "GET", "/v1/identities", None).await.0, 200);
    let (status, _) = call(&base, &e.admin, "POST", &format!("/v1/identities/{id}/reactivate"), None).await;
    assert_eq!(status, 200);
    assert_eq!(call(&base, &chained, "GET", "/v1/identities", None).await.0, 200, "active again");

    // Narrowed: neither a token issued before nor the minted key keeps the removed scope on kmsd.
    let (status, p) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(status, 201, "{p}");
    let wide = p["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&base, &wide, "GET", "/v1/identities", None).await.0, 200);
    let narrowed = json!({ "scopes": ["relayauth:api-key:manage:*"] });
    let (status, v) = call(&base, &e.admin, "PATCH", &format!("/v1/identities/{id}"), Some(narrowed)).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = bearer(&base, &wide, "GET", "/v1/identities", None).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    assert_eq!(bearer(&base, &wide, "GET", "/v1/api-keys", None).await.0, 200, "what it still holds works");
    for key in [&minted, &chained] {
        let (status, v) = call(&base, key, "GET", "/v1/identities", None).await;
        assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    }
    assert_eq!(call(&base, &independent, "GET", "/v1/identities", None).await.0, 200);

    // Deleted: the minted key is gone with it.
    assert_eq!(delete_identity(&base, &e.admin, &id).await, 204);
    assert_eq!(call(&base, &minted, "GET", "/v1/api-keys", None).await.0, 401);
    assert_eq!(call(&base, &chained, "GET", "/v1/api-keys", None).await.0, 401);
}

#[tokio::test]
async fn scopes_outside_the_alphabet_are_refused_wherever_scopes_are_granted() {
    let e = start(&[]);
    let base = e.d.public.clone();
    let id = e.identity("alphabet", &["relayfile:fs:read:*"]).await;
    for (class, path) in [
        ("encoded dot-dot", "/a/%2e%2e/secret"),
        ("percent escape", "/a/%41"),
        ("zero-width space", "/a/\u{200B}b"),
        ("bidi override", "/a/\u{202E}b"),
        ("two-dot leader", "/a/\u{2025}/b"),
        ("combining mark", "/a/e\u{0301}"),
    ] {
        let scope = format!("relayfile:fs:read:{path}");
        let (status, v) = create_key(&base, &e.admin, &[scope.as_str()]).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_scope")), "API key, {class}: {v}");
        let body = json!({ "name": format!("n-{}", class.len()), "sponsorId": "s", "scopes": [scope] });
        let (status, v) = call(&base, &e.admin, "POST", "/v1/identities", Some(body)).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_scope")), "identity, {class}: {v}");
        let body = json!({ "scopes": [scope] });
        let (status, v) = call(&base, &e.admin, "PATCH", &format!("/v1/identities/{id}"), Some(body)).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_scope")), "patch, {class}: {v}");
        let (status, v) = e.issue(&e.admin, json!({ "identityId": id, "scopes": [scope] })).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_scope")), "token, {class}: {v}");
    }
    let (status, v) = create_key(&base, &e.admin, &["relayfile:fs:read:/a-b_c/d.e~f@g+h=i,j/*"]).await;
    assert_eq!(status, 201, "the whole alphabet is grantable: {v}");
}

async fn lookups(e: &Env) -> u64 {
    let text = client().get(format!("{}/metrics", e.d.admin)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("kmsd_api_key_store_lookups_total ")).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn failed_authentications_never_lock_out_a_valid_key() {
    // The default burst (20); no refill during the test, so "throttled" stays put.
    let e = start(&[("KMSD_AUTH__FAILURE_REFILL", "1h")]);
    let from = |ip: &str| reqwest::Client::builder().no_proxy().local_address(ip.parse().ok()).build().unwrap();
    let attacker = from("127.0.0.9");
    let get = |base: &str, path: &str, key: &str| {
        attacker.get(format!("{base}{path}")).header("x-api-key", key.to_owned()).send()
    };
    let bad = || kmsd::api_keys::ApiKeySecret::generate().unwrap().expose().to_owned();
    let mut limited = 0;
    for _ in 0..30 {
        let status = get(&e.d.public, "/v1/api-keys", &bad()).await.unwrap().status().as_u16();
        assert!(status == 401 || status == 429, "{status}");
        limited += u32::from(status == 429);
    }
    assert!(limited > 0, "the client is throttled after its burst");
    // Any revocation (which once emptied the known-good set), then more bad keys.
    let (_, k) = create_key(&e.d.public, &e.admin, &["relayauth:api-key:read:*"]).await;
    let kid = k["apiKey"]["id"].as_str().unwrap();
    assert_eq!(call(&e.d.public, &e.admin, "POST", &format!("/v1/api-keys/{kid}/revoke"), None).await.0, 200);
    for _ in 0..5 {
        get(&e.d.public, "/v1/api-keys", &bad()).await.unwrap();
    }
    // The bootstrap key, from the throttled client, on both listeners.
    let resp = get(&e.d.admin, "/v1/admin/keys", &e.admin).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "admin listener: {}", resp.text().await.unwrap());
    assert_eq!(get(&e.d.public, "/v1/api-keys", &e.admin).await.unwrap().status().as_u16(), 200);
    // A key never used before, from the throttled client.
    let (_, k) = create_key(&e.d.public, &e.admin, &["relayauth:api-key:read:*"]).await;
    let fresh = k["key"].as_str().unwrap().to_owned();
    assert_eq!(get(&e.d.public, "/v1/api-keys", &fresh).await.unwrap().status().as_u16(), 200);
    // The admin listener keeps its own count: a bad key there is a plain 401.
    assert_eq!(get(&e.d.admin, "/v1/admin/keys", &bad()).await.unwrap().status().as_u16(), 401);
    // A key that failed is answered again without another store lookup.
    let repeat = bad();
    get(&e.d.public, "/v1/api-keys", &repeat).await.unwrap();
    let before = lookups(&e).await;
    for _ in 0..10 {
        let status = get(&e.d.public, "/v1/api-keys", &repeat).await.unwrap().status().as_u16();
        assert_eq!(status, 429, "still throttled for what fails");
    }
    assert_eq!(lookups(&e).await, before, "a key that failed is not looked up again");
}
