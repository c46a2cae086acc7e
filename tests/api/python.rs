//! A Python virtualenv with the independent verifiers, created on first use in
//! `target/test-venv` from `tests/python/requirements.txt`. Set
//! `KMSD_TEST_PYTHON` to use an existing interpreter instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static PYTHON: OnceLock<PathBuf> = OnceLock::new();

pub fn python() -> PathBuf {
    PYTHON.get_or_init(setup).clone()
}

fn setup() -> PathBuf {
    if let Ok(p) = std::env::var("KMSD_TEST_PYTHON") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("test-venv");
    let py = venv.join("bin").join("python");
    let reqs = root.join("tests").join("python").join("requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&reqs).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return py;
    }
    if !py.exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success();
        assert!(ok, "python3 -m venv failed");
    }
    let ok = Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&reqs)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install -r {} failed", reqs.display());
    std::fs::write(&stamp, wanted).unwrap();
    py
}

/// Runs `script` with the venv's Python and `args`; returns stdout, panicking
/// with stderr if it fails.
pub fn run(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
