//! The dry run: the next events of every keyset.

use serde_json::json;

use super::{plan, Rotation};
use crate::clock::Timestamp;
use crate::keys::{KeyHandle, KeyRecord};

impl Rotation {
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
            if let (Some(s), false, false) = (ks.schedule.as_ref(), self.is_paused(), waiting) {
                if let Some((publish, activate)) = plan::next_rotation(now, &refs, s, &self.policy) {
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
