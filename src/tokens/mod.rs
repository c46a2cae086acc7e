//! Tokens: issuance, refresh, revocation and verification, in the relayauth
//! dialect. Request path: `http -> tokens -> keyring -> backend`.
//!
//! Invariants:
//! - a token never carries a scope that both its identity and its caller do
//!   not hold;
//! - a token never outlives the publication of the key that signed it (`exp`
//!   is clamped to the key's removal minus skew; refresh tokens to its
//!   destruction);
//! - a token is returned only after its session and token rows are durable;
//! - a refresh token is good for one use; a second use revokes its session.
//!
//! [`issue`](TokenService::issue) is in `issue.rs`, [`refresh`](TokenService::refresh)
//! in `refresh.rs`, [`revoke`](TokenService::revoke) in `revoke.rs`, verification
//! in `verify.rs`; here are the service, its errors and its background GC.

mod claims;
mod group_commit;
mod issue;
mod policy;
mod records;
mod refresh;
mod revocations;
mod revoke;
mod verified;
mod verify;

use std::sync::Arc;
use std::time::Duration;

pub use claims::Claims;
pub use issue::default_audience;
pub use policy::{TokenKeysets, TokenPolicy};
pub use records::{IssuedToken, SessionId, SessionRecord, TokenId, TokenType};
pub use revoke::RevokeTarget;
pub use verify::VerifyError;

use group_commit::GroupCommit;
use revocations::Revocations;

use crate::backend::BackendError;
use crate::clock::{Clock, Timestamp};
use crate::identities::{Identities, IdentityId};
use crate::keyring::KeyRing;
use crate::keys::KeysetName;
use crate::migration::Migration;
use crate::scopes::GrantError;
use crate::storage::{Collected, StorageError, Store};

pub const REFRESH_SCOPE: &str = "relayauth:token:refresh";
pub const REFRESH_AUDIENCE: &str = "relayauth";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("identity not found")]
    IdentityNotFound,
    #[error("identity is {0}")]
    IdentitySuspended(&'static str),
    /// Every requested scope that the identity and the caller do not both hold.
    #[error("scopes {0:?} are not held by both the identity and the caller")]
    InsufficientScope(Vec<String>),
    #[error("scope {scope:?} is not grantable: {reason}")]
    InvalidScope { scope: String, reason: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("algorithm {0:?} is not available for tokens")]
    UnsupportedAlgorithm(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("token not found")]
    NotFound,
    #[error("keyset {0} has no active signing key")]
    NoSigner(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Commit(#[from] group_commit::CommitError),
}

/// What the caller asked for on `POST /v1/tokens`.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub identity_id: IdentityId,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<Vec<String>>,
    pub expires_in: Option<u64>,
    pub refresh_ttl: Option<u64>,
    pub algorithm: Option<String>,
}

/// A lifetime that was shortened, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamp {
    pub token: TokenType,
    pub requested: u64,
    pub granted: u64,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: Timestamp,
    pub refresh_expires_at: Timestamp,
    pub clamped: Vec<Clamp>,
    /// The access token is HS256 (migration phase `hs256`).
    pub hs256: bool,
}

/// Rows of each table one garbage-collection transaction removes at most
/// (PostgreSQL), and how many such transactions one run makes at most.
const GC_BATCH: usize = 10_000;
const GC_BATCHES: usize = 1_000;

pub struct TokenService {
    ring: Arc<KeyRing>,
    identities: Identities,
    store: Store,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    issuer: String,
    keysets: TokenKeysets<Option<KeysetName>>,
    revocations: Arc<Revocations>,
    commit: GroupCommit,
    migration: Option<Arc<Migration>>,
    verified: verified::Verified,
    /// Validly signed tokens refused because kmsd never issued their jti.
    unknown_jtis: std::sync::atomic::AtomicU64,
}

