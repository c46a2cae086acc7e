//! The daemon under test: `kmsd serve` from the release (or, for `--perf`,
//! profiling) build on a fresh data dir, with a bootstrap admin key the
//! harness generated, and the setup each workload needs (an identity, a token
//! to introspect).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::http::{HeaderName, HeaderValue, Method, StatusCode};
use kmsd::api_keys::ApiKeySecret;
use serde_json::{json, Value};

use crate::load::{self, Target};
use crate::process::{field, Server};

/// One keyset declaration for a keys dir: name, algorithm, RSA bits, backend.
pub type KeysetDecl = (&'static str, &'static str, Option<u32>, &'static str);

/// How to start one daemon instance.
pub struct DaemonSpec {
    pub name: &'static str,
    /// `None`: the embedded default keysets (`access` RS256-3072, `edge`, `refresh`).
    pub keysets: Option<Vec<KeysetDecl>>,
    pub env: Vec<(String, String)>,
}

pub struct Daemon {
    pub server: Server,
    pub key: String,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(bin: &Path, work: &Path, spec: &DaemonSpec) -> anyhow::Result<Daemon> {
        let dir = work.join(format!("{}-{}", spec.name, std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = ApiKeySecret::generate().context("generating the bootstrap key")?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").current_dir(&dir);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KMSD_")) {
            cmd.env_remove(k);
        }
        cmd.env("KMSD_DATA_DIR", dir.join("data"))
            .env("KMSD_LISTEN__PUBLIC", "127.0.0.1:0")
            .env("KMSD_LISTEN__ADMIN", "127.0.0.1:0")
            .env("KMSD_BOOTSTRAP_API_KEY", key.expose())
            .env("KMSD_LOG", "info");
        if let Some(sets) = &spec.keysets {
            let keys = dir.join("keys");
            std::fs::create_dir_all(&keys)?;
            for (name, alg, bits, backend) in sets {
                let bits = bits.map(|b| format!("rsa_bits = {b}\n")).unwrap_or_default();
                let text = format!("name = \"{name}\"\nalgorithm = \"{alg}\"\n{bits}backend = \"{backend}\"\n");
                std::fs::write(keys.join(format!("{name}.toml")), text)?;
            }
            cmd.env("KMSD_KEYS_DIR", &keys);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let server = Server::start(cmd, &dir.join("kmsd.log"), "kmsd listening", |line| {
            Some((field(line, "public")?, Some(field(line, "admin")?)))
        })?;
        Ok(Daemon { server, key: key.expose().to_owned(), dir })
    }

    fn target(&self, method: Method, path: String, body: Option<Value>, expect: StatusCode) -> Target {
        let mut headers = vec![(HeaderName::from_static("x-api-key"), header(&self.key))];
        if body.is_some() {
            headers.push((hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
        }
        Target {
            headers,
            body: body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            ..Target::new(self.server.public, method, path, expect)
        }
    }

    /// Creates the identity tokens are issued to; returns its id.
    pub async fn create_identity(&self) -> anyhow::Result<String> {
        let body = json!({
            "name": "bench-agent",
            "sponsorId": "user_bench",
            "scopes": ["relayfile:fs:read:/docs/*", "relaycast:channel:write:*"],
        });
        let reply =
            self.call(self.target(Method::POST, "/v1/identities".into(), Some(body), StatusCode::CREATED)).await?;
        reply["id"].as_str().map(str::to_owned).context("identity reply without id")
    }

    /// `POST /v1/tokens` for `identity`, optionally with `algorithm`.
    pub fn issue(&self, identity: &str, algorithm: Option<&str>) -> Target {
        let mut body = json!({ "identityId": identity });
        if let (Some(alg), Some(o)) = (algorithm, body.as_object_mut()) {
            o.insert("algorithm".into(), alg.into());
        }
        Target {
            body_contains: "\"accessToken\"",
            ..self.target(Method::POST, "/v1/tokens".into(), Some(body), StatusCode::CREATED)
        }
    }

    /// `GET /.well-known/jwks.json` (no credentials: it is public).
    pub fn jwks(&self) -> Target {
        Target {
            headers: Vec::new(),
            body_contains: "\"keys\"",
            ..self.target(Method::GET, "/.well-known/jwks.json".into(), None, StatusCode::OK)
        }
    }

    /// `GET /v1/tokens/introspect?token=` of a freshly issued access token;
    /// a `null` reply (token not trusted) is an error.
    pub async fn introspect(&self, identity: &str) -> anyhow::Result<Target> {
        let pair = self.call(self.issue(identity, None)).await?;
        let token = pair["accessToken"].as_str().context("token reply without accessToken")?;
        Ok(Target {
            body_contains: "\"sub\"",
            ..self.target(Method::GET, format!("/v1/tokens/introspect?token={token}"), None, StatusCode::OK)
        })
    }

    /// Introspection of `count` distinct access tokens, taken in turn: with
    /// more of them than kmsd remembers as checked, every request pays the
    /// signature verification.
    pub async fn introspect_distinct(&self, identity: &str, count: usize) -> anyhow::Result<Target> {
        const TASKS: usize = 32;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let per_task = count / TASKS + usize::from(task < count % TASKS);
            let issue = self.issue(identity, None);
            tasks.push(tokio::spawn(async move {
                let mut tokens = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let (status, body) = load::once(&issue).await?;
                    anyhow::ensure!(status == issue.expect, "issuing: {status}");
                    let pair: Value = serde_json::from_slice(&body)?;
                    let token = pair["accessToken"].as_str().context("token reply without accessToken")?;
                    tokens.push(format!("/v1/tokens/introspect?token={token}"));
                }
                Ok::<_, anyhow::Error>(tokens)
            }));
        }
        let mut paths = Vec::with_capacity(count);
        for t in tasks {
            paths.extend(t.await??);
        }
        let first = paths.pop().context("no tokens issued")?;
        Ok(Target {
            body_contains: "\"sub\"",
            more_paths: paths,
            ..self.target(Method::GET, first, None, StatusCode::OK)
        })
    }

    async fn call(&self, target: Target) -> anyhow::Result<Value> {
        let (status, body) = load::once(&target).await?;
        if status != target.expect {
            bail!("{} {}: {status}: {}", target.method, target.path, String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// A counter from the admin listener's `/metrics`; an error if it is not
    /// there (a renamed counter must not read as a believable 0).
    pub async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let admin = self.server.admin.context("daemon without an admin listener")?;
        let target = Target::new(admin, Method::GET, "/metrics".into(), StatusCode::OK);
        let (status, body) = load::once(&target).await?;
        anyhow::ensure!(status == StatusCode::OK, "GET /metrics: {status}");
        let text = String::from_utf8_lossy(&body);
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("/metrics has no counter {name}"))
    }

    /// SIGTERM; the daemon must drain and exit 0. The data dir is removed.
    pub fn stop(self) -> anyhow::Result<()> {
        let log = self.server.log.clone();
        let status = self.server.stop()?;
        if !status.success() {
            bail!("kmsd exited with {status}; log: {}", log.display());
        }
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))?;
        Ok(())
    }
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("invalid"))
}

/// The echo reference's request.
pub fn echo_target(addr: SocketAddr, body: String) -> Target {
    Target {
        headers: vec![(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body: Bytes::from(body),
        body_contains: "\"accessToken\"",
        ..Target::new(addr, Method::POST, "/echo".into(), StatusCode::OK)
    }
}
