//! Tokens over real HTTP: relayauth-compatible issuance checked by PyJWT and
//! node `jose` against the live JWKS, our own verification's refusals,
//! escalation, single-use refresh, revocation, identity lifecycle, raw
//! signing, and crash safety of group-committed issuance.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::{bootstrap_key, client, Daemon};
use crate::support::call;
use crate::{node, python};

pub const ISSUER: &str = "https://relayauth.dev";

/// A running daemon with its bootstrap key.
pub struct Env {
    pub d: Daemon,
    pub admin: String,
    _tmp: tempfile::TempDir,
}

pub fn start(env: &[(&str, &str)]) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), env);
    let admin = bootstrap_key(&d.output());
    Env { d, admin, _tmp: tmp }
}

impl Env {
    pub async fn identity(&self, name: &str, scopes: &[&str]) -> String {
        crate::support::identity(&self.d.public, &self.admin, name, scopes).await
    }

    pub async fn issue(&self, with: &str, body: Value) -> (u16, Value) {
        call(&self.d.public, with, "POST", "/v1/tokens", Some(body)).await
    }

    pub async fn introspect(&self, token: &str) -> Value {
        crate::support::introspect(&self.d.public, &self.admin, token).await
    }

    /// `DELETE /v1/identities/{id}` with the confirmation header; the status.
    pub async fn delete_identity(&self, id: &str) -> u16 {
        crate::lasting_changes::delete_identity(&self.d.public, &self.admin, id).await
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.d.public)
    }
}

pub fn part(token: &str, i: usize) -> Value {
    let seg = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&kmsd::encoding::b64url_decode(seg).unwrap()).unwrap()
}

fn flip_payload_byte(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = kmsd::encoding::b64url_decode(&parts[1]).unwrap();
    let i = payload.iter().position(|b| *b == b'd').unwrap();
    payload[i] = b'e';
    parts[1] = kmsd::encoding::b64url(&payload);
    parts.join(".")
}

/// Verifies each token (argv 4..) with PyJWT's `PyJWKClient` against the JWKS
/// at argv 1, for issuer argv 2 and audience argv 3; one JSON line per token.
pub const PYJWT_VERIFY: &str = r#"
import json, sys, time
import jwt
url, issuer, audience = sys.argv[1], sys.argv[2], sys.argv[3]
client = jwt.PyJWKClient(url, cache_keys=False)
for token in sys.argv[4:]:
    try:
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256", "EdDSA"], audience=audience, issuer=issuer)
        print(json.dumps({"ok": True, "sub": claims["sub"]}))
    except Exception as e:
        print(json.dumps({"ok": False, "error": type(e).__name__}))
"#;

