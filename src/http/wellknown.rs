//! `GET /.well-known/jwks.json`, `GET /v1/keysets/{name}/jwks.json`,
//! `GET /.well-known/agent-configuration` (relayauth discovery) and
//! `GET /.well-known/openid-configuration` (OIDC discovery, for Vault JWT
//! auth, cloud IAM federation and generic OIDC verifiers). The well-known JWKS holds the
//! token keysets' keys only; a `sign` keyset's keys are in its own document.
//! Each is a pre-rendered snapshot from the key ring: no storage read, no
//! serialization per request. `max-age` never runs past the next planned
//! change; `ETag`/`If-None-Match` answer 304.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::params::ApiPath;
use super::{ApiError, AppState, ErrorCode};
use crate::config::Policy;
use crate::identities::MAX_CHAIN;
use crate::jwks::JwksSnapshot;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/keysets/{name}/jwks.json", get(keyset_jwks))
        .route("/.well-known/agent-configuration", get(discovery))
        .route("/.well-known/openid-configuration", get(openid_configuration))
}

async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.ring.jwks();
    serve(&state, &headers, &snapshot)
}

/// The public keys of a `sign` keyset; 404 `keyset_not_found` for a token
/// keyset or an unknown name.
async fn keyset_jwks(State(state): State<AppState>, ApiPath(name): ApiPath<String>, headers: HeaderMap) -> Response {
    match state.ring.keyset_jwks(&name) {
        Some(snapshot) => serve(&state, &headers, &snapshot),
        None => ApiError::new(ErrorCode::KeysetNotFound, "no raw-signing keyset of that name").into_response(),
    }
}

fn serve(state: &AppState, headers: &HeaderMap, snapshot: &Arc<JwksSnapshot>) -> Response {
    state.metrics.jwks_requests.inc();
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
        state.metrics.jwks_not_modified.inc();
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (common, snapshot.body.clone()).into_response()
}

/// Every route of the public listener, for the discovery `endpoints` map:
/// (key, path, methods, auth, description). Keys follow relayauth's server
/// where it has the route; `{id}` is written percent-encoded, as relayauth
/// writes it, so that each URL is a valid URI.
const ENDPOINTS: &[(&str, &str, &[&str], &str, &str)] = &[
    ("agent_configuration", "/.well-known/agent-configuration", &["GET"], "none", "This discovery document"),
    ("openid_configuration", "/.well-known/openid-configuration", &["GET"], "none", "OIDC discovery document"),
    ("jwks", "/.well-known/jwks.json", &["GET"], "none", "Published verification keys"),
    ("keyset_jwks", "/v1/keysets/%7Bname%7D/jwks.json", &["GET"], "none", "A sign keyset's public keys"),
    ("health", "/health", &["GET"], "none", "Liveness"),
    ("health_detail", "/v1/health", &["GET"], "none", "Service health: storage, key backends, signers"),
    ("livez", "/livez", &["GET"], "none", "Liveness probe"),
    ("readyz", "/readyz", &["GET"], "none", "Readiness probe: 503 unless the store, the vault and every signer are up"),
    ("tokens", "/v1/tokens", &["POST"], "bearer_token", "Issue a token pair"),
    ("tokens_refresh", "/v1/tokens/refresh", &["POST"], "none", "Exchange a refresh token (single use) for a new pair"),
    ("token_revocation", "/v1/tokens/revoke", &["POST"], "bearer_token", "Revoke by tokenId, identityId or sessionId"),
    (
        "token_introspection",
        "/v1/tokens/introspect",
        &["GET", "POST"],
        "bearer_token",
        "The claims of a token kmsd trusts, or null",
    ),
    (
        "token_validation",
        "/v1/tokens/validate",
        &["POST"],
        "bearer_token",
        "Validate a token and check required scopes",
    ),
    ("token_revocation_list", "/v1/tokens/revocation", &["GET"], "none", "Whether a jti is revoked, for verifiers"),
    ("identities", "/v1/identities", &["GET", "POST"], "bearer_token", "List and create identities"),
    (
        "identity",
        "/v1/identities/%7Bid%7D",
        &["GET", "PATCH", "DELETE"],
        "bearer_token",
        "Fetch, update or delete an identity",
    ),
    (
        "identity_suspend",
        "/v1/identities/%7Bid%7D/suspend",
        &["POST"],
        "bearer_token",
        "Suspend an identity and revoke its tokens",
    ),
    (
        "identity_retire",
        "/v1/identities/%7Bid%7D/retire",
        &["POST"],
        "bearer_token",
        "Retire an identity and revoke its tokens",
    ),
    (
        "identity_reactivate",
        "/v1/identities/%7Bid%7D/reactivate",
        &["POST"],
        "bearer_token",
        "Reactivate a suspended identity",
    ),
    ("api_keys", "/v1/api-keys", &["GET", "POST"], "bearer_token", "List and create API keys"),
    ("api_key_revoke", "/v1/api-keys/%7Bid%7D/revoke", &["POST"], "bearer_token", "Revoke an API key"),
    ("sign", "/v1/sign", &["POST"], "bearer_token", "Raw signature with a signing keyset's active key"),
    ("verify", "/v1/verify", &["POST"], "bearer_token", "Verify a raw signature"),
];

/// What this deployment does, in relayauth's capability names where they exist.
const CAPABILITIES: &[&str] = &[
    "identity-management",
    "token-issuance",
    "token-refresh-rotation",
    "token-revocation",
    "token-introspection",
    "scope-delegation",
    "api-key-management",
    "key-rotation",
    "raw-signing",
];

