//! The one error type of the HTTP API. Every error body is
//! `{"error": code, "code": code, "message": text, "requestId": id}` plus
//! context fields; the code (one of [`ErrorCode`], which also fixes the
//! status) is stable and tests assert on it. 5xx bodies are generic: the
//! cause is logged inside the request span, never sent. Domain errors become
//! an `ApiError` through the `From` impls in `domain_errors`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::access;
use super::code::ErrorCode;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub context: Map<String, Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), context: Map::new() }
    }

    /// The status of the reply: always the code's.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_owned(), value.into());
        self
    }

    /// 404 `not_found`: no such route.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such route")
    }

    /// 413: the request body is over `http.body_limit_bytes`.
    pub fn payload_too_large() -> Self {
        Self::new(ErrorCode::PayloadTooLarge, "request body is too large")
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// A server-side failure: `cause` is logged, the client sees a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(ErrorCode::InternalError, "internal error")
    }

    /// A store failure: 503 with `Retry-After` for an I/O fault (a full
    /// disk, a store being reopened), which clears by itself; else 500.
    pub fn storage(cause: &crate::storage::StorageError) -> Self {
        if cause.is_fault() {
            Self::unavailable(cause, 1)
        } else {
            Self::internal(cause)
        }
    }

    /// A dependency (key backend, store) is unavailable; retry later.
    pub fn unavailable(cause: &dyn std::fmt::Display, retry_after_secs: u64) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(ErrorCode::ServiceUnavailable, "a dependency is unavailable; retry later")
            .with("retryAfter", retry_after_secs)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code.as_str()));
        body.insert("code".into(), json!(self.code.as_str()));
        body.insert("message".into(), json!(self.message));
        body.insert("requestId".into(), json!(access::current()));
        let retry_after = self.context.get("retryAfter").and_then(Value::as_u64);
        body.extend(self.context);
        let mut resp = (self.code.status(), axum::Json(Value::Object(body))).into_response();
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        resp
    }
}
