//! The admin API (CONTRACT section 7), on the admin listener.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{query_number, ApiError, AppState, Caller};
use crate::storage::StorageError;

const ADMIN_MANAGE: &str = "relayauth:admin:manage:*";
const ADMIN_READ: &str = "relayauth:admin:read:*";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/keys", get(list_keys))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/audit/verify", get(audit_verify))
        .route("/metrics", get(metrics))
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
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&[ADMIN_READ, ADMIN_MANAGE])?;
    let after = query_number(q.after.as_deref(), "after", 0, 0..=u64::MAX)?;
    let limit = query_number(q.limit.as_deref(), "limit", 100, 1..=1000)? as usize;
    let entries =
        state.store.read(move |r| r.audit(after, limit)).await.map_err(|e: StorageError| ApiError::internal(&e))?;
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
    let rows = state.store.read(|r| r.audit_rows(0, usize::MAX)).await.map_err(|e| ApiError::internal(&e))?;
    Ok(Json(match crate::audit::verify_chain(rows) {
        Ok(entries) => json!({ "intact": true, "entries": entries }),
        Err(crate::audit::ChainError::Broken { seq, reason }) => {
            json!({ "intact": false, "brokenAt": seq, "reason": reason })
        }
    }))
}

/// `GET /metrics`: Prometheus text format. Unauthenticated, like most metrics
/// endpoints; it lives on the admin listener, which stays private.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let lookups = state.api_keys.store_lookups();
    let body = state.metrics.render(&[(
        "kmsd_api_key_store_lookups_total",
        "API key lookups that reached the store.",
        lookups,
    )]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
