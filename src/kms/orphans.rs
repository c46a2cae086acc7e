//! The startup search for orphaned KMS keys (created, never recorded: a
//! crash between CreateKey and the store's commit), run once in the
//! background by `serve`, and audited.

use std::sync::Arc;

use tokio::sync::watch;

use super::{known_key_ids, AwsKmsBackend};
use crate::audit::{AuditAction, AuditEvent};
use crate::backend::BackendError;
use crate::clock::{Clock, Timestamp};
use crate::storage::{StorageError, Store};

/// The search `serve` runs once: keys created after `created_before` are
/// left alone (another replica sharing the store may not have recorded
/// its newest key yet).
#[derive(Clone)]
pub struct OrphanSearch {
    pub kms: Arc<AwsKmsBackend>,
    pub created_before: Timestamp,
}

#[derive(Debug, thiserror::Error)]
enum SearchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl OrphanSearch {
    /// Schedules the deletion of the KMS keys kmsd created but never
    /// recorded, then audits what it did. The store is read now, so every
    /// recorded key is known. A failure is logged and the next start tries
    /// again; `stop` ends the search.
    pub async fn run(self, store: Store, clock: Arc<dyn Clock>, mut stop: watch::Receiver<bool>) {
        let Self { kms, created_before } = self;
        let work = async {
            let records = store.read(|r| r.keys()).await?;
            let cleaned = kms.clean_orphans(&known_key_ids(&records), created_before).await?;
            if !cleaned.is_empty() {
                let keys: Vec<_> = cleaned
                    .iter()
                    .map(|o| serde_json::json!({ "keyId": o.key_id, "keyset": o.keyset, "kid": o.kid }))
                    .collect();
                let event =
                    AuditEvent::new(clock.now(), "system", AuditAction::KmsOrphanCleanup).target("aws-kms").detail(
                        serde_json::json!({ "createdBefore": created_before.to_iso(), "scheduledForDeletion": keys }),
                    );
                store.write(move |w| w.audit(event)).await?;
            }
            Ok::<_, SearchError>(cleaned.len())
        };
        tokio::select! {
            done = work => match done {
                Ok(n) => tracing::info!(orphans = n, "KMS orphan search done"),
                Err(e) => tracing::warn!(error = %e, "KMS orphan search failed; the next start tries again"),
            },
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}
