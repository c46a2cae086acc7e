//! The reconcile loop: every tick, for every keyset, what [`plan::plan`]
//! says is due, applied.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{owned, plan, Action, Rotation, RotationError};
use crate::audit::AuditEvent;
use crate::clock::Timestamp;
use crate::keyring::RingError;
use crate::keys::{KeyHandle, KeyRecord, Keyset};

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
            if let Err(e) = self.tick().await {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "rotation tick failed; will retry");
            }
        }
    }

    /// Plans and applies what is due now for every keyset.
    pub async fn tick(&self) -> Result<Vec<String>, RotationError> {
        let _guard = self.ring.lock().await;
        let mut applied = Vec::new();
        let mut next_publication: Option<Timestamp> = None;
        for ks in self.ring.keysets().to_vec() {
            let now = self.clock.now();
            let records = self.records_of(&ks.name);
            let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
            let schedule = ks.schedule.as_ref();
            for action in plan::plan(now, &refs, schedule, &self.policy, self.is_paused()) {
                applied.push(self.apply(&ks, &refs, action, now).await?);
            }
            if let (Some(s), false) = (schedule, self.is_paused()) {
                let records = self.records_of(&ks.name);
                let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
                if let Some((publish, _)) = plan::next_rotation(now, &refs, s, &self.policy) {
                    next_publication = Some(next_publication.map_or(publish, |p| p.min(publish)));
                }
            }
        }
        self.ring.plan_publication(next_publication);
        Ok(applied)
    }

    async fn apply(
        &self,
        ks: &Keyset,
        refs: &[&KeyRecord],
        action: Action,
        now: Timestamp,
    ) -> Result<String, RotationError> {
        match action {
            Action::Initial => {
                let kid = self
                    .ring
                    .create_key(ks, |at| (crate::keys::Schedule::immediate(at), Vec::new()), "key.create", "scheduler")
                    .await?;
                Ok(format!("{}: created {kid} (active now)", ks.name))
            }
            Action::Promote { kid } => {
                let mut k = owned(refs, &kid)?;
                k.schedule.activated_at = now;
                self.ring.put(vec![k], AuditEvent::new(now, "scheduler", "key.promote").target(kid.as_str())).await?;
                Ok(format!("{}: activated waiting key {kid}", ks.name))
            }
            Action::Successor { activate_at } => {
                let lead = self.policy.publish_lead;
                let kid = self.create_successor(ks, activate_at, lead, "scheduler", "key.rotate").await?;
                Ok(format!("{}: published {kid}, active at {activate_at}", ks.name))
            }
            Action::Destroy { kid } => {
                let mut k = owned(refs, &kid)?;
                if let Some(b) = self.ring.backends().get(k.backend) {
                    b.backend().destroy(&kid).await.map_err(RingError::from)?;
                }
                k.handle = KeyHandle::Destroyed;
                let event = AuditEvent::new(now, "scheduler", "key.destroy").target(kid.as_str());
                self.ring.put(vec![k], event).await?;
                Ok(format!("{}: destroyed private material of {kid}", ks.name))
            }
        }
    }

}
