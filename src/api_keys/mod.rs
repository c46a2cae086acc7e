//! API keys: their format ([`ApiKeySecret`]), their stored form
//! ([`ApiKeyRecord`]) and the service that creates, lists, revokes and
//! authenticates them ([`ApiKeys`]).
//!
//! Invariants: the plain key exists only in the create reply; the store holds
//! its SHA-256; no key is granted a scope its creator does not hold; a
//! malformed or mis-checksummed key never reaches the store; `lastUsedAt` is
//! written at most once a minute per key, by a background writer, so
//! authentication never waits on (or fails because of) that write; a key in
//! use is authenticated from memory ([`cache`]), and a revocation takes
//! effect before `revoke` returns. Revoking a key needs every scope it holds.
//! A key minted by a bearer token (or by a key so minted) acts for that
//! token's identity ([`ApiKeyRecord::identity_id`]); the HTTP layer refuses it
//! while that identity is not active and caps it at the identity's scopes.
//!
//! A presented key that failed (unknown, revoked or expired: failures that
//! never heal) is remembered by hash, bounded, and answered again without a
//! store lookup; a key that is not remembered either way is always looked up.

mod cache;
mod record;
mod secret;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

pub use record::{ApiKeyId, ApiKeyRecord, OrgId, DEFAULT_ORG};
pub use secret::{ApiKeyFormatError, ApiKeySecret};

use cache::KeyCache;

use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::scopes::{self, GrantError};
use crate::storage::{StorageError, Store};

/// How often `lastUsedAt` may be written for one key.
pub const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);
const MAX_SCOPES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyAuthError {
    #[error(transparent)]
    Format(#[from] ApiKeyFormatError),
    #[error("API key is unknown, revoked or expired")]
    NotAccepted,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("API key {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Format(#[from] ApiKeyFormatError),
}

/// Who is creating or revoking a key.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub org_id: OrgId,
    pub scopes: Vec<String>,
    /// The identity this credential acts for: a bearer token's subject, or
    /// the identity behind the key that authenticated. Keys it creates are
    /// tied to the same identity (as text: see [`ApiKeyRecord::identity_id`]).
    pub identity_id: Option<String>,
}

/// What a caller asks for when creating a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
}

#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    lookups: AtomicU64,
    /// Records of keys that authenticated, by hash (write-through on revoke),
    /// and hashes of keys that failed.
    cache: KeyCache,
    /// When `lastUsedAt` was last queued for each key.
    last_touched: Mutex<HashMap<ApiKeyId, Timestamp>>,
    touches: mpsc::Sender<(ApiKeyId, Timestamp)>,
}

/// The background writer of `lastUsedAt`; run it with [`TouchWriter::run`].
pub struct TouchWriter {
    store: Store,
    rx: mpsc::Receiver<(ApiKeyId, Timestamp)>,
}

impl ApiKeys {
    pub fn new(store: Store) -> (Self, TouchWriter) {
        let (tx, rx) = mpsc::channel(1024);
        let inner = Inner {
            store: store.clone(),
            lookups: AtomicU64::new(0),
            cache: KeyCache::default(),
            last_touched: Mutex::new(HashMap::new()),
            touches: tx,
        };
        (Self { inner: Arc::new(inner) }, TouchWriter { store, rx })
    }

    /// Forgets every cached key: another replica revoked one (or a resync),
    /// so each is looked up in the store again on its next use.
    pub fn forget_cached(&self) {
        self.inner.cache.invalidate();
    }

    /// How many times authentication has looked a key up in the store.
    pub fn store_lookups(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }

    /// Authenticates a presented key. Format and checksum are checked before
    /// anything else; a key that authenticated before is answered from memory
    /// (expiry and revocation still apply), as is one that failed before;
    /// any other is looked up in the store, after taking a permit of `gate`
    /// when one is given (how a throttled client's lookups take turns). The
    /// key is hashed once per call.
    pub async fn authenticate(
        &self,
        presented: &str,
        now: Timestamp,
        gate: Option<&Semaphore>,
    ) -> Result<ApiKeyRecord, ApiKeyAuthError> {
        let hash = ApiKeySecret::parse(presented)?.hash();
        let record = match self.inner.cache.get(&hash) {
            Some(rec) => rec,
            None if self.inner.cache.failed_before(&hash) => return Err(ApiKeyAuthError::NotAccepted),
            None => {
                // A closed gate (never closed in practice) just means no turn-taking.
                let _turn = match gate {
                    Some(g) => g.acquire().await.ok(),
                    None => None,
                };
                let seen = self.inner.cache.generation();
                self.inner.lookups.fetch_add(1, Ordering::Relaxed);
                let lookup = hash.clone();
                let found = self.inner.store.read(move |r| r.api_key_by_hash(&lookup)).await?;
                let Some(rec) = found.filter(|rec| rec.authenticates(&hash, now)) else {
                    self.inner.cache.fail(hash);
                    return Err(ApiKeyAuthError::NotAccepted);
                };
                let rec = Arc::new(rec);
                self.inner.cache.fill(hash.clone(), rec.clone(), seen);
                rec
            }
        };
        if !record.authenticates(&hash, now) {
            return Err(ApiKeyAuthError::NotAccepted);
        }
        self.touch(&record.id, now);
        Ok(ApiKeyRecord::clone(&record))
    }

