//! Our JSON body extractor: malformed JSON, wrong types and oversized bodies
//! become our error format (400 `invalid_json` / `invalid_request`, 413
//! `payload_too_large`), never axum's plain-text rejections. The body is
//! parsed as JSON whatever the `Content-Type`, as relayauth clients send it.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The raw body (within the body limit), for routes that accept more than
/// JSON; oversized or unreadable bodies get our error format.
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::bad_request("invalid_request", "request body could not be read")
            }
        })?;
        Ok(ApiBody(bytes))
    }
}

/// Parses a JSON body, telling syntax errors from shape errors.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                ApiError::bad_request("invalid_request", format!("request body has the wrong shape: {e}"))
            }
            _ => ApiError::bad_request("invalid_json", format!("request body is not valid JSON: {e}")),
        }
    })
}
