//! The published key set, rendered once per change of the key ring and served
//! from memory: a request for `/.well-known/jwks.json` never reaches storage.
//!
//! A snapshot knows when it stops being true (the next planned publication or
//! removal), so `Cache-Control: max-age` never runs past that instant.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::clock::{whole_seconds_until, Timestamp};
use crate::encoding::b64url;
use crate::keys::{Algorithm, KeyRecord};

/// How long JWKS may be cached: what kmsd says, and what verifiers may add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksPolicy {
    /// Upper bound on the JWKS `Cache-Control: max-age`.
    pub max_age_cap: Duration,
    /// How long verifiers may keep a JWKS beyond what we tell them.
    pub verifier_cache: Duration,
}

/// `max-age` at `now_ms` (milliseconds): `cap`, shortened so that a cache
/// counting from now ends no later than the earliest of `changes`. Whole
/// seconds rounded down: at 99.6 s with a change at 100 s it is 0, not 1
/// (which would keep the old set until 100.6 s).
pub fn max_age(now_ms: i64, cap: Duration, changes: impl IntoIterator<Item = Timestamp>) -> Duration {
    changes.into_iter().map(|at| whole_seconds_until(now_ms, at)).fold(cap, Duration::min)
}

#[derive(Debug, Clone)]
pub struct JwksSnapshot {
    /// The exact response body.
    pub body: Bytes,
    /// Strong entity tag of `body`, quoted.
    pub etag: String,
    /// Algorithms of the published keys, sorted, without duplicates.
    pub algorithms: Vec<Algorithm>,
    /// The next instant at which the published set changes on its own.
    pub valid_until: Option<Timestamp>,
}

impl JwksSnapshot {
    /// Renders the keys of `records` that are published at `now`.
    pub fn render<R: AsRef<KeyRecord>>(records: &[R], now: Timestamp) -> Self {
        let mut published: Vec<&KeyRecord> =
            records.iter().map(AsRef::as_ref).filter(|r| r.state_at(now).is_published()).collect();
        published.sort_by(|a, b| {
            (a.keyset.as_str(), a.schedule.published_at, a.kid.as_str()).cmp(&(
                b.keyset.as_str(),
                b.schedule.published_at,
                b.kid.as_str(),
            ))
        });
        let keys: Vec<Value> = published.iter().map(|r| r.public.to_jwk(r.algorithm(), &r.kid)).collect();
        let body = Bytes::from(serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let mut algorithms: Vec<Algorithm> = published.iter().map(|r| r.algorithm()).collect();
        algorithms.sort();
        algorithms.dedup();
        let valid_until = records
            .iter()
            .map(AsRef::as_ref)
            .filter(|r| r.revoked_at.is_none())
            .flat_map(|r| r.jwks_changes_after(now))
            .min();
        Self { etag: format!("\"{}\"", b64url(&digest.as_ref()[..16])), body, algorithms, valid_until }
    }

    /// Whether the snapshot still describes the published set at `now`.
    pub fn is_current(&self, now: Timestamp) -> bool {
        self.valid_until.is_none_or(|until| now < until)
    }

    /// `max-age` to send at `now_ms` (milliseconds): the cap, shortened to
    /// end at the next change.
    pub fn max_age(&self, now_ms: i64, cap: Duration) -> Duration {
        max_age(now_ms, cap, self.valid_until)
    }

    /// Whether an `If-None-Match` header value matches this snapshot.
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == "*" || t == self.etag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{BackendKind, KeyHandle, KeySpec, KeysetName, PublicKey, Schedule};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix(s)
    }

    fn key(seed: u8, published: i64, removed: Option<i64>) -> KeyRecord {
        let public = PublicKey::ed25519(&[seed; 32]).unwrap();
        KeyRecord {
            kid: public.thumbprint(),
            keyset: KeysetName::parse("edge").unwrap(),
            spec: KeySpec::Ed25519,
            backend: BackendKind::Vault,
            handle: KeyHandle::Destroyed,
            public,
            created_at: t(published),
            schedule: Schedule {
                published_at: t(published),
                activated_at: t(published + 10),
                retired_at: removed.map(|r| t(r - 5)),
                removed_at: removed.map(t),
                destroy_at: None,
            },
            revoked_at: None,
        }
    }

    fn kids(s: &JwksSnapshot) -> Vec<String> {
        let v: Value = serde_json::from_slice(&s.body).unwrap();
        v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn only_published_keys_appear_and_max_age_stops_at_the_next_change() {
        let old = key(1, 0, Some(100));
        let new = key(2, 50, None);
        let ring = [old.clone(), new.clone()];
        let at_40 = JwksSnapshot::render(&ring, t(40));
        assert_eq!(kids(&at_40), [old.kid.to_string()]);
        assert_eq!(at_40.valid_until, Some(t(50)));
        assert_eq!(at_40.max_age(40_000, Duration::from_secs(300)), Duration::from_secs(10));
        assert_eq!(at_40.max_age(49_600, Duration::from_secs(300)), Duration::ZERO, "0.4 s before the change");
        assert_eq!(at_40.max_age(48_200, Duration::from_secs(300)), Duration::from_secs(1));
        assert!(!at_40.is_current(t(50)));

        let at_60 = JwksSnapshot::render(&ring, t(60));
        assert_eq!(kids(&at_60).len(), 2);
        assert_eq!(at_60.max_age(60_000, Duration::from_secs(30)), Duration::from_secs(30));
        assert_ne!(at_60.etag, at_40.etag);

        let at_100 = JwksSnapshot::render(&ring, t(100));
        assert_eq!(kids(&at_100), [new.kid.to_string()]);
        assert_eq!(at_100.valid_until, None);
        assert_eq!(at_100.algorithms, [Algorithm::EdDsa]);
    }

    #[test]
    fn max_age_ends_at_the_earliest_change_rounded_down() {
        let cap = Duration::from_secs(300);
        assert_eq!(max_age(99_600, cap, [t(100)]), Duration::ZERO);
        assert_eq!(max_age(98_200, cap, [t(100)]), Duration::from_secs(1));
        assert_eq!(max_age(98_200, cap, [t(500), t(100)]), Duration::from_secs(1));
        assert_eq!(max_age(98_200, Duration::from_secs(1), []), Duration::from_secs(1));
    }

    #[test]
    fn revoked_keys_leave_at_once() {
        let mut k = key(3, 0, None);
        k.revoked_at = Some(t(5));
        assert!(kids(&JwksSnapshot::render(&[k], t(5))).is_empty());
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let s = JwksSnapshot::render(&[key(4, 0, None)], t(1));
        assert!(s.matches(&s.etag));
        assert!(s.matches(&format!("\"x\", W/{}", s.etag)));
        assert!(s.matches("*"));
        assert!(!s.matches("\"other\""));
    }
}
