//! Keeping the key ring true when other writers share the store (replicas
//! on one PostgreSQL).
//!
//! Guard for "exactly one active key per keyset": every ring write checks,
//! in its own write transaction (which holds the store's writer lock, so no
//! other writer can come between the check and the write), that the stored
//! keys of each keyset it touches are exactly those memory shows, which are
//! the ones its plan was made from. If another replica changed that keyset
//! since, nothing is written ([`RingError::Stale`]) and the ring reloads its
//! keys from the store ([`KeyRing::resync`]), so the next plan starts from
//! what is stored. On redb (one process, one writer) the check always holds.

use std::sync::Arc;

use super::memory::{load_material, publish};
use super::{KeyRing, RingError};
use crate::keys::{KeyRecord, KeysetName};
use crate::storage::{StorageError, Writer};

/// Times [`KeyRing::resync`] reads again when keys were added while it
/// loaded their material.
const RESYNC_ATTEMPTS: usize = 3;

/// Refuses `records` if a keyset they belong to holds other keys in the
/// store than in `shown` (memory).
pub(super) fn check_current(w: &Writer, shown: &[Arc<KeyRecord>], records: &[KeyRecord]) -> Result<(), RingError> {
    let stored = w.keys()?;
    let mut touched: Vec<&KeysetName> = records.iter().map(|r| &r.keyset).collect();
    touched.sort();
    touched.dedup();
    for keyset in touched {
        if of_keyset(stored.iter(), keyset) != of_keyset(shown.iter().map(AsRef::as_ref), keyset) {
            return Err(RingError::Stale { keyset: keyset.clone() });
        }
    }
    Ok(())
}

/// The records of `keyset` among `records`, in kid order.
fn of_keyset<'a>(records: impl Iterator<Item = &'a KeyRecord>, keyset: &KeysetName) -> Vec<&'a KeyRecord> {
    let mut v: Vec<&KeyRecord> = records.filter(|r| &r.keyset == keyset).collect();
    v.sort_by(|a, b| a.kid.cmp(&b.kid));
    v
}

impl KeyRing {
    /// Replaces the ring's records with the stored ones, after making every
    /// key it did not know usable in its backend (a key another replica
    /// created). Returns whether anything changed.
    pub async fn resync(&self) -> Result<bool, RingError> {
        for _ in 0..RESYNC_ATTEMPTS {
            let stored = self.store.read(|r| r.keys()).await?;
            let known = self.records();
            let fresh: Vec<KeyRecord> =
                stored.iter().filter(|r| !known.iter().any(|k| k.kid == r.kid)).cloned().collect();
            load_material(&self.backends, &fresh, self.clock.now()).await?;
            let (memory, jwks, keysets, clock) =
                (self.records.clone(), self.jwks.clone(), self.keysets.clone(), self.clock.clone());
            // Read again in a write transaction, ordered with this process's
            // own ring writes (see `Store::commit_then_apply`).
            let loaded: Vec<_> = stored.iter().map(|r| r.kid.clone()).collect();
            let applied = self
                .store
                .commit_then_apply(
                    move |w| {
                        let now = w.keys()?;
                        let complete = now.iter().all(|r| loaded.contains(&r.kid));
                        Ok::<_, StorageError>(complete.then_some(now))
                    },
                    move |now| {
                        if let (Some(now), Ok(mut recs)) = (now, memory.write()) {
                            let next = now.iter().cloned().map(Arc::new).collect();
                            publish(&mut recs, next, &jwks, &keysets, clock.now());
                        }
                    },
                )
                .await?;
            if let Some(now) = applied {
                let before: Vec<&KeyRecord> = known.iter().map(AsRef::as_ref).collect();
                return Ok(now.iter().collect::<Vec<_>>() != before);
            }
        }
        Err(RingError::Unsettled { attempts: RESYNC_ATTEMPTS })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Guarded, KeyBackend};
    use crate::clock::{Clock, SystemClock};
    use crate::keyring::Backends;
    use crate::keys::{BackendKind, KeySpec, KeyUse, Keyset};
    use crate::storage::postgres::pool::Pool;
    use crate::storage::{pg_harness, Store};
    use crate::vault::{SecretKey, VaultBackend};

    /// A replica's key ring: its own store (pool) on the shared database.
    async fn replica(db: &pg_harness::TestDb, data_key: [u8; 32]) -> KeyRing {
        let data_key = SecretKey::from_bytes(data_key);
        let store =
            Store::postgres(Pool::new(db.url.clone(), Default::default()), data_key.record_key()).await.unwrap();
        let vault: Arc<dyn KeyBackend> = Arc::new(VaultBackend::new(data_key));
        let keysets = vec![Keyset {
            name: KeysetName::parse("edge").unwrap(),
            spec: KeySpec::Ed25519,
            backend: BackendKind::Vault,
            schedule: None,
            usage: KeyUse::Tokens,
        }];
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        KeyRing::open(store, Backends::default().with(Guarded::new(vault)), keysets, clock, metrics).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_planning_from_a_stale_ring_adds_no_second_key_and_catches_up() {
        let db = pg_harness::fresh_db().await;
        let data_key = [9; 32];
        // Both replicas start on an empty database: neither sees a key.
        let (a, b) = (replica(&db, data_key).await, replica(&db, data_key).await);
        let edge = KeysetName::parse("edge").unwrap();
        let made = a.ensure_signers("a").await.unwrap();
        assert_eq!(made.len(), 1);

        let refused = b.ensure_signers("b").await;
        assert!(matches!(&refused, Err(RingError::Stale { keyset }) if keyset == &edge), "{refused:?}");
        let stored = b.store.read(|r| r.keys()).await.unwrap();
        assert_eq!(stored.iter().map(|r| &r.kid).collect::<Vec<_>>(), [&made[0]], "one key in the store");
        let active = b.active(&edge, SystemClock.now()).expect("b reloaded a's key");
        assert_eq!(active.kid, made[0]);
        let signature = b.sign(&active, b"message").await;
        assert!(signature.is_ok(), "b can sign with the key a made: {signature:?}");
        assert!(b.ensure_signers("b").await.unwrap().is_empty(), "b now plans from the store: nothing to add");
        assert!(!b.resync().await.unwrap(), "nothing changed since");
    }
}
