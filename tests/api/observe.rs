//! Observability against the real daemon: `/metrics` read by the reference
//! OpenMetrics parser after issuing, rotating and revoking; the probes; JSON
//! logs of a whole session (every line parses, no secret in any, the access
//! log carries the request id); SIGHUP under load; and `READY=1` on a
//! notify socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::daemon::{bootstrap_key, client, keys_dir, run, text, Daemon};
use crate::python;
use crate::support::call;

/// One sample: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// `/metrics` of `admin`, parsed by `prometheus_client`'s OpenMetrics parser.
pub async fn scrape(admin: &str) -> Vec<Sample> {
    let resp = client().get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let body = resp.text().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/parse_metrics.py");
    let mut child = Command::new(python::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused /metrics:\n{}\n{body}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
}

async fn identity(base: &str, key: &str) -> String {
    let body = json!({ "name": "observed", "sponsorId": "user_1", "scopes": ["relayfile:fs:read:/a/*"] });
    let (status, v) = call(base, key, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn issue(base: &str, key: &str, id: &str) -> Value {
    let (status, v) = call(base, key, "POST", "/v1/tokens", Some(json!({ "identityId": id }))).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Keysets as shipped, with `access` rotating yearly (so the plan has a next
/// rotation, far from any publish lead) and a reconcile loop ticking every second.
fn yearly(dir: &std::path::Path) -> Vec<(String, String)> {
    let keys = keys_dir(dir, &[("access", "RS256", Some(2048)), ("edge", "EdDSA", None), ("refresh", "EdDSA", None)]);
    crate::daemon::add_to_keysets(&keys, &["access"], "schedule = \"0 0 0 1 1 *\"");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[rotation]\ntick = \"1s\"\n").unwrap();
    vec![
        ("KMSD_KEYS_DIR".into(), keys.display().to_string()),
        ("KMSD_POLICY_FILE".into(), policy.display().to_string()),
    ]
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `kmsd init` in `dir`, then `serve`: the bootstrap key is read from init's
/// own output (a first-start `serve` prints it on stdout while its log goes
/// to stderr, and the two pipes are read by different threads).
fn init_and_start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Daemon, String) {
    let init = run(dir, &["init"], env);
    assert!(init.status.success(), "{}", text(&init));
    (Daemon::start(dir, env), bootstrap_key(&text(&init)))
}

#[tokio::test]
async fn metrics_count_what_was_issued_rotated_and_revoked_with_bounded_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let env = yearly(tmp.path());
    let (d, admin) = init_and_start(tmp.path(), &refs(&env));
    let id = identity(&d.public, &admin).await;
    let mut pairs = Vec::new();
    for _ in 0..3 {
        pairs.push(issue(&d.public, &admin, &id).await);
    }
    let refreshed = {
        let body = json!({ "refreshToken": pairs[0]["refreshToken"] });
        let resp = client().post(format!("{}/v1/tokens/refresh", d.public)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    };
    assert!(refreshed["accessToken"].is_string());
    let (status, r) =
        call(&d.admin, &admin, "POST", "/v1/admin/keys/rotate", Some(json!({ "keyset": "access" }))).await;
    assert_eq!(status, 200, "{r}");
    let (_, keys) = call(&d.admin, &admin, "GET", "/v1/admin/keys", None).await;
    let edge = keys["keys"].as_array().unwrap().iter().find(|k| k["keyset"] == "edge").unwrap();
    let edge_kid = edge["keyId"].as_str().unwrap().to_owned();
    let (status, v) = call(&d.admin, &admin, "POST", &format!("/v1/admin/keys/{edge_kid}/revoke"), None).await;
    assert_eq!(status, 200, "{v}");
    let jti = crate::tokens::part(pairs[1]["accessToken"].as_str().unwrap(), 1)["jti"].as_str().unwrap().to_owned();
    let (status, v) = call(&d.public, &admin, "POST", "/v1/tokens/revoke", Some(json!({ "tokenId": jti }))).await;
    assert_eq!(status, 204, "{v}");
    let (_, missing) = call(&d.public, "rak_notAKeyAtAll", "GET", "/v1/api-keys", None).await;
    assert_eq!(missing["code"], "invalid_api_key");
    let (_, plan) = call(&d.admin, &admin, "GET", "/v1/admin/rotation/plan", None).await;

    let m = scrape(&d.admin).await;
    let issued = value(&m, "kmsd_tokens_issued_total", &[("keyset", "access"), ("algorithm", "RS256")]);
    assert_eq!(issued, Some(3.0), "three pairs issued by the access keyset");
    let refreshed = value(&m, "kmsd_tokens_refreshed_total", &[("keyset", "access"), ("algorithm", "RS256")]);
    assert_eq!(refreshed, Some(1.0));
    assert_eq!(value(&m, "kmsd_tokens_revoked_total", &[("by", "token")]), Some(1.0));
    assert_eq!(value(&m, "kmsd_key_events_total", &[("keyset", "access"), ("event", "rotate")]), Some(1.0));
    assert_eq!(value(&m, "kmsd_key_events_total", &[("keyset", "edge"), ("event", "revoke")]), Some(1.0));
    assert_eq!(value(&m, "kmsd_auth_failures_total", &[("reason", "invalid_api_key")]), Some(1.0));
    // The rotation waits for its publish lead: the gauge is the plan's instant.
    let activate = plan["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["keyset"] == "access" && (e["event"] == "activate" || e["event"] == "activate_next_key"))
        .unwrap_or_else(|| panic!("no activation planned: {plan}"));
    let at = chrono::DateTime::parse_from_rfc3339(activate["at"].as_str().unwrap()).unwrap().timestamp() as f64;
    assert_eq!(value(&m, "kmsd_keyset_next_rotation_timestamp_seconds", &[("keyset", "access")]), Some(at), "{plan}");
    for ks in ["access", "edge", "refresh"] {
        assert_eq!(value(&m, "kmsd_keyset_has_active_key", &[("keyset", ks)]), Some(1.0), "{ks}");
        assert_eq!(value(&m, "kmsd_keyset_rotation_paused", &[("keyset", ks)]), Some(0.0), "{ks}");
    }
    assert_eq!(value(&m, "kmsd_keyset_keys", &[("keyset", "edge"), ("state", "revoked")]), Some(1.0));
    // The successor is published from the next whole second: planned, then pending.
    let waiting =
        ["planned", "pending"].map(|st| value(&m, "kmsd_keyset_keys", &[("keyset", "access"), ("state", st)]));
    assert_eq!(waiting[0].unwrap() + waiting[1].unwrap(), 1.0, "{waiting:?}");
    assert!(value(&m, "kmsd_keyset_active_key_activated_timestamp_seconds", &[("keyset", "access")]).is_some());
    let route = [("route", "/v1/tokens"), ("method", "POST"), ("status", "201"), ("listener", "public")];
    assert_eq!(value(&m, "kmsd_http_requests_total", &route), Some(3.0));
    let revoke_route = [("route", "/v1/admin/keys/{kid}/revoke"), ("status", "200")];
    assert_eq!(value(&m, "kmsd_http_requests_total", &revoke_route), Some(1.0), "route templates, not paths");
    assert!(value(&m, "kmsd_http_request_duration_seconds_count", &[("route", "/v1/tokens")]).is_some());
    assert!(value(&m, "kmsd_sign_duration_seconds_count", &[("backend", "vault")]).unwrap() >= 4.0);
    assert!(value(&m, "kmsd_backend_sign_calls_total", &[("backend", "vault"), ("outcome", "ok")]).unwrap() >= 4.0);
    assert_eq!(value(&m, "kmsd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    for name in
        ["process_open_fds", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"]
    {
        assert!(value(&m, name, &[]).is_some_and(|v| v > 0.0), "{name} missing");
    }
    assert!(value(&m, "kmsd_store_writes_total", &[]).unwrap() >= 1.0, "existing names are kept");
    // No label holds an id: not the kid, the jti, the identity or a raw path.
    for (name, labels, _) in &m {
        for v in labels.values() {
            for id in [edge_kid.as_str(), jti.as_str(), id.as_str()] {
                assert!(!v.contains(id), "{name} has an id in a label: {labels:?}");
            }
        }
    }
}

#[tokio::test]
async fn the_probes_answer_on_both_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[]);
    for base in [&d.public, &d.admin] {
        let live = client().get(format!("{base}/livez")).send().await.unwrap();
        assert_eq!(live.status(), 200);
        let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["status"], "ready", "{body}");
        assert_eq!(body["checks"]["vault"], "unlocked", "{body}");
    }
}

/// Runs a whole session against a daemon logging JSON at debug: every line
/// on stderr is a JSON object, nothing secret is in any line, the access log
/// and the audit carry the caller's request id.
#[tokio::test]
async fn a_json_logged_session_has_only_json_lines_no_secret_and_request_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [("KMSD_LOG__FORMAT", "json"), ("KMSD_LOG__LEVEL", "debug")];
    let (d, admin) = init_and_start(tmp.path(), &env);
    let (status, created) = create_key(&d.public, &admin, &["relayauth:token:read:*"]).await;
    assert_eq!(status, 201);
    let user_key = created["key"].as_str().unwrap().to_owned();
    let user_id = created["apiKey"]["id"].as_str().unwrap().to_owned();
    let id = identity(&d.public, &admin).await;
    let pair = issue(&d.public, &admin, &id).await;
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    let refresh = pair["refreshToken"].as_str().unwrap().to_owned();
    // The token in a query string, as relayauth clients send it.
    let introspected = crate::support::introspect(&d.public, &user_key, &access).await;
    assert_eq!(introspected["sub"], id.as_str());
    let resp = client()
        .post(format!("{}/v1/tokens/refresh", d.public))
        .header("x-request-id", "req-observe-refresh")
        .json(&json!({ "refreshToken": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rotate = client()
        .post(format!("{}/v1/admin/keys/rotate", d.admin))
        .header("x-api-key", &admin)
        .header("x-request-id", "req-observe-rotate")
        .json(&json!({ "keyset": "access" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 200);
    for path in ["/v1/admin/rotation/pause", "/v1/admin/rotation/resume"] {
        assert_eq!(call(&d.admin, &admin, "POST", path, None).await.0, 200);
    }
    let (status, _) = call(&d.admin, &admin, "POST", &format!("/v1/api-keys/{user_id}/revoke"), None).await;
    assert_eq!(status, 200);
    // Refused credentials are logged at debug (the reason, never the key).
    assert_eq!(call(&d.public, &user_key, "GET", "/v1/api-keys", None).await.0, 401);
    let (_, audit) = call(&d.admin, &admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    let (_, serve_out) = d.stop();

    // Every line is JSON (`serve` prints nothing else; init ran before).
    let mut lines = Vec::new();
    for line in serve_out.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        lines.push(v);
    }
    assert!(lines.len() > 20, "a session logs: {}", lines.len());
    let has = |f: &dyn Fn(&Value) -> bool| lines.iter().any(f);
    assert!(has(&|l| l["level"] == "DEBUG"), "debug was on");
    // The access log: route template, status, request id, client, actor.
    let access_line = lines
        .iter()
        .find(|l| l["message"] == "access" && l["request_id"] == "req-observe-rotate")
        .unwrap_or_else(|| panic!("no access line for the rotation:\n{serve_out}"));
    assert_eq!(access_line["route"], "/v1/admin/keys/rotate");
    assert_eq!(access_line["status"], 200);
    assert_eq!(access_line["client"], "127.0.0.1");
    assert!(access_line["actor"].as_str().unwrap().starts_with("ak_"), "{access_line}");
    assert!(access_line["duration_ms"].as_f64().is_some());
    assert!(has(&|l| l["message"] == "access" && l["request_id"] == "req-observe-refresh"));
    // An info line for every action, stamped with its request.
    let rotated = lines.iter().find(|l| l["action"] == "key.rotate").expect("the rotation is logged");
    assert_eq!((rotated["level"].as_str(), rotated["request_id"].as_str()), (Some("INFO"), Some("req-observe-rotate")));
    assert_eq!(rotated["keyset"], "access");
    for action in ["rotation.pause", "rotation.resume", "api_key.create", "api_key.revoke", "identity.create"] {
        assert!(has(&|l| l["action"] == action && l["level"] == "INFO"), "{action} not logged");
    }
    // The audit entry carries the request id and the client address.
    let events = audit["events"].as_array().unwrap();
    let entry = events.iter().find(|e| e["action"] == "key.rotate").unwrap();
    assert_eq!(
        (entry["requestId"].as_str(), entry["client"].as_str()),
        (Some("req-observe-rotate"), Some("127.0.0.1"))
    );
    // No secret anywhere in the daemon's output.
    let kek = std::fs::read_to_string(tmp.path().join("kmsd-data").join("vault.kek")).unwrap();
    for (what, secret) in [
        ("bootstrap key", &admin[4..]),
        ("API key", &user_key[4..]),
        ("access token", access.as_str()),
        ("access token signature", access.rsplit('.').next().unwrap()),
        ("refresh token", refresh.as_str()),
        ("KEK", kek.trim()),
    ] {
        assert!(!serve_out.contains(secret), "{what} found in the log");
    }
    let (_, verify) = call_after_restart(tmp.path(), &admin).await;
    assert_eq!(verify["intact"], true, "stamped entries keep the chain intact: {verify}");
}

/// Restarts the daemon in `dir` and verifies the audit chain.
async fn call_after_restart(dir: &std::path::Path, admin: &str) -> (u16, Value) {
    let d = Daemon::start(dir, &[]);
    call(&d.admin, admin, "GET", "/v1/admin/audit/verify", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_load_reloads_the_log_level_and_fails_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("kmsd.toml");
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").unwrap();
    let config_env = config.display().to_string();
    let (mut d, admin) = init_and_start(tmp.path(), &[("KMSD_CONFIG", &config_env)]);
    let id = identity(&d.public, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut load = Vec::new();
    for worker in 0..4 {
        let (public, admin, id) = (d.public.clone(), admin.clone(), id.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for i in 0..400 {
                if Instant::now() > deadline {
                    break;
                }
                let (status, body) = if (worker + i) % 2 == 0 {
                    let r = client().get(format!("{public}/.well-known/jwks.json")).send().await.unwrap();
                    (r.status().as_u16(), Value::Null)
                } else {
                    call(&public, &admin, "POST", "/v1/tokens", Some(json!({ "identityId": id }))).await
                };
                if status == 200 || status == 201 {
                    ok += 1;
                } else {
                    failed.push(format!("{status} {body}"));
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&config, "[log]\nlevel = \"debug\"\n").unwrap();
    d.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A debug line: a refused API key says why, at debug.
    let (status, _) = call(&d.public, "rak_notAKeyAtAll", "GET", "/v1/api-keys", None).await;
    assert_eq!(status, 401);
    std::fs::write(&config, "[log]\nlevel = \"no such level [\"\n").unwrap();
    d.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.signal("HUP");
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "requests failed during SIGHUP: {:?}", &failed[..failed.len().min(3)]);
        total += ok;
    }
    assert!(total > 50, "the load ran: {total} requests");
    assert!(d.is_running(), "SIGHUP never ends kmsd");
    let out = d.output();
    assert!(out.contains("SIGHUP: configuration reloaded") && out.contains("applied=log level debug"), "{out}");
    assert!(out.contains("SIGHUP: configuration not reloaded"), "a bad config is reported: {out}");
    let after = &out[out.find("applied=log level debug").unwrap()..];
    assert!(after.contains(" DEBUG ") && after.contains("API key rejected"), "the new level took effect: {after}");
    let m = scrape(&d.admin).await;
    assert_eq!(value(&m, "kmsd_config_reloads_total", &[("reason", "ok")]), Some(1.0));
    assert_eq!(value(&m, "kmsd_config_reloads_total", &[("reason", "failed")]), Some(2.0));
    let (status, _) = d.stop();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn kmsd_tells_a_notify_socket_it_is_ready_and_then_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let notify = path.display().to_string();
    let d = Daemon::start(tmp.path(), &[("NOTIFY_SOCKET", &notify)]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within a minute");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1");
    // Ready means serving.
    assert_eq!(client().get(format!("{}/readyz", d.public)).send().await.unwrap().status(), 200);
    let (status, _) = d.stop();
    assert!(status.success());
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "STOPPING=1");
}
