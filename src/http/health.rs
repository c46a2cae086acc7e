//! `GET /health` (liveness, exactly `{"status":"ok"}`) and `GET /v1/health`
//! (readiness: storage, backends, and per keyset a signer and how its
//! rotation is going).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(live)).route("/v1/health", get(ready))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Json<Value> {
    let now = state.clock.now();
    let storage_ok = state.store.read(|r| r.meta(crate::storage::META_SCHEMA)).await.is_ok();
    let mut backends = Map::new();
    let mut backends_ok = true;
    for b in state.ring.backends().iter() {
        let status = match b.backend().health().await {
            Ok(()) => json!({ "status": "ok" }),
            Err(e) => {
                backends_ok = false;
                json!({ "status": "unavailable", "transient": e.is_transient() })
            }
        };
        backends.insert(b.backend().kind().as_str().to_owned(), status);
    }
    let mut keysets = Map::new();
    let mut signers_ok = true;
    for ks in state.ring.keysets() {
        let active = state.ring.active(&ks.name, now);
        signers_ok &= active.is_some();
        let rotation = state
            .rotation
            .keyset_status(&ks.name)
            .map(|r| json!({ "status": if r.failing { "failing" } else { "ok" }, "failedTicks": r.failed_ticks }));
        keysets.insert(
            ks.name.to_string(),
            json!({
                "status": if active.is_some() { "ok" } else { "no_active_key" },
                "algorithm": ks.spec.algorithm().as_str(),
                "activeKid": active.map(|r| r.kid.to_string()),
                "rotation": rotation,
            }),
        );
    }
    let status = if !storage_ok || !signers_ok {
        "unhealthy"
    } else if !backends_ok {
        "degraded"
    } else {
        "healthy"
    };
    Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": now.to_iso(),
        "services": {
            "storage": { "status": if storage_ok { "ok" } else { "unavailable" } },
            "backends": backends,
            "keysets": keysets,
            "rotation": { "paused": state.rotation.is_paused(), "failedTicks": state.rotation.failures() },
        },
    }))
}
