//! The node `jose` verifier harness in `tests/interop`, installed on first use
//! with `npm ci` from its lockfile.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

static READY: OnceLock<PathBuf> = OnceLock::new();

pub fn dir() -> PathBuf {
    READY
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("interop");
            let lock = std::fs::read(dir.join("package-lock.json")).unwrap();
            let stamp = dir.join("node_modules").join(".kmsd-lock");
            if std::fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
                let ok = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "npm ci in tests/interop failed");
                std::fs::write(&stamp, lock).unwrap();
            }
            dir
        })
        .clone()
}

/// Verifies each token with jose against the live JWKS; one result per token.
pub fn verify(jwks_url: &str, issuer: &str, audience: &str, extra: &[&str], tokens: &[&str]) -> Vec<Value> {
    let out = Command::new("node")
        .arg(dir().join("verify.mjs"))
        .args([jwks_url, issuer, audience])
        .args(extra)
        .args(tokens)
        .output()
        .unwrap();
    assert!(out.status.success(), "verify.mjs failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
