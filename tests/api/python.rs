//! Python virtualenvs, created on first use under `target/`: the independent
//! verifiers in `target/test-venv` from `tests/python/requirements.txt` (set
//! `KMSD_TEST_PYTHON` to use an existing interpreter instead), the fuzzer's
//! in `target/fuzz-venv` (schemathesis; its PyYAML also reads the Kubernetes
//! manifests, see `container.rs`), and the KMS emulator's (see `kms.rs`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static PYTHON: OnceLock<PathBuf> = OnceLock::new();
static FUZZ_PYTHON: OnceLock<PathBuf> = OnceLock::new();

pub fn python() -> PathBuf {
    PYTHON.get_or_init(|| venv("KMSD_TEST_PYTHON", "test-venv", "tests/python/requirements.txt")).clone()
}

/// The interpreter of `target/fuzz-venv` (schemathesis, PyYAML), or
/// `KMSD_FUZZ_PYTHON`; made once for every test that needs it.
pub fn fuzz_python() -> PathBuf {
    FUZZ_PYTHON.get_or_init(|| venv("KMSD_FUZZ_PYTHON", "fuzz-venv", "tests/python/requirements-fuzz.txt")).clone()
}

/// The interpreter named by `override_var`, or one of a venv `target/<dir>`
/// holding `requirements` (a path from the crate root), created or brought up
/// to date first. Callers keep the result in a `OnceLock`.
pub fn venv(override_var: &str, dir: &str, requirements: &str) -> PathBuf {
    if let Ok(p) = std::env::var(override_var) {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join(dir);
    let py = venv.join("bin").join("python");
    let reqs = root.join(requirements);
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
