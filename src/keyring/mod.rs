//! The key ring: every key version kmsd knows, held in memory, with the backend
//! that holds each private half. It answers which key of a keyset signs now,
//! which keys are published, and renders the JWKS snapshots when either
//! changes: one for token keysets (`/.well-known/jwks.json`, what verifiers
//! trust for tokens) and one per `sign` keyset, so a raw-signing key is never
//! in the document that token verifiers trust.
//!
//! Writes go to the store first (record and audit event in one transaction)
//! and only then to memory, so memory never shows a key the store lacks; the
//! memory update runs in the same blocking task as the commit
//! ([`Store::commit_then_apply`]), so a revoked key never stays trusted in
//! memory because the request that revoked it went away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::audit::{AuditAction, AuditEvent};
use crate::backend::{BackendError, CreatedKey, Guarded};
use crate::clock::{Clock, Timestamp};
use crate::jwks::JwksSnapshot;
use crate::keys::{BackendKind, KeyRecord, KeyState, KeyUse, Keyset, KeysetName, Kid, Schedule};
use crate::metrics::Metrics;
use crate::storage::{StorageError, Store};

mod fence;
mod memory;

use memory::{load_material, show, Snapshots};

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
    #[error(
        "keyset {keyset} changed in the store since this process planned the change (another replica wrote it): \
         nothing was written, the key ring was reloaded; retry"
    )]
    Stale { keyset: KeysetName },
    #[error("the stored keys changed during each of {attempts} reloads of the key ring; retried at the next change")]
    Unsettled { attempts: usize },
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

fn usage_of(keysets: &[Keyset], name: &KeysetName) -> KeyUse {
    keysets.iter().find(|k| &k.name == name).map_or(KeyUse::Tokens, |k| k.usage)
}

