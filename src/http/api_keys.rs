//! `/v1/api-keys`: create, list, revoke (relayauth shapes). Mounted on both
//! listeners; the CLI uses the admin one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::ApiJson;
use super::params::{ApiPath, ApiQuery};
use super::{ApiError, AppState, Caller, PageQuery};
use crate::api_keys::{ApiKeyError, ApiKeyRecord, NewApiKey};
use crate::clock::Timestamp;

const MANAGE: &str = "relayauth:api-key:manage:*";
const READ: &str = "relayauth:api-key:read:*";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/api-keys", post(create).get(list)).route("/v1/api-keys/{id}/revoke", post(revoke))
}

/// The ApiKey object: never the key or its hash.
pub fn view(r: &ApiKeyRecord) -> Value {
    let mut v = json!({
        "id": r.id.as_str(),
        "orgId": r.org_id,
        "prefix": r.prefix,
        "name": r.name,
        "scopes": r.scopes,
        "createdAt": r.created_at.to_iso(),
        "revoked": r.revoked_at.is_some(),
    });
    for (field, at) in [("revokedAt", r.revoked_at), ("lastUsedAt", r.last_used_at), ("expiresAt", r.expires_at)] {
        if let (Some(at), Some(obj)) = (at, v.as_object_mut()) {
            obj.insert(field.into(), json!(at.to_iso()));
        }
    }
    v
}

fn error(e: ApiKeyError) -> ApiError {
    match e {
        ApiKeyError::Invalid(msg) => ApiError::bad_request("invalid_request", msg),
        ApiKeyError::Grant(g) => g.into(),
        ApiKeyError::NotFound(id) => {
            ApiError::new(StatusCode::NOT_FOUND, "api_key_not_found", format!("API key {id} not found"))
        }
        ApiKeyError::Storage(e) => ApiError::storage(&e),
        ApiKeyError::Format(e) => ApiError::internal(&e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    name: String,
    scopes: Vec<String>,
    expires_at: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(MANAGE)?;
    let expires_at = body
        .expires_at
        .map(|t| {
            Timestamp::parse_iso(&t)
                .ok_or_else(|| ApiError::bad_request("invalid_request", "expiresAt must be an ISO-8601 UTC timestamp"))
        })
        .transpose()?;
    let req = NewApiKey { name: body.name, scopes: body.scopes, expires_at };
    let (record, secret) = state.api_keys.create(&caller.actor(), req, state.clock.now()).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(json!({ "apiKey": view(&record), "key": secret.expose() }))))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let (limit, cursor) = page.parse()?;
    let (page, more) = state.api_keys.list(&caller.org_id, cursor, limit).await.map_err(error)?;
    let next = if more { page.last().map(|r| r.id.as_str().to_owned()) } else { None };
    Ok(Json(json!({
        "data": page.iter().map(view).collect::<Vec<_>>(),
        "pagination": { "cursor": next, "hasMore": more, "limit": limit },
    })))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let record = state.api_keys.revoke(&caller.actor(), &id, state.clock.now()).await.map_err(error)?;
    Ok(Json(view(&record)))
}
