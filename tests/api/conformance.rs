//! relayauth's own API clients against kmsd. The request bodies below are the
//! ones relayauth's TypeScript `RelayAuthClient` (packages/sdk/typescript/src/
//! client.ts) and Python `RelayAuthClient` (packages/sdk/python/relayauth/
//! client.py) build, and the response fields checked are the ones they read
//! (`AgentIdentity.from_dict`, `TokenPair.from_dict` and `Claims.from_dict`
//! index them; the TS error mapper reads `code ?? error`, `required` as a
//! string and `actual` as a list). One test per defect found by running those
//! clients against kmsd, then a walk through every identity and token call.

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::client;
use crate::support::call;
use crate::tokens::{part, start, Env};

/// Identity fields the Python client indexes (a `KeyError` if absent).
const IDENTITY_STRINGS: [&str; 7] = ["id", "name", "type", "orgId", "status", "createdAt", "updatedAt"];
const IDENTITY_LISTS: [&str; 2] = ["scopes", "roles"];
/// `TokenPair.from_dict`.
const PAIR_STRINGS: [&str; 5] =
    ["accessToken", "refreshToken", "accessTokenExpiresAt", "refreshTokenExpiresAt", "tokenType"];
/// `Claims.from_dict` (introspection).
const CLAIM_STRINGS: [&str; 8] = ["sub", "org", "wks", "sponsorId", "token_type", "iss", "jti", "sid"];
const CLAIM_INTEGERS: [&str; 2] = ["exp", "iat"];
const CLAIM_LISTS: [&str; 3] = ["scopes", "sponsorChain", "aud"];

fn assert_identity(v: &Value) {
    for f in IDENTITY_STRINGS {
        assert!(v[f].is_string(), "identity field {f} must be a string: {v}");
    }
    for f in ["createdAt", "updatedAt"] {
        assert!(kmsd::clock::Timestamp::parse_iso(v[f].as_str().unwrap()).is_some(), "{f} is ISO-8601: {v}");
    }
    for f in IDENTITY_LISTS {
        assert!(v[f].as_array().is_some_and(|a| a.iter().all(Value::is_string)), "{f} must be a string list: {v}");
    }
    assert!(v["metadata"].as_object().is_some_and(|m| m.values().all(Value::is_string)), "{v}");
}

fn assert_pair(v: &Value) {
    for f in PAIR_STRINGS {
        assert!(v[f].is_string(), "token pair field {f}: {v}");
    }
    assert_eq!(v["tokenType"], "Bearer");
}

fn assert_claims(v: &Value) {
    for f in CLAIM_STRINGS {
        assert!(v[f].is_string(), "claim {f}: {v}");
    }
    for f in CLAIM_INTEGERS {
        assert!(v[f].is_i64(), "claim {f}: {v}");
    }
    for f in CLAIM_LISTS {
        assert!(v[f].as_array().is_some_and(|a| a.iter().all(Value::is_string)), "claim {f}: {v}");
    }
}

impl Env {
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.d.public, &self.admin, method, path, body).await
    }

    /// Follows `cursor` through every page of `GET /v1/identities?{query}`;
    /// returns the ids in order and the number of pages.
    async fn list_all(&self, query: &str) -> (Vec<String>, usize) {
        let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let c = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let (status, page) = self.api("GET", &format!("/v1/identities?{query}{c}"), None).await;
            assert_eq!(status, 200, "{query}: {page}");
            pages += 1;
            for i in page["data"].as_array().unwrap() {
                assert_identity(i);
                ids.push(i["id"].as_str().unwrap().to_owned());
            }
            match page["cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return (ids, pages),
            }
            assert!(pages < 50, "pagination does not end");
        }
    }
}

