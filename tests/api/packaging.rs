//! The systemd unit in `deploy/`: hardened (`systemd-analyze security`
//! exposure at most 2.0) and still able to run kmsd. The start/stop test runs
//! a real systemd as PID 1 of private PID and mount namespaces
//! (`tests/packaging/systemd-sandbox.sh`), so the unit's whole sandbox applies
//! to the real binary: it starts, initializes its state directory, serves and
//! signs, restarts onto the same store, and stops cleanly on SIGTERM.
//!
//! Also the builds that ship and that profile: the release profile strips
//! the binary, the profiling one keeps what `perf report` needs, and
//! `scripts/bench` picks the profiling one for `--perf` (run with stand-ins
//! for `cargo` and `perf`: nothing is built). The container image and the
//! Kubernetes manifests are `container.rs`'s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::{bootstrap_key, client, BIN};
use crate::support::call;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit() -> PathBuf {
    root().join("deploy/kmsd.service")
}

/// `path` exists, or the test fails naming the Debian package to install.
fn require(path: &str, package: &str) {
    assert!(Path::new(path).exists(), "{path} not found: install the Debian package `{package}`");
}

#[test]
fn the_systemd_unit_scores_at_most_2_0_in_systemd_analyze_security() {
    require("/usr/bin/systemd-analyze", "systemd");
    let out =
        Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(unit()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
    let score: f64 = line.split(':').nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

/// systemd (PID 1 of its own namespaces) running the unit; killed, with
/// everything it started, on drop.
struct Systemd {
    child: Child,
    pid: u32,
    dir: PathBuf,
}

impl Systemd {
    fn start(dir: &Path) -> Systemd {
        require("/lib/systemd/systemd", "systemd");
        require("/usr/bin/unshare", "util-linux");
        require("/usr/bin/nsenter", "util-linux");
        std::fs::write(dir.join("kmsd.toml"), "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n").unwrap();
        let script = root().join("tests/packaging/systemd-sandbox.sh");
        let child = Command::new("unshare")
            .args(["--fork", "--pid", "--mount", "--mount-proc"])
            .arg(script)
            .arg(dir)
            .arg(unit())
            .arg(BIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("systemd.log")).unwrap())
            .spawn()
            .expect("unshare (run as root: CI does)");
        // unshare forks once: its only child is the namespace's PID 1.
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap_or_default();
            if let Some(pid) = kids.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "systemd did not start: {}", Self::read(dir, "systemd.log"));
            std::thread::sleep(Duration::from_millis(20));
        };
        Systemd { child, pid, dir: dir.to_owned() }
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    fn log(&self) -> String {
        Self::read(&self.dir, "kmsd.log")
    }

    fn systemctl(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "systemctl", "--no-pager"])
            .args(args)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// The public address of the `nth` start (0-based) from kmsd's log.
    fn public(&self, nth: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().filter(|l| l.contains("kmsd listening")).nth(nth) {
                let addr = line.split("public=").nth(1).unwrap().split_whitespace().next().unwrap();
                return format!("http://{addr}");
            }
            assert!(
                Instant::now() < deadline,
                "kmsd did not start under systemd:\n{log}\n{}\n{}",
                self.systemctl(&["status", "kmsd"]),
                Self::read(&self.dir, "systemd.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn show(&self, props: &str) -> String {
        self.systemctl(&["show", "kmsd", "-p", props])
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // PID 1 of the namespace: its death kills everything inside.
        let _ = Command::new("kill").args(["-9", &self.pid.to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_hardened_unit_starts_serves_restarts_and_stops_kmsd_under_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = Systemd::start(tmp.path());
    let public = sd.public(0);
    assert!(sd.show("ActiveState").contains("ActiveState=active"), "{}", sd.systemctl(&["status", "kmsd"]));
    let resp = client().get(format!("{public}/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Under the seccomp filter, private users and a read-only system: the
    // store is written (an identity, a token) and RSA and EdDSA sign.
    let admin = bootstrap_key(&sd.log());
    let body = json!({ "name": "sandboxed", "sponsorId": "user_sponsor", "scopes": ["relayfile:fs:read:*"] });
    let (status, identity) = call(&public, &admin, "POST", "/v1/identities", Some(body)).await;
    assert_eq!(status, 201, "{identity}");
    for alg in ["RS256", "EdDSA"] {
        let req = json!({ "identityId": identity["id"], "algorithm": alg });
        let (status, pair) = call(&public, &admin, "POST", "/v1/tokens", Some(req)).await;
        assert_eq!(status, 201, "{alg}: {pair}");
    }

    // A restart reopens the same store: the identity is still there.
    sd.systemctl(&["restart", "kmsd"]);
    let public = sd.public(1);
    let path = format!("/v1/identities/{}", identity["id"].as_str().unwrap());
    let (status, again) = call(&public, &admin, "GET", &path, None).await;
    assert_eq!(status, 200, "{again}");

    let started = Instant::now();
    sd.systemctl(&["stop", "kmsd"]);
    let state = sd.show("ActiveState,Result,ExecMainStatus");
    assert!(started.elapsed() < Duration::from_secs(30), "stop took {:?}", started.elapsed());
    for want in ["ActiveState=inactive", "Result=success", "ExecMainStatus=0"] {
        assert!(state.contains(want), "{want} not in {state}\n{}", sd.log());
    }
    assert!(sd.log().contains("kmsd stopped"), "{}", sd.log());
}

// ---- the release and profiling builds ----

fn profile(name: &str) -> toml::Table {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    manifest["profile"][name].as_table().unwrap_or_else(|| panic!("no [profile.{name}]")).clone()
}

#[test]
fn the_release_binary_is_stripped_and_the_profiling_build_keeps_symbols_and_line_tables() {
    let release = profile("release");
    assert_eq!(release["strip"].as_bool(), Some(true), "{release:?}");
    assert_eq!(release["debug"].as_bool(), Some(false), "{release:?}");
    let profiling = profile("profiling");
    assert_eq!(profiling["inherits"].as_str(), Some("release"), "{profiling:?}");
    assert_eq!(profiling["debug"].as_str(), Some("line-tables-only"), "{profiling:?}");
    assert_eq!(profiling["strip"].as_str(), Some("none"), "{profiling:?}");
}

/// `scripts/bench ARGS` from a copy of the script in `dir`, with a `PATH` of
/// `tools` only (each a stand-in that logs its arguments to `calls`): what it
/// would build and run, and its exit code.
fn bench_script(dir: &Path, args: &[&str], tools: &[&str]) -> (Option<i32>, String, String) {
    let (scripts, bin) = (dir.join("scripts"), dir.join("bin"));
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(root().join("scripts/bench"), scripts.join("bench")).unwrap();
    // What the script itself needs from PATH.
    std::os::unix::fs::symlink("/usr/bin/dirname", bin.join("dirname")).unwrap();
    for tool in tools {
        let log = dir.join("calls");
        std::fs::write(bin.join(tool), format!("#!/bin/sh\necho \"{tool} $*\" >> {}\n", log.display())).unwrap();
        std::fs::set_permissions(bin.join(tool), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let out = Command::new("/bin/bash").arg(scripts.join("bench")).args(args).env("PATH", &bin).output().unwrap();
    let calls = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
    (out.status.code(), calls, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn scripts_bench_builds_the_release_profile_and_with_perf_the_profiling_one() {
    let build = "cargo build --profile {} --locked --features bench --bin kmsd --bin kmsd-bench\n";
    for (args, profile) in
        [(&["--smoke"][..], "release"), (&["--only", "rs3072", "--perf", "/tmp/prof"][..], "profiling")]
    {
        let tmp = tempfile::tempdir().unwrap();
        let (code, calls, stderr) = bench_script(tmp.path(), args, &["cargo", "perf"]);
        assert_eq!(calls, build.replace("{}", profile), "{args:?}: {stderr}");
        // Then it runs that build's harness (absent in the copy: exec fails).
        assert_eq!(code, Some(127), "{stderr}");
        assert!(stderr.contains(&format!("target/{profile}/kmsd-bench")), "{stderr}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (code, calls, stderr) = bench_script(tmp.path(), &["--perf=/tmp/prof"], &["cargo"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("install the Debian package linux-perf"), "{stderr}");
    assert_eq!(calls, "", "nothing is built without perf");
}