pub struct KeyRing {
    store: Store,
    backends: Backends,
    keysets: Vec<Keyset>,
    clock: Arc<dyn Clock>,
    records: Arc<RwLock<Arc<Vec<Arc<KeyRecord>>>>>,
    jwks: Arc<RwLock<Arc<Snapshots>>>,
    mutation: tokio::sync::Mutex<()>,
    cooldown_until_ms: AtomicI64,
    next_publication: AtomicI64,
    metrics: Arc<Metrics>,
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
        metrics: Arc<Metrics>,
    ) -> Result<Self, RingError> {
        for ks in &keysets {
            if backends.get(ks.backend).is_none() {
                return Err(RingError::NoBackend { keyset: ks.name.clone(), backend: ks.backend.as_str() });
            }
        }
        let records = store.read(|r| r.keys()).await?;
        let now = clock.now();
        load_material(&backends, &records, now).await?;
        let records: Vec<Arc<KeyRecord>> = records.into_iter().map(Arc::new).collect();
        let jwks = Snapshots::render(&records, &keysets, now);
        Ok(Self {
            store,
            backends,
            keysets,
            clock,
            records: Arc::new(RwLock::new(Arc::new(records))),
            jwks: Arc::new(RwLock::new(Arc::new(jwks))),
            mutation: tokio::sync::Mutex::new(()),
            cooldown_until_ms: AtomicI64::new(0),
            next_publication: AtomicI64::new(i64::MAX),
            metrics,
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
        let started = std::time::Instant::now();
        let result = backend.sign(&key.kid, &key.public, message).await;
        self.metrics.signed(key.backend.as_str(), started.elapsed(), result.as_ref().map(drop));
        result
    }

    /// The process's metrics (the ring is the one service every path holds).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn keysets(&self) -> &[Keyset] {
        &self.keysets
    }

    /// What `keyset`'s keys sign. A keyset no longer declared counts as a
    /// token keyset (its keys stay where they were published).
    pub fn usage(&self, keyset: &KeysetName) -> KeyUse {
        usage_of(&self.keysets, keyset)
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The key of `keyset` that signs at `now`, if any.
    pub fn active(&self, keyset: &KeysetName, now: Timestamp) -> Option<Arc<KeyRecord>> {
        self.records().iter().find(|r| &r.keyset == keyset && r.state_at(now) == KeyState::Active).cloned()
    }

    /// The JWKS of the token keysets (`/.well-known/jwks.json`), re-rendered
    /// from memory if a planned change has passed.
    pub fn jwks(&self) -> Arc<JwksSnapshot> {
        self.snapshots().tokens.clone()
    }

    /// The JWKS of the `sign` keyset `keyset`; `None` for a token keyset or
    /// an unknown name.
    pub fn keyset_jwks(&self, keyset: &str) -> Option<Arc<JwksSnapshot>> {
        self.snapshots().sign.iter().find(|(name, _)| name.as_str() == keyset).map(|(_, s)| s.clone())
    }

    fn snapshots(&self) -> Arc<Snapshots> {
        let now = self.clock.now();
        let current = self.jwks.read().map(|j| j.clone()).ok();
        match current {
            Some(snapshots) if snapshots.is_current(now) => snapshots,
            _ => self.rerender(now),
        }
    }

    fn rerender(&self, now: Timestamp) -> Arc<Snapshots> {
        let snapshots = Arc::new(Snapshots::render(&self.records(), &self.keysets, now));
        if let Ok(mut j) = self.jwks.write() {
            *j = snapshots.clone();
        }
        snapshots
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
            let material = self.create_material(&ks).await?;
            let now = self.clock.now();
            let record = new_record(&ks, material, now, Schedule::immediate(now));
            created.push(self.add_key(record, Vec::new(), AuditAction::KeyCreate, actor).await?);
        }
        Ok(created)
    }

    /// Creates the private half of a new key of `ks` in its backend. Nothing
    /// is recorded: the caller plans the key's schedule (see [`new_record`])
    /// and records it with [`add_key`](Self::add_key).
    pub async fn create_material(&self, ks: &Keyset) -> Result<CreatedKey, RingError> {
        let backend = self
            .backends
            .get(ks.backend)
            .ok_or_else(|| RingError::NoBackend { keyset: ks.name.clone(), backend: ks.backend.as_str() })?;
        Ok(backend.create(&ks.name, ks.spec).await?)
    }

    /// Records the new key `record` together with `updates` to other keys
    /// (e.g. its predecessor's retirement) and one audit event, in a single
    /// transaction, then shows them in memory (see [`put`](Self::put)).
    pub async fn add_key(
        &self,
        record: KeyRecord,
        mut updates: Vec<KeyRecord>,
        action: AuditAction,
        actor: &str,
    ) -> Result<Kid, RingError> {
        let schedule = record.schedule;
        let event =
            AuditEvent::new(record.created_at, actor, action).target(record.kid.as_str()).detail(serde_json::json!({
                "keyset": record.keyset.as_str(),
                "spec": record.spec.as_str(),
                "backend": record.backend.as_str(),
                "publishedAt": schedule.published_at.to_iso(),
                "activatedAt": schedule.activated_at.to_iso(),
                "retires": updates.iter().map(|r| r.kid.as_str()).collect::<Vec<_>>(),
            }));
        let kid = record.kid.clone();
        updates.push(record);
        self.put(updates, event).await?;
        Ok(kid)
    }

    /// Writes `records` (new or changed) and `event` in one transaction, then
    /// shows them in memory and re-renders the JWKS.
    ///
    /// Fenced (see `fence`): if another writer changed a keyset these
    /// records belong to since memory last showed it, nothing is written,
    /// the ring is reloaded from the store, and the answer is
    /// [`RingError::Stale`].
    pub async fn put(&self, records: Vec<KeyRecord>, event: AuditEvent) -> Result<(), RingError> {
        let (memory, jwks, clock) = (self.records.clone(), self.jwks.clone(), self.clock.clone());
        let keysets = self.keysets.clone();
        let shown = self.records.clone();
        let written = self
            .store
            .commit_then_apply(
                move |w| {
                    fence::check_current(w, &shown.read().map(|m| m.clone()).unwrap_or_default(), &records)?;
                    for r in &records {
                        w.put_key(r)?;
                    }
                    w.audit(event)?;
                    Ok::<_, RingError>(records)
                },
                move |records| show(&memory, &jwks, &keysets, records, clock.now()),
            )
            .await;
        if let Err(RingError::Stale { keyset }) = &written {
            tracing::warn!(keyset = %keyset, "key ring was behind the store (another replica changed it): reloading");
            if let Err(e) = self.resync().await {
                tracing::error!(error = %e, "key ring reload failed; retried at the next change");
            }
        }
        written.map(drop)
    }

    /// Serializes changes to the ring (scheduled rotation, admin actions).
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.mutation.lock().await
    }

    /// Keeps the JWKS `max-age` short for `period` from now (after an
    /// emergency revoke), counted in milliseconds like `max-age` itself.
    pub fn cool_down(&self, period: Duration) {
        let ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
        self.cooldown_until_ms.store(self.clock.now_millis().saturating_add(ms), Ordering::Relaxed);
    }

    /// The next instant a key is planned to be published (the next scheduled
    /// rotation), so that JWKS caching never runs past it.
    pub fn plan_publication(&self, at: Option<Timestamp>) {
        self.next_publication.store(at.map_or(i64::MAX, Timestamp::unix), Ordering::Relaxed);
    }

    /// The `max-age` to send for `snapshot` at `now_ms` (milliseconds: a
    /// whole-second `now` would let a cache outlive the next change by up to
    /// a second).
    pub fn max_age(&self, snapshot: &JwksSnapshot, now_ms: i64, cap: Duration) -> Duration {
        let next = self.next_publication.load(Ordering::Relaxed);
        let planned = (next != i64::MAX).then(|| Timestamp::from_unix(next));
        let age = crate::jwks::max_age(now_ms, cap, snapshot.valid_until.into_iter().chain(planned));
        if now_ms < self.cooldown_until_ms.load(Ordering::Relaxed) {
            return age.min(COOLDOWN_MAX_AGE);
        }
        age
    }
}

/// The record of a key of `ks` whose material `created` exists since
/// `created_at`, to be published and activated on `schedule`.
pub fn new_record(ks: &Keyset, created: CreatedKey, created_at: Timestamp, schedule: Schedule) -> KeyRecord {
    KeyRecord {
        kid: created.kid,
        keyset: ks.name.clone(),
        spec: ks.spec,
        backend: ks.backend,
        handle: created.handle,
        public: created.public,
        created_at,
        schedule,
        revoked_at: None,
    }
}

/// The JWKS `max-age` while cooling down after an emergency revoke.
pub const COOLDOWN_MAX_AGE: Duration = Duration::from_secs(5);
