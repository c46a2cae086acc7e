//! `/v1/identities`: relayauth's identity routes. Suspend, retire and delete
//! also revoke every session the identity holds.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::{ApiBody, ApiJson, UniqueMap};
use super::params::{ApiPath, ApiQuery};
use super::{ApiError, AppState, Caller, ErrorCode, PageQuery};
use crate::identities::{IdentityError, IdentityId, IdentityPatch, ListFilter, NewIdentity, Transition};

const MANAGE: &str = "relayauth:identity:manage:*";
const READ: &str = "relayauth:identity:read:*";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/identities", post(create).get(list))
        .route("/v1/identities/{id}", get(fetch).patch(patch).delete(delete))
        .route("/v1/identities/{id}/suspend", post(suspend))
        .route("/v1/identities/{id}/retire", post(retire))
        .route("/v1/identities/{id}/reactivate", post(reactivate))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    metadata: UniqueMap,
    sponsor_id: Option<String>,
    workspace_id: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(MANAGE)?;
    let req = NewIdentity {
        name: b.name,
        kind: b.kind,
        scopes: b.scopes,
        roles: b.roles,
        metadata: b.metadata.0,
        sponsor_id: b.sponsor_id.unwrap_or_default(),
        workspace_id: b.workspace_id,
    };
    let rec = state
        .tokens
        .identities()
        .create(&caller.actor(), caller.sponsor_chain.as_deref(), req, state.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(rec.view())))
}

/// `?status=&type=&workspaceId=` of the identity list (relayauth's OpenAPI).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    workspace_id: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(f): ApiQuery<FilterQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let (limit, cursor) = page.parse()?;
    let filter = ListFilter::parse(f.status.as_deref(), f.kind.as_deref(), f.workspace_id.as_deref())?;
    let (page, more) = state.tokens.identities().list(&caller.org_id, &filter, cursor.as_deref(), limit);
    let mut body = json!({ "data": page.iter().map(|i| i.view()).collect::<Vec<_>>() });
    if more {
        if let (Some(last), Some(o)) = (page.last(), body.as_object_mut()) {
            o.insert("cursor".into(), last.id.as_str().into());
        }
    }
    Ok(Json(body))
}

/// The identity a path names; text of no id's form names none, and gets the
/// answer an unknown id gets, at the point a lookup would give it.
fn named(id: &str) -> Result<IdentityId, IdentityError> {
    IdentityId::parse(id).ok_or(IdentityError::NotFound)
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let rec = state.tokens.identities().find(&caller.org_id, &named(&id)?).await.ok_or(IdentityError::NotFound)?;
    Ok(Json(rec.view()))
}

/// What relayauth's `updateIdentity` sends. `lastActiveAt`, `budget` and
/// `budgetUsage` are part of relayauth's identity and its server takes them;
/// kmsd tracks no activity and enforces no budgets, so they are checked for
/// shape and ignored. Any other field is refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    metadata: Option<UniqueMap>,
    workspace_id: Option<String>,
    #[serde(rename = "lastActiveAt")]
    _last_active_at: Option<String>,
    #[serde(rename = "budget")]
    _budget: Option<serde_json::Map<String, Value>>,
    #[serde(rename = "budgetUsage")]
    _budget_usage: Option<serde_json::Map<String, Value>>,
}

async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<PatchBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let p = IdentityPatch {
        name: b.name,
        scopes: b.scopes,
        roles: b.roles,
        metadata: b.metadata.map(|m| m.0),
        workspace_id: b.workspace_id,
        kind: b.kind,
    };
    // The body is judged before the identity is looked up, whatever the path names.
    let p = p.check(&caller.scopes)?;
    let rec = state.tokens.identities().patch(&caller.actor(), &named(&id)?, p, state.clock.now()).await?;
    Ok(Json(rec.view()))
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    reason: Option<String>,
}

async fn lifecycle(
    state: AppState,
    caller: Caller,
    id: String,
    to: Transition,
    reason: Option<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let now = state.clock.now();
    let rec = state.tokens.identities().transition(&caller.actor(), &named(&id)?, to, reason, now).await?;
    if !matches!(to, Transition::Reactivate) {
        state.tokens.revoke_sessions_of(&rec.id, now).await?;
    }
    Ok(Json(rec.view()))
}

async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Value>, ApiError> {
    lifecycle(state, caller, id, Transition::Suspend, b.reason).await
}

async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> Result<Json<Value>, ApiError> {
    let b: ReasonBody = if body.is_empty() { ReasonBody::default() } else { super::json::parse(&body)? };
    lifecycle(state, caller, id, Transition::Retire, b.reason).await
}

async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    lifecycle(state, caller, id, Transition::Reactivate, None).await
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGE)?;
    if headers.get("x-confirm-delete").and_then(|v| v.to_str().ok()) != Some("true") {
        return Err(ApiError::new(
            ErrorCode::ConfirmationRequired,
            "send X-Confirm-Delete: true to delete an identity",
        ));
    }
    let now = state.clock.now();
    let rec = state.tokens.identities().delete(&caller.actor(), &named(&id)?, now).await?;
    state.tokens.revoke_sessions_of(&rec.id, now).await?;
    Ok(StatusCode::NO_CONTENT)
}
