//! Who is calling: the one authentication extractor for every route that
//! needs a caller. `x-api-key: rak_…` is checked here; `Authorization: Bearer`
//! takes precedence when valid (bearer verification arrives with token
//! issuance; until kmsd issues tokens, no bearer can be valid). Handlers then
//! state the scope they need on their first line: `caller.require(SCOPE)?`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde_json::json;

use super::{ApiError, AppState};
use crate::api_keys::{Actor, ApiKeyAuthError};
use crate::metrics::Metrics;
use crate::scopes;
use crate::tokens::TokenType;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `ak_…` for an API key, the identity id for a bearer token.
    pub id: String,
    pub org_id: String,
    pub scopes: Vec<String>,
    /// The bearer token's sponsor chain (none for API keys).
    pub sponsor_chain: Option<Vec<String>>,
}

impl Caller {
    /// 403 `insufficient_scope` unless one of the caller's scopes covers
    /// `scope`. `required` is the scope (relayauth's clients read a string),
    /// `requiredScopes` the list of what is missing, `actual` what is held.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if scopes::any_covers(&self.scopes, scope) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", format!("this call requires scope {scope}"))
                .with("required", scope)
                .with("requiredScopes", json!([scope]))
                .with("actual", json!(self.scopes)))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor { id: self.id.clone(), org_id: self.org_id.clone(), scopes: self.scopes.clone() }
    }

    /// Like [`require`](Self::require), satisfied by any one of `alternatives`.
    pub fn require_any(&self, alternatives: &[&str]) -> Result<(), ApiError> {
        if alternatives.iter().any(|s| scopes::any_covers(&self.scopes, s)) {
            return Ok(());
        }
        self.require(alternatives.first().copied().unwrap_or(scopes::UNIVERSAL))
    }
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let result = authenticate(parts, state, client).await;
        if let Err(e) = &result {
            if e.status == StatusCode::UNAUTHORIZED {
                Metrics::inc(&state.metrics.auth_failures);
                state.limiter.failure(client, state.clock.now());
            }
        }
        result
    }
}

async fn authenticate(parts: &Parts, state: &AppState, client: IpAddr) -> Result<Caller, ApiError> {
    let bearer = match parts.headers.get("authorization") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
            Some(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
            _ => return Err(unauthorized("invalid_authorization", "Authorization must be `Bearer <token>`")),
        },
    };
    let api_key = parts.headers.get("x-api-key").map(|v| v.to_str().unwrap_or_default().to_owned());
    match (bearer, api_key) {
        (None, None) => Err(unauthorized("missing_authorization", "send Authorization: Bearer <token> or x-api-key")),
        (Some(token), api_key) => match state.tokens.verify(&token, TokenType::Access) {
            Ok(c) => Ok(Caller {
                id: c.sub.clone(),
                org_id: c.org.clone(),
                scopes: c.scopes.clone(),
                sponsor_chain: Some(c.sponsor_chain.clone()),
            }),
            Err(e) => match api_key {
                // A valid bearer wins; an invalid one falls back to the key.
                Some(key) => api_key_caller(state, client, &key).await,
                None => Err(super::tokens::verify_error(e)),
            },
        },
        (None, Some(key)) => api_key_caller(state, client, &key).await,
    }
}

/// An API key, unless this client is throttled and the key is not one that
/// has already worked (then 429 before any store lookup).
async fn api_key_caller(state: &AppState, client: IpAddr, key: &str) -> Result<Caller, ApiError> {
    if let Err(retry) = state.limiter.check(client, state.clock.now()) {
        if !state.api_keys.is_known_good(key) {
            Metrics::inc(&state.metrics.auth_rate_limited);
            state.limiter.rejected(client);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed authentications from this client; retry later",
            )
            .with("retryAfter", retry.as_secs()));
        }
    }
    authenticate_key(state, key).await
}

async fn authenticate_key(state: &AppState, presented: &str) -> Result<Caller, ApiError> {
    match state.api_keys.authenticate(presented, state.clock.now()).await {
        Ok(rec) => {
            Ok(Caller { id: rec.id.as_str().to_owned(), org_id: rec.org_id, scopes: rec.scopes, sponsor_chain: None })
        }
        Err(ApiKeyAuthError::Storage(e)) => Err(ApiError::internal(&e)),
        Err(e) => {
            // The reason only: never the presented key, not even its prefix.
            tracing::debug!(reason = %e, "API key rejected");
            Err(unauthorized("invalid_api_key", "API key is not valid"))
        }
    }
}
