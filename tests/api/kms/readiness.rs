//! Readiness when a keyset loses its signer: an AWS KMS keyset declared while
//! KMS is partitioned cannot get its first key. kmsd serves anyway, but
//! `/readyz` answers 503 naming the keyset, `/v1/health` is 503 `unhealthy`
//! and `kmsd_keyset_has_active_key` is 0; once KMS is back, the rotation loop
//! creates the key and all three recover without a restart.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::emulator::{daemon_env, Emulator};
use super::proxy::FaultProxy;
use crate::daemon::{add_to_keysets, client, keys_dir, Daemon};
use crate::observe::{scrape, value};

async fn probe(base: &str, path: &str) -> (u16, Value) {
    let resp = client().get(format!("{base}{path}")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn readyz_is_503_while_a_keyset_has_no_signer_and_200_once_it_has_one() {
    let emulator = Emulator::start();
    let proxy = FaultProxy::start(emulator.port);
    let tmp = tempfile::tempdir().unwrap();
    let sets = [("access", "RS256", Some(2048)), ("edge", "EdDSA", None), ("refresh", "EdDSA", None)];
    let keys = keys_dir(tmp.path(), &sets);
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "[rotation]\ntick = \"1s\"\n").unwrap();
    let aws = daemon_env(&proxy.url());
    let (keys_env, policy_env) = (keys.display().to_string(), policy.display().to_string());
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("KMSD_KEYS_DIR", keys_env.as_str()),
        ("KMSD_POLICY_FILE", policy_env.as_str()),
        ("KMSD_AWS_KMS__TIMEOUT", "1s"),
    ]);
    let d = Daemon::start(tmp.path(), &env);
    assert_eq!(probe(&d.public, "/readyz").await.0, 200);
    d.stop();

    // A new keyset in AWS KMS, declared while KMS cannot be reached.
    std::fs::write(keys.join("remote.toml"), "name = \"remote\"\nalgorithm = \"EdDSA\"\n").unwrap();
    add_to_keysets(&keys, &["remote"], "backend = \"aws-kms\"");
    proxy.cut();
    let d = Daemon::start(tmp.path(), &env);
    let (status, ready) = probe(&d.public, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["keysetsWithoutSigner"], serde_json::json!(["remote"]), "{ready}");
    assert_eq!(ready["checks"]["signers"], "missing");
    let (status, health) = probe(&d.public, "/v1/health").await;
    assert_eq!((status, health["status"].as_str()), (503, Some("unhealthy")), "{health}");
    assert_eq!(health["services"]["keysets"]["remote"]["status"], "no_active_key");
    assert_eq!(probe(&d.admin, "/readyz").await.0, 503, "the admin listener says the same");
    assert_eq!(probe(&d.public, "/livez").await.0, 200, "alive all the same");
    let m = scrape(&d.admin).await;
    assert_eq!(value(&m, "kmsd_keyset_has_active_key", &[("keyset", "remote")]), Some(0.0));
    assert_eq!(value(&m, "kmsd_keyset_has_active_key", &[("keyset", "access")]), Some(1.0));
    let jwks = client().get(format!("{}/.well-known/jwks.json", d.public)).send().await.unwrap();
    assert_eq!(jwks.status(), 200, "JWKS keeps being served");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = probe(&d.public, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready 30 s after KMS came back: {ready}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m = scrape(&d.admin).await;
    assert_eq!(value(&m, "kmsd_keyset_has_active_key", &[("keyset", "remote")]), Some(1.0));
    assert_eq!(value(&m, "kmsd_key_events_total", &[("keyset", "remote"), ("event", "create")]), Some(1.0));
    assert_eq!(probe(&d.public, "/v1/health").await.0, 200);
    assert!(value(&m, "kmsd_backend_sign_budget_remaining", &[("backend", "aws-kms"), ("class", "ecc")]).is_some());
}
