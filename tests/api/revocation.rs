//! The public revocation check (`GET /v1/tokens/revocation?jti=`) that the
//! relayauth verifiers call: it says `revoked: true` for every token kmsd
//! itself refuses, and agrees with introspection each time.

use serde_json::{json, Value};

use crate::daemon::client;
use crate::support::call;
use crate::tokens::{part, start, Env};

/// The public answer for `jti`.
pub async fn revoked(base: &str, jti: &str) -> bool {
    let resp = client().get(format!("{base}/v1/tokens/revocation?jti={jti}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    v["revoked"].as_bool().unwrap()
}

fn jti(token: &str) -> String {
    part(token, 1)["jti"].as_str().unwrap().to_owned()
}

struct Case<'a> {
    e: &'a Env,
    identity: String,
    access: String,
    refresh: String,
}

impl<'a> Case<'a> {
    async fn new(e: &'a Env, name: &str, algorithm: &str) -> Case<'a> {
        let identity = e.identity(name, &["relayfile:fs:read:/a/*"]).await;
        let (status, p) = e.issue(&e.admin, json!({ "identityId": identity, "algorithm": algorithm })).await;
        assert_eq!(status, 201, "{p}");
        let (access, refresh) = (p["accessToken"].as_str().unwrap(), p["refreshToken"].as_str().unwrap());
        let case = Case { e, identity, access: access.to_owned(), refresh: refresh.to_owned() };
        assert!(!case.access_revoked().await, "{name}: a live token is not revoked");
        assert_ne!(e.introspect(&case.access).await, Value::Null, "{name}");
        case
    }

    async fn access_revoked(&self) -> bool {
        revoked(&self.e.d.public, &jti(&self.access)).await
    }

    /// Asserts the revocation check and introspection agree that kmsd refuses it.
    async fn assert_refused(&self, why: &str) {
        assert_eq!(self.e.introspect(&self.access).await, Value::Null, "{why}: kmsd refuses the token");
        assert!(self.access_revoked().await, "{why}: so the revocation check must say revoked");
    }

    async fn post(&self, path: &str, body: Value) {
        let (status, v) = call(&self.e.d.public, &self.e.admin, "POST", path, Some(body)).await;
        assert!(status == 200 || status == 204, "{path}: {status} {v}");
    }
}

#[tokio::test]
async fn the_revocation_check_says_revoked_for_every_token_kmsd_refuses() {
    let e = start(&[]);

    // A revoked signing key: its access token is refused; the refresh token
    // of the same pair (another keyset, still trusted) is not.
    let c = Case::new(&e, "revoked-key", "RS256").await;
    let other = Case::new(&e, "other-keyset", "EdDSA").await;
    let kid = part(&c.access, 0)["kid"].as_str().unwrap().to_owned();
    let (status, v) = call(&e.d.admin, &e.admin, "POST", &format!("/v1/admin/keys/{kid}/revoke"), None).await;
    assert_eq!(status, 200, "{v}");
    c.assert_refused("signing key revoked").await;
    assert!(!revoked(&e.d.public, &jti(&c.refresh)).await, "its refresh key is not revoked");
    assert!(!other.access_revoked().await, "a token of another key stands");

    let c = Case::new(&e, "by-jti", "EdDSA").await;
    c.post("/v1/tokens/revoke", json!({ "tokenId": jti(&c.access) })).await;
    c.assert_refused("revoked jti").await;

    let c = Case::new(&e, "by-session", "EdDSA").await;
    c.post("/v1/tokens/revoke", json!({ "sessionId": part(&c.access, 1)["sid"] })).await;
    c.assert_refused("revoked session").await;
    assert!(revoked(&e.d.public, &jti(&c.refresh)).await, "the session's refresh token too");

    let c = Case::new(&e, "by-identity", "EdDSA").await;
    c.post("/v1/tokens/revoke", json!({ "identityId": c.identity })).await;
    c.assert_refused("identity's tokens revoked").await;

    let c = Case::new(&e, "suspended", "EdDSA").await;
    c.post(&format!("/v1/identities/{}/suspend", c.identity), json!({ "reason": "test" })).await;
    c.assert_refused("identity suspended").await;

    let c = Case::new(&e, "retired", "EdDSA").await;
    c.post(&format!("/v1/identities/{}/retire", c.identity), json!({})).await;
    c.assert_refused("identity retired").await;

    let c = Case::new(&e, "deleted", "EdDSA").await;
    assert_eq!(e.delete_identity(&c.identity).await, 204);
    c.assert_refused("identity deleted").await;

    assert!(revoked(&e.d.public, &format!("tok_{}", kmsd::encoding::random_hex(16))).await, "never issued");
    let resp = client().get(format!("{}/v1/tokens/revocation", e.d.public)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}
