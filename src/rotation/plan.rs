//! The pure heart of rotation: given the time, one keyset's key versions, its
//! schedule and the policy, what must happen now. No I/O, no clock: the
//! reconcile loop calls [`plan`] every tick and applies what it returns, so
//! after downtime it catches up and after a crash it converges.

use super::policy::RotationPolicy;
use crate::clock::Timestamp;
use crate::keys::CronSchedule;
use crate::keys::{KeyHandle, KeyRecord, KeyState, Kid, Schedule};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No key signs and none is waiting: create one, active at once.
    Initial,
    /// A successor is already published but nothing is active: activate it now.
    Promote { kid: Kid },
    /// Publish the next key now, to activate at `activate_at`; the current key
    /// retires then.
    Successor { activate_at: Timestamp },
    /// Destroy private material whose time has come.
    Destroy { kid: Kid },
}

/// What is due for one keyset at `now`. `records` are the keyset's versions.
pub fn plan(
    now: Timestamp,
    records: &[&KeyRecord],
    schedule: Option<&CronSchedule>,
    policy: &RotationPolicy,
    paused: bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    match active_and_waiting(records, now) {
        (None, None) => actions.push(Action::Initial),
        (None, Some(w)) => actions.push(Action::Promote { kid: w.kid.clone() }),
        (Some(_), None) if !paused => {
            // The same instants the JWKS max-age and the admin timeline promise.
            if let Some((publish, activate_at)) = schedule.and_then(|s| next_rotation(now, records, s, policy)) {
                if publish <= now {
                    actions.push(Action::Successor { activate_at });
                }
            }
        }
        _ => {}
    }
    for r in records {
        let due = r.schedule.destroy_at.is_some_and(|d| d <= now);
        if due && r.handle != KeyHandle::Destroyed {
            actions.push(Action::Destroy { kid: r.kid.clone() });
        }
    }
    actions
}

/// The latest activation among the keyset's keys: the cadence counts from
/// the last rotation, so a rollback does not make the next one due at once.
fn last_activation(records: &[&KeyRecord]) -> Timestamp {
    records
        .iter()
        .filter(|r| r.revoked_at.is_none())
        .map(|r| r.schedule.activated_at)
        .max()
        .unwrap_or(Timestamp::from_unix(0))
}

/// When the keyset's next successor will be published and activated, if
/// rotation is scheduled.
pub fn next_rotation(
    now: Timestamp,
    records: &[&KeyRecord],
    schedule: &CronSchedule,
    policy: &RotationPolicy,
) -> Option<(Timestamp, Timestamp)> {
    let due = schedule.next_after(last_activation(records))?;
    Some(rotation_instants(due, now, policy.publish_lead))
}

/// When a rotation due at `due` publishes its key and activates it, seen from
/// `now`: published `lead` before `due` (or now, if that has passed) and never
/// active less than `lead` after publication.
pub fn rotation_instants(due: Timestamp, now: Timestamp, lead: std::time::Duration) -> (Timestamp, Timestamp) {
    let publish = due.minus(lead).max(now);
    (publish, due.max(publish.plus(lead)))
}

/// The schedule of a successor published at `now` and active at `activate_at`.
pub fn successor(now: Timestamp, activate_at: Timestamp) -> Schedule {
    Schedule { published_at: now, activated_at: activate_at, retired_at: None, removed_at: None, destroy_at: None }
}

/// `key` retiring at `at`: out of the JWKS `overlap` later (so every token it
/// signed has expired), its material destroyed `destroy_delay` after that.
pub fn retire(key: &KeyRecord, at: Timestamp, policy: &RotationPolicy) -> KeyRecord {
    let mut k = key.clone();
    let removed = at.plus(policy.overlap);
    k.schedule.retired_at = Some(at);
    k.schedule.removed_at = Some(removed);
    k.schedule.destroy_at = Some(removed.plus(policy.destroy_delay));
    k
}

/// The active key of the keyset and the key that waits to succeed it.
pub(crate) fn active_and_waiting<'a>(
    records: &[&'a KeyRecord],
    now: Timestamp,
) -> (Option<&'a KeyRecord>, Option<&'a KeyRecord>) {
    let active = records.iter().find(|r| r.state_at(now) == KeyState::Active).copied();
    let waiting = records.iter().find(|r| matches!(r.state_at(now), KeyState::Planned | KeyState::Pending)).copied();
    (active, waiting)
}

/// Records to write for a rotation that activates a new key at `activate_at`
/// (the current key, if any, retires then). `None` if a successor already waits.
pub fn rotation_updates(
    records: &[&KeyRecord],
    now: Timestamp,
    activate_at: Timestamp,
    policy: &RotationPolicy,
) -> Option<Vec<KeyRecord>> {
    match active_and_waiting(records, now) {
        (_, Some(_)) => None,
        (Some(a), None) => Some(vec![retire(a, activate_at, policy)]),
        (None, None) => Some(Vec::new()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Records to write (the revoked key, and whatever must change with it).
    pub updates: Vec<KeyRecord>,
    /// Nothing would sign after this: a replacement must be created, active now.
    pub needs_replacement: bool,
}

/// Emergency revocation of `kid` at `now`: out of the JWKS at once, its
/// material destroyed after `destroy_delay`. If it was the signer, a waiting
/// successor is activated now, or the caller must create a replacement. If it
/// was a waiting successor, the active key's retirement is cancelled.
pub fn revoke(records: &[&KeyRecord], kid: &Kid, now: Timestamp, policy: &RotationPolicy) -> Option<Revocation> {
    let target = records.iter().find(|r| &r.kid == kid && r.revoked_at.is_none())?;
    let state = target.state_at(now);
    let mut revoked = (*target).clone();
    revoked.revoked_at = Some(now);
    revoked.schedule.destroy_at = Some(now.plus(policy.destroy_delay));
    let mut updates = vec![revoked];
    let (active, waiting) = active_and_waiting(records, now);
    let mut needs_replacement = false;
    match state {
        KeyState::Active => match waiting {
            Some(w) => {
                let mut w = w.clone();
                w.schedule.activated_at = now;
                updates.push(w);
            }
            None => needs_replacement = true,
        },
        KeyState::Planned | KeyState::Pending => {
            if let Some(a) = active {
                let mut a = a.clone();
                a.schedule.retired_at = None;
                a.schedule.removed_at = None;
                a.schedule.destroy_at = None;
                updates.push(a);
            }
        }
        _ => {}
    }
    Some(Revocation { updates, needs_replacement })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("the keyset has no active key")]
    NoActive,
    #[error("no previous key is still published and unrevoked")]
    NoPrevious,
}

/// Rollback at `now`: the most recently retired key that is still published
/// signs again, taking over the current key's place in the schedule; the
/// current key retires now and keeps verifying its tokens for `overlap`.
pub fn rollback(
    records: &[&KeyRecord],
    now: Timestamp,
    policy: &RotationPolicy,
) -> Result<Vec<KeyRecord>, RollbackError> {
    let (active, _) = active_and_waiting(records, now);
    let current = active.ok_or(RollbackError::NoActive)?;
    let previous = records
        .iter()
        .filter(|r| r.state_at(now) == KeyState::Retiring)
        .max_by_key(|r| r.schedule.activated_at)
        .ok_or(RollbackError::NoPrevious)?;
    let mut back = (*previous).clone();
    back.schedule.retired_at = current.schedule.retired_at;
    back.schedule.removed_at = current.schedule.removed_at;
    back.schedule.destroy_at = current.schedule.destroy_at;
    Ok(vec![back, retire(current, now, policy)])
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
