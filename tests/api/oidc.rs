//! `/.well-known/openid-configuration` walked by a standard OIDC discovery
//! flow, as Vault's JWT auth or a cloud IAM federation does it: fetch the
//! document from `{issuer}/.well-known/openid-configuration`, check that its
//! `issuer` is the URL it was fetched under, load the keys through the
//! discovered `jwks_uri` (PyJWT's `PyJWKClient`) and verify a kmsd token
//! with the discovered algorithms.

use serde_json::{json, Value};

use crate::daemon::{bootstrap_key, Daemon};
use crate::python;

/// argv: issuer URL, audience, token. Prints the verified claims' `sub`.
const OIDC_VERIFY: &str = r#"
import json, sys, urllib.request
import jwt
issuer, audience, token = sys.argv[1], sys.argv[2], sys.argv[3]
with urllib.request.urlopen(issuer + "/.well-known/openid-configuration") as r:
    doc = json.load(r)
assert doc["issuer"] == issuer, ("issuer mismatch", doc["issuer"], issuer)
for field in ["jwks_uri", "id_token_signing_alg_values_supported", "response_types_supported", "subject_types_supported"]:
    assert field in doc, field
client = jwt.PyJWKClient(doc["jwks_uri"], cache_keys=False)
key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=doc["id_token_signing_alg_values_supported"], audience=audience, issuer=doc["issuer"])
print(json.dumps({"sub": claims["sub"], "algs": doc["id_token_signing_alg_values_supported"]}))
"#;

/// A daemon whose issuer and public base URL are its own public address.
/// The port is chosen before the start; if another test takes it in
/// between, the start fails with "address in use" and a new port is tried.
fn start_self_issuing(dir: &std::path::Path) -> (Daemon, String) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        let env = [("KMSD_LISTEN__PUBLIC", listen.as_str()), ("KMSD_PUBLIC_BASE_URL", &base), ("KMSD_ISSUER", &base)];
        match Daemon::try_start(dir, &env) {
            Ok(d) => return (d, base),
            Err((_, out)) if out.contains("in use") => continue,
            Err((status, out)) => panic!("kmsd did not start ({status:?}):\n{out}"),
        }
    }
    panic!("no free loopback port after 5 tries");
}

#[tokio::test]
async fn an_oidc_discovery_client_verifies_our_tokens_through_the_discovered_jwks_uri() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, base) = start_self_issuing(tmp.path());
    let admin = bootstrap_key(&d.output());
    let body = json!({ "name": "oidc-subject", "sponsorId": "user_sponsor", "scopes": ["relayfile:fs:read:*"] });
    let (status, identity) = crate::support::call(&d.public, &admin, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{identity}");
    let id = identity["id"].as_str().unwrap().to_owned();

    let mut published = Vec::new();
    for alg in ["RS256", "EdDSA"] {
        let req = json!({ "identityId": id, "audience": ["vault"], "algorithm": alg });
        let (status, pair) = crate::support::call(&d.public, &admin, "POST", "/v1/tokens", Some(req)).await;
        assert_eq!(status, 201, "{pair}");
        let token = pair["accessToken"].as_str().unwrap().to_owned();
        let issuer = base.clone();
        let out =
            tokio::task::spawn_blocking(move || python::run(OIDC_VERIFY, &[&issuer, "vault", &token])).await.unwrap();
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["sub"], id.as_str(), "{alg}: {v}");
        published = v["algs"].as_array().unwrap().clone();
    }
    // Only what JWKS publishes: the default token keysets sign RS256 and EdDSA.
    let mut algs: Vec<&str> = published.iter().map(|a| a.as_str().unwrap()).collect();
    algs.sort_unstable();
    assert_eq!(algs, ["EdDSA", "RS256"]);
}
