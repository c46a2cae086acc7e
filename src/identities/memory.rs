//! What the identities service answers from memory: every identity, loaded
//! at start and kept current by this process's own changes and, on a shared
//! store, by the change feed ([`Identities::follow`], [`Identities::reload`]);
//! a miss on a shared store is looked up in the store.

use std::sync::{Arc, RwLock};

use super::{Identities, IdentityId, IdentityRecord, IdentityStatus, ListFilter};
use crate::api_keys::OrgId;
use crate::scopes;
use crate::storage::{StorageError, Store};

impl Identities {
    pub async fn load(store: Store) -> Result<Self, StorageError> {
        let all = store.read(|r| r.identities()).await?;
        let by_id = all.into_iter().map(|i| (i.id.clone(), Arc::new(i))).collect();
        Ok(Self { store, by_id: Arc::new(RwLock::new(by_id)) })
    }

    /// Takes in the stored state of identity `id` (another replica changed
    /// or deleted it).
    pub async fn follow(&self, id: &str) -> Result<(), StorageError> {
        let (key, by_id) = (id.to_owned(), self.by_id.clone());
        let id = IdentityId::from(id.to_owned());
        self.store
            .read_then_apply(
                move |r| r.identity(&key),
                move |stored| {
                    let Ok(mut map) = by_id.write() else { return };
                    match stored {
                        Some(rec) => map.insert(id, Arc::new(rec.clone())),
                        None => map.remove(&id),
                    };
                },
            )
            .await?;
        Ok(())
    }

    /// Replaces every identity in memory with the stored ones (a resync).
    pub async fn reload(&self) -> Result<(), StorageError> {
        let by_id = self.by_id.clone();
        self.store
            .read_then_apply(
                |r| r.identities(),
                move |all| {
                    if let Ok(mut map) = by_id.write() {
                        *map = all.iter().map(|i| (i.id.clone(), Arc::new(i.clone()))).collect();
                    }
                },
            )
            .await?;
        Ok(())
    }

    /// The identity `id` if it belongs to `org` (another org's identity is
    /// indistinguishable from a missing one); see [`find_any`](Self::find_any).
    pub async fn find(&self, org: &OrgId, id: &IdentityId) -> Option<Arc<IdentityRecord>> {
        self.find_any(id).await.filter(|i| i.org_id == *org)
    }

    /// Token-verification view: the identity by id, any org. From memory;
    /// on a store other replicas share, from the store when memory does not
    /// hold it (made on another replica a moment ago, before the change
    /// feed brought it here), and then kept in memory. A store that cannot
    /// be read counts as not found: never a guess.
    pub async fn find_any(&self, id: &IdentityId) -> Option<Arc<IdentityRecord>> {
        if let Some(hit) = self.get_any(id) {
            return Some(hit);
        }
        if !self.store.is_shared() {
            return None;
        }
        if let Err(e) = self.follow(id.as_str()).await {
            tracing::warn!(error = %e, "identity lookup in the store failed; treated as not found");
            return None;
        }
        self.get_any(id)
    }

    /// From memory only.
    fn get_any(&self, id: &IdentityId) -> Option<Arc<IdentityRecord>> {
        self.by_id.read().ok()?.get(id).cloned()
    }

    /// What a credential acting for identity `id` of `org` (a bearer token,
    /// or an API key one minted) may do on kmsd now: `claimed` narrowed to
    /// the scopes the identity currently holds. `None` when the identity is
    /// gone, not active, or of another org.
    pub async fn held_now(&self, org: &OrgId, id: &IdentityId, claimed: &[String]) -> Option<Vec<String>> {
        let identity = self.find(org, id).await?;
        (identity.status == IdentityStatus::Active).then(|| scopes::intersect(claimed, &identity.scopes))
    }

    /// One page of `org`'s identities that match `filter`, in id order after `cursor`.
    pub fn list(
        &self,
        org: &OrgId,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<IdentityRecord>>, bool) {
        let Ok(map) = self.by_id.read() else { return (Vec::new(), false) };
        let mut all: Vec<&Arc<IdentityRecord>> = map
            .values()
            .filter(|i| i.org_id == *org && cursor.is_none_or(|c| i.id.as_str() > c) && filter.matches(i))
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let more = all.len() > limit;
        (all.into_iter().take(limit).cloned().collect(), more)
    }
}
