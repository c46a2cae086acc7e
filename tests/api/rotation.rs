//! Rotation against the real daemon with second-scale schedules: a fleet of
//! independent verifiers sees zero failures across 20+ rotations (and does see
//! failures when the publish lead is unsafely short), emergency revoke,
//! rollback, and kill -9 at random points of the rotation loop. Pause and
//! resume run in process on the manual clock.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsd::clock::{ManualClock, Timestamp};
use serde_json::{json, Value};

use crate::daemon::{add_to_keysets, bootstrap_key, client, keys_dir, Daemon};
use crate::fleet;
use crate::support::{admin_keys, call, identity, introspect, issue, jwks_kids, jwks_kids_and_cache, TestApp};
use crate::tokens::{part, ISSUER};

/// Token, JWKS and rotation policy scaled to seconds: tokens live 4 s, a
/// retired key leaves the JWKS 5 s later and is destroyed 10 s after that.
pub const FAST_POLICY: &str = r#"
[tokens]
access_ttl_default = "4s"
access_ttl_max = "4s"
refresh_ttl_default = "10s"
refresh_ttl_max = "10s"
skew = "1s"
[jwks]
max_age_cap = "1s"
verifier_cache = "0s"
[rotation]
publish_lead = "2s"
overlap = "5s"
destroy_delay = "10s"
margin = "1s"
tick = "1s"
"#;

/// Keysets that rotate every `every` seconds and a policy scaled to seconds.
pub fn fast_config(dir: &std::path::Path, every: u32, policy_extra: &str) -> Vec<(String, String)> {
    let keys = keys_dir(dir, &[("access", "RS256", Some(2048)), ("edge", "EdDSA", None), ("refresh", "EdDSA", None)]);
    add_to_keysets(&keys, &["access", "edge"], &format!("schedule = \"*/{every} * * * * *\""));
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, format!("{FAST_POLICY}{policy_extra}")).unwrap();
    vec![
        ("KMSD_KEYS_DIR".into(), keys.display().to_string()),
        ("KMSD_POLICY_FILE".into(), policy.display().to_string()),
    ]
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The identity the rotation tests issue for.
async fn fleet_identity(public: &str, admin: &str) -> String {
    identity(public, admin, "fleet", &["relayfile:fs:read:/a/*"]).await
}

