//! The audit log: append-only and hash-chained. Each entry commits the hash of
//! the one before it, so editing, dropping or reordering any entry breaks the
//! chain at that entry. Entries are written by [`crate::storage::Writer::audit`]
//! inside the transaction of the change they record.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::encoding::sha256_hex;

/// What happened, by whom, to what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
}

impl AuditEvent {
    pub fn new(at: Timestamp, actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self { at, actor: actor.into(), action: action.into(), target: None, detail: Value::Null }
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

/// An event as stored: numbered and chained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The entry that follows `prev` (or starts the log) and records `event`.
    pub fn chain(prev: Option<&AuditEntry>, event: AuditEvent) -> Self {
        let seq = prev.map_or(1, |p| p.seq + 1);
        let prev_hash = prev.map(|p| p.hash.clone()).unwrap_or_default();
        let hash = entry_hash(seq, &event, &prev_hash);
        Self { seq, event, prev_hash, hash }
    }

    /// Whether this entry's hash covers its contents and links to `prev`.
    pub fn is_intact_after(&self, prev: Option<&AuditEntry>) -> bool {
        let expected_prev = prev.map(|p| p.hash.as_str()).unwrap_or("");
        let expected_seq = prev.map_or(1, |p| p.seq + 1);
        self.seq == expected_seq
            && self.prev_hash == expected_prev
            && self.hash == entry_hash(self.seq, &self.event, &self.prev_hash)
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
/// predecessor. `rows` yields `(stored seq, decoded entry)`. Returns how many
/// entries verified.
pub fn verify_chain<E: std::fmt::Display>(
    rows: impl IntoIterator<Item = (u64, Result<AuditEntry, E>)>,
) -> Result<u64, ChainError> {
    let mut prev: Option<AuditEntry> = None;
    let mut count = 0;
    for (seq, entry) in rows {
        let entry = entry.map_err(|e| ChainError::Broken { seq, reason: format!("does not decode: {e}") })?;
        if entry.seq != seq {
            return Err(ChainError::Broken { seq, reason: format!("is stored as {seq} but says {}", entry.seq) });
        }
        if !entry.is_intact_after(prev.as_ref()) {
            return Err(ChainError::Broken {
                seq,
                reason: "hash does not match its contents and predecessor (edited, removed or reordered)".into(),
            });
        }
        count += 1;
        prev = Some(entry);
    }
    Ok(count)
}

fn entry_hash(seq: u64, event: &AuditEvent, prev_hash: &str) -> String {
    let body = serde_json::to_string(event).unwrap_or_default();
    sha256_hex(format!("{prev_hash}\n{seq}\n{body}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_an_entry_breaks_its_link() {
        let a = AuditEntry::chain(None, AuditEvent::new(Timestamp::from_unix(1), "x", "a"));
        let b = AuditEntry::chain(Some(&a), AuditEvent::new(Timestamp::from_unix(2), "x", "b"));
        assert!(a.is_intact_after(None));
        assert!(b.is_intact_after(Some(&a)));
        let mut edited = b.clone();
        edited.event.actor = "y".into();
        assert!(!edited.is_intact_after(Some(&a)));
        assert!(!b.is_intact_after(None));
        let ok: Vec<(u64, Result<AuditEntry, String>)> = vec![(1, Ok(a.clone())), (2, Ok(b.clone()))];
        assert_eq!(verify_chain(ok), Ok(2));
        let bad: Vec<(u64, Result<AuditEntry, String>)> = vec![(1, Ok(a)), (2, Ok(edited))];
        assert!(matches!(verify_chain(bad), Err(ChainError::Broken { seq: 2, .. })));
    }
}
