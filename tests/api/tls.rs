//! TLS on the real daemon, with certificates made by the test ([`crate::pki`]):
//! JWKS over https checked against the test CA (by reqwest and PyJWT's
//! `PyJWKClient`), admin mTLS through the CLI, certificates rotated on disk
//! and on SIGHUP with no restart and no failed request, the refusal of a
//! clear-text admin listener on all interfaces, and a stalled handshake
//! closed by the header-read timeout.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::daemon::{bootstrap_key, keys_dir, run, text, Daemon};
use crate::pki::{self, Leaf, Pki};

/// `kmsd serve` in `dir` with EdDSA keysets only (a quick first start), the
/// `listener`'s (`PUBLIC` or `ADMIN`) certificate and key from `leaf`, and `env`.
fn start(dir: &Path, listener: &str, leaf: &Leaf, env: &[(&str, &str)]) -> Daemon {
    let keys = keys_dir(dir, &[("edge", "EdDSA", None), ("refresh", "EdDSA", None)]);
    let (cert, key) = (format!("KMSD_LISTEN__{listener}_TLS_CERT"), format!("KMSD_LISTEN__{listener}_TLS_KEY"));
    let mut all = vec![
        ("KMSD_KEYS_DIR", keys.to_str().unwrap()),
        (cert.as_str(), leaf.cert.to_str().unwrap()),
        (key.as_str(), leaf.key.to_str().unwrap()),
    ];
    all.extend(env);
    Daemon::start(dir, &all)
}

fn https(url: &str) -> String {
    url.replacen("http://", "https://", 1)
}

/// `src` over `dst`, atomically (write beside, then rename), as a deploy tool would.
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