/// Drives the fleet until `rotations` new access kids have signed (or
/// `limit` passes); returns per-verifier failure counts and the kids seen.
async fn run_fleet(
    d: &Daemon,
    admin: &str,
    mut verifiers: Vec<fleet::LineVerifier>,
    rotations: usize,
    limit: Duration,
) -> (BTreeMap<&'static str, Vec<String>>, usize) {
    let id = fleet_identity(&d.public, admin).await;
    let mut failures: BTreeMap<&'static str, Vec<String>> = verifiers.iter().map(|v| (v.name, Vec::new())).collect();
    let mut kids = HashSet::new();
    let started = Instant::now();
    while kids.len() <= rotations && started.elapsed() < limit {
        let pair = issue(&d.public, admin, &id).await;
        let token = pair["accessToken"].as_str().unwrap().to_owned();
        kids.insert(part(&token, 0)["kid"].as_str().unwrap().to_owned());
        for v in verifiers.iter_mut() {
            let result = tokio::task::block_in_place(|| v.check(&token));
            if result["ok"] != true {
                failures.get_mut(v.name).unwrap().push(result.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (failures, kids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_caching_verifiers_sees_no_failure_across_twenty_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let env = fast_config(tmp.path(), 3, "");
    let d = Daemon::start(tmp.path(), &env_refs(&env));
    let admin = bootstrap_key(&d.output());
    let url = format!("{}/.well-known/jwks.json", d.public);
    // PyJWKClient and jose refetch on an unknown kid at most once per 1 s and
    // 2 s: inside the policy's 2 s publish lead.
    let fleet = vec![
        fleet::pyjwt("gateway", 0, &url, ISSUER, "svc"),
        fleet::pyjwt("pyjwk", 1, &url, ISSUER, "svc"),
        fleet::jose(&url, ISSUER, "svc"),
    ];
    let (failures, kids) = run_fleet(&d, &admin, fleet, 20, Duration::from_secs(150)).await;
    assert!(kids > 20, "only {kids} signing keys seen: the test must span 20 rotations");
    for (name, f) in &failures {
        assert!(f.is_empty(), "{name} failed {} times: {:?}", f.len(), &f[..f.len().min(3)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafely_short_publish_lead_strands_tokens_at_caching_verifiers() {
    let tmp = tempfile::tempdir().unwrap();
    let unsafe_policy = "unsafe_allow_short_publish_lead = true\n";
    let env = fast_config(tmp.path(), 3, unsafe_policy);
    // Verifiers keep the JWKS for 4 s, but new keys sign at once.
    let policy = tmp.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("publish_lead = \"2s\"", "publish_lead = \"0s\"")
        .replace("verifier_cache = \"0s\"", "verifier_cache = \"4s\"");
    std::fs::write(&policy, text).unwrap();
    let d = Daemon::start(tmp.path(), &env_refs(&env));
    let admin = bootstrap_key(&d.output());
    let url = format!("{}/.well-known/jwks.json", d.public);
    let fleet = vec![fleet::pyjwt("fixed", 4, &url, ISSUER, "svc"), fleet::pyjwt("gateway", 0, &url, ISSUER, "svc")];
    let (failures, kids) = run_fleet(&d, &admin, fleet, 4, Duration::from_secs(40)).await;
    assert!(kids > 4);
    let stranded = &failures["pyjwt-fixed-cache"];
    assert!(!stranded.is_empty(), "a verifier caching past the publish lead must fail: {failures:?}");
    assert!(stranded.iter().all(|f| f.contains("unknown kid")), "{failures:?}");
    assert!(failures["pyjwt-gateway"].is_empty(), "refetching on an unknown kid is not stranded: {failures:?}");
}

#[tokio::test]
async fn a_policy_with_a_short_publish_lead_is_refused_without_the_unsafe_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let env = fast_config(tmp.path(), 3, "");
    let policy = tmp.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap().replace("publish_lead = \"2s\"", "publish_lead = \"0s\"");
    std::fs::write(&policy, text).unwrap();
    let out = crate::daemon::run(tmp.path(), &["check-config"], &env_refs(&env));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::daemon::text(&out)
            .contains("publish_lead 0s < jwks.max_age_cap 1s + jwks.verifier_cache 0s + margin 1s"),
        "{}",
        crate::daemon::text(&out)
    );
}

#[tokio::test]
async fn emergency_revoke_takes_the_key_out_at_once_and_a_replacement_signs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let id = fleet_identity(&d.public, &admin).await;
    let before = issue(&d.public, &admin, &id).await;
    let token = before["accessToken"].as_str().unwrap();
    let kid = part(token, 0)["kid"].as_str().unwrap().to_owned();
    assert_ne!(introspect(&d.public, &admin, token).await, Value::Null);

    // "At once": the first introspection after the revoke's 200 refuses the
    // token (no cache to wait out). Not a stopwatch: the revoke creates the
    // replacement's key pair first, which a loaded CI machine may take over a
    // second to do (a 1 s bound here failed under load).
    let (status, v) = call(&d.admin, &admin, "POST", &format!("/v1/admin/keys/{kid}/revoke"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(introspect(&d.public, &admin, token).await, Value::Null);
    let replacement = v["replacementKeyId"].as_str().unwrap().to_owned();
    assert_ne!(replacement, kid);
    let (kids, cache) = jwks_kids_and_cache(&d.public).await;
    assert!(!kids.contains(&kid), "revoked kid still published");
    assert!(kids.contains(&replacement));
    assert_eq!(cache, "public, max-age=5, must-revalidate", "short max-age during the cool-down");
    let after = issue(&d.public, &admin, &id).await;
    assert_eq!(part(after["accessToken"].as_str().unwrap(), 0)["kid"], replacement.as_str());
    // A bearer signed by the revoked key is refused too.
    let resp = client().get(format!("{}/v1/identities", d.public)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let keys = admin_keys(&d.admin, &admin).await;
    let revoked = keys.iter().find(|k| k["keyId"] == kid.as_str()).unwrap();
    assert_eq!((revoked["state"].as_str(), revoked["status"].as_str()), (Some("revoked"), Some("expired")));
    let (_, audit) = call(&d.admin, &admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    assert!(audit["events"].as_array().unwrap().iter().any(|e| e["action"] == "key.revoke"), "audited");
    let (status, v) = call(&d.admin, &admin, "POST", &format!("/v1/admin/keys/{kid}/revoke"), None).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("key_already_revoked")));
}

#[tokio::test]
async fn rollback_returns_the_previous_key_to_signing_and_its_successor_keeps_verifying() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    let admin = bootstrap_key(&d.output());
    let id = fleet_identity(&d.public, &admin).await;
    let first = part(issue(&d.public, &admin, &id).await["accessToken"].as_str().unwrap(), 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, r) = call(&d.admin, &admin, "POST", "/v1/admin/keys/rotate", Some(json!({ "immediate": true }))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["oldKeyId"], first.as_str());
    assert!(r["warning"].as_str().unwrap().contains("publish lead"));
    let second = r["newKeyId"].as_str().unwrap().to_owned();
    let t2 = issue(&d.public, &admin, &id).await["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(part(&t2, 0)["kid"], second.as_str());

    let (status, v) = call(&d.admin, &admin, "POST", "/v1/admin/keys/rollback", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["keyId"].as_str(), v["rolledBackKeyId"].as_str()), (Some(first.as_str()), Some(second.as_str())));
    let t3 = issue(&d.public, &admin, &id).await["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(part(&t3, 0)["kid"], first.as_str(), "the previous key signs again");
    let v = introspect(&d.public, &admin, &t2).await;
    assert_ne!(v, Value::Null, "the rolled-back key's tokens still verify");
    let (kids, _) = jwks_kids_and_cache(&d.public).await;
    assert!(kids.contains(&second) && kids.contains(&first));
    let keys = admin_keys(&d.admin, &admin).await;
    let state = |kid: &str| keys.iter().find(|k| k["keyId"] == kid).unwrap()["state"].as_str().unwrap().to_owned();
    assert_eq!((state(&first), state(&second)), ("active".to_owned(), "retiring".to_owned()));
    // A regular rotation publishes first and says when the key will sign.
    let (status, r) = call(&d.admin, &admin, "POST", "/v1/admin/keys/rotate", Some(json!({ "keyset": "edge" }))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["immediate"], false);
    let (status, r) = call(&d.admin, &admin, "POST", "/v1/admin/keys/rotate", Some(json!({ "keyset": "edge" }))).await;
    assert_eq!((status, r["code"].as_str()), (409, Some("rotation_in_progress")));
    let (status, plan) = call(&d.admin, &admin, "GET", "/v1/admin/rotation/plan", None).await;
    assert_eq!(status, 200);
    assert!(
        plan["events"].as_array().unwrap().iter().any(|e| e["event"] == "activate" && e["keyset"] == "edge"),
        "{plan}"
    );
}

/// In process, on the manual clock: "10 s pass" is an instruction, not a wait.
#[tokio::test]
async fn pause_freezes_scheduled_rotation_until_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let env = fast_config(tmp.path(), 2, "");
    let app = TestApp::spawn(TestApp::config(tmp.path(), &env_refs(&env)), Arc::new(ManualClock::starting_now())).await;
    let (status, _) = app.admin_call("POST", "/v1/admin/rotation/pause", None).await;
    assert_eq!(status, 200);
    let count = |keys: &[Value]| keys.iter().filter(|k| k["keyset"] == "access").count();
    let before = count(&admin_keys(&app.admin, &app.admin_key).await);
    for _ in 0..5 {
        app.advance(2);
        assert!(app.tick().await.is_empty(), "a paused tick applies nothing");
    }
    assert_eq!(count(&admin_keys(&app.admin, &app.admin_key).await), before, "no rotation while paused");
    let (_, plan) = app.admin_call("GET", "/v1/admin/rotation/plan", None).await;
    assert_eq!(plan["paused"], true);
    app.admin_call("POST", "/v1/admin/rotation/resume", None).await;
    for _ in 0..5 {
        app.advance(1);
        app.tick().await;
    }
    assert!(count(&admin_keys(&app.admin, &app.admin_key).await) > before, "rotation resumed");
    app.stop().await;
}

/// In process, on the manual clock: the successor is in the JWKS the
/// publish lead before it signs, and the key it replaces stays published.
#[tokio::test]
async fn a_scheduled_successor_is_published_for_the_lead_before_it_signs() {
    let tmp = tempfile::tempdir().unwrap();
    let env = fast_config(tmp.path(), 30, "");
    // Ten seconds past a minute: the next scheduled instant (:30) is 20 s away.
    let minute = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 / 60;
    let rotation_at = (minute + 2) * 60 + 30;
    let clock = Arc::new(ManualClock::at(Timestamp::from_unix(rotation_at - 20)));
    let app = TestApp::spawn(TestApp::config(tmp.path(), &env_refs(&env)), clock).await;
    let id = fleet_identity(&app.public, &app.admin_key).await;
    let signer = |pair: &Value| part(pair["accessToken"].as_str().unwrap(), 0)["kid"].as_str().unwrap().to_owned();
    let old = signer(&issue(&app.public, &app.admin_key, &id).await);
    assert!(app.tick().await.is_empty(), "nothing is due 20 s ahead of the schedule");
    let before = jwks_kids(&app.public).await;

    app.advance(18);
    let applied = app.tick().await;
    assert!(applied.iter().any(|a| a.starts_with("access: published")), "{applied:?}");
    app.advance(1);
    let published = jwks_kids(&app.public).await;
    let added: Vec<&String> = published.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(added.len(), 2, "access and edge each publish a successor: {published:?} vs {before:?}");
    let keys = admin_keys(&app.admin, &app.admin_key).await;
    let pending = keys.iter().find(|k| k["keyset"] == "access" && k["keyId"] != old.as_str()).unwrap();
    assert_eq!(pending["state"], "pending", "{pending}");
    let new = pending["keyId"].as_str().unwrap().to_owned();
    assert!(added.contains(&&new), "{added:?}");
    assert_eq!(signer(&issue(&app.public, &app.admin_key, &id).await), old, "published, not signing yet");

    app.advance(2);
    assert_eq!(signer(&issue(&app.public, &app.admin_key, &id).await), new, "signs from its activation");
    assert!(jwks_kids(&app.public).await.contains(&old), "the retiring key stays published");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_anywhere_in_the_rotation_loop_leaves_one_signer_and_every_needed_kid() {
    let tmp = tempfile::tempdir().unwrap();
    let env = fast_config(tmp.path(), 2, "");
    let mut d = Daemon::start(tmp.path(), &env_refs(&env));
    let admin = bootstrap_key(&d.output());
    let id = fleet_identity(&d.public, &admin).await;
    let mut live: Vec<(String, i64)> = Vec::new();
    let mut checked = 0;
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    for round in 0..20 {
        for _ in 0..3 {
            let t = issue(&d.public, &admin, &id).await["accessToken"].as_str().unwrap().to_owned();
            let c = part(&t, 1);
            live.push((part(&t, 0)["kid"].as_str().unwrap().to_owned(), c["exp"].as_i64().unwrap()));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 1800)).await;
        d.crash();
        d = Daemon::start(tmp.path(), &env_refs(&env));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let keys = admin_keys(&d.admin, &admin).await;
        for keyset in ["access", "edge", "refresh"] {
            let active = keys.iter().filter(|k| k["keyset"] == keyset && k["state"] == "active").count();
            assert_eq!(active, 1, "round {round}: {keyset} has {active} active keys: {keys:?}");
        }
        let (kids, _) = jwks_kids_and_cache(&d.public).await;
        for (kid, exp) in &live {
            if *exp > now + 1 {
                assert!(kids.contains(kid), "round {round}: kid {kid} of a live token left the JWKS");
                checked += 1;
            }
        }
        let (status, v) = call(&d.admin, &admin, "GET", "/v1/admin/audit/verify", None).await;
        assert_eq!((status, v["intact"].as_bool()), (200, Some(true)), "round {round}: {v}");
        live.retain(|(_, exp)| *exp > now);
    }
    assert!(checked > 0, "no live token's kid was ever checked");
}
