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
//! never loses it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

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
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Ring(#[from] crate::keyring::RingError),
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
            ChangeKind::Key => {
                self.rotation.follow_keys().await?;
            }
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
        self.rotation.follow_keys().await?;
        self.rotation.reload_paused().await?;
        self.api_keys.forget_cached();
        self.tokens.identities().reload().await?;
        self.tokens.reload_revocations().await?;
        if let Some(m) = self.tokens.migration() {
            m.reload().await?;
        }
        Ok(())
    }
}

/// Applies the feed's events to `caches` until `shutdown` fires.
pub async fn follow(mut feed: Listener, caches: Caches, mut shutdown: watch::Receiver<bool>) {
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
