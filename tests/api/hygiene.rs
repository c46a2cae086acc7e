//! Input hygiene at the edge (issue 12 item 5): every rejection is our JSON
//! error whatever layer produces it, identifiers and display fields hold no
//! control, bidi or zero-width characters, a JSON object names each key once,
//! and identity names are unique per org however many creates race.

use serde_json::{json, Value};

use crate::daemon::client;
use crate::support::call;
use crate::tokens::{start, Env};

/// Sends `body` as it is (no re-serialization, so duplicate keys survive);
/// the status, the `Content-Type` and the body parsed as JSON (`Null` if not).
async fn raw(base: &str, key: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String, Value) {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}")).header("x-api-key", key);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type =
        resp.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    (status, content_type, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The reply to a POST that declares `content_length` bytes of body and sends
/// none of it: kmsd refuses an oversized body from its headers alone. (A
/// client still writing such a body may instead see the connection reset, as
/// with any server that answers before reading: the kernel resets a socket
/// closed with unread data, and the reset can overtake the reply. So the test
/// sends no body.)
fn declared_body_reply(base: &str, key: &str, path: &str, content_length: usize) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    (status, content_type, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Our error format: JSON with a code, a message and a request id.
fn assert_json_error(what: &str, got: &(u16, String, Value), status: u16, code: &str) {
    let (s, content_type, body) = got;
    assert_eq!(*s, status, "{what}: {content_type} {body}");
    assert!(content_type.starts_with("application/json"), "{what}: content-type {content_type:?}, body {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    assert!(body["requestId"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
}

impl Env {
    async fn raw(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String, Value) {
        raw(&self.d.public, &self.admin, method, path, body).await
    }

    async fn identity_count(&self) -> usize {
        let (status, page) = call(&self.d.public, &self.admin, "GET", "/v1/identities?limit=100", None).await;
        assert_eq!(status, 200, "{page}");
        page["data"].as_array().unwrap().len()
    }
}

#[tokio::test]
async fn duplicate_query_parameters_and_bad_path_bytes_get_json_errors_with_a_code() {
    let e = start(&[]);
    let id = e.identity("hygiene-target", &[]).await;
    let (public, admin) = (e.d.public.as_str(), e.d.admin.as_str());
    let cases: Vec<(&str, &str, String, Option<&str>)> = vec![
        (public, "GET", "/v1/api-keys?limit=1&limit=2".into(), None),
        (admin, "GET", "/v1/api-keys?cursor=a&cursor=b".into(), None),
        (admin, "GET", "/v1/admin/audit?after=1&after=2".into(), None),
        (public, "GET", "/v1/identities?status=active&status=retired".into(), None),
        (public, "GET", "/v1/identities?limit=1&limit=1".into(), None),
        (public, "GET", "/v1/tokens/revocation?jti=a&jti=b".into(), None),
        (public, "GET", "/v1/tokens/introspect?token=a&token=b".into(), None),
        (public, "POST", "/v1/identities/%ff/suspend".into(), Some(r#"{"reason":"x"}"#)),
        (public, "GET", "/v1/identities/%ff%fe".into(), None),
        (public, "PATCH", "/v1/identities/%c3%28".into(), Some(r#"{"name":"n"}"#)),
        (public, "POST", "/v1/identities/%ff/retire".into(), None),
        (public, "POST", "/v1/api-keys/%ff/revoke".into(), None),
        (admin, "POST", "/v1/admin/keys/%ff%fe/revoke".into(), None),
        (public, "GET", "/v1/keysets/%ff/jwks.json".into(), None),
    ];
    for (base, method, path, body) in &cases {
        let got = raw(base, &e.admin, method, path, *body).await;
        assert_json_error(&format!("{method} {path}"), &got, 400, "invalid_request");
    }

    // Other framework-level rejections are ours too.
    let got = raw(public, &e.admin, "PUT", "/v1/api-keys", Some("{}")).await;
    assert_json_error("PUT /v1/api-keys", &got, 405, "method_not_allowed");
    let got = raw(public, &e.admin, "GET", "/v1/%ff/nothing", None).await;
    assert_json_error("GET /v1/%ff/nothing", &got, 404, "not_found");
    // A retire body over the limit (64 KiB by default) is our 413, not axum's text.
    let got = declared_body_reply(public, &e.admin, &format!("/v1/identities/{id}/retire"), 2 << 20);
    assert_json_error("oversized retire body", &got, 413, "payload_too_large");

    // The single-valued forms still work.
    let (status, _, body) = raw(public, &e.admin, "GET", "/v1/api-keys?limit=1", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = raw(admin, &e.admin, "GET", "/v1/admin/audit?after=1", None).await;
    assert_eq!(status, 200, "{body}");
}

/// Strings no identifier or display field may hold, and how they read.
const UNSAFE: [(&str, &str); 10] = [
    ("\u{0}", "NUL"),
    ("\u{1b}[31m", "ESC"),
    ("\r\n", "CRLF"),
    ("\u{7f}", "DEL"),
    ("\u{85}", "NEL"),
    ("\u{202e}", "right-to-left override"),
    ("\u{2066}", "left-to-right isolate"),
    ("\u{200f}", "right-to-left mark"),
    ("\u{200b}", "zero-width space"),
    ("\u{feff}", "byte-order mark"),
];

#[tokio::test]
async fn control_bidi_and_zero_width_characters_are_refused_in_every_identifier_and_display_field() {
    let e = start(&[]);
    let id = e.identity("hygiene-victim", &["relayauth:token:read:*"]).await;
    let before = e.identity_count().await;
    for (bad, label) in UNSAFE {
        let text = format!("a{bad}b");
        let creates = [
            ("name", json!({ "name": text, "sponsorId": "user_1" })),
            ("sponsorId", json!({ "name": "n1", "sponsorId": text })),
            ("workspaceId", json!({ "name": "n2", "sponsorId": "user_1", "workspaceId": text })),
            ("roles", json!({ "name": "n3", "sponsorId": "user_1", "roles": ["ok", text] })),
            ("metadata", json!({ "name": "n4", "sponsorId": "user_1", "metadata": { text.clone(): "v" } })),
            ("metadata", json!({ "name": "n5", "sponsorId": "user_1", "metadata": { "k": text } })),
        ];
        for (field, body) in creates {
            let got = e.raw("POST", "/v1/identities", Some(&body.to_string())).await;
            assert_json_error(&format!("create with {label} in {field}"), &got, 400, "invalid_request");
            let message = got.2["message"].as_str().unwrap();
            assert!(message.contains(field), "{label} in {field}: the message names the field: {message}");
        }
        let patches = [
            ("name", json!({ "name": text })),
            ("roles", json!({ "roles": [text] })),
            ("metadata", json!({ "metadata": { "k": text } })),
            ("workspaceId", json!({ "workspaceId": text })),
        ];
        for (field, body) in patches {
            let got = e.raw("PATCH", &format!("/v1/identities/{id}"), Some(&body.to_string())).await;
            assert_json_error(&format!("patch with {label} in {field}"), &got, 400, "invalid_request");
            assert!(got.2["message"].as_str().unwrap().contains(field), "{label} in {field}: {}", got.2);
        }
        let body = json!({ "name": text, "scopes": ["relayauth:token:read:*"] });
        let got = e.raw("POST", "/v1/api-keys", Some(&body.to_string())).await;
        assert_json_error(&format!("API key with {label} in name"), &got, 400, "invalid_request");
        assert!(got.2["message"].as_str().unwrap().contains("name"), "{}", got.2);

        let body = json!({ "identityId": id, "audience": ["relayauth", text] });
        let got = e.raw("POST", "/v1/tokens", Some(&body.to_string())).await;
        assert_json_error(&format!("token with {label} in audience"), &got, 400, "invalid_request");
        assert!(got.2["message"].as_str().unwrap().contains("audience"), "{}", got.2);
    }
    assert_eq!(e.identity_count().await, before, "no refused create left an identity behind");
    let (status, v) = call(&e.d.public, &e.admin, "GET", &format!("/v1/identities/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!((v["name"].as_str(), v["roles"].as_array().map(Vec::len)), (Some("hygiene-victim"), Some(0)), "{v}");

    // Printable text beyond ASCII is fine: accents, CJK, emoji, a joiner-free RTL script.
    let fine = "Zoë 東京 🚀 שלום";
    let body = json!({ "name": fine, "sponsorId": "user_1", "roles": [fine], "metadata": { fine: fine } });
    let (status, v) = call(&e.d.public, &e.admin, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], fine);
    let body = json!({ "identityId": id, "audience": ["https://api.example.com/v1", "relayauth"] });
    let (status, v) = call(&e.d.public, &e.admin, "POST", "/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{v}");
}

#[tokio::test]
async fn duplicate_metadata_keys_are_refused_like_duplicate_fields() {
    let e = start(&[]);
    let id = e.identity("hygiene-meta", &[]).await;
    let before = e.identity_count().await;
    let bodies = [
        r#"{"name":"m1","sponsorId":"user_1","metadata":{"a":"1","a":"2"}}"#,
        r#"{"name":"m2","sponsorId":"user_1","metadata":{"a":"1","b":"x","a":"1"}}"#,
        r#"{"name":"m3","name":"m4","sponsorId":"user_1"}"#,
    ];
    for body in bodies {
        let got = e.raw("POST", "/v1/identities", Some(body)).await;
        assert_json_error(body, &got, 400, "invalid_request");
        assert!(got.2["message"].as_str().unwrap().contains("duplicate"), "{body}: {}", got.2);
    }
    assert_eq!(e.identity_count().await, before);
    let body = r#"{"metadata":{"team":"a","team":"b"}}"#;
    let got = e.raw("PATCH", &format!("/v1/identities/{id}"), Some(body)).await;
    assert_json_error(body, &got, 400, "invalid_request");
    assert!(got.2["message"].as_str().unwrap().contains("duplicate"), "{}", got.2);
    let (_, v) = call(&e.d.public, &e.admin, "GET", &format!("/v1/identities/{id}"), None).await;
    assert_eq!(v["metadata"], json!({}), "the refused PATCH changed nothing: {v}");

    let got = e.raw("POST", "/v1/identities", Some(r#"{"name":"m5","sponsorId":"user_1","metadata":{"a":"1"}}"#)).await;
    assert_eq!(got.0, 201, "{}", got.2);
    assert_eq!(got.2["metadata"], json!({ "a": "1" }));
}

/// Runs `n` copies of one request at once; the statuses and bodies.
async fn race(e: &Env, n: usize, method: &'static str, paths: Vec<String>, body: Value) -> Vec<(u16, Value)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (base, key, barrier) = (e.d.public.clone(), e.admin.clone(), barrier.clone());
            let (path, body) = (paths[i % paths.len()].clone(), body.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                call(&base, &key, method, &path, Some(body)).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(tokio::time::timeout(std::time::Duration::from_secs(30), t).await.unwrap().unwrap());
    }
    out
}

fn tally(what: &str, results: &[(u16, Value)], ok: u16) {
    let wins = results.iter().filter(|(s, _)| *s == ok).count();
    let conflicts = results.iter().filter(|(s, v)| *s == 409 && v["code"] == "identity_already_exists").count();
    assert_eq!((wins, conflicts), (1, results.len() - 1), "{what}: {results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_ten_racing_creates_or_renames_to_one_name_exactly_one_wins() {
    let e = start(&[]);
    let before = e.identity_count().await;
    for round in 0..5 {
        let name = format!("racer-{round}");
        let body = json!({ "name": name, "sponsorId": "user_1" });
        let results = race(&e, 10, "POST", vec!["/v1/identities".into()], body).await;
        tally(&format!("create round {round}"), &results, 201);
    }
    let mut paths = Vec::new();
    for i in 0..10 {
        paths.push(format!("/v1/identities/{}", e.identity(&format!("renamee-{i}"), &[]).await));
    }
    for round in 0..3 {
        let results = race(&e, 10, "PATCH", paths.clone(), json!({ "name": format!("taken-{round}") })).await;
        tally(&format!("rename round {round}"), &results, 200);
    }
    let (status, page) = call(&e.d.public, &e.admin, "GET", "/v1/identities?limit=100", None).await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = page["data"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "every stored name is unique: {names:?}");
    assert_eq!(all, before + 15, "5 created racers and 10 renamees (3 of them renamed)");
}
