//! The admin API (CONTRACT section 7), on the admin listener.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState, Caller};

const ADMIN_MANAGE: &str = "relayauth:admin:manage:*";
const ADMIN_READ: &str = "relayauth:admin:read:*";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/admin/keys", get(list_keys))
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
