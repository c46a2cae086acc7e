//! The moto-based KMS emulator (`tests/kms/emulator.py`) as a child process:
//! its venv is created once per test binary in `target/kms-venv` (or set
//! `KMSD_TEST_KMS_PYTHON` to an interpreter that has `tests/kms/requirements.txt`),
//! each test starts its own emulator on 127.0.0.1, and dropping it kills it.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};
use kmsd::kms::{AwsKmsBackend, AwsKmsConfig};

static PYTHON: OnceLock<PathBuf> = OnceLock::new();

fn python() -> PathBuf {
    PYTHON.get_or_init(|| crate::python::venv("KMSD_TEST_KMS_PYTHON", "kms-venv", "tests/kms/requirements.txt")).clone()
}

pub struct Emulator {
    child: Child,
    pub port: u16,
}

impl Emulator {
    /// The corrected emulator on a free port.
    pub fn start() -> Emulator {
        Self::spawn(0, false)
    }

    /// Stock moto, without the five corrections.
    pub fn stock() -> Emulator {
        Self::spawn(0, true)
    }

    /// The corrected emulator on `port` (a restart after an outage).
    pub fn on_port(port: u16) -> Emulator {
        Self::spawn(port, false)
    }

    fn spawn(port: u16, stock: bool) -> Emulator {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kms/emulator.py");
        let mut cmd = Command::new(python());
        cmd.arg(script).args(["--port", &port.to_string()]);
        if stock {
            cmd.arg("--stock");
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), stderr.clone());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            lines.for_each(drop);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).ok().flatten().unwrap_or_default();
        let Some(port) = line.strip_prefix("KMS_EMULATOR_READY port=").and_then(|p| p.trim().parse().ok()) else {
            let _ = child.kill();
            panic!("KMS emulator did not start: {line:?}\n{}", stderr.lock().unwrap());
        };
        Emulator { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An outage: SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(stream: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

/// Static test credentials and a region, set explicitly so nothing consults
/// the credential chain (or instance metadata). moto routes by the SigV4
/// scope, so requests must be signed.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "kmsd-tests",
        )))
        .load()
        .await
}

/// Backend settings for `url`: one attempt per call, as the env of the
/// daemon tests says with `AWS_MAX_ATTEMPTS=1`.
pub fn settings(url: &str) -> AwsKmsConfig {
    AwsKmsConfig {
        endpoint_url: Some(url.to_owned()),
        max_attempts: Some(1),
        timeout: Duration::from_secs(2),
        ..AwsKmsConfig::default()
    }
}

pub fn backend(sdk: &SdkConfig, url: &str) -> AwsKmsBackend {
    AwsKmsBackend::from_sdk_config(sdk, settings(url))
}

/// A plain SDK client on the emulator, to look at KMS from outside kmsd.
pub fn client(sdk: &SdkConfig, url: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::from_conf(aws_sdk_kms::config::Builder::from(sdk).endpoint_url(url).build())
}

/// The environment that points a `kmsd` process at the emulator.
pub fn daemon_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_KMS", url.to_owned()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_MAX_ATTEMPTS", "1".into()),
    ]
}
