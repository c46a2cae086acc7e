//! What every test module shares: HTTP calls with an API key, GETs with
//! headers, the JWKS kid listing, identity-then-issue, the admin key listing,
//! and [`TestApp`], the in-process app on a manual clock. Tests that need a
//! real process (signals, kill -9, the CLI, log output) use `crate::daemon`.

mod app;

use std::collections::HashSet;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

pub use app::TestApp;

use crate::daemon::client;

/// `method path` on `base` with `x-api-key: key` and an optional JSON body:
/// the status and the JSON reply (`null` when there is none).
pub async fn call(base: &str, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}")).header("x-api-key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `GET url` with `headers`: the status, the reply's headers and its JSON (`null` when none).
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// `GET /v1/tokens/introspect?token=` with an API key: the claims, or `null`.
pub async fn introspect(base: &str, key: &str, token: &str) -> Value {
    let url = format!("{base}/v1/tokens/introspect?token={token}");
    client().get(url).header("x-api-key", key).send().await.unwrap().json().await.unwrap()
}

/// The kids of a JWKS document, sorted.
pub fn kid_list(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    kids.sort();
    kids
}

/// The kids `public` publishes in `/.well-known/jwks.json`, sorted.
pub async fn jwks_kids(public: &str) -> Vec<String> {
    jwks_kids_and_cache(public).await.0.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// The published kids and the JWKS reply's `Cache-Control`.
pub async fn jwks_kids_and_cache(public: &str) -> (HashSet<String>, String) {
    let (status, headers, body) = get(&format!("{public}/.well-known/jwks.json"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let cache = headers["cache-control"].to_str().unwrap().to_owned();
    (kid_list(&body).into_iter().collect(), cache)
}

/// Creates an identity named `name` holding `scopes`; its id.
pub async fn identity(public: &str, key: &str, name: &str, scopes: &[&str]) -> String {
    let body = json!({ "name": name, "sponsorId": "user_sponsor", "scopes": scopes });
    let (status, v) = call(public, key, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Issues a token pair for identity `id` with audience `svc`; the reply.
pub async fn issue(public: &str, key: &str, id: &str) -> Value {
    let body = json!({ "identityId": id, "audience": ["svc"] });
    let (status, v) = call(public, key, "POST", "/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// `GET /v1/admin/keys`: every key version.
pub async fn admin_keys(admin: &str, key: &str) -> Vec<Value> {
    let (status, v) = call(admin, key, "GET", "/v1/admin/keys", None).await;
    assert_eq!(status, 200, "{v}");
    v["keys"].as_array().unwrap().clone()
}
