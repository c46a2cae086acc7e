//! The change feed applied to this replica's caches: what another replica
//! committed reaches memory here within a second (DESIGN.md, "Change feed").
//!
//! Each notification names what changed; the cache that holds it reads the
//! current stored state of that one thing and takes it in
//! ([`crate::storage::Store::read_then_apply`], in turn with this process's
//! own commits, so an older state never overwrites a newer one). Reading
//! the current state rather than trusting the payload makes every event
//! idempotent and their order irrelevant. A resync (after the feed
//! reconnected, and every `ha.resync`) reloads every cache in full; one
//! that fails is retried every second until it succeeds, so a missed
//! notification, or one that could not be applied, delays a revocation but
//! never loses it. The key ring reloads in a task of its own (see
//! [`follow`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::api_keys::ApiKeys;
use crate::rotation::Rotation;
use crate::storage::postgres::feed::{ChangeKind, FeedEvent, Listener};
use crate::storage::StorageError;
use crate::tokens::TokenService;

/// How soon a failed application is retried (as a full resync).
const RETRY: Duration = Duration::from_secs(1);

/// The caches a replica keeps current from the feed.
#[derive(Clone)]
pub struct Caches {
    /// The key ring (and JWKS), the pause flag.
    pub rotation: Arc<Rotation>,
    /// Revocations, identities, the HS256 migration state.
    pub tokens: Arc<TokenService>,
    pub api_keys: ApiKeys,
    /// Wakes the task that reloads the key ring (see [`follow`]).
    keys: Arc<Notify>,
}

impl Caches {
    pub fn new(rotation: Arc<Rotation>, tokens: Arc<TokenService>, api_keys: ApiKeys) -> Self {
        Self { rotation, tokens, api_keys, keys: Arc::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Migration(#[from] crate::migration::MigrationError),
}

impl Caches {
    /// Takes in one event.
    pub async fn apply(&self, event: &FeedEvent) -> Result<(), FollowError> {
        match event {
            FeedEvent::Changed { kind, id } => self.changed(*kind, id).await,
            FeedEvent::Resync => self.resync().await,
        }
    }

    async fn changed(&self, kind: ChangeKind, id: &str) -> Result<(), FollowError> {
        match kind {
            ChangeKind::Key => self.keys.notify_one(),
            ChangeKind::ApiKey => self.api_keys.forget_cached(),
            ChangeKind::Identity => self.tokens.identities().follow(id).await?,
            ChangeKind::Session => self.tokens.follow_session(id).await?,
            ChangeKind::Token => self.tokens.follow_token(id).await?,
            ChangeKind::Meta if id == crate::rotation::META_PAUSED => self.rotation.reload_paused().await?,
            ChangeKind::Meta if id == crate::migration::META_STATE => {
                if let Some(m) = self.tokens.migration() {
                    m.reload().await?;
                }
            }
            // Meta values no cache holds.
            ChangeKind::Meta => {}
        }
        Ok(())
    }

    /// Reloads every cache from the store.
    pub async fn resync(&self) -> Result<(), FollowError> {
        self.keys.notify_one();
        self.rotation.reload_paused().await?;
        self.api_keys.forget_cached();
        self.tokens.identities().reload().await?;
        self.tokens.reload_revocations().await?;
        // The leader's GC forgets expired ones in the store; each replica
        // forgets them in memory.
        self.tokens.forget_expired();
        if let Some(m) = self.tokens.migration() {
            m.reload().await?;
        }
        Ok(())
    }
}

/// Applies the feed's events to `caches` until `shutdown` fires. The key
/// ring reloads in a task of its own: it waits for the ring lock, which a
/// rotation of this replica holds across a backend call (an AWS KMS
/// CreateKey), and a revocation queued behind must not wait with it. Key
/// changes that arrive while it reloads make one more reload.
pub async fn follow(mut feed: Listener, caches: Caches, mut shutdown: watch::Receiver<bool>) {
    let keys = tokio::spawn(follow_keys(caches.rotation.clone(), caches.keys.clone(), shutdown.clone()));
    follow_the_rest(&mut feed, &caches, &mut shutdown).await;
    let _ = keys.await;
}

async fn follow_keys(rotation: Arc<Rotation>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        while let Err(e) = rotation.follow_keys().await {
            tracing::warn!(error = %e, "key ring not reloaded; retrying every second");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

async fn follow_the_rest(feed: &mut Listener, caches: &Caches, shutdown: &mut watch::Receiver<bool>) {
    let mut behind = false;
    loop {
        let event = tokio::select! {
            e = feed.recv() => match e {
                Some(e) => e,
                None => return,
            },
            _ = tokio::time::sleep(RETRY), if behind => FeedEvent::Resync,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match caches.apply(&event).await {
            Ok(()) => {
                if behind && event == FeedEvent::Resync {
                    tracing::info!("change feed caught up");
                    behind = false;
                }
            }
            Err(e) => {
                if !behind {
                    tracing::warn!(error = %e, event = ?event, "change not applied; resyncing every second until it is");
                }
                behind = true;
            }
        }
    }
}