async fn discovery(State(state): State<AppState>) -> impl IntoResponse {
    let base = &state.config.public_base_url;
    let algs: Vec<&str> = state.ring.jwks().algorithms.iter().map(|a| a.as_str()).collect();
    let url = |p: &str| format!("{base}{p}");
    let endpoints: serde_json::Map<String, Value> = ENDPOINTS
        .iter()
        .map(|(key, path, methods, auth, description)| {
            (
                (*key).to_owned(),
                json!({ "url": url(path), "methods": methods, "auth": auth, "description": description }),
            )
        })
        .collect();
    let body = json!({
        "schema_version": "1.0",
        "service_name": "kmsd",
        "server_version": env!("CARGO_PKG_VERSION"),
        "issuer": state.config.issuer,
        "jwks_uri": url("/.well-known/jwks.json"),
        "token_endpoint": url("/v1/tokens"),
        "revocation_endpoint": url("/v1/tokens/revoke"),
        "introspection_endpoint": url("/v1/tokens/introspect"),
        "identity_endpoint": url("/v1/identities"),
        "capabilities": CAPABILITIES,
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
            "name": "relayauth-core",
            "plane": "relayauth",
            "resource": "identity",
            "pattern": "relayauth:{identity|token|api-key|admin}:{action}:{selector}",
            "description": "kmsd's own API: identities, tokens, API keys, administration",
            "actions": ["read", "create", "manage", "*"],
            "examples": ["relayauth:identity:manage:*", "relayauth:token:create:*", "relayauth:api-key:read:*"],
            "path_schema": { "type": "identifier", "required": false, "wildcard_allowed": true, "description": "resource selector or '*'" },
        }, {
            "name": "sign",
            "plane": "relayauth",
            "resource": "sign",
            "pattern": "relayauth:sign:invoke:{keyset}",
            "description": "Raw signing with the active key of a keyset declared use = \"sign\" (never a token keyset)",
            "actions": ["invoke"],
            "examples": ["relayauth:sign:invoke:sign"],
            "path_schema": { "type": "identifier", "required": true, "wildcard_allowed": true, "description": "keyset name" },
        }],
        "sponsor_required": true,
        "sponsor_chain": {
            "required": true,
            "propagated_in_tokens": true,
            "propagated_in_audit": false,
            "max_depth": MAX_CHAIN,
        },
        "scope_delegation": { "enabled": true, "mode": "intersection", "escalation_policy": "hard_error", "max_depth": MAX_CHAIN },
        "budgets": { "enabled": false, "supported_limits": [], "alert_webhook_supported": false, "auto_suspend_supported": false },
        "token_lifetimes": token_lifetimes(&state.config.policy),
        "endpoints": endpoints,
    });
    ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(body))
}

/// OpenID Connect Discovery 1.0 metadata for the tokens kmsd issues. kmsd
/// has no authorization or userinfo endpoint (it is a signing authority, not
/// a login server); its JWTs are what a relying party verifies, so they are
/// described as ID tokens: `sub`, `iss`, `aud` (array), `exp`, `iat` signed
/// by a key in `jwks_uri`. Clients that check `issuer` against the discovery
/// URL (go-oidc, so Vault's JWT auth) need `issuer = public_base_url`.
async fn openid_configuration(State(state): State<AppState>) -> impl IntoResponse {
    let base = &state.config.public_base_url;
    let algs: Vec<&str> = state.ring.jwks().algorithms.iter().map(|a| a.as_str()).collect();
    let url = |p: &str| format!("{base}{p}");
    let body = json!({
        "issuer": state.config.issuer,
        "jwks_uri": url("/.well-known/jwks.json"),
        "token_endpoint": url("/v1/tokens"),
        "introspection_endpoint": url("/v1/tokens/introspect"),
        "revocation_endpoint": url("/v1/tokens/revoke"),
        "id_token_signing_alg_values_supported": algs,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "sid", "org", "wks", "scopes", "sponsorId", "sponsorChain", "token_type"],
    });
    ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(body))
}

/// Defaults and the longest lifetime kmsd grants (the larger of the access
/// and refresh caps: relayauth's `maximum` is one value for both).
fn token_lifetimes(p: &Policy) -> Value {
    let t = &p.tokens;
    json!({
        "access_token_default": iso_duration(t.access_ttl_default),
        "refresh_token_default": iso_duration(t.refresh_ttl_default),
        "maximum": iso_duration(t.access_ttl_max.max(t.refresh_ttl_max)),
        "permanent_tokens_allowed": false,
    })
}

/// An ISO-8601 duration in days, hours, minutes and seconds (`PT1H`, `P1D`,
/// `P1DT2H3M4S`); sub-second parts are dropped.
fn iso_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if h > 0 || m > 0 || sec > 0 || days == 0 {
        out.push('T');
        for (n, unit) in [(h, 'H'), (m, 'M'), (sec, 'S')] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
        if s == 0 {
            out.push_str("0S");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::iso_duration;

    #[test]
    fn durations_are_written_in_iso_8601() {
        for (secs, iso) in [
            (0, "PT0S"),
            (45, "PT45S"),
            (90, "PT1M30S"),
            (3600, "PT1H"),
            (86_400, "P1D"),
            (30 * 86_400, "P30D"),
            (86_400 + 2 * 3600 + 3 * 60 + 4, "P1DT2H3M4S"),
            (2 * 86_400 + 60, "P2DT1M"),
        ] {
            assert_eq!(iso_duration(Duration::from_secs(secs)), iso, "{secs} s");
        }
        assert_eq!(iso_duration(Duration::from_millis(1500)), "PT1S");
    }
}