#[tokio::test]
async fn pyjwt_and_jose_accept_our_tokens_and_reject_wrong_audience_expiry_and_tampering() {
    let e = start(&[]);
    let id = e.identity("verifier-target", &["relayfile:fs:read:/docs/*"]).await;
    let mut good = Vec::new();
    for alg in ["RS256", "EdDSA"] {
        let (status, pair) =
            e.issue(&e.admin, json!({ "identityId": id, "audience": ["svc"], "algorithm": alg })).await;
        assert_eq!(status, 201, "{pair}");
        assert_eq!(part(pair["accessToken"].as_str().unwrap(), 0)["alg"], alg);
        good.push(pair["accessToken"].as_str().unwrap().to_owned());
    }
    let (_, short) = e.issue(&e.admin, json!({ "identityId": id, "audience": ["svc"], "expiresIn": 1 })).await;
    let short = short["accessToken"].as_str().unwrap().to_owned();
    let tampered: Vec<String> = good.iter().map(|t| flip_payload_byte(t)).collect();

    // node jose: good, wrong audience, tampered, expired (verified 31 s past exp).
    let url = e.jwks_url();
    let refs: Vec<&str> = good.iter().chain(&tampered).map(String::as_str).collect();
    let results = node::verify(&url, ISSUER, "svc", &[], &refs);
    assert_eq!(results.iter().map(|r| r["ok"] == true).collect::<Vec<_>>(), [true, true, false, false], "{results:?}");
    assert!(results[2]["code"].as_str().unwrap().contains("SIGNATURE"), "{results:?}");
    let wrong_aud = node::verify(&url, ISSUER, "other", &[], &[&good[0], &good[1]]);
    assert!(
        wrong_aud.iter().all(|r| r["code"] == "ERR_JWT_CLAIM_VALIDATION_FAILED" && r["claim"] == "aud"),
        "{wrong_aud:?}"
    );
    let exp = part(&short, 1)["exp"].as_i64().unwrap();
    let late = format!("--now={}", exp + 31);
    let expired = node::verify(&url, ISSUER, "svc", &[&late], &[&short]);
    assert_eq!(expired[0]["code"], "ERR_JWT_EXPIRED", "{expired:?}");

    // PyJWT: good, tampered, wrong audience, and (no leeway) expired after 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut args = vec![url.clone(), ISSUER.into(), "svc".into()];
    args.extend(good.iter().cloned());
    args.extend(tampered.iter().cloned());
    args.push(short.clone());
    let out = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        python::run(PYJWT_VERIFY, &a)
    })
    .await
    .unwrap();
    let r: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(r[0], json!({ "ok": true, "sub": id }));
    assert_eq!(r[1], json!({ "ok": true, "sub": id }));
    assert_eq!(r[2]["error"], "InvalidSignatureError");
    assert_eq!(r[3]["error"], "InvalidSignatureError");
    assert_eq!(r[4]["error"], "ExpiredSignatureError");
    let wrong = tokio::task::spawn_blocking(move || python::run(PYJWT_VERIFY, &[&url, ISSUER, "other", &good[0]]))
        .await
        .unwrap();
    assert!(wrong.contains("InvalidAudienceError"), "{wrong}");
}

