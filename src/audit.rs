//! The audit log: append-only and hash-chained. Each entry commits the hash of
//! the one before it, so editing, dropping or reordering any entry breaks the
//! chain at that entry. Entries are written by [`crate::storage::Writer::audit`]
//! inside the transaction of the change they record.
//!
//! The hashes are keyed ([`Link::Keyed`], HMAC-SHA256 under a key derived from
//! the vault data key), so someone who can write the store file but does not
//! hold that key cannot re-chain an edited log. A store written before keyed
//! hashes keeps its older entries' plain SHA-256 hashes ([`Link::Sha256`]);
//! its upgrade entry is the first keyed one and commits the hash of the last
//! plain entry, so the plain prefix cannot be rewritten either.
//!
//! What happened is an [`AuditAction`]: one variant per kind of change, each
//! stored as its stable string (`key.rotate`), so the stored bytes, and the
//! hashes over them, are what they were when actions were plain strings.
//! An event committed on behalf of a request carries the request's id and the
//! client's address ([`crate::context`]); they are part of the hashed body.
//! Events without them (older entries, background work) serialize exactly as
//! before, so their hashes still verify.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::encoding::sha256_hex;

/// What happened, by whom, to what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: String,
    pub action: AuditAction,
    pub target: Option<String>,
    pub detail: Value,
    /// The `x-request-id` of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client address of that request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl AuditEvent {
    pub fn new(at: Timestamp, actor: impl Into<String>, action: AuditAction) -> Self {
        Self { at, actor: actor.into(), action, target: None, detail: Value::Null, request_id: None, client: None }
    }

    /// Stamps the event with the current request's id and client address,
    /// unless it has them already or no request is being served.
    pub fn stamped(mut self, context: Option<&crate::context::RequestContext>) -> Self {
        if let (Some(c), None) = (context, &self.request_id) {
            self.request_id = Some(c.id.clone());
            self.client = c.client.map(|a| a.to_string());
        }
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Declares [`AuditAction`] from `Variant => "stable.string",` rows.
macro_rules! audit_actions {
    ($($variant:ident => $text:literal,)*) => {
        /// A kind of audited change, stored as its stable string.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $(#[doc = concat!("`", $text, "`")] $variant,)*
            /// An action this build does not know (written by a later
            /// version): kept as read, so its entry still verifies.
            Other(String),
        }

        impl AuditAction {
            /// Every action this build writes.
            pub const KNOWN: &'static [AuditAction] = &[$(AuditAction::$variant),*];

            /// The stable string stored in the audit log.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(text) => text,
                }
            }

            /// The action stored as `text`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

audit_actions! {
    VaultInit => "vault.init",
    VaultRekey => "vault.rekey",
    StoreUpgrade => "store.upgrade",
    StoreBackup => "store.backup",
    ApiKeyCreate => "api_key.create",
    ApiKeyRevoke => "api_key.revoke",
    AuthFailures => "auth.failures",
    IdentityCreate => "identity.create",
    IdentityUpdate => "identity.update",
    IdentitySuspend => "identity.suspend",
    IdentityRetire => "identity.retire",
    IdentityReactivate => "identity.reactivate",
    IdentityDelete => "identity.delete",
    KeyCreate => "key.create",
    KeyRotate => "key.rotate",
    KeyRotateImmediate => "key.rotate_immediate",
    KeyPromote => "key.promote",
    KeyDestroy => "key.destroy",
    KeyRevoke => "key.revoke",
    KeyRollback => "key.rollback",
    RotationPause => "rotation.pause",
    RotationResume => "rotation.resume",
    KmsOrphanCleanup => "kms.orphan_cleanup",
    MigrationStart => "migration.start",
    MigrationAdvance => "migration.advance",
    MigrationRollback => "migration.rollback",
    MigrationSunset => "migration.sunset",
    MigrationSunsetNow => "migration.sunset_now",
    TokenRevoke => "token.revoke",
    TokenRevokeSession => "token.revoke_session",
    TokenRevokeIdentity => "token.revoke_identity",
    TokenRefreshReuse => "token.refresh_reuse",
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// The info-level log line of a committed event: what, by whom, to what, and
/// for which request. The detail stays in the audit log (it is not needed to
/// follow what happened, and the log is the wider audience).
pub fn log_committed(event: &AuditEvent) {
    tracing::info!(
        action = %event.action,
        actor = %event.actor,
        target = event.target.as_deref().unwrap_or(""),
        keyset = event.detail.get("keyset").and_then(serde_json::Value::as_str).unwrap_or(""),
        request_id = event.request_id.as_deref().unwrap_or(""),
        client = event.client.as_deref().unwrap_or(""),
        "audited {}",
        event.action
    );
}

/// An event as stored: numbered and chained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The keyed hash function of a store's chain (its record key).
pub trait ChainKey {
    /// HMAC of `message`, lower-case hex.
    fn keyed_hash(&self, message: &[u8]) -> String;
}

/// How an entry's hash is computed.
#[derive(Clone, Copy)]
pub enum Link<'k> {
    /// Plain SHA-256: entries written before the store's upgrade to keyed hashes.
    Sha256,
    /// HMAC-SHA256 under the store's audit key: every entry written since.
    Keyed(&'k dyn ChainKey),
}

impl Link<'_> {
    fn hash(self, seq: u64, event: &AuditEvent, prev_hash: &str) -> String {
        let body = serde_json::to_string(event).unwrap_or_default();
        let message = format!("{prev_hash}\n{seq}\n{body}");
        match self {
            Self::Sha256 => sha256_hex(message.as_bytes()),
            Self::Keyed(key) => key.keyed_hash(message.as_bytes()),
        }
    }
}

impl AuditEntry {
    /// The entry that follows `prev` (or starts the log) and records `event`.
    pub fn chain(prev: Option<&AuditEntry>, event: AuditEvent, link: Link<'_>) -> Self {
        let seq = prev.map_or(1, |p| p.seq + 1);
        let prev_hash = prev.map(|p| p.hash.clone()).unwrap_or_default();
        let hash = link.hash(seq, &event, &prev_hash);
        Self { seq, event, prev_hash, hash }
    }

    /// Whether this entry's hash (computed as `link`) covers its contents and links to `prev`.
    pub fn is_intact_after(&self, prev: Option<&AuditEntry>, link: Link<'_>) -> bool {
        let expected_prev = prev.map(|p| p.hash.as_str()).unwrap_or("");
        let expected_seq = prev.map_or(1, |p| p.seq + 1);
        self.seq == expected_seq
            && self.prev_hash == expected_prev
            && self.hash == link.hash(self.seq, &self.event, &self.prev_hash)
    }
}

/// Why a chain does not verify, naming the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit entry {seq}: {reason}")]
    Broken { seq: u64, reason: String },
}