impl TokenService {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        ring: Arc<KeyRing>,
        identities: Identities,
        store: Store,
        clock: Arc<dyn Clock>,
        policy: TokenPolicy,
        issuer: String,
        keysets: TokenKeysets<Option<KeysetName>>,
        migration: Option<Arc<Migration>>,
    ) -> Result<Self, StorageError> {
        let (jtis, sessions) = store.read(|r| r.revocations()).await?;
        let revocations = Arc::new(Revocations::load(&jtis, &sessions));
        let commit = GroupCommit::start(store.clone());
        let verified = verified::Verified::default();
        Ok(Self {
            ring,
            identities,
            store,
            clock,
            policy,
            issuer,
            keysets,
            revocations,
            commit,
            migration,
            verified,
            unknown_jtis: Default::default(),
        })
    }

    pub fn migration(&self) -> Option<&Arc<Migration>> {
        self.migration.as_ref()
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// Verifications answered without a signature check, and those that needed one.
    pub fn verify_cache_counts(&self) -> (u64, u64) {
        self.verified.counts()
    }

    /// Every `every` until `stop`, forgets sessions, token rows and
    /// revocations whose tokens have all expired.
    pub async fn collect_garbage_every(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.collect_garbage().await {
                Ok(c) if c.sessions + c.issued + c.revoked > 0 => tracing::info!(
                    sessions = c.sessions,
                    issued = c.issued,
                    revoked = c.revoked,
                    "collected expired token state"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "token garbage collection failed"),
            }
        }
    }

    /// Takes in a revocation another replica committed: the session `sid`
    /// if it is revoked in the store.
    pub async fn follow_session(&self, sid: &str) -> Result<(), StorageError> {
        let (sid, revocations) = (sid.to_owned(), self.revocations.clone());
        self.store
            .read_then_apply(
                move |r| r.session(&sid),
                move |stored| {
                    if let Some(s) = stored.as_ref().filter(|s| s.revoked_at.is_some()) {
                        revocations.revoke_session(&s.sid, s.expires_at);
                    }
                },
            )
            .await?;
        Ok(())
    }

    /// Takes in a revocation another replica committed: the jti, if it is
    /// revoked in the store.
    pub async fn follow_token(&self, jti: &str) -> Result<(), StorageError> {
        let (jti, revocations) = (TokenId::from(jti.to_owned()), self.revocations.clone());
        let key = jti.as_str().to_owned();
        self.store
            .read_then_apply(
                move |r| r.revoked_until(&key),
                move |until| {
                    if let Some(until) = until {
                        revocations.revoke_jti(&jti, Timestamp::from_unix(*until));
                    }
                },
            )
            .await?;
        Ok(())
    }

    /// Adds every stored revocation to memory (a resync of the change feed).
    pub async fn reload_revocations(&self) -> Result<(), StorageError> {
        let revocations = self.revocations.clone();
        self.store
            .read_then_apply(|r| r.revocations(), move |(jtis, sessions)| revocations.merge(jtis, sessions))
            .await?;
        Ok(())
    }

    /// Forgets revocations in memory whose tokens have all expired. Every
    /// replica does this at each resync; the store's garbage collection
    /// ([`collect_garbage`](Self::collect_garbage)) runs on the leader.
    pub fn forget_expired(&self) {
        self.revocations.collect(self.clock.now().minus(self.policy.skew));
    }

    /// Deletes sessions, token rows and revocations whose tokens all expired.
    pub async fn collect_garbage(&self) -> Result<Collected, StorageError> {
        let before = self.clock.now().minus(self.policy.skew);
        let mut done = Collected::default();
        // Bounded batches, each its own short transaction, until a batch
        // is not full (at most GC_BATCHES of them a run; the next run
        // goes on).
        for _ in 0..GC_BATCHES {
            let batch = self.store.write(move |w| w.collect_garbage(before, GC_BATCH)).await?;
            done = done.and(batch);
            if !batch.full() {
                break;
            }
        }
        self.forget_expired();
        Ok(done)
    }
}

/// The rows a freshly minted pair leaves in the store.
fn rows(pair: &TokenPair, session: SessionRecord, issued: Vec<IssuedToken>) -> group_commit::Rows {
    group_commit::Rows { session, issued, hs256_exp: pair.hs256.then_some(pair.access_expires_at) }
}