#[tokio::test]
async fn patch_takes_the_type_and_relayauth_only_fields_its_clients_send() {
    let e = start(&[]);
    let id = e.identity("patched", &["relayfile:fs:read:/a/*"]).await;
    let path = format!("/v1/identities/{id}");
    // updateIdentity(id, {type: "service", scopes: [...]}).
    let (status, v) =
        e.api("PATCH", &path, Some(json!({ "type": "service", "scopes": ["relayfile:fs:read:/a/b/*"] }))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["type"].as_str(), v["scopes"].clone()), (Some("service"), json!(["relayfile:fs:read:/a/b/*"])));
    assert_eq!(e.api("GET", &path, None).await.1["type"], "service", "the new type is stored");
    // Fields relayauth's server takes on PATCH that kmsd has no use for.
    let body = json!({ "lastActiveAt": "2026-03-01T10:00:00.000Z", "budget": { "maxActionsPerHour": 100 } });
    let (status, v) = e.api("PATCH", &path, Some(body)).await;
    assert_eq!((status, v["type"].as_str()), (200, Some("service")), "{v}");
    for bad in [json!({ "type": "robot" }), json!({ "type": 7 }), json!({ "budget": "lots" })] {
        let (status, v) = e.api("PATCH", &path, Some(bad.clone())).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "{bad}: {v}");
    }
    let (status, v) = e.api("PATCH", &path, Some(json!({ "status": "active" }))).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "status changes only by lifecycle call");
    let (status, v) = e.api("GET", &path, None).await;
    assert_eq!((status, v["type"].as_str()), (200, Some("service")), "refused patches changed nothing");

    let create = json!({ "name": "typed", "sponsorId": "user_1", "type": "robot" });
    let (status, v) = e.api("POST", "/v1/identities", Some(create)).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "type is validated on create: {v}");
}

#[tokio::test]
async fn identity_lists_filter_by_status_and_type_across_pages() {
    let e = start(&[]);
    let mut suspended = Vec::new();
    let mut humans = Vec::new();
    for (i, kind) in ["agent", "human", "service", "human", "agent", "human"].iter().enumerate() {
        let body = json!({ "name": format!("i{i}"), "sponsorId": "user_1", "type": kind });
        let (status, v) = e.api("POST", "/v1/identities", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        if *kind == "human" {
            humans.push(id.clone());
        }
        if i % 2 == 0 {
            let (status, _) =
                e.api("POST", &format!("/v1/identities/{id}/suspend"), Some(json!({ "reason": "audit" }))).await;
            assert_eq!(status, 200);
            suspended.push(id);
        }
    }
    suspended.sort();
    humans.sort();
    let (ids, pages) = e.list_all("status=suspended&limit=1").await;
    assert_eq!((ids, pages), (suspended, 3), "one suspended identity per page");
    let (ids, pages) = e.list_all("type=human&limit=2").await;
    assert_eq!((ids, pages), (humans, 2));
    let (ids, _) = e.list_all("type=human&status=active").await;
    assert_eq!(ids.len(), 3, "the filters combine");
    for bad in ["status=gone", "type=robot", "status=Active"] {
        let (status, v) = e.api("GET", &format!("/v1/identities?{bad}"), None).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "{bad}: {v}");
    }
}

#[tokio::test]
async fn lifetimes_may_be_numeric_strings_and_nothing_else() {
    let e = start(&[]);
    let id = e.identity("ttl", &["relayfile:fs:read:/a/*"]).await;
    let (status, pair) =
        e.issue(&e.admin, json!({ "identityId": id, "expiresIn": "600", "refreshTokenTtlSeconds": "7200" })).await;
    assert_eq!(status, 201, "{pair}");
    let life = |t: &Value| {
        let c = part(t.as_str().unwrap(), 1);
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
    };
    assert_eq!((life(&pair["accessToken"]), life(&pair["refreshToken"])), (600, 7200));
    for field in ["expiresIn", "refreshTokenTtlSeconds"] {
        for bad in [json!("10m"), json!(-1), json!(1.5), json!(true), json!(""), json!(" 60"), json!("-5"), json!([60])]
        {
            let (status, v) = e.issue(&e.admin, json!({ "identityId": id, field: bad })).await;
            assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "{field}={bad}: {v}");
            let message = v["message"].as_str().unwrap();
            assert!(message.contains(field) && message.contains("seconds"), "{field}={bad}: {message}");
        }
    }
}

