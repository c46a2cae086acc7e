//! `/v1/tokens*`: issue, refresh, revoke, introspect, validate, and the public
//! revocation check the relayauth verifier SDKs call.
//!
//! Introspection takes the token in a POST body (RFC 7662: JSON
//! `{"token"}` or a form `token=`), or in the query of a GET for relayauth
//! clients; kmsd never logs a query string or a token.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::{ApiBody, ApiJson};
use super::params::{single, ApiQuery};
use super::{ApiError, AppState, Caller, ErrorCode};
use crate::identities::IdentityId;
use crate::scopes;
use crate::tokens::{
    Claims, IssueRequest, RevokeTarget, SessionId, TokenError, TokenId, TokenPair, TokenType, VerifyError,
};

const CREATE: &str = "relayauth:token:create:*";
const MANAGE: &str = "relayauth:token:manage:*";
const READ: &str = "relayauth:token:read:*";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(issue))
        .route("/v1/tokens/refresh", post(refresh))
        .route("/v1/tokens/revoke", post(revoke))
        .route("/v1/tokens/introspect", get(introspect).post(introspect_body))
        .route("/v1/tokens/validate", post(validate))
        .route("/v1/tokens/revocation", get(revocation))
}

fn pair_json(p: &TokenPair) -> Value {
    let mut v = json!({
        "accessToken": p.access_token,
        "refreshToken": p.refresh_token,
        "accessTokenExpiresAt": p.access_expires_at.to_iso(),
        "refreshTokenExpiresAt": p.refresh_expires_at.to_iso(),
        "tokenType": "Bearer",
    });
    if !p.clamped.is_empty() {
        let clamped: Vec<Value> = p
            .clamped
            .iter()
            .map(|c| {
                json!({
                    "token": if c.token == TokenType::Access { "access" } else { "refresh" },
                    "requestedSeconds": c.requested,
                    "grantedSeconds": c.granted,
                    "reason": c.reason,
                })
            })
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("clamped".into(), clamped.into());
        }
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssueBody {
    identity_id: String,
    scopes: Option<Vec<String>>,
    audience: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::json::expires_in")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "super::json::refresh_token_ttl_seconds")]
    refresh_token_ttl_seconds: Option<u64>,
    algorithm: Option<String>,
}

async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(CREATE)?;
    // Text of no id's form names no identity: the answer an unknown id gets.
    let identity_id = IdentityId::parse(&body.identity_id).ok_or(TokenError::IdentityNotFound)?;
    let req = IssueRequest {
        identity_id,
        scopes: body.scopes,
        audience: body.audience,
        expires_in: body.expires_in,
        refresh_ttl: body.refresh_token_ttl_seconds,
        algorithm: body.algorithm,
    };
    let pair = state.tokens.issue(&caller.actor(), req).await?;
    super::metrics::count_pair(&state, &state.metrics.tokens_issued, &pair.access_token);
    Ok((StatusCode::CREATED, Json(pair_json(&pair))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(State(state): State<AppState>, ApiJson(body): ApiJson<RefreshBody>) -> Result<Json<Value>, ApiError> {
    let pair = state.tokens.refresh(&body.refresh_token).await?;
    super::metrics::count_pair(&state, &state.metrics.tokens_refreshed, &pair.access_token);
    Ok(Json(pair_json(&pair)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokeBody {
    token_id: Option<String>,
    identity_id: Option<String>,
    session_id: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGE)?;
    let (target, by) = match (body.token_id, body.identity_id, body.session_id) {
        (Some(t), _, _) => (TokenId::parse(&t).map(RevokeTarget::Token), "token"),
        (None, Some(i), _) => (IdentityId::parse(&i).map(RevokeTarget::Identity), "identity"),
        (None, None, Some(s)) => (SessionId::parse(&s).map(RevokeTarget::Session), "session"),
        (None, None, None) => return Err(ApiError::invalid_request("name one of tokenId, identityId, sessionId")),
    };
    // Text of no id's form matches nothing: the answer an unknown id gets.
    let target = target.ok_or(TokenError::NotFound)?;
    state.tokens.revoke(&caller.actor(), target, state.clock.now()).await?;
    state.metrics.tokens_revoked.get_or_create(&crate::metrics::RevokeLabels { by }).inc();
    Ok(StatusCode::NO_CONTENT)
}

/// The claims if kmsd still trusts the token and it belongs to the caller's
/// org; JSON `null` otherwise. The query is read in place (a token needs no
/// percent-decoding, so it is borrowed, not copied): this is the hottest
/// authenticated route. `token` must be given exactly once.
async fn introspect(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Option<Arc<Claims>>>, ApiError> {
    caller.require(READ)?;
    let token = single(query.as_deref().unwrap_or_default().as_bytes(), "token")?;
    introspection(&state, &caller, &token).await
}

#[derive(Deserialize)]
struct IntrospectBody {
    token: String,
}

/// `POST /v1/tokens/introspect`: the same answer, the token in the body as
/// `application/x-www-form-urlencoded` (`token=...`) or JSON (`{"token"}`,
/// whatever other `Content-Type`), so that it never appears in a URL.
async fn introspect_body(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Json<Option<Arc<Claims>>>, ApiError> {
    caller.require(READ)?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let token =
        if form { single(&body, "token")?.into_owned() } else { super::json::parse::<IntrospectBody>(&body)?.token };
    introspection(&state, &caller, &token).await
}

async fn introspection(state: &AppState, caller: &Caller, token: &str) -> Result<Json<Option<Arc<Claims>>>, ApiError> {
    match state.tokens.verify(token, TokenType::Access).await {
        Ok(c) if c.org == caller.org_id => Ok(Json(Some(c))),
        Err(VerifyError::Unavailable) => Err(VerifyError::Unavailable.into()),
        _ => Ok(Json(None)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidateBody {
    token: String,
    #[serde(default)]
    required_scopes: Vec<String>,
}

async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ValidateBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let result = state.tokens.verify(&body.token, TokenType::Access).await;
    Ok(Json(match result {
        Err(VerifyError::Unavailable) => return Err(VerifyError::Unavailable.into()),
        Ok(c) if c.org == caller.org_id => {
            let missing: Vec<&String> =
                body.required_scopes.iter().filter(|r| !scopes::any_covers(&c.scopes, r)).collect();
            let mut v = json!({ "valid": missing.is_empty(), "claims": c });
            if !missing.is_empty() {
                if let Some(o) = v.as_object_mut() {
                    o.insert("missingScopes".into(), json!(missing));
                }
            }
            v
        }
        Ok(_) => json!({ "valid": false, "claims": null, "error": ErrorCode::InvalidToken.as_str() }),
        Err(e) => json!({ "valid": false, "claims": null, "error": ApiError::from(e).code.as_str() }),
    }))
}

#[derive(Deserialize)]
struct RevocationQuery {
    jti: Option<String>,
}

/// `{"revoked": true}` for every jti whose token kmsd itself refuses (see
/// `TokenService::is_jti_revoked`); a store failure is a 503, never `false`.
/// Text that is no jti kmsd could have made is answered as a jti it never
/// issued, without a store read.
async fn revocation(State(state): State<AppState>, ApiQuery(q): ApiQuery<RevocationQuery>) -> Response {
    let revoked = match q.jti.as_deref() {
        None | Some("") => return ApiError::invalid_request("jti is required").into_response(),
        Some(jti) => match TokenId::parse(jti) {
            Some(jti) => state.tokens.is_jti_revoked(&jti).await,
            None => Ok(state.tokens.is_unissued_jti_revoked()),
        },
    };
    match revoked {
        Ok(revoked) => Json(json!({ "revoked": revoked })).into_response(),
        Err(e) => ApiError::unavailable(&e, 1).into_response(),
    }
}
