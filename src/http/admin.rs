//! The admin API (CONTRACT section 7), on the admin listener.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{ApiPath, ApiQuery};
use super::{query_number, ApiError, AppState, Caller, ErrorCode};
use std::sync::Arc;

use crate::keys::KeysetName;
use crate::migration::Migration;
use crate::rotation::Timeline;
use crate::storage::StorageError;

const ADMIN_MANAGE: &str = "relayauth:admin:manage:*";
const ADMIN_READ: &str = "relayauth:admin:read:*";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/keys", get(list_keys))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/audit/verify", get(audit_verify))
        .route("/v1/admin/keys/rotate", post(rotate))
        .route("/v1/admin/keys/rollback", post(rollback))
        .route("/v1/admin/keys/{kid}/revoke", post(revoke_key))
        .route("/v1/admin/rotation/pause", post(pause))
        .route("/v1/admin/rotation/resume", post(resume))
        .route("/v1/admin/rotation/plan", get(rotation_plan))
        .route("/v1/admin/migration", get(migration_status).post(migration_act))
        .route("/metrics", get(super::metrics::scrape))
}

/// `GET /v1/admin/keys`: every key version, relayauth's fields plus ours.
async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[ADMIN_READ, ADMIN_MANAGE])?;
    let now = state.clock.now();
    let iso = |t: Option<crate::clock::Timestamp>| t.map(|t| t.to_iso());
    let mut records = state.ring.records().as_ref().clone();
    records.sort_by(|a, b| (a.keyset.as_str(), a.created_at).cmp(&(b.keyset.as_str(), b.created_at)));
    let keys: Vec<Value> = records
        .iter()
        .map(|r| {
            let state = r.state_at(now);
            let s = &r.schedule;
            json!({
                "keyId": r.kid.as_str(),
                "algorithm": r.algorithm().as_str(),
                "status": state.relayauth_status(),
                "createdAt": r.created_at.to_iso(),
                "expiresAt": iso(s.removed_at),
                "state": state.as_str(),
                "keyset": r.keyset.as_str(),
                "keySpec": r.spec.as_str(),
                "backend": r.backend.as_str(),
                "publishedAt": s.published_at.to_iso(),
                "activatedAt": s.activated_at.to_iso(),
                "retiredAt": iso(s.retired_at),
                "removeAt": iso(s.removed_at),
                "destroyAt": iso(s.destroy_at),
                "revokedAt": iso(r.revoked_at),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/admin/audit?after=&limit=`: entries with `seq > after`, oldest first.
async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[ADMIN_READ, ADMIN_MANAGE])?;
    let after = query_number(q.after.as_deref(), "after", 0, 0..=u64::MAX)?;
    let limit = query_number(q.limit.as_deref(), "limit", 100, 1..=1000)? as usize;
    let entries =
        state.store.read(move |r| r.audit(after, limit)).await.map_err(|e: StorageError| ApiError::from(e))?;
    let next = entries.last().map_or(after, |e| e.seq);
    let events: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": e.event.at.to_iso(),
                "actor": e.event.actor,
                "action": e.event.action,
                "target": e.event.target,
                "detail": e.event.detail,
                "requestId": e.event.request_id,
                "client": e.event.client,
                "prevHash": e.prev_hash,
                "hash": e.hash,
            })
        })
        .collect();
    Ok(Json(json!({ "events": events, "next": next })))
}

/// `GET /v1/admin/audit/verify`: recomputes the whole chain in the daemon
/// (what `kmsd audit verify` asks for when the store is in use).
async fn audit_verify(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[ADMIN_READ, ADMIN_MANAGE])?;
    let verified = state.store.read(|r| r.verify_audit()).await.map_err(ApiError::from)?;
    Ok(Json(match verified {
        Ok(entries) => json!({ "intact": true, "entries": entries }),
        Err(crate::audit::ChainError::Broken { seq, reason }) => {
            json!({ "intact": false, "brokenAt": seq, "reason": reason })
        }
    }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateBody {
    keyset: Option<String>,
    #[serde(default)]
    immediate: bool,
}

/// An optional JSON body: empty means all defaults.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        super::json::parse(bytes)
    }
}

const DEFAULT_KEYSET: &str = "access";

/// `POST /v1/admin/keys/rotate {keyset?, immediate?}`.
async fn rotate(State(state): State<AppState>, caller: Caller, body: Bytes) -> Result<Json<Value>, ApiError> {
    caller.require(ADMIN_MANAGE)?;
    let b: RotateBody = optional_body(&body)?;
    let keyset = b.keyset.unwrap_or_else(|| DEFAULT_KEYSET.into());
    let r = state.rotation.rotate_now(&keyset, b.immediate, &caller.id).await?;
    let mut v = json!({
        "newKeyId": r.new_kid.as_str(),
        "oldKeyId": r.old_kid.as_ref().map(|k| k.as_str()),
        "rotatedAt": r.rotated_at.to_iso(),
        "oldKeyExpiresAt": r.old_key_expires_at.map(|t| t.to_iso()),
        "keyset": r.keyset.as_str(),
        "activatesAt": r.activates_at.to_iso(),
        "immediate": r.immediate,
    });
    if r.immediate {
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "warning".into(),
                "immediate rotation skipped the publish lead: verifiers that cached the JWKS reject the new key's tokens until they refetch".into(),
            );
        }
    }
    Ok(Json(v))
}

/// `POST /v1/admin/keys/{kid}/revoke`: emergency revoke.
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(ADMIN_MANAGE)?;
    let replacement = state.rotation.revoke(&kid, &caller.id).await?;
    Ok(Json(json!({
        "revokedKeyId": kid,
        "revokedAt": state.clock.now().to_iso(),
        "replacementKeyId": replacement.as_ref().map(|k| k.as_str()),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    keyset: Option<String>,
}

/// `POST /v1/admin/keys/rollback {keyset?}`.
async fn rollback(State(state): State<AppState>, caller: Caller, body: Bytes) -> Result<Json<Value>, ApiError> {
    caller.require(ADMIN_MANAGE)?;
    let b: RollbackBody = optional_body(&body)?;
    let keyset = b.keyset.unwrap_or_else(|| DEFAULT_KEYSET.into());
    let (back, away) = state.rotation.rollback(&keyset, &caller.id).await?;
    Ok(Json(json!({ "keyset": keyset, "keyId": back.as_str(), "rolledBackKeyId": away.as_str() })))
}

async fn pause(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(ADMIN_MANAGE)?;
    state.rotation.set_paused(true, &caller.id).await?;
    Ok(Json(json!({ "paused": true })))
}

async fn resume(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(ADMIN_MANAGE)?;
    state.rotation.set_paused(false, &caller.id).await?;
    Ok(Json(json!({ "paused": false })))
}

/// `GET /v1/admin/rotation/plan`: the next scheduled events (dry run).
async fn rotation_plan(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[ADMIN_READ, ADMIN_MANAGE])?;
    Ok(Json(timeline_json(&state.rotation.timeline())))
}

fn timeline_json(t: &Timeline) -> Value {
    let events: Vec<Value> = t
        .events
        .iter()
        .map(|e| {
            json!({ "at": e.at.to_iso(), "keyset": e.keyset.as_str(), "kid": e.kid.as_ref().map(|k| k.as_str()), "event": e.kind.as_str() })
        })
        .collect();
    json!({ "now": t.now.to_iso(), "paused": t.paused, "events": events })
}

fn migration(state: &AppState) -> Result<Arc<Migration>, ApiError> {
    state.tokens.migration().cloned().ok_or_else(|| {
        ApiError::new(ErrorCode::MigrationDisabled, "no HS256 migration is configured ([migration] enabled)")
    })
}

/// `GET /v1/admin/migration`: phase, instants and HS256 verification counts.
async fn migration_status(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[ADMIN_READ, ADMIN_MANAGE])?;
    Ok(Json(migration(&state)?.status().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationBody {
    action: String,
}

/// `POST /v1/admin/migration {action: advance | rollback | sunset}`.
async fn migration_act(
    State(state): State<AppState>,
    caller: Caller,
    super::json::ApiJson(b): super::json::ApiJson<MigrationBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(ADMIN_MANAGE)?;
    let m = migration(&state)?;
    let result = match b.action.as_str() {
        "advance" => {
            let now = state.clock.now();
            // HS256 tokens are replaced by RS256 ones: their keyset's signer.
            let keyset = &state.config.policy.tokens.keysets.rs256;
            let published = KeysetName::parse(keyset)
                .ok()
                .and_then(|k| state.ring.active(&k, now))
                .map(|k| k.schedule.published_at);
            m.advance(published, &caller.id).await
        }
        "rollback" => m.rollback(&caller.id).await,
        "sunset" => m.sunset_now(&caller.id).await,
        other => {
            return Err(ApiError::invalid_request(format!("unknown action {other:?} (advance, rollback or sunset)")))
        }
    };
    result?;
    Ok(Json(m.status().await?))
}
