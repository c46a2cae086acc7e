//! The ring in memory: the records and their JWKS snapshots, shown together
//! (a new key is in the JWKS before anything can pick it as a signer), and
//! the loading of key material into the backends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{usage_of, Backends, RingError};
use crate::clock::Timestamp;
use crate::jwks::JwksSnapshot;
use crate::keys::{KeyHandle, KeyRecord, KeyState, KeyUse, Keyset, KeysetName};

/// The JWKS documents, rendered together from one view of the records.
pub(super) struct Snapshots {
    pub(super) tokens: Arc<JwksSnapshot>,
    pub(super) sign: HashMap<KeysetName, Arc<JwksSnapshot>>,
}

impl Snapshots {
    pub(super) fn render(records: &[Arc<KeyRecord>], keysets: &[Keyset], now: Timestamp) -> Self {
        let of = |pick: &dyn Fn(&KeyRecord) -> bool| {
            let chosen: Vec<&Arc<KeyRecord>> = records.iter().filter(|r| pick(r)).collect();
            Arc::new(JwksSnapshot::render(&chosen, now))
        };
        let sign = keysets
            .iter()
            .filter(|k| k.usage == KeyUse::Sign)
            .map(|k| (k.name.clone(), of(&|r: &KeyRecord| r.keyset == k.name)))
            .collect();
        Self { tokens: of(&|r: &KeyRecord| usage_of(keysets, &r.keyset) == KeyUse::Tokens), sign }
    }

    pub(super) fn is_current(&self, now: Timestamp) -> bool {
        self.tokens.is_current(now) && self.sign.values().all(|s| s.is_current(now))
    }
}

/// Makes every live key of `records` usable in its backend, checking that
/// the backend's public key is the recorded one. A key whose stored
/// material is corrupt is an error.
pub(super) async fn load_material(backends: &Backends, records: &[KeyRecord], now: Timestamp) -> Result<(), RingError> {
    for rec in records {
        if matches!(rec.state_at(now), KeyState::Destroyed | KeyState::Revoked) || rec.handle == KeyHandle::Destroyed {
            continue;
        }
        let backend = backends
            .get(rec.backend)
            .ok_or_else(|| RingError::NoBackend { keyset: rec.keyset.clone(), backend: rec.backend.as_str() })?;
        let public = backend
            .load(&rec.keyset, &rec.kid, rec.spec, &rec.handle)
            .await
            .map_err(|source| RingError::Load { kid: rec.kid.clone(), keyset: rec.keyset.clone(), source })?;
        if public != rec.public {
            return Err(RingError::PublicMismatch { kid: rec.kid.clone(), keyset: rec.keyset.clone() });
        }
    }
    Ok(())
}

/// Shows committed `records` (new or changed) in memory. The JWKS snapshots
/// are rendered from the new set and published before the set itself, so a
/// new key is in the JWKS before anything can pick it as a signer.
pub(super) fn show(
    memory: &RwLock<Arc<Vec<Arc<KeyRecord>>>>,
    jwks: &RwLock<Arc<Snapshots>>,
    keysets: &[Keyset],
    records: &[KeyRecord],
    now: Timestamp,
) {
    let Ok(mut recs) = memory.write() else { return };
    let mut next = recs.as_ref().clone();
    for r in records {
        match next.iter_mut().find(|x| x.kid == r.kid) {
            Some(slot) => *slot = Arc::new(r.clone()),
            None => next.push(Arc::new(r.clone())),
        }
    }
    publish(&mut recs, next, jwks, keysets, now);
}

/// Makes `next` the ring's records: its JWKS first, then the set itself.
pub(super) fn publish(
    recs: &mut Arc<Vec<Arc<KeyRecord>>>,
    next: Vec<Arc<KeyRecord>>,
    jwks: &RwLock<Arc<Snapshots>>,
    keysets: &[Keyset],
    now: Timestamp,
) {
    let snapshots = Arc::new(Snapshots::render(&next, keysets, now));
    if let Ok(mut j) = jwks.write() {
        *j = snapshots;
    }
    *recs = Arc::new(next);
}