/// Walks a chain in order, stopping at the first entry that does not decode,
/// is out of sequence, or whose hash does not cover its contents and its
/// predecessor. Entries from `keyed_from` on are checked with `key`, those
/// before it (all of them, for `None`: a store not yet upgraded) as plain SHA-256. `rows` yields `(stored seq, decoded entry)`.
/// Returns how many entries verified.
pub fn verify_chain<E: std::fmt::Display>(
    rows: impl IntoIterator<Item = (u64, Result<AuditEntry, E>)>,
    keyed_from: Option<u64>,
    key: &dyn ChainKey,
) -> Result<u64, ChainError> {
    let mut prev: Option<AuditEntry> = None;
    let mut count = 0;
    for (seq, entry) in rows {
        let entry = entry.map_err(|e| ChainError::Broken { seq, reason: format!("does not decode: {e}") })?;
        if entry.seq != seq {
            return Err(ChainError::Broken { seq, reason: format!("is stored as {seq} but says {}", entry.seq) });
        }
        let link = if keyed_from.is_some_and(|from| seq >= from) { Link::Keyed(key) } else { Link::Sha256 };
        if !entry.is_intact_after(prev.as_ref(), link) {
            return Err(ChainError::Broken {
                seq,
                reason: "hash does not match its contents and predecessor (edited, removed or reordered)".into(),
            });
        }
        count += 1;
        prev = Some(entry);
    }
    if let Some(keyed_from) = keyed_from.filter(|&from| count < from && from > 1) {
        return Err(ChainError::Broken {
            seq: count + 1,
            reason: format!("is missing: the keyed chain starts at entry {keyed_from} (entries were removed)"),
        });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestKey;
    impl ChainKey for TestKey {
        fn keyed_hash(&self, message: &[u8]) -> String {
            sha256_hex(&[b"secret|".as_slice(), message].concat())
        }
    }
    const KEYED: Link<'static> = Link::Keyed(&TestKey);

    fn rows(entries: &[AuditEntry]) -> Vec<(u64, Result<AuditEntry, String>)> {
        entries.iter().map(|e| (e.seq, Ok(e.clone()))).collect()
    }

    /// Builds a chain of `n` entries, plain before `keyed_from`.
    fn chain(n: u64, keyed_from: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 1..=n {
            let link = if i >= keyed_from { KEYED } else { Link::Sha256 };
            let event = AuditEvent::new(Timestamp::from_unix(i as i64), "system", AuditAction::Other(format!("e{i}")));
            out.push(AuditEntry::chain(out.last(), event, link));
        }
        out
    }

    #[test]
    fn every_action_keeps_its_stable_string_and_an_unknown_one_is_kept_as_read() {
        let texts: Vec<&str> = AuditAction::KNOWN.iter().map(AuditAction::as_str).collect();
        let unique: std::collections::BTreeSet<&str> = texts.iter().copied().collect();
        assert_eq!(unique.len(), texts.len(), "an action string is used twice");
        for action in AuditAction::KNOWN {
            let json = serde_json::to_string(action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
            assert_eq!(&serde_json::from_str::<AuditAction>(&json).unwrap(), action);
        }
        assert_eq!(AuditAction::KeyRotateImmediate.as_str(), "key.rotate_immediate");
        assert_eq!(AuditAction::TokenRevokeIdentity.as_str(), "token.revoke_identity");
        // An entry written by a later version, with an action this build
        // does not know, reads back byte for byte and still verifies.
        let future = AuditAction::Other("key.future_thing".into());
        let later = AuditEntry::chain(None, AuditEvent::new(Timestamp::from_unix(5), "x", future), KEYED);
        let text = serde_json::to_string(&later).unwrap();
        assert!(text.contains(r#""action":"key.future_thing""#), "{text}");
        let read: AuditEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(read, later);
        assert!(read.is_intact_after(None, KEYED));
    }

    #[test]
    fn editing_an_entry_breaks_its_link() {
        let a = AuditEntry::chain(None, AuditEvent::new(Timestamp::from_unix(1), "x", AuditAction::KeyCreate), KEYED);
        let b =
            AuditEntry::chain(Some(&a), AuditEvent::new(Timestamp::from_unix(2), "x", AuditAction::KeyRotate), KEYED);
        assert!(a.is_intact_after(None, KEYED));
        assert!(b.is_intact_after(Some(&a), KEYED));
        let mut edited = b.clone();
        edited.event.actor = "y".into();
        assert!(!edited.is_intact_after(Some(&a), KEYED));
        assert!(!b.is_intact_after(None, KEYED));
        assert_eq!(verify_chain(rows(&[a.clone(), b.clone()]), Some(1), &TestKey), Ok(2));
        assert!(matches!(verify_chain(rows(&[a, edited]), Some(1), &TestKey), Err(ChainError::Broken { seq: 2, .. })));
    }

    /// Edits entry 3 of `entries` and recomputes every later hash, as
    /// anyone could with plain SHA-256 (the forger has no key).
    fn rechain_forged(entries: &[AuditEntry]) -> Vec<AuditEntry> {
        let mut forged = entries[..2].to_vec();
        for e in &entries[2..] {
            let mut event = e.event.clone();
            if e.seq == 3 {
                event.actor = "mallory".into();
            }
            forged.push(AuditEntry::chain(forged.last(), event, Link::Sha256));
        }
        forged
    }

    #[test]
    fn a_forged_entry_rechained_with_plain_sha256_is_caught_by_the_keyed_chain() {
        // With plain hashes (before this change), the re-chained forgery verified.
        let plain = chain(5, u64::MAX);
        assert_eq!(verify_chain(rows(&rechain_forged(&plain)), None, &TestKey), Ok(5), "plain accepts it");
        // With keyed hashes, the same forgery breaks at the edited entry.
        let keyed = chain(5, 1);
        assert_eq!(verify_chain(rows(&keyed), Some(1), &TestKey), Ok(5));
        let err = verify_chain(rows(&rechain_forged(&keyed)), Some(1), &TestKey).unwrap_err();
        assert!(matches!(err, ChainError::Broken { seq: 3, .. }), "{err}");
    }

    #[test]
    fn an_upgraded_chain_keeps_its_plain_prefix_verifiable_and_protected() {
        let entries = chain(6, 4);
        assert_eq!(verify_chain(rows(&entries), Some(4), &TestKey), Ok(6));
        assert!(verify_chain(rows(&entries), Some(1), &TestKey).is_err(), "the plain entries are not keyed");
        // Rewriting the plain prefix consistently breaks the first keyed entry.
        let mut forged = Vec::new();
        for e in &entries[..3] {
            let mut event = e.event.clone();
            event.actor = "mallory".into();
            forged.push(AuditEntry::chain(forged.last(), event, Link::Sha256));
        }
        forged.extend_from_slice(&entries[3..]);
        assert!(matches!(verify_chain(rows(&forged), Some(4), &TestKey), Err(ChainError::Broken { seq: 4, .. })));
        // Dropping the keyed part (a downgrade to the old chain) is reported.
        let err = verify_chain(rows(&entries[..3]), Some(4), &TestKey).unwrap_err();
        assert!(matches!(err, ChainError::Broken { seq: 4, .. }), "{err}");
    }
}
