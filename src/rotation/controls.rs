//! The operator's controls: rotate now, emergency revoke, rollback, pause
//! and resume. Each takes the ring lock the reconcile loop takes, and makes
//! a new key in the same order the loop does: material, then one commit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::{plan, refs, Rotated, Rotation, RotationError, META_PAUSED};
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::keyring;
use crate::keys::{Keyset, Kid, Schedule};
use crate::storage::StorageError;

impl Rotation {
    /// Creates the successor of the keyset's active key, active at
    /// `activate_at` but never less than `lead` after it becomes visible,
    /// retiring the current key at that instant. Times are whole seconds and
    /// the key is recorded a fraction of a second after `now` was read, so a
    /// key with a lead is published from the next whole second: verifiers get
    /// the full lead however long key generation took.
    pub(super) async fn create_successor(
        &self,
        ks: &Keyset,
        activate_at: Timestamp,
        lead: Duration,
        actor: &str,
        action: AuditAction,
    ) -> Result<Kid, RotationError> {
        let created = self.ring.create_material(ks).await?;
        let now = self.clock.now();
        let records = self.records_of(&ks.name);
        let published = if lead.is_zero() { now } else { now.plus(Duration::from_secs(1)) };
        let at = activate_at.max(published.plus(lead));
        let updates = plan::rotation_updates(&refs(&records), now, at, &self.policy).unwrap_or_default();
        let record = keyring::new_record(ks, created, now, plan::successor(published, at));
        Ok(self.ring.add_key(record, updates, action, actor).await?)
    }

    /// Rotates `keyset` now: a new key is published at once and activates after
    /// the publish lead, or at once with `immediate` (verifiers that cached the
    /// JWKS will not know it until they refetch).
    pub async fn rotate_now(&self, keyset: &str, immediate: bool, actor: &str) -> Result<Rotated, RotationError> {
        let ks = self.keyset(keyset)?;
        let _guard = self.ring.lock().await;
        let now = self.clock.now();
        let records = self.records_of(&ks.name);
        let refs = refs(&records);
        let old = plan::active_and_waiting(&refs, now).0.map(|r| r.kid.clone());
        let activate_at = if immediate { now } else { now.plus(self.policy.publish_lead) };
        if plan::rotation_updates(&refs, now, activate_at, &self.policy).is_none() {
            return Err(RotationError::InProgress(ks.name.to_string()));
        }
        let action = if immediate { AuditAction::KeyRotateImmediate } else { AuditAction::KeyRotate };
        let lead = if immediate { Duration::ZERO } else { self.policy.publish_lead };
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
        let revocation = plan::revoke(&refs(&records), &target.kid, now, &self.policy)
            .ok_or_else(|| RotationError::AlreadyRevoked(kid.to_owned()))?;
        // Shorten the JWKS max-age first: early is harmless, and it cannot be
        // skipped by this request going away after the revocation commits.
        self.ring.cool_down(self.cool_down_period());
        let replacement = if revocation.needs_replacement {
            let created = self.ring.create_material(&ks).await?;
            let at = self.clock.now();
            let record = keyring::new_record(&ks, created, at, Schedule::immediate(at));
            Some(self.ring.add_key(record, revocation.updates, AuditAction::KeyRevoke, actor).await?)
        } else {
            let event = AuditEvent::new(now, actor, AuditAction::KeyRevoke)
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
        let updates = plan::rollback(&refs(&records), now, &self.policy)?;
        let (back, away) = (updates[0].kid.clone(), updates[1].kid.clone());
        let event = AuditEvent::new(now, actor, AuditAction::KeyRollback)
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
                    w.audit(AuditEvent::new(
                        now,
                        actor,
                        if paused { AuditAction::RotationPause } else { AuditAction::RotationResume },
                    ))?;
                    Ok::<_, StorageError>(())
                },
                move |()| flag.store(paused, Ordering::Relaxed),
            )
            .await?;
        Ok(())
    }
}
