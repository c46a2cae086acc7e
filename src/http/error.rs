//! The one error type of the HTTP API. Every error body is
//! `{"error": code, "code": code, "message": text, "requestId": id}` plus
//! context fields; the code is stable and tests assert on it. 5xx bodies are
//! generic: the cause is logged inside the request span, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::access;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub context: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), context: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_owned(), value.into());
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// 413: the request body is over `http.body_limit_bytes`.
    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large")
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A server-side failure: `cause` is logged, the client sees a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
    }

    /// A dependency (key backend, store) is unavailable; retry later.
    pub fn unavailable(cause: &dyn std::fmt::Display, retry_after_secs: u64) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "a dependency is unavailable; retry later")
            .with("retryAfter", retry_after_secs)
    }
}

/// A refused grant: 400 `invalid_scope` (malformed) or 403 `scope_escalation`.
impl From<crate::scopes::GrantError> for ApiError {
    fn from(e: crate::scopes::GrantError) -> Self {
        use crate::scopes::GrantError;
        match e {
            GrantError::Invalid { scope, reason } => {
                ApiError::bad_request("invalid_scope", format!("scope {scope:?}: {reason}")).with("scope", scope)
            }
            GrantError::Escalation { scope } => ApiError::new(
                StatusCode::FORBIDDEN,
                "scope_escalation",
                format!("cannot grant {scope:?}: the caller does not hold it"),
            )
            .with("scope", scope),
            GrantError::Stronger { scope } => ApiError::new(
                StatusCode::FORBIDDEN,
                "scope_escalation",
                format!("the target holds {scope:?}, which the caller does not; acting on it needs all its scopes"),
            )
            .with("scope", scope),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.insert("requestId".into(), json!(access::current()));
        let retry_after = self.context.get("retryAfter").and_then(Value::as_u64);
        body.extend(self.context);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        resp
    }
}