/// Copies `leaf` to `name.pem` / `name.key` in `dir`: the files the daemon reads.
fn live(dir: &Path, name: &str, leaf: &Leaf) -> Leaf {
    let live = Leaf { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
    install(&leaf.key, &live.key);
    install(&leaf.cert, &live.cert);
    live
}

/// Waits (at most `within`) until the listener at `addr` serves `cert`.
async fn wait_for_certificate(addr: &str, ca: &Path, cert: &Path, within: Duration) {
    let want = pki::der(cert);
    let deadline = Instant::now() + within;
    loop {
        let served = pki::served_certificate(addr, ca).await;
        if served.as_ref() == Ok(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "{} not served within {within:?}: {served:?}", cert.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const PYJWT_OVER_HTTPS: &str = r#"
import json, ssl, sys
import jwt
url, ca = sys.argv[1], sys.argv[2]
client = jwt.PyJWKClient(url, cache_keys=False, ssl_context=ssl.create_default_context(cafile=ca))
kids = sorted(k.key_id for k in client.get_signing_keys())
try:
    jwt.PyJWKClient(url, cache_keys=False).get_signing_keys()
    untrusted = "accepted"
except jwt.PyJWKClientConnectionError as e:
    untrusted = "refused" if "CERTIFICATE_VERIFY_FAILED" in str(e) else str(e)
print(json.dumps({"kids": kids, "withoutTheCa": untrusted}))
"#;

#[tokio::test]
async fn jwks_over_https_is_verified_against_the_test_ca_by_reqwest_and_pyjwt() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let ca = pki.ca("ca");
    let other_ca = pki.ca("other");
    let server = pki.server("ca", "public");
    let d = start(tmp.path(), "PUBLIC", &server, &[]);
    let url = format!("{}/.well-known/jwks.json", https(&d.public));
    let resp = pki::https(&ca, None).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let jwks: Value = resp.json().await.unwrap();
    let mut ours: Vec<String> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().into()).collect();
    ours.sort();
    assert_eq!(ours.len(), 2, "{jwks}");

    let err = pki::https(&other_ca, None).get(&url).send().await.unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "a client trusting another CA refuses: {err:?}");
    let plain = crate::daemon::client().get(format!("{}/health", d.public)).send().await;
    assert!(plain.is_err(), "no clear-text HTTP on a TLS listener: {plain:?}");

    let ca_path = ca.to_str().unwrap().to_owned();
    let out =
        tokio::task::spawn_blocking(move || crate::python::run(PYJWT_OVER_HTTPS, &[&url, &ca_path])).await.unwrap();
    let py: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(py["kids"], serde_json::json!(ours), "PyJWKClient over https loads every key");
    assert_eq!(py["withoutTheCa"], "refused", "PyJWKClient without the test CA refuses the certificate");
}

#[tokio::test]
async fn admin_mtls_serves_the_cli_with_a_client_certificate_from_its_ca_only() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let ca = pki.ca("ca");
    pki.ca("operators");
    pki.ca("rogue");
    let server = pki.server("ca", "admin");
    let operator = pki.client("operators", "operator");
    let intruder = pki.client("rogue", "intruder");
    let operators = pki.dir.join("operators.pem");
    let d = start(tmp.path(), "ADMIN", &server, &[("KMSD_LISTEN__ADMIN_CLIENT_CA", operators.to_str().unwrap())]);
    assert!(d.output().contains("admin_mtls=true"), "{}", d.output());
    let admin_key = bootstrap_key(&d.output());
    let admin_url = https(&d.admin);
    let env = [("KMSD_ADMIN_URL", admin_url.as_str()), ("KMSD_ADMIN_API_KEY", admin_key.as_str())];
    let ca_file = ca.to_str().unwrap();
    let cli = |extra: &[&str]| {
        let mut args = vec!["keys", "list", "--output", "json", "--ca-file", ca_file];
        args.extend(extra);
        run(tmp.path(), &args, &env)
    };

    let out = cli(&["--client-cert", operator.cert.to_str().unwrap(), "--client-key", operator.key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2, "{listed}");
    // The same through the environment.
    let mut tls_env = env.to_vec();
    tls_env.extend([
        ("KMSD_ADMIN_CA_FILE", ca_file),
        ("KMSD_ADMIN_CLIENT_CERT", operator.cert.to_str().unwrap()),
        ("KMSD_ADMIN_CLIENT_KEY", operator.key.to_str().unwrap()),
    ]);
    let out = run(tmp.path(), &["keys", "plan"], &tls_env);
    assert!(out.status.success(), "{}", text(&out));

    for (why, out) in [
        ("no client certificate", cli(&[])),
        (
            "a client certificate from another CA",
            cli(&["--client-cert", intruder.cert.to_str().unwrap(), "--client-key", intruder.key.to_str().unwrap()]),
        ),
    ] {
        assert_eq!(out.status.code(), Some(1), "{why}: {}", text(&out));
        assert!(text(&out).contains("cannot reach the admin listener"), "{why}: {}", text(&out));
        assert!(!text(&out).contains(&admin_key), "the API key is never printed");
    }
    let out = run(tmp.path(), &["keys", "list"], &env);
    assert_eq!(out.status.code(), Some(1), "the system roots do not know the test CA: {}", text(&out));
    assert!(text(&out).contains("UnknownIssuer"), "{}", text(&out));

    let refused = pki::https(&ca, None).get(format!("{admin_url}/v1/admin/keys")).send().await;
    assert!(refused.is_err(), "no client certificate, no request: {refused:?}");
    let rogue = pki::https(&ca, Some(&intruder)).get(format!("{admin_url}/v1/admin/keys")).send().await;
    assert!(rogue.is_err(), "a certificate from another CA, no request: {rogue:?}");
    assert_eq!(d.output().matches(&admin_key).count(), 1, "the API key is printed once, by init, and never logged");
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_without_restart_and_no_request_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let ca = pki.ca("ca");
    let (first, second) = (pki.server("ca", "first"), pki.server("ca", "second"));
    let served = live(tmp.path(), "live", &first);
    let d = start(tmp.path(), "PUBLIC", &served, &[("KMSD_LISTEN__TLS_RELOAD_INTERVAL", "1s")]);
    let addr = pki::host(&d.public).to_owned();
    wait_for_certificate(&addr, &ca, &first.cert, Duration::ZERO).await;

    // New connections, one request each, for the whole rotation (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (client, url, stop) = (pki::https(&ca, None), format!("{}/health", https(&d.public)), stop.clone());
        async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && ok + (failed.len() as u32) < 2000 {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The key first, then the certificate: between the two the files do not
    // match, and the previous pair goes on serving.
    install(&second.key, &served.key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.output().contains("TLS reload failed; the previous certificate is still served") {
        assert!(Instant::now() < deadline, "the poll saw the new key beside the old certificate: {}", d.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_certificate(&addr, &ca, &first.cert, Duration::ZERO).await;
    install(&second.cert, &served.cert);
    wait_for_certificate(&addr, &ca, &second.cert, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "{} of {} requests failed during the rotation: {failed:?}", failed.len(), ok);
    assert!(ok >= 20, "the load ran through the rotation: {ok} requests");
    assert!(d.output().contains("TLS certificate reloaded"), "{}", d.output());
}

#[tokio::test]
async fn sighup_reloads_the_admin_certificate_before_the_file_poll_would() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let ca = pki.ca("ca");
    let (first, second) = (pki.server("ca", "first"), pki.server("ca", "second"));
    let served = live(tmp.path(), "admin", &first);
    let d = start(tmp.path(), "ADMIN", &served, &[("KMSD_LISTEN__TLS_RELOAD_INTERVAL", "1h")]);
    let addr = pki::host(&d.admin).to_owned();
    wait_for_certificate(&addr, &ca, &first.cert, Duration::ZERO).await;
    live(tmp.path(), "admin", &second);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    wait_for_certificate(&addr, &ca, &first.cert, Duration::ZERO).await;
    let ok = Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap().success();
    assert!(ok);
    wait_for_certificate(&addr, &ca, &second.cert, Duration::from_secs(10)).await;
    // The log line is written as the new pair goes in, and read from the
    // daemon's pipe by another thread: on a loaded machine it can trail
    // the handshake that already shows the new certificate.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.output().contains("why=\"reload requested\"") {
        assert!(Instant::now() < deadline, "{}", d.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_admin_listener_on_all_interfaces_without_tls_is_refused_at_config_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["serve"], &[("KMSD_LISTEN__ADMIN", "0.0.0.0:0")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("listen.admin: 0.0.0.0:0 is not a loopback address and the admin listener has no TLS"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("listen.admin_insecure = true"), "the message names the way out: {}", text(&out));
    assert!(!tmp.path().join("kmsd-data").exists(), "a refused config creates nothing");
    let out = run(
        tmp.path(),
        &["check-config"],
        &[("KMSD_LISTEN__ADMIN", "0.0.0.0:0"), ("KMSD_LISTEN__ADMIN_INSECURE", "true")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let pki = Pki::new(tmp.path());
    pki.ca("ca");
    let server = pki.server("ca", "admin");
    let out = run(
        tmp.path(),
        &["check-config"],
        &[
            ("KMSD_LISTEN__ADMIN", "0.0.0.0:0"),
            ("KMSD_LISTEN__ADMIN_TLS_CERT", server.cert.to_str().unwrap()),
            ("KMSD_LISTEN__ADMIN_TLS_KEY", server.key.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_by_the_header_read_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let ca = pki.ca("ca");
    let server = pki.server("ca", "public");
    let d = start(tmp.path(), "PUBLIC", &server, &[("KMSD_HTTP__HEADER_READ_TIMEOUT", "1s")]);
    let addr = pki::host(&d.public).to_owned();
    let started = Instant::now();
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A handshake record header announcing 512 bytes, and only 8 of them.
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x00, 0x00]).await.unwrap();
    let health = pki::https(&ca, None).get(format!("{}/health", https(&d.public))).send().await.unwrap();
    assert_eq!(health.status(), 200, "others are served meanwhile");
    for (what, mut s) in [("a silent client", silent), ("a half-sent ClientHello", partial)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await;
        let elapsed = started.elapsed();
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{what}: closed, not answered: {read:?}");
        assert!(elapsed >= Duration::from_millis(900), "{what}: not before the timeout ({elapsed:?})");
        assert!(elapsed < Duration::from_secs(6), "{what}: closed soon after the header-read timeout ({elapsed:?})");
    }
}
