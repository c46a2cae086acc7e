//! The dry run: the next events of every keyset, earliest first, as typed
//! events; the admin API renders them.

use super::{plan, refs, Rotation};
use crate::clock::Timestamp;
use crate::keys::{KeyHandle, KeysetName, Kid};

/// The next events of every keyset at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub now: Timestamp,
    pub paused: bool,
    /// Earliest first.
    pub events: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    pub at: Timestamp,
    pub keyset: KeysetName,
    /// The key it happens to; `None` for the next scheduled key, not made yet.
    pub kid: Option<Kid>,
    pub kind: EventKind,
}

/// What happens, with its stable name in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Publish,
    Activate,
    Retire,
    RemoveFromJwks,
    Destroy,
    PublishNextKey,
    ActivateNextKey,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Activate => "activate",
            Self::Retire => "retire",
            Self::RemoveFromJwks => "remove_from_jwks",
            Self::Destroy => "destroy",
            Self::PublishNextKey => "publish_next_key",
            Self::ActivateNextKey => "activate_next_key",
        }
    }
}

impl Rotation {
    /// When `keyset`'s signer next changes: a waiting successor's activation,
    /// else the scheduled rotation's (none while paused or unscheduled). The
    /// same instant as the plan's `activate` event.
    pub fn next_activation(&self, keyset: &KeysetName) -> Option<Timestamp> {
        let now = self.clock.now();
        let records = self.records_of(keyset);
        let refs = refs(&records);
        if let Some(waiting) = plan::active_and_waiting(&refs, now).1 {
            return Some(waiting.schedule.activated_at);
        }
        let ks = self.ring.keysets().iter().find(|k| &k.name == keyset)?.clone();
        let schedule = ks.schedule.as_ref().filter(|_| !self.is_paused())?;
        plan::next_rotation(now, &refs, schedule, &self.policy).map(|(_, activate)| activate)
    }

    /// The next events of every keyset, earliest first (a dry run).
    pub fn timeline(&self) -> Timeline {
        let now = self.clock.now();
        let mut events = Vec::new();
        for ks in self.ring.keysets() {
            let records = self.records_of(&ks.name);
            for r in &records {
                let s = r.schedule;
                let named = [
                    (EventKind::Publish, Some(s.published_at)),
                    (EventKind::Activate, Some(s.activated_at)),
                    (EventKind::Retire, s.retired_at),
                    (EventKind::RemoveFromJwks, s.removed_at),
                    (EventKind::Destroy, s.destroy_at.filter(|_| r.handle != KeyHandle::Destroyed)),
                ];
                for (kind, at) in named {
                    if let Some(at) = at.filter(|at| *at > now) {
                        events.push(TimelineEvent { at, keyset: ks.name.clone(), kid: Some(r.kid.clone()), kind });
                    }
                }
            }
            let refs = refs(&records);
            let waiting = plan::active_and_waiting(&refs, now).1.is_some();
            if let (Some(s), false, false) = (ks.schedule.as_ref(), self.is_paused(), waiting) {
                if let Some((publish, activate)) = plan::next_rotation(now, &refs, s, &self.policy) {
                    for (at, kind) in [(publish, EventKind::PublishNextKey), (activate, EventKind::ActivateNextKey)] {
                        events.push(TimelineEvent { at, keyset: ks.name.clone(), kid: None, kind });
                    }
                }
            }
        }
        events.sort_by_key(|e| e.at);
        Timeline { now, paused: self.is_paused(), events }
    }
}
