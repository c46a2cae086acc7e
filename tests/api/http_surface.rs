//! The HTTP surface shared by every route: JSON errors with stable codes,
//! request ids, authentication codes, health, and the admin key listing.

use serde_json::Value;

use crate::daemon::{bootstrap_key, client, Daemon};
use crate::support::get;

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["requestId"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn errors_are_json_with_stable_codes_and_every_response_has_a_request_id() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let key = bootstrap_key(&d.output());

    let (status, headers, body) = get(&format!("{}/no/such/route", d.public), &[("x-request-id", "trace-42")]).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    assert_eq!(body["requestId"], "trace-42");
    assert_eq!(headers["x-request-id"], "trace-42");
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));

    let resp = client().post(format!("{}/health", d.public)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_error(&resp.json::<Value>().await.unwrap(), "method_not_allowed");

    let (status, headers, body) = get(&format!("{}/health", d.public), &[]).await;
    assert_eq!((status, body.to_string()), (200, r#"{"status":"ok"}"#.to_owned()));
    assert!(headers["x-request-id"].to_str().unwrap().starts_with("req_"));

    let admin_keys = format!("{}/v1/admin/keys", d.admin);
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Headers, u16, &str)] = &[
        (&[], 401, "missing_authorization"),
        (&[("authorization", "Basic Zm9vOmJhcg==")], 401, "invalid_authorization"),
        (&[("authorization", "bearer abc")], 401, "invalid_authorization"),
        (&[("authorization", "Bearer not.a.token")], 401, "invalid_token"),
        (&[("x-api-key", "rak_short")], 401, "invalid_api_key"),
    ];
    for (headers, want_status, want_code) in cases {
        let (status, _, body) = get(&admin_keys, headers).await;
        assert_eq!(status, *want_status, "{headers:?}: {body}");
        assert_error(&body, want_code);
    }
    // A well-formed key that kmsd never issued.
    let forged = kmsd::api_keys::ApiKeySecret::generate().unwrap();
    let (status, _, body) = get(&admin_keys, &[("x-api-key", forged.expose())]).await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_api_key");

    let (status, _, body) = get(&admin_keys, &[("x-api-key", &key)]).await;
    assert_eq!(status, 200, "{body}");
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "access, edge, refresh and sign");
    for k in keys {
        for field in
            ["keyId", "algorithm", "status", "createdAt", "state", "keyset", "backend", "publishedAt", "activatedAt"]
        {
            assert!(k[field].is_string(), "{field} in {k}");
        }
        for field in ["expiresAt", "retiredAt", "removeAt"] {
            assert!(k.get(field).is_some(), "{field} in {k}");
        }
        assert_eq!(k["status"], "active");
        assert_eq!(k["state"], "active");
        assert_eq!(k["backend"], "vault");
    }
    // The admin routes are not on the public listener.
    let (status, _, _) = get(&format!("{}/v1/admin/keys", d.public), &[("x-api-key", &key)]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn readiness_reports_storage_backends_and_a_signer_per_keyset() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let (status, _, body) = get(&format!("{}/v1/health", d.public), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["timestamp"].as_str().unwrap().ends_with(".000Z"));
    assert_eq!(body["services"]["storage"]["status"], "ok");
    assert_eq!(body["services"]["backends"]["vault"]["status"], "ok");
    assert_eq!(body["services"]["keysets"]["access"]["algorithm"], "RS256");
    assert_eq!(body["services"]["keysets"]["edge"]["algorithm"], "EdDSA");
    let rotation = &body["services"]["keysets"]["access"]["rotation"];
    assert_eq!(*rotation, serde_json::json!({ "status": "ok", "failedTicks": 0 }), "{body}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let (status, out) = d.stop();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("kmsd stopped"), "{out}");
}
