//! Our query-string and path-parameter extractors, beside [`super::json`]'s
//! body extractors: whatever axum's `Query` and `Path` refuse (a parameter
//! given twice, path bytes that are not UTF-8) becomes 400 `invalid_request`
//! in our error format, never axum's plain-text rejection. Every handler
//! takes its query and path through these.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// `Query<T>` with our rejection. A parameter named twice is refused (serde
/// reports a duplicate field), so `?limit=1&limit=2` never means either.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(r) => Err(refused("query string", r.status(), &r.body_text())),
        }
    }
}

/// `Path<T>` with our rejection (for instance `%ff`, which is no UTF-8).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(r) => Err(refused("path", r.status(), &r.body_text())),
        }
    }
}

/// A 4xx rejection is the client's; a 5xx one (a route without the
/// parameter its handler reads) is ours, logged and answered generically.
fn refused(part: &str, status: StatusCode, text: &str) -> ApiError {
    if status.is_server_error() {
        ApiError::internal(&format!("{part} extractor: {text}"))
    } else {
        ApiError::invalid_request(format!("invalid {part}: {text}"))
    }
}

/// The one value of `name` in a form-encoded query or body: 400
/// `invalid_request` when it is missing or given more than once. The value
/// is borrowed when it needs no percent-decoding.
pub fn single<'a>(form: &'a [u8], name: &str) -> Result<std::borrow::Cow<'a, str>, ApiError> {
    let mut values = form_urlencoded::parse(form).filter(|(k, _)| k == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value),
        (None, _) => Err(ApiError::invalid_request(format!("{name} is required"))),
        (Some(_), Some(_)) => Err(ApiError::invalid_request(format!("{name} is given more than once"))),
    }
}
