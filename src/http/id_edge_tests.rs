//! Ids a client sends are parsed where they enter (the identity path, the
//! bodies of issue and revoke, the public revocation check's `jti=`), and
//! text of no id's form gets the answer an id kmsd never made gets: the
//! same status, code and message, at the same point of the request.

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api_keys::ApiKeySecret;

/// Well-formed ids of nothing kmsd holds.
const NO_IDENTITY: &str = "agent_00000000000000000000000000000000";
const NO_TOKEN: &str = "tok_00000000000000000000000000000000";
const NO_SESSION: &str = "sess_00000000000000000000000000000000";

struct Edge {
    router: Router,
    admin: ApiKeySecret,
}

impl Edge {
    /// Status and body of one request as the admin (the request id left out).
    async fn answer(&self, method: &str, path: &str, body: Option<Value>, confirm: bool) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path).header("x-api-key", self.admin.expose());
        if confirm {
            req = req.header("x-confirm-delete", "true");
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let resp = self.router.clone().oneshot(req.unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("requestId");
        }
        (status, v)
    }

    /// Asserts that `malformed` and `unknown` (in `path` and `body` where
    /// `{}` stands) get the same answer, and that its status and code are
    /// `expected`.
    async fn same(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        confirm: bool,
        ids: [&str; 2],
        expected: (u16, &str),
    ) {
        let [malformed, unknown] = ids;
        let with = |id: &str| {
            let body = body.as_ref().map(|b| serde_json::from_str(&b.to_string().replace("{}", id)).unwrap());
            (path.replace("{}", id), body)
        };
        let (p, b) = with(malformed);
        let got = self.answer(method, &p, b, confirm).await;
        let (p, b) = with(unknown);
        let before = self.answer(method, &p, b, confirm).await;
        assert_eq!(got, before, "{method} {path} with {malformed:?} answers as with an unknown id");
        let code = got.1["code"].as_str().unwrap_or_default();
        assert_eq!((got.0, code), expected, "{method} {path}: {}", got.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_of_no_id_form_at_an_edge_gets_the_answer_an_unknown_id_gets() {
    let dir = tempfile::tempdir().unwrap();
    let (app, admin) = crate::app::testing::app(dir.path()).await;
    let e = Edge { router: super::public_router(app.state().clone()), admin };
    let not_found = (404, "identity_not_found");
    for bad in ["agent_x", "agent_1", "AGENT_00000000000000000000000000000000", "x%20y"] {
        let ids = [bad, NO_IDENTITY];
        e.same("GET", "/v1/identities/{}", None, false, ids, not_found).await;
        e.same("POST", "/v1/identities/{}/suspend", Some(json!({ "reason": "r" })), false, ids, not_found).await;
        e.same("POST", "/v1/identities/{}/retire", None, false, ids, not_found).await;
        e.same("POST", "/v1/identities/{}/reactivate", None, false, ids, not_found).await;
        e.same("PATCH", "/v1/identities/{}", Some(json!({ "name": "n" })), false, ids, not_found).await;
        e.same("DELETE", "/v1/identities/{}", None, true, ids, not_found).await;
        // What is refused before the lookup still is, whatever the path names.
        e.same("PATCH", "/v1/identities/{}", Some(json!({ "name": " " })), false, ids, (400, "invalid_request")).await;
        e.same("DELETE", "/v1/identities/{}", None, false, ids, (400, "confirmation_required")).await;
        e.same("POST", "/v1/tokens", Some(json!({ "identityId": "{}" })), false, ids, not_found).await;
        let revoke = Some(json!({ "identityId": "{}" }));
        e.same("POST", "/v1/tokens/revoke", revoke, false, ids, (404, "token_not_found")).await;
    }
    for bad in ["tok_x", "tok_r1", NO_SESSION, "tok_0000000000000000000000000000000G"] {
        let revoke = Some(json!({ "tokenId": "{}" }));
        e.same("POST", "/v1/tokens/revoke", revoke, false, [bad, NO_TOKEN], (404, "token_not_found")).await;
        let revocation = e.answer("GET", &format!("/v1/tokens/revocation?jti={bad}"), None, false).await;
        let unknown = e.answer("GET", &format!("/v1/tokens/revocation?jti={NO_TOKEN}"), None, false).await;
        assert_eq!(revocation, unknown, "jti={bad:?}");
        assert_eq!(revocation, (200, json!({ "revoked": true })), "jti={bad:?}: kmsd never issued it");
    }
    for bad in ["sess_1", "s", NO_TOKEN] {
        let revoke = Some(json!({ "sessionId": "{}" }));
        e.same("POST", "/v1/tokens/revoke", revoke, false, [bad, NO_SESSION], (404, "token_not_found")).await;
    }
}
