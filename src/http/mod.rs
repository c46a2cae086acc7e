//! The HTTP surface: one router per listener (public, admin), built from an
//! [`AppState`] of shared services. One file per resource, handlers beside
//! their routes. This module never touches storage tables directly.

mod access;
mod admin;
mod api_keys;
mod auth;
pub mod backup;
mod code;
mod domain_errors;
mod error;
pub mod health;
#[cfg(test)]
mod id_edge_tests;
mod identities;
mod json;
mod limits;
mod metrics;
mod openapi;
mod params;
mod sign;
mod tokens;
mod wellknown;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::Router;

pub use auth::Caller;
pub use code::ErrorCode;
pub use error::ApiError;

use crate::api_keys::ApiKeys;
use crate::auth_limit::{AuthLimiter, Listener};
use crate::clock::Clock;
use crate::config::Config;
use crate::keyring::KeyRing;
use crate::metrics::Metrics;
use crate::rotation::Rotation;
use crate::storage::Store;
use crate::tokens::TokenService;

/// Everything a handler may use; cheap to clone: one reference count, since
/// axum clones the state for every request (handler and `State` extractor),
/// and every count the two cores both touch is a contended cache line.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

/// The shared services behind [`AppState`] (which dereferences to them).
pub struct Services {
    pub config: Arc<Config>,
    /// Whether this replica leads the background work (see `ha`).
    pub leadership: crate::ha::Leadership,
    pub clock: Arc<dyn Clock>,
    pub store: Store,
    pub ring: Arc<KeyRing>,
    pub api_keys: ApiKeys,
    pub limiter: Arc<AuthLimiter>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenService>,
    pub rotation: Arc<Rotation>,
}

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The public listener: health, JWKS, discovery, tokens, identities, raw
/// signing, API keys.
pub fn public_router(state: AppState) -> Router {
    let router = Router::new()
        .merge(health::routes())
        .merge(wellknown::routes())
        .merge(api_keys::routes())
        .merge(tokens::routes())
        .merge(identities::routes())
        .merge(sign::routes())
        .merge(openapi::routes());
    finish(router, state, Listener::Public)
}

/// The admin listener (loopback by default).
pub fn admin_router(state: AppState) -> Router {
    let router = Router::new()
        .merge(health::routes())
        .merge(admin::routes())
        .merge(backup::routes())
        .merge(api_keys::routes())
        .merge(openapi::routes());
    finish(router, state, Listener::Admin)
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
        Some(_) => Err(ApiError::invalid_request(format!(
            "{field} must be an integer from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// `?limit=&cursor=` of a paginated list (limit 1..=100, default 50).
#[derive(serde::Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    fn parse(self) -> Result<(usize, Option<String>), ApiError> {
        let limit = query_number(self.limit.as_deref(), "limit", 50, 1..=100)? as usize;
        Ok((limit, self.cursor.filter(|c| !c.is_empty())))
    }
}

fn finish(router: Router<AppState>, state: AppState, listener: Listener) -> Router {
    let limit = state.config.body_limit;
    let limits = limits::RequestLimits::new(limit, &state.config.connections);
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limits, limits::layer))
        .layer(middleware::from_fn_with_state(state.clone(), access::layer))
        .layer(axum::Extension(listener))
        .with_state(state)
}
