//! `GET /.well-known/jwks.json`, `GET /v1/keysets/{name}/jwks.json` and
//! `GET /.well-known/agent-configuration`. The well-known JWKS holds the
//! token keysets' keys only; a `sign` keyset's keys are in its own document.
//! Each is a pre-rendered snapshot from the key ring: no storage read, no
//! serialization per request. `max-age` never runs past the next planned
//! change; `ETag`/`If-None-Match` answer 304.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::config::Policy;
use crate::jwks::JwksSnapshot;
use crate::metrics::Metrics;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/keysets/{name}/jwks.json", get(keyset_jwks))
        .route("/.well-known/agent-configuration", get(discovery))
}

async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.ring.jwks();
    serve(&state, &headers, &snapshot)
}

/// The public keys of a `sign` keyset; 404 `keyset_not_found` for a token
/// keyset or an unknown name.
async fn keyset_jwks(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    match state.ring.keyset_jwks(&name) {
        Some(snapshot) => serve(&state, &headers, &snapshot),
        None => ApiError::new(StatusCode::NOT_FOUND, "keyset_not_found", "no raw-signing keyset of that name")
            .into_response(),
    }
}

fn serve(state: &AppState, headers: &HeaderMap, snapshot: &Arc<JwksSnapshot>) -> Response {
    Metrics::inc(&state.metrics.jwks_requests);
    let max_age = state.ring.max_age(snapshot, state.clock.now_millis(), state.config.policy.jwks.max_age_cap);
    let cache = format!("public, max-age={}, must-revalidate", max_age.as_secs());
    let mut common = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&cache) {
        common.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&snapshot.etag) {
        common.insert(header::ETAG, v);
    }
    let not_modified =
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| snapshot.matches(v));
    if not_modified {
        Metrics::inc(&state.metrics.jwks_not_modified);
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (common, snapshot.body.clone()).into_response()
}

async fn discovery(State(state): State<AppState>) -> impl IntoResponse {
    let base = &state.config.public_base_url;
    let algs: Vec<&str> = state.ring.jwks().algorithms.iter().map(|a| a.as_str()).collect();
    let url = |p: &str| format!("{base}{p}");
    let endpoint = |p: &str, methods: &[&str], auth: &str, description: &str| json!({ "url": url(p), "methods": methods, "auth": auth, "description": description });
    let body = json!({
        "schema_version": "1.0",
        "issuer": state.config.issuer,
        "jwks_uri": url("/.well-known/jwks.json"),
        "token_endpoint": url("/v1/tokens"),
        "revocation_endpoint": url("/v1/tokens/revoke"),
        "introspection_endpoint": url("/v1/tokens/introspect"),
        "identity_endpoint": url("/v1/identities"),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["bearer_token"],
        "token_signing_alg_values_supported": algs,
        "scope_format": {
            "pattern": "{plane}:{resource}:{action}:{path?}",
            "separator": ":",
            "wildcard": "*",
            "path_optional": true,
            "planes": ["relayauth", "relayfile", "relaycast"],
            "actions": ["read", "write", "create", "delete", "manage", "invoke", "*"],
        },
        "scope_definitions": [{
            "name": "sign",
            "plane": "relayauth",
            "resource": "sign",
            "pattern": "relayauth:sign:invoke:{keyset}",
            "description": "Raw signing with the active key of a keyset declared use = \"sign\" (never a token keyset)",
            "actions": ["invoke"],
            "examples": ["relayauth:sign:invoke:sign"],
            "path_schema": { "required": true, "wildcard_allowed": true, "description": "keyset name" },
        }],
        "sponsor_required": true,
        "scope_delegation": { "enabled": true, "mode": "intersection", "escalation_policy": "hard_error" },
        "budgets": { "enabled": false, "supported_limits": [], "alert_webhook_supported": false, "auto_suspend_supported": false },
        "token_lifetimes": token_lifetimes(&state.config.policy),
        "endpoints": {
            "jwks": endpoint("/.well-known/jwks.json", &["GET"], "none", "Published verification keys"),
            "tokens": endpoint("/v1/tokens", &["POST"], "bearer_token", "Issue a token pair"),
            "health": endpoint("/v1/health", &["GET"], "none", "Service health"),
        },
    });
    ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(body))
}

fn token_lifetimes(p: &Policy) -> Value {
    let secs = |d: std::time::Duration| format!("{}s", d.as_secs());
    json!({
        "access_token_default": secs(p.tokens.access_ttl_default),
        "refresh_token_default": secs(p.tokens.refresh_ttl_default),
        "maximum": secs(p.tokens.access_ttl_max),
        "permanent_tokens_allowed": false,
    })
}
