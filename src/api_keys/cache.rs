//! Records of API keys that authenticated, by key hash, so that a key in use
//! is not looked up in the store on every request.
//!
//! Invariant: once a revocation's store transaction has committed and
//! [`KeyCache::invalidate`] has run, no revoked record is in the cache and
//! none can enter it. Revocation invalidates after its commit, and a fill
//! carries the generation read before its store lookup: a fill whose lookup
//! may have raced with a revocation finds the generation changed and is
//! dropped. Only keys that authenticated are cached (an unknown key cannot
//! grow the cache), and the cache is bounded.
//!
//! Beside it, the hashes of presented keys that failed (unknown, revoked or
//! expired), so that a key presented again is refused without another store
//! lookup. Those failures are final: a revoked or expired key never becomes
//! valid again, and an unknown one only by being created, which forgets its
//! hash here ([`KeyCache::forget_failure`]). Bounded like the cache.
//!
//! The cache is per process: a future shared store (replicas) must invalidate
//! every replica's cache when a key is revoked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::ApiKeyRecord;

/// Entries kept at most (of each kind); when full, that kind starts over.
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct KeyCache(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    by_hash: HashMap<String, Arc<ApiKeyRecord>>,
    generation: u64,
    failed: HashSet<String>,
}

/// The cache generation seen before a store lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

impl KeyCache {
    pub fn get(&self, hash: &str) -> Option<Arc<ApiKeyRecord>> {
        self.0.lock().ok()?.by_hash.get(hash).cloned()
    }

    /// Read this before looking a key up in the store, and pass it to [`fill`](Self::fill).
    pub fn generation(&self) -> Generation {
        Generation(self.0.lock().map(|c| c.generation).unwrap_or(u64::MAX))
    }

    /// Caches `record` unless the cache was invalidated since `seen`.
    pub fn fill(&self, hash: String, record: Arc<ApiKeyRecord>, seen: Generation) {
        let Ok(mut c) = self.0.lock() else { return };
        if c.generation != seen.0 {
            return;
        }
        if c.by_hash.len() >= CAPACITY {
            c.by_hash.clear();
        }
        c.by_hash.insert(hash, record);
    }

    /// Whether the key with this hash failed before.
    pub fn failed_before(&self, hash: &str) -> bool {
        self.0.lock().is_ok_and(|c| c.failed.contains(hash))
    }

    /// Remembers that the key with this hash failed.
    pub fn fail(&self, hash: String) {
        let Ok(mut c) = self.0.lock() else { return };
        if c.failed.len() >= CAPACITY {
            c.failed.clear();
        }
        c.failed.insert(hash);
    }

    /// Forgets a failure of `hash` (its key has just been created).
    pub fn forget_failure(&self, hash: &str) {
        let mut c = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.failed.remove(hash);
    }

    /// Forgets every entry and every fill in flight. Called after a change
    /// to any key's validity has committed.
    pub fn invalidate(&self) {
        // A poisoned lock: recover the data so the invalidation still happens.
        let mut c = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.generation = c.generation.wrapping_add(1);
        c.by_hash.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::{ApiKeySecret, OrgId};
    use crate::clock::Timestamp;

    fn record() -> (String, Arc<ApiKeyRecord>) {
        let key = ApiKeySecret::generate().unwrap();
        let rec = ApiKeyRecord::new(&key, &OrgId::default_org(), "k", vec![], Timestamp::from_unix(0));
        (key.hash(), Arc::new(rec))
    }

    #[test]
    fn a_fill_that_raced_with_an_invalidation_is_dropped() {
        let cache = KeyCache::default();
        let (hash, rec) = record();
        let seen = cache.generation();
        cache.invalidate();
        cache.fill(hash.clone(), rec.clone(), seen);
        assert!(cache.get(&hash).is_none(), "a lookup from before the revocation must not be cached");
        cache.fill(hash.clone(), rec, cache.generation());
        assert!(cache.get(&hash).is_some());
        cache.invalidate();
        assert!(cache.get(&hash).is_none());
    }

    #[test]
    fn a_failure_is_remembered_until_its_key_is_created() {
        let cache = KeyCache::default();
        let (hash, _) = record();
        assert!(!cache.failed_before(&hash));
        cache.fail(hash.clone());
        cache.invalidate();
        assert!(cache.failed_before(&hash), "a revocation does not heal a failure");
        cache.forget_failure(&hash);
        assert!(!cache.failed_before(&hash));
        for _ in 0..CAPACITY + 5 {
            cache.fail(record().0);
        }
        assert!(cache.0.lock().unwrap().failed.len() <= CAPACITY);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = KeyCache::default();
        for _ in 0..CAPACITY + 5 {
            let (hash, rec) = record();
            cache.fill(hash, rec, cache.generation());
        }
        assert!(cache.0.lock().unwrap().by_hash.len() <= CAPACITY);
    }
}