#[tokio::test]
async fn every_token_follows_the_relayauth_verifier_rules() {
    let e = start(&[]);
    let id = e.identity("rules", &["relayfile:fs:read:/x/*", "relaycast:channel:send:*", "specialist:invoke"]).await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (status, pair) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(status, 201, "{pair}");
    for field in ["accessToken", "refreshToken", "accessTokenExpiresAt", "refreshTokenExpiresAt"] {
        assert!(pair[field].is_string(), "{field}");
    }
    assert_eq!(pair["tokenType"], "Bearer");
    assert!(pair["accessTokenExpiresAt"].as_str().unwrap().ends_with(".000Z"));
    let jwks: Value = client().get(e.jwks_url()).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for (field, kind) in [("accessToken", "access"), ("refreshToken", "refresh")] {
        let token = pair[field].as_str().unwrap();
        let raw_header =
            String::from_utf8(kmsd::encoding::b64url_decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        let h = part(token, 0);
        assert_eq!(
            raw_header,
            format!(r#"{{"alg":"{}","typ":"JWT","kid":"{}"}}"#, h["alg"].as_str().unwrap(), h["kid"].as_str().unwrap())
        );
        assert!(kids.contains(&h["kid"].as_str().unwrap()), "kid published");
        let raw = String::from_utf8(kmsd::encoding::b64url_decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        let order = [
            "sub",
            "org",
            "wks",
            "scopes",
            "sponsorId",
            "sponsorChain",
            "token_type",
            "iss",
            "aud",
            "exp",
            "iat",
            "jti",
            "sid",
        ];
        let positions: Vec<usize> = order.iter().map(|k| raw.find(&format!("\"{k}\":")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "claims in contract order: {raw}");
        let c = part(token, 1);
        assert_eq!(c["token_type"], kind);
        assert!(c["aud"].is_array());
        let iat = c["iat"].as_i64().unwrap();
        assert!(before <= iat && iat <= now, "iat {iat} is the issuance second ({before}..={now})");
        let chain = c["sponsorChain"].as_array().unwrap();
        assert_eq!(chain[0], c["sponsorId"]);
        assert_eq!(chain.last().unwrap(), &c["sub"]);
        assert!((2..=10).contains(&chain.len()));
        let jti = c["jti"].as_str().unwrap();
        assert!(jti.len() == 36 && jti.starts_with("tok_"), "{jti}");
        assert!(c["sid"].as_str().unwrap().starts_with("sess_"));
        assert_eq!(c["iss"], ISSUER);
    }
    let access = part(pair["accessToken"].as_str().unwrap(), 1);
    let refresh = part(pair["refreshToken"].as_str().unwrap(), 1);
    assert_eq!(access["aud"], json!(["relayfile", "relaycast"]), "default audience: the planes of the scopes");
    assert_eq!(refresh["aud"], json!(["relayauth"]));
    assert_eq!(refresh["scopes"], json!(["relayauth:token:refresh"]));
    assert_eq!(access["sid"], refresh["sid"]);
    assert_ne!(access["jti"], refresh["jti"]);
    assert_eq!(part(pair["accessToken"].as_str().unwrap(), 0)["alg"], "RS256");
    assert_eq!(part(pair["refreshToken"].as_str().unwrap(), 0)["alg"], "EdDSA", "refresh keyset is EdDSA");
}

#[tokio::test]
async fn our_own_verification_refuses_forgeries_and_misused_tokens() {
    let e = start(&[]);
    let id = e.identity("forge", &["relayauth:token:read:*"]).await;
    let (_, pair) = e.issue(&e.admin, json!({ "identityId": id })).await;
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    let refresh = pair["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(e.introspect(&access).await, Value::Null);

    let header = part(&access, 0);
    let payload = access.split('.').nth(1).unwrap();
    let b64 = |v: &Value| kmsd::encoding::b64url(v.to_string().as_bytes());
    // alg:none, with and without a signature.
    let none = b64(&json!({ "alg": "none", "typ": "JWT", "kid": header["kid"] }));
    // HS256 keyed with the RSA public key (algorithm confusion).
    let jwks: Value = client().get(e.jwks_url()).send().await.unwrap().json().await.unwrap();
    let rsa_jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).unwrap().clone();
    let hs = b64(&json!({ "alg": "HS256", "typ": "JWT", "kid": header["kid"] }));
    let hs_input = format!("{hs}.{payload}");
    let mut forged = Vec::new();
    for secret in [rsa_jwk.to_string(), rsa_jwk["n"].as_str().unwrap().to_owned()] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, hs_input.as_bytes());
        forged.push(format!("{hs_input}.{}", kmsd::encoding::b64url(tag.as_ref())));
    }
    let unknown_kid =
        b64(&json!({ "alg": "RS256", "typ": "JWT", "kid": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }));
    let sig = access.split('.').nth(2).unwrap();
    let at_jwt = b64(&json!({ "alg": "RS256", "typ": "at+jwt", "kid": header["kid"] }));
    for bad in [
        format!("{none}.{payload}."),
        format!("{none}.{payload}.{sig}"),
        forged[0].clone(),
        forged[1].clone(),
        format!("{unknown_kid}.{payload}.{sig}"),
        format!("{at_jwt}.{payload}.{sig}"),
        flip_payload_byte(&access),
        refresh.clone(),
        "not-a-jwt".to_owned(),
    ] {
        assert_eq!(e.introspect(&bad).await, Value::Null, "introspect accepted {bad}");
    }
    // A refresh token is not a bearer credential.
    let resp = client()
        .get(format!("{}/v1/tokens/introspect?token={access}", e.d.public))
        .bearer_auth(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "invalid_token");
    // An access token cannot refresh.
    let (status, body) =
        call(&e.d.public, "", "POST", "/v1/tokens/refresh", Some(json!({ "refreshToken": access }))).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")));
    // The bearer itself works, and wins over a bad API key without a lookup.
    let resp = client()
        .get(format!("{}/v1/tokens/introspect?token={access}", e.d.public))
        .bearer_auth(&access)
        .header("x-api-key", "rak_bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["sub"], id);
}

#[tokio::test]
async fn no_caller_can_mint_or_create_more_than_it_holds() {
    let e = start(&[]);
    let broad = e.identity("broad", &["relayfile:fs:read:/*", "relayfile:fs:write:/*"]).await;
    let (_, k) = create_key(
        &e.d.public,
        &e.admin,
        &["relayauth:token:create:*", "relayauth:identity:manage:*", "relayfile:fs:read:/a/*"],
    )
    .await;
    let key = k["key"].as_str().unwrap().to_owned();
    for scopes in [json!(null), json!(["relayfile:fs:read:/*"]), json!(["relayfile:fs:write:/a/x"]), json!(["*:*:*:*"])]
    {
        let (status, body) = e.issue(&key, json!({ "identityId": broad, "scopes": scopes })).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_scope")), "{scopes}: {body}");
    }
    let (status, body) =
        e.issue(&key, json!({ "identityId": broad, "scopes": ["relayfile:fs:read:/a/notes.md"] })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(part(body["accessToken"].as_str().unwrap(), 1)["scopes"], json!(["relayfile:fs:read:/a/notes.md"]));
    let (status, body) = e.issue(&key, json!({ "identityId": broad, "scopes": ["relayfile:fs:read:/a/../etc"] })).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_scope")));
    // Nor create (or widen) an identity beyond its own scopes.
    let body = json!({ "name": "wide", "sponsorId": "u", "scopes": ["relayfile:fs:read:/*"] });
    let (status, v) = call(&e.d.public, &key, "POST", "/v1/identities", Some(body)).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("scope_escalation")));
    let body = json!({ "name": "narrow", "sponsorId": "u", "scopes": ["relayfile:fs:read:/a/b/*"] });
    let (status, v) = call(&e.d.public, &key, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    let narrow = v["id"].as_str().unwrap();
    let (status, v) = call(
        &e.d.public,
        &key,
        "PATCH",
        &format!("/v1/identities/{narrow}"),
        Some(json!({ "scopes": ["relayfile:fs:read:/*"] })),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (403, Some("scope_escalation")));
    // Another org's identity does not exist for this caller; unknown ids neither.
    let (status, v) = e.issue(&key, json!({ "identityId": "agent_00000000000000000000000000000000" })).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("identity_not_found")));
}

#[tokio::test]
async fn refresh_is_single_use_and_reuse_revokes_the_whole_session() {
    let e = start(&[]);
    let id = e.identity("refresher", &["relayfile:fs:read:/a/*", "relayfile:fs:read:/b/*"]).await;
    let (_, first) =
        e.issue(&e.admin, json!({ "identityId": id, "scopes": ["relayfile:fs:read:/a/*"], "audience": ["svc"] })).await;
    let refresh = |t: &str| call(&e.d.public, "", "POST", "/v1/tokens/refresh", Some(json!({ "refreshToken": t })));
    let (status, second) = refresh(first["refreshToken"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{second}");
    let c = part(second["accessToken"].as_str().unwrap(), 1);
    assert_eq!(c["scopes"], json!(["relayfile:fs:read:/a/*"]), "narrowed scopes survive refresh");
    assert_eq!(c["aud"], json!(["svc"]));
    assert_eq!(c["sid"], part(first["accessToken"].as_str().unwrap(), 1)["sid"]);
    assert_ne!(e.introspect(second["accessToken"].as_str().unwrap()).await, Value::Null);

    let (status, body) = refresh(first["refreshToken"].as_str().unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_revoked")), "{body}");
    assert_eq!(e.introspect(second["accessToken"].as_str().unwrap()).await, Value::Null, "session revoked");
    assert_eq!(e.introspect(first["accessToken"].as_str().unwrap()).await, Value::Null);
    let (status, _) = refresh(second["refreshToken"].as_str().unwrap()).await;
    assert_eq!(status, 401, "the newest refresh token died with its session");
}

#[tokio::test]
async fn a_configured_grace_lets_only_the_immediately_previous_refresh_token_retry() {
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), "[tokens]\nrefresh_reuse_grace = \"30s\"\n").unwrap();
    let e = start(&[("KMSD_POLICY_FILE", policy.path().to_str().unwrap())]);
    let id = e.identity("grace", &["relayfile:fs:read:/a/*"]).await;
    let (_, p1) = e.issue(&e.admin, json!({ "identityId": id })).await;
    let refresh = |t: String| call(&e.d.public, "", "POST", "/v1/tokens/refresh", Some(json!({ "refreshToken": t })));
    let (s2, p2) = refresh(p1["refreshToken"].as_str().unwrap().into()).await;
    let (s3, _) = refresh(p1["refreshToken"].as_str().unwrap().into()).await;
    assert_eq!((s2, s3), (200, 200), "a retry inside the grace succeeds");
    let (s4, body) = refresh(p2["refreshToken"].as_str().unwrap().into()).await;
    assert_eq!((s4, body["code"].as_str()), (401, Some("token_revoked")), "older than the previous one: reuse");
}

#[tokio::test]
async fn revocation_by_token_session_and_identity() {
    let e = start(&[]);
    let id = e.identity("revokee", &["relayfile:fs:read:/a/*"]).await;
    let pair = || e.issue(&e.admin, json!({ "identityId": id }));
    let revoke = |body: Value| call(&e.d.public, &e.admin, "POST", "/v1/tokens/revoke", Some(body));

    let (_, p) = pair().await;
    let access = p["accessToken"].as_str().unwrap();
    let jti = part(access, 1)["jti"].as_str().unwrap().to_owned();
    let check = |jti: String| client().get(format!("{}/v1/tokens/revocation?jti={jti}", e.d.public)).send();
    assert_eq!(check(jti.clone()).await.unwrap().json::<Value>().await.unwrap(), json!({ "revoked": false }));
    let (status, _) = revoke(json!({ "tokenId": jti })).await;
    assert_eq!(status, 204);
    assert_eq!(e.introspect(access).await, Value::Null);
    assert_eq!(check(jti.clone()).await.unwrap().json::<Value>().await.unwrap(), json!({ "revoked": true }));
    let (status, body) = revoke(json!({ "tokenId": "tok_00000000000000000000000000000000" })).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("token_not_found")));
    let (status, body) = revoke(json!({})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")));

    let (_, p) = pair().await;
    let sid = part(p["accessToken"].as_str().unwrap(), 1)["sid"].as_str().unwrap().to_owned();
    assert_eq!(revoke(json!({ "sessionId": sid })).await.0, 204);
    assert_eq!(e.introspect(p["accessToken"].as_str().unwrap()).await, Value::Null);

    let (_, a) = pair().await;
    let (_, b) = pair().await;
    assert_eq!(revoke(json!({ "identityId": id })).await.0, 204);
    for t in [&a, &b] {
        assert_eq!(e.introspect(t["accessToken"].as_str().unwrap()).await, Value::Null);
    }
    let (status, _) = pair().await;
    assert_eq!(status, 201, "the identity itself stays usable");
}

#[tokio::test]
async fn identity_lifecycle_revokes_tokens_and_blocks_issuance() {
    let e = start(&[]);
    let id = e.identity("lifecycle", &["relayfile:fs:read:/a/*"]).await;
    let base = e.d.public.clone();
    let (_, p) = e.issue(&e.admin, json!({ "identityId": id })).await;
    let token = p["accessToken"].as_str().unwrap().to_owned();
    let (status, v) = call(&base, &e.admin, "POST", &format!("/v1/identities/{id}/suspend"), Some(json!({}))).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")), "reason is required");
    let (status, v) =
        call(&base, &e.admin, "POST", &format!("/v1/identities/{id}/suspend"), Some(json!({ "reason": "leak" }))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["status"].as_str(), v["suspendReason"].as_str()), (Some("suspended"), Some("leak")));
    assert_eq!(e.introspect(&token).await, Value::Null);
    let (status, v) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("identity_suspended")));
    let (status, _) = call(&base, &e.admin, "POST", &format!("/v1/identities/{id}/reactivate"), None).await;
    assert_eq!(status, 200);
    assert_eq!(e.introspect(&token).await, Value::Null, "reactivation does not resurrect old tokens");
    let (status, p) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert_eq!(status, 201);
    assert_ne!(e.introspect(p["accessToken"].as_str().unwrap()).await, Value::Null);

    let (status, v) = call(&base, &e.admin, "GET", &format!("/v1/identities/{id}"), None).await;
    assert_eq!((status, v["name"].as_str()), (200, Some("lifecycle")));
    let (status, v) = call(&base, &e.admin, "GET", "/v1/identities?limit=10", None).await;
    assert_eq!((status, v["data"].as_array().unwrap().len()), (200, 1));
    let body = json!({ "name": "lifecycle", "sponsorId": "x" });
    let (status, v) = call(&base, &e.admin, "POST", "/v1/identities", Some(body)).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("identity_already_exists")));

    let resp =
        client().delete(format!("{base}/v1/identities/{id}")).header("x-api-key", &e.admin).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400, "delete needs X-Confirm-Delete");
    assert_eq!(e.delete_identity(&id).await, 204);
    assert_eq!(e.introspect(p["accessToken"].as_str().unwrap()).await, Value::Null);
    let (status, _) = call(&base, &e.admin, "GET", &format!("/v1/identities/{id}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn raw_signing_uses_the_active_key_and_needs_the_keyset_scope() {
    let e = start(&[]);
    let message = kmsd::encoding::b64url(b"hello, signer");
    let (status, v) =
        call(&e.d.public, &e.admin, "POST", "/v1/sign", Some(json!({ "keyset": "sign", "message": message }))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["alg"], "EdDSA");
    let jwks: Value =
        client().get(format!("{}/v1/keysets/sign/jwks.json", e.d.public)).send().await.unwrap().json().await.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == v["kid"]).unwrap().clone();
    let x = kmsd::encoding::b64url_decode(jwk["x"].as_str().unwrap()).unwrap();
    let sig = kmsd::encoding::b64url_decode(v["signature"].as_str().unwrap()).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x)
        .verify(b"hello, signer", &sig)
        .expect("signature verifies under the published key");
    let body = json!({ "keyset": "sign", "kid": v["kid"], "message": message, "signature": v["signature"] });
    let (_, ok) = call(&e.d.public, &e.admin, "POST", "/v1/verify", Some(body)).await;
    assert_eq!(ok, json!({ "valid": true }));

    let (_, k) = create_key(&e.d.public, &e.admin, &["relayauth:sign:invoke:edge"]).await;
    let key = k["key"].as_str().unwrap();
    let (status, v) =
        call(&e.d.public, key, "POST", "/v1/sign", Some(json!({ "keyset": "sign", "message": message }))).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")));
    let (status, v) =
        call(&e.d.public, key, "POST", "/v1/sign", Some(json!({ "keyset": "edge", "message": message }))).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("keyset_not_signable")), "a token keyset never signs raw");
    let (status, v) =
        call(&e.d.public, &e.admin, "POST", "/v1/sign", Some(json!({ "keyset": "nope", "message": message }))).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("keyset_not_found")));
}

