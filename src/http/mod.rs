//! The HTTP surface: one router per listener (public, admin), built from an
//! [`AppState`] of shared services. One file per resource, handlers beside
//! their routes. This module never touches storage tables directly.

mod admin;
mod api_keys;
mod auth;
mod error;
mod health;
mod json;
mod request_id;
mod wellknown;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::Router;

pub use auth::Caller;
pub use error::ApiError;

use crate::api_keys::ApiKeys;
use crate::auth_limit::AuthLimiter;
use crate::clock::Clock;
use crate::config::Config;
use crate::keyring::KeyRing;
use crate::metrics::Metrics;
use crate::storage::Store;

/// Everything a handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub store: Store,
    pub ring: Arc<KeyRing>,
    pub api_keys: ApiKeys,
    pub limiter: Arc<AuthLimiter>,
    pub metrics: Arc<Metrics>,
}

/// The public listener: health, JWKS, discovery, API keys.
pub fn public_router(state: AppState) -> Router {
    finish(Router::new().merge(health::routes()).merge(wellknown::routes()).merge(api_keys::routes()), state)
}

/// The admin listener (loopback by default).
pub fn admin_router(state: AppState) -> Router {
    finish(Router::new().merge(health::routes()).merge(admin::routes()).merge(api_keys::routes()), state)
}

/// A numeric query parameter: `default` when absent, 400 `invalid_request`
/// when not an integer in `range`.
fn query_number(
    value: Option<&str>,
    field: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    match value.map(str::parse::<u64>) {
        None => Ok(default),
        Some(Ok(n)) if range.contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_request",
            format!("{field} must be an integer from {} to {}", range.start(), range.end()),
        )),
    }
}

fn finish(router: Router<AppState>, state: AppState) -> Router {
    let limit = state.config.body_limit;
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}
