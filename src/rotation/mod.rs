//! Rotation: the reconcile loop and the operator's emergency controls.
//! Background path: `rotation -> keyring -> backend + storage`.
//!
//! Every tick, for every keyset, [`plan::plan`] (pure) says what is due and
//! this module applies it through the key ring, one transaction per action
//! with its audit event. Admin operations (rotate now, revoke, rollback,
//! pause/resume) take the same ring lock as the loop, so exactly one key per
//! keyset is active at every instant, across restarts, crashes and concurrent
//! calls.

mod cron;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub use cron::CronSchedule;
pub use plan::{Action, RollbackError};

use crate::audit::AuditEvent;
use crate::clock::{Clock, Timestamp};
use crate::config::{Keyset, Policy};
use crate::keyring::{KeyRing, RingError, COOLDOWN_MAX_AGE};
use crate::keys::{KeyHandle, KeyRecord, KeysetName, Kid};
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
    policy: Policy,
    schedules: HashMap<KeysetName, CronSchedule>,
    paused: Arc<AtomicBool>,
    failures: AtomicU64,
}

impl Rotation {
    pub async fn start(
        ring: Arc<KeyRing>,
        store: Store,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Result<Self, StorageError> {
        let schedules = ring
            .keysets()
            .iter()
            .filter_map(|k| Some((k.name.clone(), k.schedule.as_deref().and_then(|s| CronSchedule::parse(s).ok())?)))
            .collect();
        let paused = store.read(|r| r.meta(META_PAUSED)).await?.is_some_and(|v| v == b"1");
        Ok(Self {
            ring,
            store,
            clock,
            policy,
            schedules,
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
            let schedule = self.schedules.get(&ks.name);
            for action in plan::plan(now, &refs, schedule, &self.policy.rotation, self.is_paused()) {
                applied.push(self.apply(&ks, &refs, action, now).await?);
            }
            if let (Some(s), false) = (schedule, self.is_paused()) {
                let records = self.records_of(&ks.name);
                let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
                if let Some((publish, _)) = plan::next_rotation(now, &refs, s, &self.policy.rotation) {
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
                let event = AuditEvent::new(now, "scheduler", "key.promote")
                    .target(kid.as_str())
                    .detail(json!({ "keyset": ks.name.as_str() }));
                self.ring.put(vec![k], event).await?;
                Ok(format!("{}: activated waiting key {kid}", ks.name))
            }
            Action::Successor { activate_at } => {
                let lead = self.policy.rotation.publish_lead;
                let kid = self.create_successor(ks, activate_at, lead, "scheduler", "key.rotate").await?;
                Ok(format!("{}: published {kid}, active at {activate_at}", ks.name))
            }
            Action::Destroy { kid } => {
                let mut k = owned(refs, &kid)?;
                if let Some(b) = self.ring.backends().get(k.backend) {
                    b.backend().destroy(&kid).await.map_err(RingError::from)?;
                }
                k.handle = KeyHandle::Destroyed;
                let event = AuditEvent::new(now, "scheduler", "key.destroy")
                    .target(kid.as_str())
                    .detail(json!({ "keyset": ks.name.as_str() }));
                self.ring.put(vec![k], event).await?;
                Ok(format!("{}: destroyed private material of {kid}", ks.name))
            }
        }
    }

    /// Creates the successor of the keyset's active key, active at
    /// `activate_at` but never less than `lead` after it becomes visible,
    /// retiring the current key at that instant. Times are whole seconds and
    /// the key is recorded a fraction of a second after `now` was read, so a
    /// key with a lead is published from the next whole second: verifiers get
    /// the full lead however long key generation took.
    async fn create_successor(
        &self,
        ks: &Keyset,
        activate_at: Timestamp,
        lead: Duration,
        actor: &str,
        action: &str,
    ) -> Result<Kid, RotationError> {
        let records = self.records_of(&ks.name);
        let policy = self.policy.rotation.clone();
        let plan = move |now: Timestamp| {
            let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
            let published = if lead.is_zero() { now } else { now.plus(Duration::from_secs(1)) };
            let at = activate_at.max(published.plus(lead));
            let schedule = plan::successor(published, at);
            (schedule, plan::rotation_updates(&refs, now, at, &policy).unwrap_or_default())
        };
        Ok(self.ring.create_key(ks, plan, action, actor).await?)
    }

    /// Rotates `keyset` now: a new key is published at once and activates after
    /// the publish lead, or at once with `immediate` (verifiers that cached the
    /// JWKS will not know it until they refetch).
    pub async fn rotate_now(&self, keyset: &str, immediate: bool, actor: &str) -> Result<Rotated, RotationError> {
        let ks = self.keyset(keyset)?;
        let _guard = self.ring.lock().await;
        let now = self.clock.now();
        let records = self.records_of(&ks.name);
        let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
        let old = plan::active_and_waiting(&refs, now).0.map(|r| r.kid.clone());
        let activate_at = if immediate { now } else { now.plus(self.policy.rotation.publish_lead) };
        if plan::rotation_updates(&refs, now, activate_at, &self.policy.rotation).is_none() {
            return Err(RotationError::InProgress(ks.name.to_string()));
        }
        let action = if immediate { "key.rotate_immediate" } else { "key.rotate" };
        let lead = if immediate { Duration::ZERO } else { self.policy.rotation.publish_lead };
        let new_kid = self.create_successor(&ks, activate_at, lead, actor, action).await?;
        let new = self.ring.record(new_kid.as_str());
        let old_rec = old.as_ref().and_then(|k| self.ring.record(k.as_str()));
        Ok(Rotated {
            keyset: ks.name,
            new_kid,
            old_kid: old,
            rotated_at: now,
            activates_at: new.map_or(activate_at, |n| n.schedule.activated_at),
            old_key_expires_at: old_rec.and_then(|o| o.schedule.removed_at),
            immediate,
        })
    }

    /// Emergency revoke: the key leaves the JWKS and stops verifying now, is
    /// disabled in its backend, and a replacement signs at once if it was the
    /// signer. The JWKS is served with a short max-age for a cool-down.
    pub async fn revoke(&self, kid: &str, actor: &str) -> Result<Option<Kid>, RotationError> {
        let _guard = self.ring.lock().await;
        let now = self.clock.now();
        let target = self.ring.record(kid).ok_or_else(|| RotationError::UnknownKey(kid.to_owned()))?;
        if target.revoked_at.is_some() {
            return Err(RotationError::AlreadyRevoked(kid.to_owned()));
        }
        let ks = self.keyset(target.keyset.as_str())?;
        let records = self.records_of(&ks.name);
        let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
        let revocation = plan::revoke(&refs, &target.kid, now, &self.policy.rotation)
            .ok_or_else(|| RotationError::AlreadyRevoked(kid.to_owned()))?;
        // Shorten the JWKS max-age first: early is harmless, and it cannot be
        // skipped by this request going away after the revocation commits.
        self.ring.cool_down(self.policy.jwks.max_age_cap.max(COOLDOWN_MAX_AGE) + self.policy.jwks.verifier_cache);
        let replacement = if revocation.needs_replacement {
            let updates = revocation.updates;
            let kid = self
                .ring
                .create_key(&ks, move |at| (crate::keys::Schedule::immediate(at), updates), "key.revoke", actor)
                .await?;
            Some(kid)
        } else {
            let event = AuditEvent::new(now, actor, "key.revoke")
                .target(target.kid.as_str())
                .detail(json!({ "keyset": ks.name.as_str() }));
            self.ring.put(revocation.updates, event).await?;
            self.ring.active(&ks.name, now).map(|r| r.kid.clone())
        };
        if let Some(b) = self.ring.backends().get(target.backend).cloned() {
            let kid = target.kid.clone();
            // A task of its own, so that it finishes even if this request is dropped.
            let disable = tokio::spawn(async move {
                if let Err(e) = b.backend().disable(&kid).await {
                    tracing::error!(kid = %kid, error = %e, "revoked key could not be disabled in its backend; it is refused by kmsd regardless");
                }
            });
            let _ = disable.await;
        }
        Ok(replacement)
    }

    /// Rollback: the previous, still-published key of `keyset` signs again.
    /// Returns (now signing, rolled back).
    pub async fn rollback(&self, keyset: &str, actor: &str) -> Result<(Kid, Kid), RotationError> {
        let ks = self.keyset(keyset)?;
        let _guard = self.ring.lock().await;
        let now = self.clock.now();
        let records = self.records_of(&ks.name);
        let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
        let updates = plan::rollback(&refs, now, &self.policy.rotation)?;
        let (back, away) = (updates[0].kid.clone(), updates[1].kid.clone());
        let event = AuditEvent::new(now, actor, "key.rollback")
            .target(back.as_str())
            .detail(json!({ "keyset": ks.name.as_str(), "rolledBack": away.as_str() }));
        self.ring.put(updates, event).await?;
        Ok((back, away))
    }

    /// Freezes or unfreezes scheduled rotation (persisted, audited).
    pub async fn set_paused(&self, paused: bool, actor: &str) -> Result<(), RotationError> {
        let now = self.clock.now();
        let actor = actor.to_owned();
        let flag = self.paused.clone();
        self.store
            .commit_then_apply(
                move |w| {
                    w.put_meta(META_PAUSED, if paused { b"1" } else { b"0" })?;
                    w.audit(AuditEvent::new(now, actor, if paused { "rotation.pause" } else { "rotation.resume" }))?;
                    Ok::<_, StorageError>(())
                },
                move |()| flag.store(paused, Ordering::Relaxed),
            )
            .await?;
        Ok(())
    }

    /// When `keyset`'s signer next changes: a waiting successor's activation,
    /// else the scheduled rotation's (none while paused or unscheduled). The
    /// same instant as the plan's `activate` / `activate_next_key` event.
    pub fn next_activation(&self, keyset: &KeysetName) -> Option<Timestamp> {
        let now = self.clock.now();
        let records = self.records_of(keyset);
        let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
        if let Some(waiting) = plan::active_and_waiting(&refs, now).1 {
            return Some(waiting.schedule.activated_at);
        }
        let schedule = self.schedules.get(keyset).filter(|_| !self.is_paused())?;
        plan::next_rotation(now, &refs, schedule, &self.policy.rotation).map(|(_, activate)| activate)
    }

    /// The next events of every keyset, earliest first (a dry run).
    pub fn timeline(&self) -> serde_json::Value {
        let now = self.clock.now();
        let mut events: Vec<(Timestamp, serde_json::Value)> = Vec::new();
        for ks in self.ring.keysets() {
            let records = self.records_of(&ks.name);
            for r in &records {
                let s = r.schedule;
                let named = [
                    ("publish", Some(s.published_at)),
                    ("activate", Some(s.activated_at)),
                    ("retire", s.retired_at),
                    ("remove_from_jwks", s.removed_at),
                    ("destroy", s.destroy_at.filter(|_| r.handle != KeyHandle::Destroyed)),
                ];
                for (event, at) in named {
                    if let Some(at) = at.filter(|at| *at > now) {
                        events.push((at, json!({ "at": at.to_iso(), "keyset": ks.name.as_str(), "kid": r.kid.as_str(), "event": event })));
                    }
                }
            }
            let refs: Vec<&KeyRecord> = records.iter().map(AsRef::as_ref).collect();
            let waiting = plan::active_and_waiting(&refs, now).1.is_some();
            if let (Some(s), false, false) = (self.schedules.get(&ks.name), self.is_paused(), waiting) {
                if let Some((publish, activate)) = plan::next_rotation(now, &refs, s, &self.policy.rotation) {
                    events.push((publish, json!({ "at": publish.to_iso(), "keyset": ks.name.as_str(), "kid": null, "event": "publish_next_key" })));
                    events.push((activate, json!({ "at": activate.to_iso(), "keyset": ks.name.as_str(), "kid": null, "event": "activate_next_key" })));
                }
            }
        }
        events.sort_by_key(|(at, _)| *at);
        json!({
            "now": now.to_iso(),
            "paused": self.is_paused(),
            "events": events.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        })
    }
}

/// An owned copy of the record of `kid` among `refs`.
fn owned(refs: &[&KeyRecord], kid: &Kid) -> Result<KeyRecord, RotationError> {
    refs.iter().find(|r| &r.kid == kid).map(|r| (*r).clone()).ok_or(RotationError::UnknownKey(kid.to_string()))
}

/// `kmsd plan`: the timeline the configuration implies, assuming each keyset's
/// current key was activated at `now` (no store needed).
pub fn offline_plan(config: &crate::config::Config, now: Timestamp, rotations: usize) -> String {
    let p = &config.policy;
    let r = &p.rotation;
    let mut out = format!(
        "policy: publish_lead {} | overlap {} | destroy_delay {} | jwks max-age cap {} | access ttl max {} | refresh ttl max {}\n",
        crate::config::render_duration(r.publish_lead),
        crate::config::render_duration(r.overlap),
        crate::config::render_duration(r.destroy_delay),
        crate::config::render_duration(p.jwks.max_age_cap),
        crate::config::render_duration(p.tokens.access_ttl_max),
        crate::config::render_duration(p.tokens.refresh_ttl_max),
    );
    for ks in &config.keysets {
        out.push_str(&format!("\nkeyset {} ({}, {}):\n", ks.name, ks.spec.as_str(), ks.backend.as_str()));
        let Some(schedule) = ks.schedule.as_deref().and_then(|s| CronSchedule::parse(s).ok()) else {
            out.push_str("  no rotation schedule: the key signs until rotated by hand\n");
            continue;
        };
        out.push_str(&format!("  schedule {:?}\n", schedule.as_str()));
        let mut activated = now;
        for n in 1..=rotations {
            let Some(due) = schedule.next_after(activated) else { break };
            let (publish, activate) = plan::rotation_instants(due, now, r.publish_lead);
            let removed = activate.plus(r.overlap);
            out.push_str(&format!(
                "  rotation {n}: publish {publish} -> signs {activate}; previous key leaves JWKS {removed}, destroyed {}\n",
                removed.plus(r.destroy_delay)
            ));
            activated = activate;
        }
    }
    out
}