#[tokio::test]
async fn revoking_an_identity_with_nothing_left_to_revoke_is_token_not_found() {
    let e = start(&[]);
    let id = e.identity("quiet", &["relayfile:fs:read:/a/*"]).await;
    let revoke = |body: Value| e.api("POST", "/v1/tokens/revoke", Some(body));
    let (status, v) = revoke(json!({ "identityId": id })).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("token_not_found")), "no token was ever issued: {v}");
    let (status, _) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(status, 201);
    assert_eq!(revoke(json!({ "identityId": id })).await.0, 204);
    let (status, v) = revoke(json!({ "identityId": id })).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("token_not_found")), "already revoked: {v}");
    let (status, v) = revoke(json!({ "identityId": "agent_00000000000000000000000000000000" })).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("token_not_found")), "unknown identity: {v}");
}

#[tokio::test]
async fn insufficient_scope_names_the_missing_scope_as_a_string_and_lists_them_all() {
    let e = start(&[]);
    let (_, k) = create_key(&e.d.public, &e.admin, &["relayauth:identity:read:*"]).await;
    let reader = k["key"].as_str().unwrap().to_owned();
    let (status, v) = e.issue(&reader, json!({ "identityId": "agent_x" })).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    assert_eq!(v["required"], "relayauth:token:create:*", "the TS and Python clients read a string: {v}");
    assert_eq!(v["requiredScopes"], json!(["relayauth:token:create:*"]));
    assert_eq!(v["actual"], json!(["relayauth:identity:read:*"]));

    let id = e.identity("narrow", &["relayfile:fs:read:/a/*"]).await;
    let wanted = json!(["relayfile:fs:read:/a/x", "relayfile:fs:write:/a/x", "relaycast:channel:send:*"]);
    let (status, v) = e.issue(&e.admin, json!({ "identityId": id, "scopes": wanted })).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    assert_eq!(v["required"], "relayfile:fs:write:/a/x", "the first missing scope: {v}");
    assert_eq!(v["requiredScopes"], json!(["relayfile:fs:write:/a/x", "relaycast:channel:send:*"]));
}

