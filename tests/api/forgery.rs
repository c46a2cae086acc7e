//! Token forgery through raw signing, as an attacker would try it: an API key
//! that may only sign writes its own JWT signing input (admin claims, a jti
//! kmsd never issued) and asks kmsd to sign it. Token keysets refuse raw
//! signing; a `sign` keyset signs, but nothing that trusts tokens trusts it.

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::client;
use crate::support::call;
use crate::tokens::{start, Env, ISSUER, PYJWT_VERIFY};
use kmsd::encoding::{b64url, b64url_decode, random_hex};

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn jwks(url: &str) -> (Value, reqwest::header::HeaderMap) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let headers = resp.headers().clone();
    (resp.json().await.unwrap(), headers)
}

fn kid_with_alg(jwks: &Value, alg: &str) -> Option<String> {
    jwks["keys"].as_array().unwrap().iter().find(|k| k["alg"] == alg).map(|k| k["kid"].as_str().unwrap().to_owned())
}

/// The signing input of a self-written token: `sub`'s identity with every
/// scope there is, and a jti kmsd never issued.
fn admin_claims_input(alg: &str, kid: &str, sub: &str) -> String {
    let now = unix_now();
    let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
    let claims = json!({
        "sub": sub, "org": "org_default", "wks": "default", "scopes": ["*:*:*:*"],
        "sponsorId": "user_sponsor", "sponsorChain": ["user_sponsor", sub], "token_type": "access",
        "iss": ISSUER, "aud": ["relayauth"], "exp": now + 600, "iat": now,
        "jti": format!("tok_{}", random_hex(16)), "sid": format!("sess_{}", random_hex(16)),
    });
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

async fn raw_sign(e: &Env, key: &str, keyset: &str, input: &str) -> (u16, Value) {
    let body = json!({ "keyset": keyset, "message": b64url(input.as_bytes()) });
    call(&e.d.public, key, "POST", "/v1/sign", Some(body)).await
}

/// What a forged bearer token gets from kmsd: (introspection, admin keys
/// list status, API key creation status).
async fn use_as_bearer(e: &Env, token: &str) -> (Value, u16, u16) {
    let introspected = e.introspect(token).await;
    let keys = client().get(format!("{}/v1/admin/keys", e.d.admin)).bearer_auth(token).send().await.unwrap();
    let body = json!({ "name": "stolen", "scopes": ["*:*:*:*"] });
    let created =
        client().post(format!("{}/v1/api-keys", e.d.public)).bearer_auth(token).json(&body).send().await.unwrap();
    (introspected, keys.status().as_u16(), created.status().as_u16())
}

#[tokio::test]
async fn a_sign_only_api_key_cannot_forge_an_admin_token_through_raw_signing() {
    let e = start(&[]);
    let sub = e.identity("victim", &["relayfile:fs:read:/a/*"]).await;
    let (published, _) = jwks(&e.jwks_url()).await;
    let access_kid = kid_with_alg(&published, "RS256").unwrap();
    let (_, k) =
        create_key(&e.d.public, &e.admin, &["relayauth:sign:invoke:access", "relayauth:sign:invoke:sign"]).await;
    let signer = k["key"].as_str().unwrap();

    // 1. The token keyset: on a kmsd that signs, the result is a master key.
    let input = admin_claims_input("RS256", &access_kid, &sub);
    let (status, v) = raw_sign(&e, signer, "access", &input).await;
    if status == 200 {
        let token = format!("{input}.{}", v["signature"].as_str().unwrap());
        let t = token.clone();
        let url = e.jwks_url();
        let py =
            tokio::task::spawn_blocking(move || crate::python::run(PYJWT_VERIFY, &[&url, ISSUER, "relayauth", &t]))
                .await
                .unwrap();
        let (introspected, keys, created) = use_as_bearer(&e, &token).await;
        panic!(
            "raw signing with a token keyset forged a token: PyJWT {}, introspection {introspected}, \
             GET /v1/admin/keys -> {keys}, POST /v1/api-keys *:*:*:* -> {created}",
            py.trim()
        );
    }
    assert_eq!((status, v["code"].as_str()), (403, Some("keyset_not_signable")), "{v}");
    let body = json!({ "keyset": "access", "kid": access_kid, "message": b64url(b"x"), "signature": b64url(b"y") });
    let (status, v) = call(&e.d.public, signer, "POST", "/v1/verify", Some(body)).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("keyset_not_signable")), "{v}");

    // 2. The built-in `sign` keyset signs, even a JWT signing input, but kmsd
    //    and the JWKS that verifiers trust for tokens know nothing of its keys.
    let (keyset_doc, headers) = jwks(&format!("{}/v1/keysets/sign/jwks.json", e.d.public)).await;
    let sign_kid = kid_with_alg(&keyset_doc, "EdDSA").unwrap();
    let input = admin_claims_input("EdDSA", &sign_kid, &sub);
    let (status, v) = raw_sign(&e, signer, "sign", &input).await;
    assert_eq!((status, v["alg"].as_str(), v["kid"].as_str()), (200, Some("EdDSA"), Some(sign_kid.as_str())), "{v}");
    let sig = b64url_decode(v["signature"].as_str().unwrap()).unwrap();
    let jwk = &keyset_doc["keys"][0];
    let x = b64url_decode(jwk["x"].as_str().unwrap()).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x)
        .verify(input.as_bytes(), &sig)
        .expect("the signature verifies under the keyset's published key");
    let token = format!("{input}.{}", v["signature"].as_str().unwrap());
    assert_eq!(use_as_bearer(&e, &token).await, (Value::Null, 401, 401), "a raw signature is never a token");
    let (published, _) = jwks(&e.jwks_url()).await;
    assert_eq!(kid_with_alg(&published, "EdDSA").map(|k| k == sign_kid), Some(false), "edge is there, sign is not");
    assert!(published["keys"].as_array().unwrap().iter().all(|k| k["kid"] != sign_kid.as_str()));

    // The keyset's own document follows the JWKS rules and cache discipline.
    assert_eq!(jwk["use"], "sig");
    assert!(jwk.get("d").is_none());
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(cache.starts_with("public, max-age=") && cache.ends_with(", must-revalidate"), "{cache}");
    let etag = headers["etag"].to_str().unwrap();
    let resp = client()
        .get(format!("{}/v1/keysets/sign/jwks.json", e.d.public))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    for name in ["access", "refresh", "nope"] {
        let resp = client().get(format!("{}/v1/keysets/{name}/jwks.json", e.d.public)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{name}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "keyset_not_found", "{name}");
    }
    let (discovery, _) = jwks(&format!("{}/.well-known/agent-configuration", e.d.public)).await;
    assert_eq!(discovery["token_signing_alg_values_supported"], json!(["RS256", "EdDSA"]));

    // Same lifecycle as every keyset: it rotates and its document follows.
    let (status, r) = call(
        &e.d.admin,
        &e.admin,
        "POST",
        "/v1/admin/keys/rotate",
        Some(json!({ "keyset": "sign", "immediate": true })),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let (keyset_doc, _) = jwks(&format!("{}/v1/keysets/sign/jwks.json", e.d.public)).await;
    let kids: Vec<&str> = keyset_doc["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&sign_kid.as_str()) && kids.contains(&r["newKeyId"].as_str().unwrap()), "{keyset_doc}");
    let (published, _) = jwks(&e.jwks_url()).await;
    assert!(published["keys"].as_array().unwrap().iter().all(|k| k["kid"] != r["newKeyId"]));

    let metrics = client().get(format!("{}/metrics", e.d.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nkmsd_tokens_unknown_jti_total 0\n"), "{metrics}");
}
