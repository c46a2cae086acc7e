//! Rotation: the reconcile loop and the operator's emergency controls.
//! Background path: `rotation -> keyring -> backend + storage`.
//!
//! Every tick, for every keyset, [`plan::plan`] (pure) says what is due and
//! this module applies it through the key ring, one transaction per action
//! with its audit event. Admin operations (rotate now, revoke, rollback,
//! pause/resume) take the same ring lock as the loop, so exactly one key per
//! keyset is active at every instant, across restarts, crashes and concurrent
//! calls.

mod controls;
pub mod plan;
mod policy;
mod scheduler;
mod timeline;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub use plan::{Action, RollbackError};
pub use policy::RotationPolicy;

use crate::audit::AuditEvent;
use crate::clock::{Clock, Timestamp};
use crate::jwks::JwksPolicy;
use crate::keyring::{KeyRing, RingError, COOLDOWN_MAX_AGE};
use crate::keys::{KeyHandle, KeyRecord, Keyset, KeysetName, Kid};
use crate::storage::{StorageError, Store};

const META_PAUSED: &str = "rotation_paused";

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("no keyset named {0}")]
    UnknownKeyset(String),
    #[error("no key {0}")]
    UnknownKey(String),
    #[error("key {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("a successor of keyset {0} is already waiting to activate")]
    InProgress(String),
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub keyset: KeysetName,
    pub new_kid: Kid,
    pub old_kid: Option<Kid>,
    pub rotated_at: Timestamp,
    pub activates_at: Timestamp,
    pub old_key_expires_at: Option<Timestamp>,
    pub immediate: bool,
}

pub struct Rotation {
    ring: Arc<KeyRing>,
    store: Store,
    clock: Arc<dyn Clock>,
    policy: RotationPolicy,
    jwks: JwksPolicy,
    paused: Arc<AtomicBool>,
    failures: AtomicU64,
}

impl Rotation {
    pub async fn start(
        ring: Arc<KeyRing>,
        store: Store,
        clock: Arc<dyn Clock>,
        policy: RotationPolicy,
        jwks: JwksPolicy,
    ) -> Result<Self, StorageError> {
        let paused = store.read(|r| r.meta(META_PAUSED)).await?.is_some_and(|v| v == b"1");
        Ok(Self {
            ring,
            store,
            clock,
            policy,
            jwks,
            paused: Arc::new(AtomicBool::new(paused)),
            failures: AtomicU64::new(0),
        })
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Ticks that failed to apply an action (reported by health).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn keyset(&self, name: &str) -> Result<Keyset, RotationError> {
        self.ring
            .keysets()
            .iter()
            .find(|k| k.name.as_str() == name)
            .cloned()
            .ok_or_else(|| RotationError::UnknownKeyset(name.to_owned()))
    }

    fn records_of(&self, keyset: &KeysetName) -> Vec<Arc<KeyRecord>> {
        self.ring.records().iter().filter(|r| &r.keyset == keyset).cloned().collect()
    }

}

/// An owned copy of the record of `kid` among `refs`.
fn owned(refs: &[&KeyRecord], kid: &Kid) -> Result<KeyRecord, RotationError> {
    refs.iter().find(|r| &r.kid == kid).map(|r| (*r).clone()).ok_or(RotationError::UnknownKey(kid.to_string()))
}

#[cfg(test)]
mod tests;
