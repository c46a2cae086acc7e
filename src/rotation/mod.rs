//! Rotation: the reconcile loop and the operator's emergency controls.
//! Background path: `rotation -> keyring -> backend + storage`.
//!
//! Every tick, for every keyset on its own, [`plan::plan`] (pure) says what
//! is due and [`scheduler`] applies it in one order: plan, create material in
//! the backend, commit (records and audit event in one transaction), apply to
//! memory. One keyset's failure is counted and reported for that keyset
//! ([`Rotation::keyset_status`], shown by health) and never stops another's.
//! Admin operations ([`controls`]: rotate now, revoke, rollback,
//! pause/resume) take the same ring lock as the loop, so exactly one key per
//! keyset is active at every instant, across restarts, crashes and concurrent
//! calls. [`timeline`] is the dry run, as typed events.

mod controls;
pub mod plan;
mod policy;
mod scheduler;
mod timeline;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use plan::{Action, RollbackError};
pub use policy::RotationPolicy;
pub use scheduler::{KeysetStatus, Tick};
pub use timeline::{EventKind, Timeline, TimelineEvent};

use crate::clock::{Clock, Timestamp};
use crate::jwks::JwksPolicy;
use crate::keyring::{KeyRing, RingError};
use crate::keys::{KeyRecord, Keyset, KeysetName, Kid};
use crate::storage::{StorageError, Store};

pub(crate) const META_PAUSED: &str = "rotation_paused";

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
    /// Ticks in which some keyset failed.
    failures: AtomicU64,
    /// Per declared keyset: its failed ticks, and whether its last one failed.
    keysets: HashMap<KeysetName, scheduler::Failures>,
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
        let keysets = ring.keysets().iter().map(|k| (k.name.clone(), scheduler::Failures::default())).collect();
        Ok(Self {
            ring,
            store,
            clock,
            policy,
            jwks,
            paused: Arc::new(AtomicBool::new(paused)),
            failures: AtomicU64::new(0),
            keysets,
        })
    }

    /// Takes in the stored pause flag (another replica paused or resumed).
    pub async fn reload_paused(&self) -> Result<(), StorageError> {
        let flag = self.paused.clone();
        self.store
            .read_then_apply(
                |r| r.meta(META_PAUSED),
                move |v| flag.store(v.as_deref() == Some(b"1"), Ordering::Relaxed),
            )
            .await?;
        Ok(())
    }

    /// Takes in the stored keys (another replica rotated, revoked or rolled
    /// back): the ring reloads under the ring lock, so no plan of this
    /// process is made from one state and written after the reload; a key
    /// revoked meanwhile starts the JWKS cool-down here too. Returns whether
    /// anything changed.
    pub async fn follow_keys(&self) -> Result<bool, RingError> {
        let _guard = self.ring.lock().await;
        let revoked = |ring: &KeyRing| -> Vec<Kid> {
            ring.records().iter().filter(|r| r.revoked_at.is_some()).map(|r| r.kid.clone()).collect()
        };
        let before = revoked(&self.ring);
        let changed = self.ring.resync().await?;
        if revoked(&self.ring).iter().any(|kid| !before.contains(kid)) {
            self.ring.cool_down(self.cool_down_period());
        }
        Ok(changed)
    }

    /// How long the JWKS is served with a short max-age after a revoke.
    fn cool_down_period(&self) -> Duration {
        self.jwks.max_age_cap.max(crate::keyring::COOLDOWN_MAX_AGE) + self.jwks.verifier_cache
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Ticks in which some keyset failed to apply an action (reported by health).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How the rotation of `keyset` is going; `None` for a keyset not declared.
    pub fn keyset_status(&self, keyset: &KeysetName) -> Option<KeysetStatus> {
        self.keysets.get(keyset).map(scheduler::Failures::status)
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

/// The records as the pure [`plan`] functions take them.
fn refs(records: &[Arc<KeyRecord>]) -> Vec<&KeyRecord> {
    records.iter().map(AsRef::as_ref).collect()
}

/// An owned copy of the record of `kid` among `records`.
fn owned(records: &[Arc<KeyRecord>], kid: &Kid) -> Result<KeyRecord, RotationError> {
    records
        .iter()
        .find(|r| &r.kid == kid)
        .map(|r| KeyRecord::clone(r))
        .ok_or(RotationError::UnknownKey(kid.to_string()))
}

#[cfg(test)]
mod tests;
