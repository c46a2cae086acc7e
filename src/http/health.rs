//! `GET /health` (liveness, exactly `{"status":"ok"}`) and `GET /v1/health`
//! (readiness: storage, backends, and per keyset a signer and how its
//! rotation is going; HTTP 503 when `unhealthy`, 200 for `healthy` and
//! `degraded`, the body the same shape either way). [`evaluate`] is the one
//! readiness evaluation, typed, for every endpoint that reports readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AppState;
use crate::clock::Timestamp;
use crate::storage::StorageHealth;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(live)).route("/v1/health", get(ready))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Healthy,
    /// A key backend is unavailable; tokens are still issued.
    Degraded,
    /// The store is failing or a keyset has no signer.
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// One readiness evaluation: the verdict and what it was made of.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub status: Status,
    pub at: Timestamp,
    pub storage: StorageHealth,
    /// Backend kind -> its status object.
    pub backends: Map<String, Value>,
    /// Keyset name -> its status object.
    pub keysets: Map<String, Value>,
    pub rotation: Value,
}

/// Checks storage (it must work: a read succeeds and no fault is
/// outstanding), every key backend and every keyset's signer.
pub async fn evaluate(state: &AppState) -> Readiness {
    let now = state.clock.now();
    let read_ok = state.store.read(|r| r.meta(crate::storage::META_SCHEMA)).await.is_ok();
    let storage = match state.store.health().await {
        // A read that failed for another reason than a fault (none recorded).
        StorageHealth::Ok if !read_ok => StorageHealth::Failing(crate::storage::Failing {
            class: crate::storage::FaultClass::Io,
            since: now,
            faults: 1,
        }),
        health => health,
    };
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
    let status = if storage != StorageHealth::Ok || !signers_ok {
        Status::Unhealthy
    } else if !backends_ok {
        Status::Degraded
    } else {
        Status::Healthy
    };
    let rotation = json!({ "paused": state.rotation.is_paused(), "failedTicks": state.rotation.failures() });
    Readiness { status, at: now, storage, backends, keysets, rotation }
}

fn storage_json(health: &StorageHealth, reopens: u64) -> Value {
    match health {
        StorageHealth::Ok => json!({ "status": "ok", "reopens": reopens }),
        StorageHealth::Failing(f) => json!({
            "status": "failing",
            "error": f.class.as_str(),
            "since": f.since.to_iso(),
            "faults": f.faults,
            "reopens": reopens,
        }),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    let r = evaluate(&state).await;
    let code = if r.status == Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "status": r.status.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": r.at.to_iso(),
        "services": {
            "storage": storage_json(&r.storage, state.store.reopens()),
            "backends": r.backends,
            "keysets": r.keysets,
            "rotation": r.rotation,
        },
    });
    (code, Json(body)).into_response()
}
