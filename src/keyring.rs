//! The key ring: every key version kmsd knows, held in memory, with the backend
//! that holds each private half. It answers which key of a keyset signs now,
//! which keys are published, and renders the JWKS snapshot when either changes.
//!
//! Writes go to the store first (record and audit event in one transaction)
//! and only then to memory, so memory never shows a key the store lacks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::audit::AuditEvent;
use crate::backend::{BackendError, Guarded};
use crate::clock::{Clock, Timestamp};
use crate::config::Keyset;
use crate::jwks::JwksSnapshot;
use crate::keys::{BackendKind, KeyHandle, KeyRecord, KeyState, KeysetName, Kid, Schedule};
use crate::storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("key {kid} (keyset {keyset}): {source}")]
    Load { kid: Kid, keyset: KeysetName, source: BackendError },
    #[error("key {kid} (keyset {keyset}): the backend's public key differs from the recorded one")]
    PublicMismatch { kid: Kid, keyset: KeysetName },
    #[error("keyset {keyset} uses backend {backend}, which is not configured")]
    NoBackend { keyset: KeysetName, backend: &'static str },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The configured backends, by kind.
#[derive(Clone, Default)]
pub struct Backends(HashMap<BackendKind, Guarded>);

impl Backends {
    pub fn with(mut self, guarded: Guarded) -> Self {
        self.0.insert(guarded.backend().kind(), guarded);
        self
    }

    pub fn get(&self, kind: BackendKind) -> Option<&Guarded> {
        self.0.get(&kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Guarded> {
        self.0.values()
    }
}

pub struct KeyRing {
    store: Store,
    backends: Backends,
    keysets: Vec<Keyset>,
    clock: Arc<dyn Clock>,
    records: RwLock<Arc<Vec<Arc<KeyRecord>>>>,
    jwks: RwLock<Arc<JwksSnapshot>>,
}

impl KeyRing {
    /// Loads every recorded key and makes each live one usable in its backend.
    /// A key whose stored material is corrupt stops the load: kmsd does not
    /// start with a key ring it cannot trust.
    pub async fn open(
        store: Store,
        backends: Backends,
        keysets: Vec<Keyset>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RingError> {
        for ks in &keysets {
            if backends.get(ks.backend).is_none() {
                return Err(RingError::NoBackend { keyset: ks.name.clone(), backend: ks.backend.as_str() });
            }
        }
        let records = store.read(|r| r.keys()).await?;
        let now = clock.now();
        for rec in &records {
            if matches!(rec.state_at(now), KeyState::Destroyed | KeyState::Revoked)
                || rec.handle == KeyHandle::Destroyed
            {
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
        let jwks = JwksSnapshot::render(&records, now);
        Ok(Self {
            store,
            backends,
            keysets,
            clock,
            records: RwLock::new(Arc::new(records.into_iter().map(Arc::new).collect())),
            jwks: RwLock::new(Arc::new(jwks)),
        })
    }

    pub fn records(&self) -> Arc<Vec<Arc<KeyRecord>>> {
        self.records.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// The key version `kid`, whatever its state.
    pub fn record(&self, kid: &str) -> Option<Arc<KeyRecord>> {
        self.records().iter().find(|r| r.kid.as_str() == kid).cloned()
    }

    /// Signs `message` with `key` through its backend; the signature is checked
    /// against the recorded public key before it is returned.
    pub async fn sign(&self, key: &KeyRecord, message: &[u8]) -> Result<Vec<u8>, BackendError> {
        let backend = self
            .backends
            .get(key.backend)
            .ok_or(BackendError::Unsupported { backend: key.backend.as_str(), op: "sign (backend not configured)" })?;
        backend.sign(&key.kid, &key.public, message).await
    }

    pub fn keysets(&self) -> &[Keyset] {
        &self.keysets
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The key of `keyset` that signs at `now`, if any.
    pub fn active(&self, keyset: &KeysetName, now: Timestamp) -> Option<Arc<KeyRecord>> {
        self.records().iter().find(|r| &r.keyset == keyset && r.state_at(now) == KeyState::Active).cloned()
    }

    /// The current JWKS, re-rendered from memory if a planned change has passed.
    pub fn jwks(&self) -> Arc<JwksSnapshot> {
        let now = self.clock.now();
        let current = self.jwks.read().map(|j| j.clone()).ok();
        match current {
            Some(snapshot) if snapshot.is_current(now) => snapshot,
            _ => self.rerender(now),
        }
    }

    fn rerender(&self, now: Timestamp) -> Arc<JwksSnapshot> {
        let snapshot = Arc::new(JwksSnapshot::render(&self.records(), now));
        if let Ok(mut j) = self.jwks.write() {
            *j = snapshot.clone();
        }
        snapshot
    }

    /// Gives every keyset without a signing key one, active at once. This is
    /// for a keyset's very first key (nothing can have cached a JWKS without
    /// it); later keys come from rotation with a publish lead.
    pub async fn ensure_signers(&self, actor: &str) -> Result<Vec<Kid>, RingError> {
        let mut created = Vec::new();
        for ks in self.keysets.clone() {
            if self.active(&ks.name, self.clock.now()).is_some() {
                continue;
            }
            let schedule = |now| Schedule {
                published_at: now,
                activated_at: now,
                retired_at: None,
                removed_at: None,
                destroy_at: None,
            };
            created.push(self.create_key(&ks, schedule, actor).await?);
        }
        Ok(created)
    }

    /// Creates a key in the keyset's backend and records it with the schedule
    /// that `schedule` plans from the instant the key exists.
    pub async fn create_key(
        &self,
        ks: &Keyset,
        schedule: impl FnOnce(Timestamp) -> Schedule,
        actor: &str,
    ) -> Result<Kid, RingError> {
        let backend = self
            .backends
            .get(ks.backend)
            .ok_or_else(|| RingError::NoBackend { keyset: ks.name.clone(), backend: ks.backend.as_str() })?;
        let created = backend.create(&ks.name, ks.spec).await?;
        let now = self.clock.now();
        let schedule = schedule(now);
        let record = KeyRecord {
            kid: created.kid.clone(),
            keyset: ks.name.clone(),
            spec: ks.spec,
            backend: ks.backend,
            handle: created.handle,
            public: created.public,
            created_at: now,
            schedule,
            revoked_at: None,
        };
        let event = AuditEvent::new(now, actor, "key.create").target(record.kid.as_str()).detail(serde_json::json!({
            "keyset": ks.name.as_str(),
            "spec": ks.spec.as_str(),
            "backend": ks.backend.as_str(),
            "publishedAt": schedule.published_at.to_iso(),
            "activatedAt": schedule.activated_at.to_iso(),
        }));
        let stored = record.clone();
        self.store
            .write(move |w| {
                w.put_key(&stored)?;
                w.audit(event)?;
                Ok::<_, StorageError>(())
            })
            .await?;
        if let Ok(mut recs) = self.records.write() {
            let mut next = recs.as_ref().clone();
            next.push(Arc::new(record));
            *recs = Arc::new(next);
        }
        self.rerender(now);
        Ok(created.kid)
    }
}
