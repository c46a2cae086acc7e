//! The reconcile loop: every tick, for every keyset on its own, what
//! [`plan::plan`] says is due, applied in one order: plan, create material
//! in the backend, commit, apply to memory. A keyset whose backend fails is
//! counted as failing and retried next tick; the other keysets go on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{owned, plan, refs, Action, Rotation, RotationError};
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::keyring::{self, RingError};
use crate::keys::{KeyHandle, KeyRecord, Keyset, KeysetName, Schedule};

/// What one tick did: the actions applied, and each keyset that failed.
#[derive(Debug, Default)]
pub struct Tick {
    pub applied: Vec<String>,
    pub failed: Vec<(KeysetName, RotationError)>,
}

/// How the rotation of one keyset is going (health's per-keyset `rotation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysetStatus {
    /// The last tick failed for this keyset.
    pub failing: bool,
    /// Ticks that failed for this keyset since startup.
    pub failed_ticks: u64,
}

/// The failure counters of one keyset.
#[derive(Debug, Default)]
pub(super) struct Failures {
    failing: AtomicBool,
    ticks: AtomicU64,
}

impl Failures {
    fn record(&self, failed: bool) {
        self.failing.store(failed, Ordering::Relaxed);
        if failed {
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn status(&self) -> KeysetStatus {
        KeysetStatus { failing: self.failing.load(Ordering::Relaxed), failed_ticks: self.ticks.load(Ordering::Relaxed) }
    }
}

impl Rotation {
    /// Runs [`tick`](Self::tick) every `every` until `shutdown` fires.
    pub async fn run(self: Arc<Self>, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            self.tick().await;
        }
    }

    /// Plans and applies what is due now, keyset by keyset; a keyset that
    /// fails is logged, counted and reported, and the next one goes on.
    pub async fn tick(&self) -> Tick {
        let _guard = self.ring.lock().await;
        let mut tick = Tick::default();
        let mut next_publication: Option<Timestamp> = None;
        for ks in self.ring.keysets().to_vec() {
            let result = self.reconcile(&ks, &mut tick.applied).await;
            if let Some(failures) = self.keysets.get(&ks.name) {
                failures.record(result.is_err());
            }
            if let Err(e) = result {
                tracing::error!(keyset = %ks.name, error = %e, "rotation of keyset failed; will retry");
                tick.failed.push((ks.name.clone(), e));
            }
            if let Some(publish) = self.next_publication(&ks) {
                next_publication = Some(next_publication.map_or(publish, |p| p.min(publish)));
            }
        }
        if !tick.failed.is_empty() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.ring.plan_publication(next_publication);
        tick
    }

    /// One keyset: plan at `now`, then each action in turn.
    async fn reconcile(&self, ks: &Keyset, applied: &mut Vec<String>) -> Result<(), RotationError> {
        let now = self.clock.now();
        let records = self.records_of(&ks.name);
        for action in plan::plan(now, &refs(&records), ks.schedule.as_ref(), &self.policy, self.is_paused()) {
            applied.push(self.apply(ks, &records, action, now).await?);
        }
        Ok(())
    }

    /// When the keyset's next scheduled key is published, if rotation runs.
    fn next_publication(&self, ks: &Keyset) -> Option<Timestamp> {
        let schedule = ks.schedule.as_ref().filter(|_| !self.is_paused())?;
        let records = self.records_of(&ks.name);
        plan::next_rotation(self.clock.now(), &refs(&records), schedule, &self.policy).map(|(publish, _)| publish)
    }

    async fn apply(
        &self,
        ks: &Keyset,
        records: &[Arc<KeyRecord>],
        action: Action,
        now: Timestamp,
    ) -> Result<String, RotationError> {
        match action {
            Action::Initial => {
                let created = self.ring.create_material(ks).await?;
                let at = self.clock.now();
                let record = keyring::new_record(ks, created, at, Schedule::immediate(at));
                let kid = self.ring.add_key(record, Vec::new(), AuditAction::KeyCreate, "scheduler").await?;
                Ok(format!("{}: created {kid} (active now)", ks.name))
            }
            Action::Promote { kid } => {
                let mut k = owned(records, &kid)?;
                k.schedule.activated_at = now;
                let event = AuditEvent::new(now, "scheduler", AuditAction::KeyPromote)
                    .target(kid.as_str())
                    .detail(serde_json::json!({ "keyset": ks.name.as_str() }));
                self.ring.put(vec![k], event).await?;
                Ok(format!("{}: activated waiting key {kid}", ks.name))
            }
            Action::Successor { activate_at } => {
                let lead = self.policy.publish_lead;
                let kid = self.create_successor(ks, activate_at, lead, "scheduler", AuditAction::KeyRotate).await?;
                Ok(format!("{}: published {kid}, active at {activate_at}", ks.name))
            }
            Action::Destroy { kid } => {
                let mut k = owned(records, &kid)?;
                if let Some(b) = self.ring.backends().get(k.backend) {
                    b.backend().destroy(&kid).await.map_err(RingError::from)?;
                }
                k.handle = KeyHandle::Destroyed;
                let event = AuditEvent::new(now, "scheduler", AuditAction::KeyDestroy)
                    .target(kid.as_str())
                    .detail(serde_json::json!({ "keyset": ks.name.as_str() }));
                self.ring.put(vec![k], event).await?;
                Ok(format!("{}: destroyed private material of {kid}", ks.name))
            }
        }
    }
}