/// Every identity and token call of relayauth's clients, in the order a
/// platform team's provisioning script makes them.
#[tokio::test]
async fn relayauth_clients_walk_the_identity_and_token_api() {
    let e = start(&[]);
    let org = "org_conformance";
    // createIdentity(orgId, input) sends {orgId, ...input}; Python adds sponsorId.
    let mut ids = Vec::new();
    for (name, kind) in [("planner", "agent"), ("reviewer", "human"), ("indexer", "service")] {
        let body = json!({
            "orgId": org,
            "name": name,
            "type": kind,
            "scopes": ["relayfile:fs:read:/docs/*", "relayfile:fs:write:/docs/*"],
            "roles": ["writer"],
            "metadata": { "team": "platform" },
            "workspaceId": "ws_main",
            "sponsorId": "user_alice",
        });
        let (status, v) = e.api("POST", "/v1/identities", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        assert_identity(&v);
        assert_eq!(
            (v["name"].as_str(), v["type"].as_str(), v["status"].as_str()),
            (Some(name), Some(kind), Some("active"))
        );
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let id = ids[0].clone();
    let path = format!("/v1/identities/{id}");

    // getIdentity.
    let (status, v) = e.api("GET", &path, None).await;
    assert_eq!((status, v["id"].as_str()), (200, Some(id.as_str())));
    assert_identity(&v);

    // updateIdentity with every field of Partial<CreateIdentityInput>.
    let update = json!({
        "name": "planner-2",
        "type": "service",
        "scopes": ["relayfile:fs:read:/docs/*"],
        "roles": ["reader"],
        "metadata": { "team": "infra" },
        "workspaceId": "ws_other",
    });
    let (status, v) = e.api("PATCH", &path, Some(update.clone())).await;
    assert_eq!(status, 200, "{v}");
    assert_identity(&v);
    for f in ["name", "type", "scopes", "roles", "metadata", "workspaceId"] {
        assert_eq!(v[f], update[f], "{f} updated");
    }

    // listIdentities(orgId, {limit, cursor, status}) and the OpenAPI type filter.
    let (all, pages) = e.list_all(&format!("orgId={org}&limit=2")).await;
    assert_eq!((all.len(), pages), (3, 2));
    let (status, v) =
        e.api("POST", &format!("/v1/identities/{}/suspend", ids[1]), Some(json!({ "reason": "leave" }))).await;
    assert_eq!((status, v["status"].as_str(), v["suspendReason"].as_str()), (200, Some("suspended"), Some("leave")));
    assert_identity(&v);
    assert_eq!(e.list_all(&format!("orgId={org}&status=suspended&limit=1")).await.0, vec![ids[1].clone()]);
    assert_eq!(e.list_all(&format!("orgId={org}&status=active&limit=1")).await.0.len(), 2);
    let mut services = vec![ids[0].clone(), ids[2].clone()];
    services.sort();
    assert_eq!(e.list_all(&format!("orgId={org}&type=service&limit=1")).await.0, services);
    // reactivateIdentity: POST with no body.
    let (status, v) = e.api("POST", &format!("/v1/identities/{}/reactivate", ids[1]), None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("active")), "{v}");

    // issueToken(identityId, {scopes, audience, expiresIn}).
    let issue = json!({ "identityId": id, "scopes": ["relayfile:fs:read:/docs/*"], "audience": ["relayfile"], "expiresIn": 900 });
    let (status, pair) = e.issue(&e.admin, issue).await;
    assert_eq!(status, 201, "{pair}");
    assert_pair(&pair);
    // introspectToken: GET ?token=; the claims, or null.
    let claims = e.introspect(pair["accessToken"].as_str().unwrap()).await;
    assert_claims(&claims);
    assert_eq!((claims["sub"].as_str(), claims["aud"].clone()), (Some(id.as_str()), json!(["relayfile"])));
    // refreshToken.
    let (status, fresh) =
        e.api("POST", "/v1/tokens/refresh", Some(json!({ "refreshToken": pair["refreshToken"] }))).await;
    assert_eq!(status, 200, "{fresh}");
    assert_pair(&fresh);

    // revokeToken(tokenId), then the OpenAPI selectors sessionId and identityId.
    let access = fresh["accessToken"].as_str().unwrap();
    let jti = part(access, 1)["jti"].clone();
    assert_eq!(e.api("POST", "/v1/tokens/revoke", Some(json!({ "tokenId": jti }))).await.0, 204);
    assert_eq!(e.introspect(access).await, Value::Null);
    let (_, pair) = e.issue(&e.admin, json!({ "identityId": id })).await;
    let sid = part(pair["accessToken"].as_str().unwrap(), 1)["sid"].clone();
    assert_eq!(e.api("POST", "/v1/tokens/revoke", Some(json!({ "sessionId": sid }))).await.0, 204);
    assert_eq!(e.introspect(pair["accessToken"].as_str().unwrap()).await, Value::Null);
    let (_, pair) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(e.api("POST", "/v1/tokens/revoke", Some(json!({ "identityId": id }))).await.0, 204);
    assert_eq!(e.introspect(pair["accessToken"].as_str().unwrap()).await, Value::Null);
    let (status, v) =
        e.api("POST", "/v1/tokens/revoke", Some(json!({ "tokenId": "tok_00000000000000000000000000000000" }))).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("token_not_found")));

    // retireIdentity: POST with no body; then no token can be issued.
    let (status, v) = e.api("POST", &format!("/v1/identities/{}/retire", ids[2]), None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("retired")), "{v}");
    let (status, v) = e.issue(&e.admin, json!({ "identityId": ids[2] })).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("identity_suspended")));

    // deleteIdentity: DELETE with X-Confirm-Delete: true, 204 and no body.
    let resp = client()
        .delete(format!("{}{path}", e.d.public))
        .header("x-api-key", &e.admin)
        .header("X-Confirm-Delete", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.bytes().await.unwrap().is_empty(), "the TS client returns undefined for an empty body");
    let (status, v) = e.api("GET", &path, None).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("identity_not_found")));
}
