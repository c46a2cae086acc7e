//! Health, in one evaluation ([`evaluate`]) that every probe reads:
//! - `GET /health`: exactly `{"status":"ok"}` (relayauth's liveness).
//! - `GET /livez`: 200 while the process serves HTTP at all.
//! - `GET /readyz`: 200 when kmsd can do its job (the store answers, every
//!   keyset has a key that signs now, the vault is unlocked), else 503; the
//!   body names what is wrong. An unreachable AWS KMS is `degraded`, still
//!   ready: JWKS and introspection keep working from memory.
//! - `GET /v1/health`: the relayauth body with every service's status
//!   (storage `ok`, or `failing` with what happened; per keyset its signer and
//!   how its rotation is going); 503 when `unhealthy`, the same body shape.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AppState;
use crate::keys::BackendKind;
use crate::storage::StorageHealth;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(live))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v1/health", get(ready))
}

/// How healthy kmsd is, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Cannot serve its purpose (store, a signer, the vault).
    Unhealthy,
    /// Serves, with a backend unreachable.
    Degraded,
    Healthy,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unhealthy => "unhealthy",
            Self::Degraded => "degraded",
            Self::Healthy => "healthy",
        }
    }

    /// Whether a load balancer should send requests here.
    pub const fn is_ready(self) -> bool {
        !matches!(self, Self::Unhealthy)
    }
}

/// The outcome of one health evaluation.
#[derive(Debug)]
pub struct Health {
    pub status: Status,
    pub storage: StorageHealth,
    pub storage_ok: bool,
    pub vault_ok: bool,
    /// Keysets without a key that signs now.
    pub keysets_without_signer: Vec<String>,
    /// The relayauth `services` object.
    pub services: Value,
}

/// Checks the store (it must work: a read succeeds and no fault is
/// outstanding), every backend and every keyset's signer.
pub async fn evaluate(state: &AppState) -> Health {
    let now = state.clock.now();
    let read_ok = state.store.read(|r| r.meta(crate::storage::META_SCHEMA)).await.is_ok();
    let storage = match state.store.health().await {
        // A read that failed for another reason than a fault (none recorded).
        StorageHealth::Ok if !read_ok => StorageHealth::Failing(crate::storage::Failing {
            class: if state.store.is_shared() {
                crate::storage::FaultClass::Database
            } else {
                crate::storage::FaultClass::Io
            },
            since: now,
            faults: 1,
        }),
        health => health,
    };
    let storage_ok = storage == StorageHealth::Ok;
    let mut backends = Map::new();
    let (mut backends_ok, mut vault_ok) = (true, false);
    for b in state.ring.backends().iter() {
        let kind = b.backend().kind();
        let status = match b.backend().health().await {
            Ok(()) => {
                vault_ok |= kind == BackendKind::Vault;
                json!({ "status": "ok" })
            }
            Err(e) => {
                backends_ok = false;
                json!({ "status": "unavailable", "transient": e.is_transient() })
            }
        };
        backends.insert(kind.as_str().to_owned(), status);
    }
    let mut keysets = Map::new();
    let mut without = Vec::new();
    for ks in state.ring.keysets() {
        let active = state.ring.active(&ks.name, now);
        if active.is_none() {
            without.push(ks.name.to_string());
        }
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
    let status = if !storage_ok || !without.is_empty() || !vault_ok {
        Status::Unhealthy
    } else if !backends_ok {
        Status::Degraded
    } else {
        Status::Healthy
    };
    let mut services = json!({
        "storage": storage_json(&storage, state.store.engine_name(), state.store.reopens()),
        "backends": backends,
        "keysets": keysets,
        "rotation": { "paused": state.rotation.is_paused(), "failedTicks": state.rotation.failures() },
    });
    if let Some(replica) = state.leadership.replica() {
        services["ha"] = ha_json(state, replica).await;
    }
    Health { status, storage, storage_ok, vault_ok, keysets_without_signer: without, services }
}

/// Which replica this is, whether it leads, and which replica the lease
/// names as leader (`null` while none holds it, or the store cannot say).
async fn ha_json(state: &AppState, replica: &str) -> Value {
    let holder = state.store.read(|r| r.lease_holder(crate::ha::LEADER_LEASE)).await.ok().flatten();
    json!({
        "replica": replica,
        "leading": state.leadership.leads(),
        "leader": holder.as_ref().map(|(name, _)| name),
        "epoch": holder.map(|(_, epoch)| epoch),
    })
}

fn storage_json(health: &StorageHealth, engine: &str, reopens: u64) -> Value {
    match health {
        StorageHealth::Ok => json!({ "status": "ok", "engine": engine, "reopens": reopens }),
        StorageHealth::Failing(f) => json!({
            "status": "failing",
            "engine": engine,
            "error": f.class.as_str(),
            "since": f.since.to_iso(),
            "faults": f.faults,
            "reopens": reopens,
        }),
    }
}

fn code(status: Status) -> StatusCode {
    if status.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let h = evaluate(&state).await;
    let body = json!({
        "status": if h.status.is_ready() { "ready" } else { "not_ready" },
        "checks": {
            "storage": if h.storage_ok { "ok" } else { "failing" },
            "vault": if h.vault_ok { "unlocked" } else { "unavailable" },
            "signers": if h.keysets_without_signer.is_empty() { "ok" } else { "missing" },
        },
        "keysetsWithoutSigner": h.keysets_without_signer,
    });
    (code(h.status), Json(body))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let h = evaluate(&state).await;
    let body = json!({
        "status": h.status.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": state.clock.now().to_iso(),
        "services": h.services,
    });
    (code(h.status), Json(body))
}
