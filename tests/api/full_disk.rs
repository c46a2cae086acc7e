//! A full disk under the data dir and the daemon's own log (stderr to a file
//! on the same size-limited tmpfs): issuance answers clean 503s and health
//! says storage `failing` (HTTP 503) while the disk is full; once space is
//! freed the store recovers without a restart (issuance, revoke and API-key
//! create work, health is 200 again), every token whose 201 was received
//! still introspects, and no request went unanswered.
//!
//! Needs root for `mount -t tmpfs` (CI runs as root); without it the test
//! fails saying so, it never skips.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::api_keys::create_key;
use crate::daemon::{bootstrap_key, client, command, run, text};
use crate::support::{call, introspect};

/// A size-limited tmpfs on a fresh directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let path = tempfile::tempdir().unwrap().keep();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { path },
            Ok(o) => panic!(
                "this test needs a size-limited tmpfs and `mount -t tmpfs` failed (run the tests as root, as CI \
                 does): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs `mount` (util-linux) to make a size-limited tmpfs: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `kmsd serve` with its stderr appended to `log`; killed on drop.
struct Served {
    child: Child,
    public: String,
}

impl Served {
    fn start(dir: &Path, log: &Path) -> Served {
        let file = File::options().create(true).append(true).open(log).unwrap();
        let mut child =
            command(dir, &[]).arg("serve").stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = out.lines().find(|l| l.contains("kmsd listening")) {
                let start = line.find("public=").unwrap() + "public=".len();
                let public = format!("http://{}", line[start..].split_whitespace().next().unwrap());
                return Served { child, public };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("kmsd exited ({status}):\n{out}");
            }
            assert!(std::time::Instant::now() < deadline, "kmsd did not start within 60 s:\n{out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills the filesystem of `dir` with a file, in 64 KiB writes, until the
/// filesystem is full (bounded: at most `cap` bytes).
fn fill(path: &Path, cap: u64) -> u64 {
    let mut f = File::create(path).unwrap();
    let chunk = vec![0x5a; 64 << 10];
    let mut written = 0;
    while written < cap {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    written
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// What one request got: a status and body, or no answer at all.
#[derive(Debug)]
enum Outcome {
    Answer { status: u16, retry_after: Option<String>, body: Value },
    NoAnswer(String),
}

async fn issue(base: &str, key: &str, identity: &str) -> Outcome {
    let resp = client()
        .post(format!("{base}/v1/tokens"))
        .header("x-api-key", key)
        .json(&json!({ "identityId": identity, "algorithm": "EdDSA" }))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    match resp {
        Err(e) => Outcome::NoAnswer(e.to_string()),
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_owned());
            match r.json::<Value>().await {
                Ok(body) => Outcome::Answer { status, retry_after, body },
                Err(e) => Outcome::NoAnswer(format!("{status} without a JSON body: {e}")),
            }
        }
    }
}

async fn health(base: &str) -> (u16, Value) {
    let r = client().get(format!("{base}/v1/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `GET /readyz`: the status and `checks.storage`.
async fn readyz(base: &str) -> (u16, Value) {
    let r = client().get(format!("{base}/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["checks"]["storage"].clone())
}

/// Checks an answer of the fill: a 201 token pair (whose access token is
/// returned) or a clean 503 with `Retry-After`.
fn check(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Answer { status: 201, body, .. } => Some(body["accessToken"].as_str().unwrap().to_owned()),
        Outcome::Answer { status: 503, retry_after, body } => {
            assert_eq!(body["code"], "service_unavailable", "{body}");
            assert!(retry_after.is_some(), "a 503 says when to retry: {body}");
            None
        }
        Outcome::NoAnswer(e) => panic!("every issuance is answered, this one was not: {e}"),
        other => panic!("every issuance is answered 201 or a clean 503: {other:?}"),
    }
}

#[tokio::test]
async fn a_full_disk_fails_requests_cleanly_and_the_store_recovers_without_a_restart() {
    let fs = Tmpfs::mount("24m");
    let dir = fs.path.clone();
    let out = run(&dir, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let admin = bootstrap_key(&text(&out));
    let log = dir.join("kmsd.log");
    let mut d = Served::start(&dir, &log);
    let body = json!({ "name": "filler", "sponsorId": "u", "scopes": ["relayfile:fs:read:/a/*"] });
    let (status, v) = call(&d.public, &admin, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    let identity = v["id"].as_str().unwrap().to_owned();
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    for _ in 0..20 {
        let t = check(&issue(&d.public, &admin, &identity).await).expect("issuance works before the disk fills");
        tokens.lock().unwrap().push(t);
    }

    // Fill the disk, leaving the store a little room to run out of.
    let filler = dir.join("filler");
    fill(&filler, 64 << 20);
    let f = File::options().write(true).open(&filler).unwrap();
    f.set_len(f.metadata().unwrap().len().saturating_sub(256 << 10)).unwrap();
    drop(f); // an open file keeps its space after it is deleted

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    let mut sent = 0;
    while refused < 40 && sent < 20_000 && Instant::now() < deadline {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                let (base, key, id) = (d.public.clone(), admin.clone(), identity.clone());
                tokio::spawn(async move { issue(&base, &key, &id).await })
            })
            .collect();
        for b in batch {
            sent += 1;
            match check(&b.await.unwrap()) {
                Some(t) => tokens.lock().unwrap().push(t),
                None => refused += 1,
            }
        }
    }
    assert!(refused >= 40, "the disk filled up within {sent} issuances (60 s): {refused} refused");
    let (code, h) = health(&d.public).await;
    assert_eq!((code, h["status"].as_str()), (503, Some("unhealthy")), "{h}");
    assert_eq!(h["services"]["storage"]["status"], "failing", "{h}");
    assert_eq!(h["services"]["storage"]["error"], "disk_full", "{h}");
    assert!(h["services"]["storage"]["since"].is_string(), "{h}");
    assert_eq!(readyz(&d.public).await, (503, json!("failing")), "the readiness probe takes kmsd out of rotation");

    // Free the space; the same process must recover.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recovered = loop {
        if let Some(t) = check(&issue(&d.public, &admin, &identity).await) {
            break t;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("issuance did not recover within 30 s of freeing space; kmsd's log ends:\n{}", tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let jti = crate::tokens::part(&recovered, 1)["jti"].as_str().unwrap().to_owned();
    let (status, v) = call(&d.public, &admin, "POST", "/v1/tokens/revoke", Some(json!({ "tokenId": jti }))).await;
    assert_eq!(status, 204, "revoke works again: {v}");
    assert_eq!(introspect(&d.public, &admin, &recovered).await, Value::Null, "the revoked token is refused");
    let (status, v) = create_key(&d.public, &admin, &["relayauth:token:read:*"]).await;
    assert_eq!(status, 201, "API-key create works again: {v}");
    let (code, h) = health(&d.public).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("healthy")), "{h}");
    assert_eq!(h["services"]["storage"]["status"], "ok", "{h}");
    assert_eq!(h["services"]["storage"]["engine"], "redb", "{h}");
    assert_eq!(readyz(&d.public).await, (200, json!("ok")), "and back in once the store works");

    let tokens = tokens.lock().unwrap().clone();
    assert!(!tokens.is_empty(), "some issuance succeeded before the disk filled");
    for t in &tokens {
        assert_ne!(introspect(&d.public, &admin, t).await, Value::Null, "a token whose 201 was received verifies");
    }
    assert!(d.child.try_wait().unwrap().is_none(), "kmsd is still running");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log_text.contains("panicked"), "no panic: {log_text}");
    drop(d);
}