    /// Queues a `lastUsedAt` write unless one was queued within the last minute.
    /// Never blocks and never fails: a full queue just skips this touch.
    fn touch(&self, id: &ApiKeyId, now: Timestamp) {
        let Ok(mut touched) = self.inner.last_touched.lock() else { return };
        let due = touched.get(id).is_none_or(|last| now >= last.plus(LAST_USED_RESOLUTION));
        if due && self.inner.touches.try_send((id.clone(), now)).is_ok() {
            touched.insert(id.clone(), now);
        }
    }

    /// Creates a key for `actor`'s organisation. Every requested scope must be
    /// grantable and covered by the actor's own scopes.
    pub async fn create(
        &self,
        actor: &Actor,
        req: NewApiKey,
        now: Timestamp,
    ) -> Result<(ApiKeyRecord, ApiKeySecret), ApiKeyError> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(ApiKeyError::Invalid("name must be 1 to 128 characters".into()));
        }
        crate::text::check("name", name).map_err(|e| ApiKeyError::Invalid(e.to_string()))?;
        if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
            return Err(ApiKeyError::Invalid(format!("scopes must hold 1 to {MAX_SCOPES} entries")));
        }
        if req.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiKeyError::Invalid("expiresAt must be in the future".into()));
        }
        scopes::check_grant(&actor.scopes, &req.scopes)?;
        let secret = ApiKeySecret::generate()?;
        let mut record = ApiKeyRecord::new(&secret, &actor.org_id, name, req.scopes, now);
        record.expires_at = req.expires_at;
        record.identity_id = actor.identity_id.clone();
        let event = AuditEvent::new(now, actor.id.clone(), AuditAction::ApiKeyCreate)
            .target(record.id.as_str())
            .detail(serde_json::json!({ "name": record.name, "scopes": record.scopes, "prefix": record.prefix,
                                "expiresAt": record.expires_at.map(|t| t.to_iso()) }));
        let stored = record.clone();
        let inner = self.inner.clone();
        self.inner
            .store
            .commit_then_apply(
                move |w| {
                    w.put_api_key(&stored)?;
                    w.audit(event)?;
                    Ok::<_, StorageError>(stored.key_hash)
                },
                // Only a key presented before it existed could be remembered as failed.
                move |hash| inner.cache.forget_failure(hash),
            )
            .await?;
        Ok((record, secret))
    }

    /// One page of `org`'s keys after `cursor` (an id), and whether more follow.
    pub async fn list(
        &self,
        org: &OrgId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ApiKeyRecord>, bool), ApiKeyError> {
        let org = org.clone();
        let mut page =
            self.inner.store.read(move |r| r.api_keys_after(cursor.as_deref(), limit + 1, org.as_str())).await?;
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    /// Revokes a key of `actor`'s organisation, if `actor` covers every scope
    /// it holds. Idempotent: revoking a revoked key returns it unchanged and
    /// records nothing new. The key stops authenticating before this
    /// returns, and even if the caller goes away first: the cache is
    /// invalidated by the task that commits ([`Store::commit_then_apply`]).
    pub async fn revoke(&self, actor: &Actor, id: &str, now: Timestamp) -> Result<ApiKeyRecord, ApiKeyError> {
        let id = ApiKeyId::parse(id).map_err(|_| ApiKeyError::NotFound(id.to_owned()))?;
        let actor = actor.clone();
        let inner = self.inner.clone();
        self.inner
            .store
            .commit_then_apply(
                move |w| {
                    let mut rec = match w.api_key(&id)? {
                        Some(rec) if rec.org_id == actor.org_id => rec,
                        _ => return Err(ApiKeyError::NotFound(id.as_str().to_owned())),
                    };
                    scopes::check_covers(&actor.scopes, &rec.scopes)?;
                    if rec.revoked_at.is_none() {
                        rec.revoked_at = Some(now);
                        w.put_api_key(&rec)?;
                        w.audit(
                            AuditEvent::new(now, actor.id, AuditAction::ApiKeyRevoke)
                                .target(rec.id.as_str())
                                .detail(serde_json::json!({ "name": rec.name, "prefix": rec.prefix })),
                        )?;
                    }
                    Ok(rec)
                },
                move |_| inner.cache.invalidate(),
            )
            .await
    }
}

impl TouchWriter {
    /// Writes queued `lastUsedAt` values in batches until the queue closes or
    /// `shutdown` fires. A failed write is logged and dropped.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                t = self.rx.recv() => match t { Some(t) => t, None => return },
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let mut batch = vec![first];
            while let Ok(t) = self.rx.try_recv() {
                batch.push(t);
            }
            let result = self
                .store
                .write(move |w| {
                    for (id, at) in batch {
                        if let Some(mut rec) = w.api_key(&id)? {
                            if rec.last_used_at.is_none_or(|prev| prev < at) {
                                rec.last_used_at = Some(at);
                                w.put_api_key(&rec)?;
                            }
                        }
                    }
                    Ok::<_, StorageError>(())
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not record API key lastUsedAt");
            }
        }
    }
}
