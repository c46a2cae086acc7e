//! Who is calling: the one authentication extractor for every route that
//! needs a caller. `x-api-key: rak_…` is checked here; `Authorization: Bearer`
//! takes precedence when valid (bearer verification arrives with token
//! issuance; until kmsd issues tokens, no bearer can be valid). Handlers then
//! state the scope they need on their first line: `caller.require(SCOPE)?`.
//!
//! A credential that acts for an identity (a bearer token, or an API key one
//! minted) is authorized with that identity's current state: it is refused
//! while the identity is not active, and its scopes on kmsd are those it
//! claims that the identity still holds ([`Identities::held_now`]).
//! Third-party verifiers keep JWT semantics until `exp`.
//!
//! [`Identities::held_now`]: crate::identities::Identities::held_now

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde_json::json;

use super::{ApiError, AppState, ErrorCode};
use crate::api_keys::{Actor, ApiKeyAuthError, OrgId};
use crate::auth_limit::Listener;
use crate::identities::IdentityId;
use crate::metrics::ReasonLabel;
use crate::scopes;
use crate::tokens::{TokenType, VerifyError};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `ak_…` for an API key, the identity id for a bearer token.
    pub id: String,
    pub org_id: OrgId,
    pub scopes: Vec<String>,
    /// The bearer token's sponsor chain (none for API keys).
    pub sponsor_chain: Option<Vec<String>>,
    /// The identity this caller acts for (see [`Actor::identity_id`]).
    pub identity_id: Option<String>,
}

impl Caller {
    /// 403 `insufficient_scope` unless one of the caller's scopes covers
    /// `scope`. `required` is the scope (relayauth's clients read a string),
    /// `requiredScopes` the list of what is missing, `actual` what is held.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if scopes::any_covers(&self.scopes, scope) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::InsufficientScope, format!("this call requires scope {scope}"))
                .with("required", scope)
                .with("requiredScopes", json!([scope]))
                .with("actual", json!(self.scopes)))
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            id: self.id.clone(),
            org_id: self.org_id.clone(),
            scopes: self.scopes.clone(),
            identity_id: self.identity_id.clone(),
        }
    }

    /// Like [`require`](Self::require), satisfied by any one of `alternatives`.
    pub fn require_any(&self, alternatives: &[&str]) -> Result<(), ApiError> {
        if alternatives.iter().any(|s| scopes::any_covers(&self.scopes, s)) {
            return Ok(());
        }
        self.require(alternatives.first().copied().unwrap_or(scopes::UNIVERSAL))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let listener = parts.extensions.get::<Listener>().copied().unwrap_or(Listener::Public);
        let result = authenticate(parts, state, (listener, client)).await;
        match &result {
            Ok(caller) => crate::context::set_actor(&caller.id),
            Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
                state.metrics.auth_failures.get_or_create(&ReasonLabel { reason: e.code.as_str() }).inc();
                state.limiter.failure(listener, client, state.clock.now());
            }
            Err(_) => {}
        }
        result
    }
}

async fn authenticate(parts: &Parts, state: &AppState, client: (Listener, IpAddr)) -> Result<Caller, ApiError> {
    let bearer = match parts.headers.get("authorization") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
            Some(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
            _ => return Err(ApiError::new(ErrorCode::InvalidAuthorization, "Authorization must be `Bearer <token>`")),
        },
    };
    let api_key = parts.headers.get("x-api-key").map(|v| v.to_str().unwrap_or_default().to_owned());
    match (bearer, api_key) {
        (None, None) => {
            Err(ApiError::new(ErrorCode::MissingAuthorization, "send Authorization: Bearer <token> or x-api-key"))
        }
        (Some(token), api_key) => match state.tokens.verify(&token, TokenType::Access).await {
            Ok(c) => Ok(Caller {
                id: c.sub.to_string(),
                org_id: c.org.clone(),
                scopes: held_now(state, &c.org, &c.sub, &c.scopes)
                    .await
                    .ok_or_else(|| ApiError::from(VerifyError::Revoked))?,
                sponsor_chain: Some(c.sponsor_chain.clone()),
                identity_id: Some(c.sub.to_string()),
            }),
            // The store could not confirm the token: never "valid", never a fallback.
            Err(e @ VerifyError::Unavailable) => Err(e.into()),
            Err(e) => match api_key {
                // A valid bearer wins; an invalid one falls back to the key.
                Some(key) => api_key_caller(state, client, &key).await,
                None => Err(e.into()),
            },
        },
        (None, Some(key)) => api_key_caller(state, client, &key).await,
    }
}

/// The scopes a credential acting for identity `id` holds on kmsd now.
async fn held_now(state: &AppState, org: &OrgId, id: &IdentityId, claimed: &[String]) -> Option<Vec<String>> {
    state.tokens.identities().held_now(org, id, claimed).await
}

/// An API key. A valid key always authenticates; while this client is
/// throttled, what fails gets 429 instead of 401, and its lookups of keys
/// not seen before take turns (see `auth_limit`).
async fn api_key_caller(state: &AppState, client: (Listener, IpAddr), key: &str) -> Result<Caller, ApiError> {
    let (listener, address) = client;
    let throttled = state.limiter.check(listener, address, state.clock.now()).err();
    let gate = throttled.map(|_| state.limiter.lookup_gate(listener));
    let result = authenticate_key(state, key, gate).await;
    match (result, throttled) {
        (Err(e), Some(retry)) if e.status() == StatusCode::UNAUTHORIZED => {
            state.metrics.auth_rate_limited.inc();
            state.limiter.rejected(listener, address);
            Err(ApiError::new(ErrorCode::RateLimited, "too many failed authentications from this client; retry later")
                .with("retryAfter", retry.as_secs()))
        }
        (result, _) => result,
    }
}

async fn authenticate_key(
    state: &AppState,
    presented: &str,
    gate: Option<&tokio::sync::Semaphore>,
) -> Result<Caller, ApiError> {
    let refused = |reason: &dyn std::fmt::Display| {
        // The reason only: never the presented key, not even its prefix.
        tracing::debug!(reason = %reason, "API key rejected");
        ApiError::new(ErrorCode::InvalidApiKey, "API key is not valid")
    };
    let rec = match state.api_keys.authenticate(presented, state.clock.now(), gate).await {
        Ok(rec) => rec,
        Err(ApiKeyAuthError::Storage(e)) => return Err(e.into()),
        Err(e) => return Err(refused(&e)),
    };
    let scopes = match &rec.identity_id {
        None => rec.scopes,
        Some(id) => held_now(state, &rec.org_id, &IdentityId::from(id.as_str()), &rec.scopes)
            .await
            .ok_or_else(|| refused(&"the identity that minted it is not active"))?,
    };
    Ok(Caller {
        id: rec.id.as_str().to_owned(),
        org_id: rec.org_id,
        scopes,
        sponsor_chain: None,
        identity_id: rec.identity_id,
    })
}
