//! The CLI's client for the admin API: plain HTTP/1.1 to the admin listener
//! (loopback by default), authenticated with an API key from the environment.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("admin URL {0:?} is not http://host:port")]
    Url(String),
    #[error("cannot reach the admin listener at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("admin API request failed: {0}")]
    Http(String),
    #[error("admin API answered {status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
}

pub struct AdminClient {
    authority: String,
    api_key: Zeroizing<String>,
}

impl AdminClient {
    pub fn new(url: &str, api_key: Zeroizing<String>) -> Result<Self, ClientError> {
        let authority = url
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::Url(url.to_owned()))?;
        Ok(Self { authority: authority.to_owned(), api_key })
    }

    /// Sends one request; a non-2xx answer becomes [`ClientError::Api`] with the
    /// server's error code.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let field = |k: &str| value[k].as_str().unwrap_or("").to_owned();
            Err(ClientError::Api { status, code: field("code"), message: field("message") })
        }
    }

    /// `GET path`, its body streamed into `to` (created with mode 0600, must
    /// not exist). Returns the response headers and the bytes written; on any
    /// failure `to` is removed.
    pub async fn download(&self, path: &str, to: &std::path::Path) -> Result<(HeaderMap, u64), ClientError> {
        let resp = self.send("GET", path, None).await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = resp.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let field = |k: &str| value[k].as_str().unwrap_or("").to_owned();
            return Err(ClientError::Api { status, code: field("code"), message: field("message") });
        }
        let headers = resp.headers().clone();
        let written = save(resp.into_body(), to).await;
        if written.is_err() {
            let _ = std::fs::remove_file(to);
        }
        Ok((headers, written?))
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response<Incoming>, ClientError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| ClientError::Connect { addr: self.authority.clone(), reason: "timed out".into() })?
            .map_err(|e| ClientError::Connect { addr: self.authority.clone(), reason: e.to_string() })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("x-api-key", self.api_key.as_str())
            .header("content-type", "application/json")
            .body(Full::new(payload))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))
    }
}

async fn save(mut body: Incoming, to: &std::path::Path) -> Result<u64, ClientError> {
    use tokio::io::AsyncWriteExt as _;
    let io = |e: std::io::Error| ClientError::Http(format!("{}: {e}", to.display()));
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).await.map_err(io)?;
    let mut written = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data).await.map_err(io)?;
            written += data.len() as u64;
        }
    }
    file.sync_all().await.map_err(io)?;
    Ok(written)
}