#[tokio::test]
async fn every_token_returned_before_a_crash_is_introspectable_or_revocable_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let body = json!({ "name": "burst", "sponsorId": "u", "scopes": ["relayfile:fs:read:/a/*"] });
    let (_, v) = call(&d.public, &admin, "POST", "/v1/identities", Some(body)).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let returned = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (base, admin, id, returned) = (d.public.clone(), admin.clone(), id.clone(), returned.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            loop {
                let resp = c
                    .post(format!("{base}/v1/tokens"))
                    .header("x-api-key", &admin)
                    .json(&json!({ "identityId": id, "algorithm": "EdDSA" }))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                let Ok(v) = resp.json::<Value>().await else { return };
                if let Some(t) = v["accessToken"].as_str() {
                    returned.lock().unwrap().push(t.to_owned());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.crash();
    for w in workers {
        let _ = w.await;
    }
    let tokens = returned.lock().unwrap().clone();
    assert!(tokens.len() >= 20, "the burst issued tokens before the crash: {}", tokens.len());
    let d = Daemon::start(tmp.path(), &[]);
    let mut introspectable = 0;
    for t in &tokens {
        let v = crate::support::introspect(&d.public, &admin, t).await;
        if v != Value::Null {
            introspectable += 1;
        }
        let sid = part(t, 1)["sid"].as_str().unwrap().to_owned();
        let (status, body) =
            call(&d.public, &admin, "POST", "/v1/tokens/revoke", Some(json!({ "sessionId": sid }))).await;
        assert_eq!(status, 204, "session of a returned token is on disk: {body}");
    }
    assert_eq!(introspectable, tokens.len(), "every returned token verifies after the restart");
}

#[tokio::test]
async fn lifetimes_above_the_policy_cap_are_clamped_and_the_reply_says_so() {
    let e = start(&[]);
    let id = e.identity("clamp", &["relayfile:fs:read:/a/*"]).await;
    let (status, pair) =
        e.issue(&e.admin, json!({ "identityId": id, "expiresIn": 999_999, "refreshTokenTtlSeconds": 60 })).await;
    assert_eq!(status, 201, "{pair}");
    assert_eq!(
        pair["clamped"],
        json!([{ "token": "access", "requestedSeconds": 999_999, "grantedSeconds": 86_400, "reason": "policy_max" }])
    );
    let c = part(pair["accessToken"].as_str().unwrap(), 1);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 86_400);
    let r = part(pair["refreshToken"].as_str().unwrap(), 1);
    assert_eq!(r["exp"].as_i64().unwrap() - r["iat"].as_i64().unwrap(), 60, "a refresh lifetime under the cap is kept");
    let (_, plain) = e.issue(&e.admin, json!({ "identityId": id })).await;
    assert!(plain.get("clamped").is_none(), "no clamp, no field: {plain}");
}

/// A session revocation lasts as long as the session's longest-lived token,
/// across a restart (whose startup garbage collection drops what has ended):
/// here the access token outlives the refresh token.
#[tokio::test]
async fn a_revoked_session_stays_revoked_across_a_restart_while_its_access_token_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    // Access tokens may live 8 s: room for a slow restart inside their life.
    let text = crate::rotation::FAST_POLICY
        .replace("access_ttl_max = \"4s\"", "access_ttl_max = \"8s\"")
        .replace("overlap = \"5s\"", "overlap = \"9s\"");
    std::fs::write(&policy, text).unwrap();
    let env = [("KMSD_POLICY_FILE", policy.to_str().unwrap())];
    let d = Daemon::start(tmp.path(), &env);
    let admin = bootstrap_key(&d.output());
    let body = json!({ "name": "short-refresh", "sponsorId": "u", "scopes": ["relayfile:fs:read:/a/*"] });
    let (_, v) = call(&d.public, &admin, "POST", "/v1/identities", Some(body)).await;
    let body = json!({ "identityId": v["id"], "expiresIn": 8, "refreshTokenTtlSeconds": 1 });
    let (status, pair) = call(&d.public, &admin, "POST", "/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{pair}");
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    let c = part(&access, 1);
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert_eq!(exp, iat + 8);
    assert_eq!(part(pair["refreshToken"].as_str().unwrap(), 1)["exp"].as_i64().unwrap(), iat + 1);
    let (status, _) =
        call(&d.public, &admin, "POST", "/v1/tokens/revoke", Some(json!({ "sessionId": c["sid"] }))).await;
    assert_eq!(status, 204);
    d.stop();
    // Past the refresh token's exp + skew (so its end is garbage at startup), within the access token's.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    while now() < iat + 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = Daemon::start(tmp.path(), &env);
    // The startup collection (the refresh token's row is garbage either way).
    let started = std::time::Instant::now();
    while !d.output().contains("collected expired token state") {
        assert!(started.elapsed() < Duration::from_secs(30), "no startup collection: {}", d.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = crate::support::introspect(&d.public, &admin, &access).await;
    assert!(now() <= exp, "the access token was still unexpired when introspected");
    assert_eq!(v, Value::Null, "the session's revocation outlived a restart");
}
