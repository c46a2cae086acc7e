//! The CLI's client for the admin API: reqwest over HTTP/1.1, plain or TLS
//! (rustls with the aws-lc-rs provider), authenticated with an API key sent
//! in `x-api-key` (a sensitive header, never logged or printed). One typed
//! method per admin operation; path segments are percent-encoded, so an id
//! cannot change the route.
//!
//! TLS: the server certificate is checked against `--ca-file` when given,
//! otherwise against the system's roots; a client certificate and key are
//! presented when the admin listener requires them (mTLS).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use rustls::pki_types::pem::PemObject;

use crate::listener::tls::{certificates, provider};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("admin URL {0:?} is not http(s)://host:port")]
    Url(String),
    #[error("admin client TLS: {0}")]
    Tls(String),
    #[error("the admin API key is not a valid header value")]
    ApiKey,
    #[error("cannot reach the admin listener at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("admin API answered {status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The stable error code of an API answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How the client checks the server and proves itself.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA certificate(s) to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and its private key (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What `POST /v1/admin/migration` does.
#[derive(Clone, Copy, Debug)]
pub enum MigrationAction {
    Advance,
    Rollback,
    Sunset,
}

/// The daemon's verdict on the audit chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditVerdict {
    Intact { entries: u64 },
    Broken { seq: Option<u64>, reason: String },
}

pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    api_key: Zeroizing<String>,
}

impl AdminClient {
    pub fn new(url: &str, api_key: Zeroizing<String>, tls: &ClientTls) -> Result<Self, ClientError> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/")
            .filter(|u| u.query().is_none() && u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| ClientError::Url(url.to_owned()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(tls)?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Tls(chain(&e)))?;
        Ok(Self { http, base, api_key })
    }

    pub async fn keys(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, &["v1", "admin", "keys"], &[], None).await
    }

    pub async fn rotate(&self, keyset: &str, immediate: bool) -> Result<Value, ClientError> {
        let body = json!({ "keyset": keyset, "immediate": immediate });
        self.call(Method::POST, &["v1", "admin", "keys", "rotate"], &[], Some(body)).await
    }

    /// Emergency revoke; `Ok(None)` if the key was already revoked (a no-op).
    pub async fn revoke_key(&self, kid: &str) -> Result<Option<Value>, ClientError> {
        match self.call(Method::POST, &["v1", "admin", "keys", kid, "revoke"], &[], None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some("key_already_revoked") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn rollback(&self, keyset: &str) -> Result<Value, ClientError> {
        self.call(Method::POST, &["v1", "admin", "keys", "rollback"], &[], Some(json!({ "keyset": keyset }))).await
    }

    /// Pauses (`true`) or resumes scheduled rotation.
    pub async fn pause_rotation(&self, pause: bool) -> Result<Value, ClientError> {
        let action = if pause { "pause" } else { "resume" };
        self.call(Method::POST, &["v1", "admin", "rotation", action], &[], None).await
    }

    pub async fn rotation_plan(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, &["v1", "admin", "rotation", "plan"], &[], None).await
    }

    pub async fn migration(&self, action: Option<MigrationAction>) -> Result<Value, ClientError> {
        let path = ["v1", "admin", "migration"];
        let action = match action {
            None => return self.call(Method::GET, &path, &[], None).await,
            Some(MigrationAction::Advance) => "advance",
            Some(MigrationAction::Rollback) => "rollback",
            Some(MigrationAction::Sunset) => "sunset",
        };
        self.call(Method::POST, &path, &[], Some(json!({ "action": action }))).await
    }

    pub async fn audit_verify(&self) -> Result<AuditVerdict, ClientError> {
        let reply = self.call(Method::GET, &["v1", "admin", "audit", "verify"], &[], None).await?;
        Ok(match (reply["intact"].as_bool(), reply["entries"].as_u64()) {
            (Some(true), Some(entries)) => AuditVerdict::Intact { entries },
            _ => AuditVerdict::Broken {
                seq: reply["brokenAt"].as_u64(),
                reason: reply["reason"].as_str().unwrap_or("the daemon gave no reason").to_owned(),
            },
        })
    }

    pub async fn create_api_key(
        &self,
        name: &str,
        scopes: &[String],
        expires_at: Option<&str>,
    ) -> Result<Value, ClientError> {
        let body = json!({ "name": name, "scopes": scopes, "expiresAt": expires_at });
        self.call(Method::POST, &["v1", "api-keys"], &[], Some(body)).await
    }

    pub async fn api_keys(&self, limit: usize, cursor: Option<&str>) -> Result<Value, ClientError> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        query.extend(cursor.map(|c| ("cursor", c)));
        self.call(Method::GET, &["v1", "api-keys"], &query, None).await
    }

    /// Idempotent: revoking a revoked key answers it again.
    pub async fn revoke_api_key(&self, id: &str) -> Result<Value, ClientError> {
        self.call(Method::POST, &["v1", "api-keys", id, "revoke"], &[], None).await
    }

    /// A consistent copy of the store (`GET /v1/admin/backup`), streamed
    /// into `to` (created 0600; it must not exist) and synced. Returns the
    /// bytes written and the row count the daemon reported. On any failure
    /// `to` is removed.
    pub async fn backup(&self, to: &std::path::Path) -> Result<(u64, Option<String>), ClientError> {
        let resp = self.send(Method::GET, &["v1", "admin", "backup"], &[], None).await?;
        let rows =
            resp.headers().get(crate::http::backup::ROWS_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let written = save(resp, to).await;
        if written.is_err() {
            let _ = std::fs::remove_file(to);
        }
        Ok((written?, rows))
    }

    /// Sends one request; a non-2xx answer becomes [`ClientError::Api`] with
    /// the server's error code.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, segments, query, body).await?;
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(&e))?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// One request whose answer is 2xx; any other answer is [`ClientError::Api`].
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut().map_err(|()| ClientError::Url(self.base.to_string()))?.clear().extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut key = HeaderValue::from_str(&self.api_key).map_err(|_| ClientError::ApiKey)?;
        key.set_sensitive(true);
        let mut request = self.http.request(method, url.clone()).header("x-api-key", key);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let resp = request.send().await.map_err(|e| self.connect_error(&e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(&e))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let field = |k: &str| value[k].as_str().unwrap_or("").to_owned();
        Err(ClientError::Api { status, code: field("code"), message: field("message") })
    }

    fn connect_error(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Connect { url: self.base.to_string(), reason: chain(e) }
    }
}

async fn save(mut resp: reqwest::Response, to: &std::path::Path) -> Result<u64, ClientError> {
    use tokio::io::AsyncWriteExt as _;
    let io = |e: std::io::Error| ClientError::Io(format!("{}: {e}", to.display()));
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).await.map_err(io)?;
    let mut written = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Io(format!("backup stream: {}", chain(&e))))? {
        file.write_all(&chunk).await.map_err(io)?;
        written += chunk.len() as u64;
    }
    file.sync_all().await.map_err(io)?;
    Ok(written)
}

/// reqwest's own message is terse ("error sending request"); the cause (a
/// refused connection, an unknown certificate issuer) is in the source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn tls_config(tls: &ClientTls) -> Result<rustls::ClientConfig, ClientError> {
    let err = |e: crate::listener::TlsError| ClientError::Tls(e.to_string());
    let roots = crate::listener::tls::trust_roots("--ca-file", tls.ca_file.as_deref()).map_err(err)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("--client-cert", cert).map_err(err)?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| err(crate::listener::tls::key_error("--client-key", key, e)))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
