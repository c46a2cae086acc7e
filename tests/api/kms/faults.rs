//! The daemon when KMS misbehaves, through a fault proxy in front of the
//! emulator: a partition (issuance answers 503 within the timeout while JWKS,
//! introspection and health keep working, and recovers without a restart),
//! and kmsd's own sign budget (429 instead of KMS throttling).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::deployment::Deployment;
use super::emulator::Emulator;
use super::proxy::FaultProxy;
use crate::daemon::client;
use crate::tokens::Env;

type Reply = (u16, reqwest::header::HeaderMap, Value);

/// POST /v1/tokens for an RS256 token: status, headers and body.
async fn issue(e: &Env, id: &str) -> Reply {
    issue_at(e.d.public.clone(), e.admin.clone(), id.to_owned()).await
}

async fn issue_at(public: String, key: String, id: String) -> Reply {
    let resp = client()
        .post(format!("{public}/v1/tokens"))
        .header("x-api-key", key)
        .json(&json!({ "identityId": id, "algorithm": "RS256" }))
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap())
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

async fn health(e: &Env) -> Value {
    client().get(format!("{}/v1/health", e.d.public)).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_kms_partition_is_503_for_issuance_only_and_heals_without_a_restart() {
    let emulator = Emulator::start();
    let proxy = FaultProxy::start(emulator.port);
    let timeout = Duration::from_secs(1);
    let dep = Deployment::start(&proxy.url(), &emulator.url(), None, &[("KMSD_AWS_KMS__TIMEOUT", "1s")]).await;
    let e = &dep.e;
    let id = e.identity("kms-outage", &["relayfile:fs:read:/a/*"]).await;
    let (status, _, before) = issue(e, &id).await;
    assert_eq!(status, 201, "{before}");
    let earlier = before["accessToken"].as_str().unwrap().to_owned();

    proxy.cut();
    let started = Instant::now();
    let (status, headers, body) = issue(e, &id).await;
    let elapsed = started.elapsed();
    assert_eq!((status, body["code"].as_str()), (503, Some("service_unavailable")), "{body}");
    assert!(header(&headers, "retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{headers:?}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    // One attempt (AWS_MAX_ATTEMPTS=1) that ends at the configured timeout.
    assert!(elapsed >= timeout - Duration::from_millis(100), "{elapsed:?}: not the timeout");
    assert!(elapsed < timeout + Duration::from_millis(1500), "{elapsed:?}");

    // Verification is local: JWKS and introspection keep answering.
    let jwks = client().get(e.jwks_url()).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    assert_eq!(e.introspect(&earlier).await["sub"], id.as_str(), "introspect returns the claims");
    let h = health(e).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["services"]["backends"]["aws-kms"]["status"], "unavailable", "{h}");

    proxy.restore();
    let (status, _, after) = issue(e, &id).await;
    assert_eq!(status, 201, "issuance recovers with no restart: {after}");
    assert_eq!(health(e).await["status"], "healthy");
}

#[tokio::test]
async fn a_burst_beyond_the_sign_budget_gets_429_and_never_reaches_kms() {
    const BUDGET: u64 = 5;
    const REQUESTS: usize = 30;
    let emulator = Emulator::start();
    let proxy = FaultProxy::start(emulator.port);
    let budget = [("KMSD_AWS_KMS__SIGN_RATE_RSA", "5"), ("KMSD_AWS_KMS__BURST", "5")];
    let dep = Deployment::start(&proxy.url(), &emulator.url(), None, &budget).await;
    let e = &dep.e;
    let id = e.identity("kms-burst", &["relayfile:fs:read:/a/*"]).await;

    let signs_before = proxy.sign_requests();
    let started = Instant::now();
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        burst.spawn(issue_at(e.d.public.clone(), e.admin.clone(), id.clone()));
    }
    let replies: Vec<Reply> = burst.join_all().await;
    let elapsed = started.elapsed();
    let signs = proxy.sign_requests() - signs_before;

    let created = replies.iter().filter(|(s, _, _)| *s == 201).count();
    let limited: Vec<_> = replies.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(created + limited.len(), REQUESTS, "only 201 and 429: {replies:?}");
    assert!(created >= BUDGET as usize && !limited.is_empty(), "{created} created, {} limited", limited.len());
    for (_, headers, body) in &limited {
        assert_eq!(body["code"], "rate_limited", "{body}");
        assert!(header(headers, "retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{headers:?}");
    }
    // Each token took one KMS signature (refresh tokens are signed in the
    // vault); a refused request took none, and the budget held.
    assert_eq!(signs, created as u64, "Sign requests that reached KMS");
    let allowed = BUDGET + (BUDGET as f64 * elapsed.as_secs_f64()).ceil() as u64;
    assert!(signs <= allowed, "{signs} signs in {elapsed:?}, budget allows {allowed}");
}
