//! `/.well-known/jwks.json` and discovery, checked field by field and by an
//! independent JWKS client (PyJWT's `PyJWKClient`).

use serde_json::Value;

use crate::daemon::{client, Daemon};

async fn jwks(d: &Daemon) -> (reqwest::header::HeaderMap, Value) {
    let resp = client().get(format!("{}/.well-known/jwks.json", d.public)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let headers = resp.headers().clone();
    (headers, resp.json().await.unwrap())
}

/// RFC 7638 thumbprint computed here, independently of kmsd's implementation.
fn thumbprint(jwk: &Value) -> String {
    let s = |k: &str| jwk[k].as_str().unwrap().to_owned();
    let canonical = match jwk["kty"].as_str().unwrap() {
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e"), s("n")),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv"), s("x")),
        "EC" => format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, s("crv"), s("x"), s("y")),
        other => panic!("unexpected kty {other}"),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    kmsd::encoding::b64url(digest.as_ref())
}

#[tokio::test]
async fn serve_in_an_empty_directory_with_no_config_publishes_one_rs256_key_and_the_eddsa_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let data = tmp.path().join("kmsd-data");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("vault.kek")), 0o600);
    assert_eq!(mode(&data.join("kmsd.redb")), 0o600);

    let (_, body) = jwks(&d).await;
    let keys = body["keys"].as_array().unwrap();
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort();
    // access (RS256-3072) signs access tokens; edge (EdDSA) signs EdDSA access
    // tokens; refresh (EdDSA) signs refresh tokens.
    assert_eq!(algs, ["EdDSA", "EdDSA", "RS256"]);
    let rsa = keys.iter().find(|k| k["alg"] == "RS256").unwrap();
    let n = kmsd::encoding::b64url_decode(rsa["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len() * 8, 3072, "default RSA keys are 3072-bit");
    let ed = keys.iter().find(|k| k["alg"] == "EdDSA").unwrap();
    assert_eq!(ed["crv"], "Ed25519");
}

#[tokio::test]
async fn jwks_entries_carry_only_public_members_and_kids_are_thumbprints() {
    let tmp = tempfile::tempdir().unwrap();
    let keys =
        crate::daemon::keys_dir(tmp.path(), &[("r", "RS256", Some(2048)), ("e", "EdDSA", None), ("p", "ES256", None)]);
    let d = Daemon::start(tmp.path(), &[("KMSD_KEYS_DIR", keys.to_str().unwrap())]);
    let (headers, body) = jwks(&d).await;
    assert_eq!(headers["content-type"], "application/json");
    let entries = body["keys"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for k in entries {
        let obj = k.as_object().unwrap();
        for required in ["kty", "use", "alg", "kid"] {
            assert!(obj.contains_key(required), "{required} missing in {k}");
        }
        assert_eq!(k["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth", "x5c", "x5t"] {
            assert!(!obj.contains_key(private), "{private} present in {k}");
        }
        assert_ne!(k["kty"], "oct");
        assert_eq!(k["kid"].as_str().unwrap(), thumbprint(k), "kid is the RFC 7638 thumbprint");
        let expected: &[&str] = match k["kty"].as_str().unwrap() {
            "RSA" => &["alg", "e", "kid", "kty", "n", "use"],
            "OKP" => &["alg", "crv", "kid", "kty", "use", "x"],
            _ => &["alg", "crv", "kid", "kty", "use", "x", "y"],
        };
        let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, expected);
    }
}

#[tokio::test]
async fn jwks_cache_control_is_capped_and_etags_answer_304() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "[jwks]\nmax_age_cap = \"42s\"\n").unwrap();
    let d = Daemon::start(tmp.path(), &[("KMSD_POLICY_FILE", policy.to_str().unwrap())]);
    let (headers, _) = jwks(&d).await;
    assert_eq!(headers["cache-control"], "public, max-age=42, must-revalidate");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let url = format!("{}/.well-known/jwks.json", d.public);
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"zzz\", {etag}")] {
        let resp = client().get(&url).header("if-none-match", &inm).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 304, "If-None-Match: {inm}");
        assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
        assert!(resp.headers().contains_key("cache-control"));
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let resp = client().get(&url).header("if-none-match", "\"stale\"").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn discovery_names_our_urls_and_only_published_algorithms() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        &[("KMSD_PUBLIC_BASE_URL", "https://auth.example.test"), ("KMSD_ISSUER", "https://issuer.example.test")],
    );
    let body: Value = client()
        .get(format!("{}/.well-known/agent-configuration", d.public))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["issuer"], "https://issuer.example.test");
    assert_eq!(body["jwks_uri"], "https://auth.example.test/.well-known/jwks.json");
    assert_eq!(body["token_endpoint"], "https://auth.example.test/v1/tokens");
    assert_eq!(body["token_signing_alg_values_supported"], serde_json::json!(["RS256", "EdDSA"]));
    assert_eq!(body["token_lifetimes"]["access_token_default"], "PT1H");
}

const PYJWT_LOADS_JWKS: &str = r#"
import json, sys
import jwt
client = jwt.PyJWKClient(sys.argv[1], cache_keys=False)
keys = client.get_signing_keys()
print(json.dumps(sorted([[k.key_id, k.algorithm_name] for k in keys])))
"#;

#[tokio::test]
async fn pyjwt_loads_every_key_from_the_live_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let keys =
        crate::daemon::keys_dir(tmp.path(), &[("r", "RS256", Some(3072)), ("e", "EdDSA", None), ("p", "ES256", None)]);
    let d = Daemon::start(tmp.path(), &[("KMSD_KEYS_DIR", keys.to_str().unwrap())]);
    let (_, body) = jwks(&d).await;
    let mut ours: Vec<(String, String)> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap().to_owned(), k["alg"].as_str().unwrap().to_owned()))
        .collect();
    ours.sort();
    let url = format!("{}/.well-known/jwks.json", d.public);
    let out = tokio::task::spawn_blocking(move || crate::python::run(PYJWT_LOADS_JWKS, &[&url])).await.unwrap();
    let theirs: Vec<(String, String)> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(theirs, ours, "PyJWKClient loads every published key with its algorithm");
}
