//! A replica cut from PostgreSQL (a loopback fault proxy in front of the
//! server swallows every byte, as a partition does): requests that need the
//! store answer a clean 503 with `Retry-After` within the client's bound
//! instead of hanging, `/readyz` says the store is failing, the JWKS is
//! still served from memory, and once the network is back the replica
//! issues again without a restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{harness, url_text_via};
use crate::daemon::{bootstrap_key, client, Daemon};
use crate::kms::proxy::FaultProxy;
use crate::support::{identity, jwks_kids};

/// `POST /v1/tokens` for `id`: the status, `Retry-After` and the reply.
pub async fn issue(public: &str, key: &str, id: &str) -> (u16, Option<String>, Value) {
    let r = client()
        .post(format!("{public}/v1/tokens"))
        .header("x-api-key", key)
        .json(&json!({ "identityId": id, "audience": ["svc"] }))
        .send()
        .await
        .unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), retry, r.json().await.unwrap())
}

async fn ready(public: &str) -> u16 {
    client().get(format!("{public}/readyz")).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_postgres_answers_503_keeps_its_jwks_and_recovers_without_a_restart() {
    let db = harness::fresh_db().await;
    let proxy = FaultProxy::start(db.url.config().get_ports()[0]);
    let url = url_text_via(&db.url, proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("vault.kek");
    let env = [
        ("KMSD_STORAGE__ENGINE", "postgres"),
        ("KMSD_STORAGE_URL", url.as_str()),
        ("KMSD_STORAGE__STATEMENT_TIMEOUT", "1s"),
        ("KMSD_VAULT__KEK_FILE", kek.to_str().unwrap()),
    ];
    let d = Daemon::start(dir.path(), &env);
    let key = bootstrap_key(&d.output());
    let id = identity(&d.public, &key, "bot", &["relay:read"]).await;
    assert_eq!(issue(&d.public, &key, &id).await.0, 201);
    let kids = jwks_kids(&d.public).await;

    proxy.cut();
    let t0 = Instant::now();
    let (status, retry, body) = issue(&d.public, &key, &id).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("service_unavailable")), "{body}");
    assert!(retry.is_some(), "a 503 says when to retry: {body}");
    assert!(t0.elapsed() < Duration::from_secs(15), "answered within the bound, not hung: {:?}", t0.elapsed());
    assert_eq!(ready(&d.public).await, 503, "/readyz: the store is failing");
    let health: Value = client().get(format!("{}/v1/health", d.public)).send().await.unwrap().json().await.unwrap();
    let storage = &health["services"]["storage"];
    assert_eq!(
        (storage["engine"].as_str(), storage["error"].as_str()),
        (Some("postgres"), Some("database_unavailable")),
        "{health}"
    );
    assert_eq!(jwks_kids(&d.public).await, kids, "the JWKS is served from memory");

    proxy.restore();
    let t0 = Instant::now();
    loop {
        let (status, _, body) = issue(&d.public, &key, &id).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(t0.elapsed() < Duration::from_secs(30), "issuing again within 30 s of the network's return");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t0 = Instant::now();
    while ready(&d.public).await != 200 {
        assert!(t0.elapsed() < Duration::from_secs(30), "/readyz is 200 again without a restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop();
}
