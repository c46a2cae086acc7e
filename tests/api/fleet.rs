//! Long-running independent verifiers (PyJWT gateway-style cache, PyJWKClient,
//! node jose with a refetch cooldown), driven one token per line.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

pub struct LineVerifier {
    pub name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl LineVerifier {
    fn spawn(name: &'static str, mut cmd: Command) -> Self {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { name, child, stdin, stdout }
    }

    /// Verifies one token (blocking) and returns the verifier's result line.
    pub fn check(&mut self, token: &str) -> Value {
        writeln!(self.stdin, "{token}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{}: bad line {line:?}", self.name))
    }
}

impl Drop for LineVerifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// `mode`: `gateway` (caches for the max-age kmsd sends, no early refetch),
/// `pyjwk` (PyJWKClient, refetch on unknown kid at most once per `seconds`),
/// or `fixed` (caches for `seconds` whatever max-age says).
pub fn pyjwt(mode: &'static str, seconds: u32, jwks_url: &str, issuer: &str, audience: &str) -> LineVerifier {
    let mut cmd = Command::new(crate::python::python());
    cmd.arg(root().join("python").join("gateway.py")).args([mode, jwks_url, issuer, audience, &seconds.to_string()]);
    let name = match mode {
        "gateway" => "pyjwt-gateway",
        "fixed" => "pyjwt-fixed-cache",
        _ => "pyjwt-pyjwkclient",
    };
    LineVerifier::spawn(name, cmd)
}

pub fn jose(jwks_url: &str, issuer: &str, audience: &str) -> LineVerifier {
    let mut cmd = Command::new("node");
    cmd.arg(crate::node::dir().join("fleet.mjs")).args([jwks_url, issuer, audience]);
    LineVerifier::spawn("jose-cooldown", cmd)
}
