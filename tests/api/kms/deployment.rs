//! The real daemon with an AWS KMS keyset beside a vault keyset, pointed at
//! the emulator through the standard AWS environment variables.

use serde_json::Value;

use super::emulator::{client, daemon_env, sdk_config, Emulator};
use crate::daemon::{bootstrap_key, client as http, Daemon};

fn keys_dir(parent: &std::path::Path) -> std::path::PathBuf {
    let dir = parent.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("edge.toml"), "name = \"edge\"\nalgorithm = \"EdDSA\"\nbackend = \"aws-kms\"\n").unwrap();
    std::fs::write(dir.join("access.toml"), "name = \"access\"\nalgorithm = \"RS256\"\nrsa_bits = 2048\n").unwrap();
    dir
}

async fn get(url: String, api_key: Option<&str>) -> Value {
    let mut req = http().get(url);
    if let Some(key) = api_key {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_daemon_serves_an_aws_kms_keyset_beside_a_vault_keyset() {
    let emulator = Emulator::start();
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys_dir(tmp.path());
    let aws = daemon_env(&emulator.url());
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("KMSD_KEYS_DIR", keys.to_str().unwrap()));

    let d = Daemon::start(tmp.path(), &env);
    let admin = bootstrap_key(&d.output());
    let jwks = get(format!("{}/.well-known/jwks.json", d.public), None).await;
    let listed = get(format!("{}/v1/admin/keys", d.admin), Some(&admin)).await;
    let backend_of = |keyset: &str| {
        let key = listed["keys"].as_array().unwrap().iter().find(|k| k["keyset"] == keyset).unwrap();
        (key["backend"].as_str().unwrap().to_owned(), key["keyId"].as_str().unwrap().to_owned())
    };
    let (edge_backend, edge_kid) = backend_of("edge");
    let (access_backend, _) = backend_of("access");
    assert_eq!((edge_backend.as_str(), access_backend.as_str()), ("aws-kms", "vault"));
    let okp: Vec<&Value> = jwks["keys"].as_array().unwrap().iter().filter(|k| k["kty"] == "OKP").collect();
    assert_eq!(okp.len(), 1, "{jwks}");
    assert_eq!(okp[0]["kid"], edge_kid.as_str());
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // The published key is the KMS key behind the keyset's alias.
    let kms = client(&sdk_config().await, &emulator.url());
    let public = kms.get_public_key().key_id("alias/kmsd-edge").send().await.unwrap();
    let der = public.public_key().unwrap().as_ref();
    assert_eq!(&der[der.len() - 32..], kmsd::encoding::b64url_decode(okp[0]["x"].as_str().unwrap()).unwrap());

    let health = get(format!("{}/v1/health", d.public), None).await;
    assert_eq!(health["services"]["backends"]["aws-kms"]["status"], "ok", "{health}");
    let (status, _) = d.stop();
    assert!(status.success());

    // A restart loads the KMS key again (GetPublicKey) and serves the same set.
    let d = Daemon::start(tmp.path(), &env);
    let again = get(format!("{}/.well-known/jwks.json", d.public), None).await;
    assert_eq!(kids(&again), kids(&jwks));
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    kids.sort();
    kids
}
