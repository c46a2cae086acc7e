//! The keys kmsd manages in the account, found by their tags rather than by
//! kmsd's records: to act on a key that is not loaded (destroy or disable
//! after a restart) and to find orphans, keys created in KMS whose record was
//! never written (a crash between CreateKey and the store's commit).
//!
//! Listing costs one ListResourceTags call per key in the account and region,
//! so it is for rare operations, never the signing path.

use std::collections::{HashMap, HashSet};

use super::error::{Class, KmsFailure};
use super::{AwsKmsBackend, TAG_INSTANCE, TAG_KEYSET, TAG_KID, TAG_MANAGED};
use crate::backend::BackendError;
use crate::clock::Timestamp;
use crate::keys::{KeyHandle, KeyRecord, Kid};

/// A key kmsd created (by its tags) that no record knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrphanKey {
    pub key_id: String,
    pub keyset: Option<String>,
    pub kid: Option<String>,
}

/// The KMS keys that `records` refer to, for [`AwsKmsBackend::clean_orphans`].
pub fn known_key_ids(records: &[KeyRecord]) -> HashSet<String> {
    records
        .iter()
        .filter_map(|r| match &r.handle {
            KeyHandle::AwsKms { key_id } => Some(key_id.clone()),
            _ => None,
        })
        .collect()
}

struct ManagedKey {
    key_id: String,
    arn: Option<String>,
    tags: HashMap<String, String>,
}

impl AwsKmsBackend {
    /// Every key tagged `kmsd:managed=true` for this instance.
    async fn managed_keys(&self) -> Result<Vec<ManagedKey>, KmsFailure> {
        let entries = self.client.list_keys().into_paginator().page_size(1000).items().send().try_collect().await;
        let mut found = Vec::new();
        for entry in entries.map_err(|e| self.failure("ListKeys", e))? {
            let Some(key_id) = entry.key_id() else { continue };
            match self.tags_of(key_id).await {
                Ok(tags) if self.is_ours(&tags) => {
                    found.push(ManagedKey { key_id: key_id.to_owned(), arn: entry.key_arn().map(str::to_owned), tags })
                }
                Ok(_) => {}
                Err(f) if f.class == Class::Transient => return Err(f),
                // Not readable by us (e.g. AWS managed keys) or deleted meanwhile: not ours.
                Err(_) => {}
            }
        }
        Ok(found)
    }

    async fn tags_of(&self, key_id: &str) -> Result<HashMap<String, String>, KmsFailure> {
        let tags = self.client.list_resource_tags().key_id(key_id).into_paginator().items().send().try_collect().await;
        let tags = tags.map_err(|e| self.failure("ListResourceTags", e))?;
        Ok(tags.into_iter().map(|t| (t.tag_key, t.tag_value)).collect())
    }

    fn is_ours(&self, tags: &HashMap<String, String>) -> bool {
        tags.get(TAG_MANAGED).is_some_and(|v| v == "true") && tags.get(TAG_INSTANCE) == self.config.instance.as_ref()
    }

    /// The KMS key id of `kid`: from memory if loaded, else by its `kmsd:kid`
    /// tag. `None` if no key of this instance carries it.
    pub(super) async fn resolve(&self, kid: &Kid) -> Result<Option<String>, BackendError> {
        if let Some(key) = self.loaded.get(kid) {
            return Ok(Some(key.key_id.clone()));
        }
        let keys = self.managed_keys().await.map_err(|f| f.into_backend(Some(kid)))?;
        Ok(keys.into_iter().find(|k| k.tags.get(TAG_KID).is_some_and(|v| v == kid.as_str())).map(|k| k.key_id))
    }

    /// Managed keys of this instance that are not in `known` (key ids or
    /// ARNs), not already pending deletion, and created before
    /// `created_before` (so a key another replica is creating right now is
    /// left alone).
    pub async fn find_orphans(
        &self,
        known: &HashSet<String>,
        created_before: Timestamp,
    ) -> Result<Vec<OrphanKey>, BackendError> {
        let mut orphans = Vec::new();
        for key in self.managed_keys().await.map_err(|f| f.into_backend(None))? {
            if known.contains(&key.key_id) || key.arn.as_ref().is_some_and(|a| known.contains(a)) {
                continue;
            }
            let described = self.client.describe_key().key_id(&key.key_id).send().await;
            let meta = match described.map_err(|e| self.failure("DescribeKey", e)) {
                Ok(out) => out.key_metadata,
                Err(f) if f.class == Class::NotFound => continue,
                Err(f) => return Err(f.into_backend(None)),
            };
            let Some(meta) = meta else { continue };
            let pending =
                meta.key_state().is_some_and(|s| matches!(s.as_str(), "PendingDeletion" | "PendingReplicaDeletion"));
            let young = meta.creation_date().is_none_or(|d| d.secs() >= created_before.unix());
            if pending || young {
                continue;
            }
            orphans.push(OrphanKey {
                key_id: key.key_id,
                keyset: key.tags.get(TAG_KEYSET).cloned(),
                kid: key.tags.get(TAG_KID).cloned(),
            });
        }
        Ok(orphans)
    }

    /// Schedules the deletion of every orphan [`find_orphans`](Self::find_orphans)
    /// finds, and returns them. `known` must hold the KMS key of every record
    /// in the store ([`known_key_ids`]), or live keys would be scheduled for
    /// deletion (an operator could still cancel it within the pending window).
    pub async fn clean_orphans(
        &self,
        known: &HashSet<String>,
        created_before: Timestamp,
    ) -> Result<Vec<OrphanKey>, BackendError> {
        let orphans = self.find_orphans(known, created_before).await?;
        for orphan in &orphans {
            self.schedule_deletion(&orphan.key_id).await.map_err(|f| f.into_backend(None))?;
            tracing::info!(key_id = %orphan.key_id, keyset = ?orphan.keyset, "scheduled deletion of an orphaned KMS key");
        }
        Ok(orphans)
    }
}
