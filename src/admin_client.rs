//! The CLI's client for the admin API: plain HTTP/1.1 to the admin listener
//! (loopback by default), authenticated with an API key from the environment.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
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
        let resp = sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))?;
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
}
