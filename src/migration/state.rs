//! The stored form of the cut-over's state (meta value `hs256_migration`):
//! a JSON object with a format version `v`, like every other record.
//!
//! ```text
//! {"v":1,"phase":"asymmetric","started_at":100,"cutover_at":200,"sunset_at":300}
//! ```
//!
//! Stores written before the state had a version hold the same object
//! without `v` (format 0); it reads as that state and is written back in
//! format 1 by the next step. Any other version is corrupt, never guessed at.

use serde::{Deserialize, Serialize};

use super::{MigrationError, MigrationState};

/// The current format version.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Versioned<'a> {
    v: u32,
    #[serde(flatten)]
    state: &'a MigrationState,
}

#[derive(Deserialize)]
struct Stored {
    /// Absent in format 0.
    #[serde(default)]
    v: Option<u32>,
    #[serde(flatten)]
    state: MigrationState,
}

/// The bytes to store for `state`.
pub fn encode(state: &MigrationState) -> Vec<u8> {
    // A struct of plain fields always serializes.
    serde_json::to_vec(&Versioned { v: VERSION, state }).unwrap_or_default()
}

/// The state stored as `bytes`, in format 1 or the unversioned format 0.
pub fn decode(bytes: &[u8]) -> Result<MigrationState, MigrationError> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| MigrationError::Corrupt(e.to_string()))?;
    match stored.v {
        None | Some(VERSION) => Ok(stored.state),
        Some(other) => Err(MigrationError::Corrupt(format!("unknown format version {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::clock::Timestamp;
    use crate::migration::{Phase, META_STATE};
    use crate::storage::{RecordKey, Store};

    fn state() -> MigrationState {
        MigrationState {
            phase: Phase::Asymmetric,
            started_at: Timestamp::from_unix(100),
            cutover_at: Some(Timestamp::from_unix(200)),
            sunset_at: Some(Timestamp::from_unix(300)),
        }
    }

    const V1: &str = r#"{"v":1,"phase":"asymmetric","started_at":100,"cutover_at":200,"sunset_at":300}"#;
    /// What stores held before the format had a version.
    const V0: &str = r#"{"phase":"asymmetric","started_at":100,"cutover_at":200,"sunset_at":300}"#;
    /// The whole stored meta value: the state, sealed under the all-zero data
    /// key. The MAC was computed independently (Python hmac/hashlib,
    /// HKDF-SHA256), as for the other golden strings in `storage::records`.
    const STORED: &str = r#"{"v":2,"value":"{\"v\":1,\"phase\":\"asymmetric\",\"started_at\":100,\"cutover_at\":200,\"sunset_at\":300}","mac":"4bOKKfUbzQG5IpvoI3i5x3K15szch1ZBzCcv_ZqhaDM"}"#;

    #[test]
    fn migration_state_golden_bytes_and_the_unversioned_form() {
        assert_eq!(String::from_utf8(encode(&state())).unwrap(), V1);
        assert_eq!(decode(V1.as_bytes()).unwrap(), state());
        assert_eq!(decode(V0.as_bytes()).unwrap(), state(), "format 0 still reads");
        let started = r#"{"phase":"hs256","started_at":7,"cutover_at":null,"sunset_at":null}"#;
        assert_eq!(decode(started.as_bytes()).unwrap().phase, Phase::Hs256);
    }

    #[test]
    fn an_unknown_migration_state_version_or_garbage_is_corrupt() {
        let v9 = V1.replace(r#""v":1"#, r#""v":9"#);
        assert!(matches!(decode(v9.as_bytes()), Err(MigrationError::Corrupt(m)) if m.contains("version 9")));
        assert!(matches!(decode(b"{\"v\":1}"), Err(MigrationError::Corrupt(_))));
        assert!(matches!(decode(b"\xff"), Err(MigrationError::Corrupt(_))));
    }

    /// The bytes in the redb file itself, read back with redb, not the store.
    #[test]
    fn the_stored_migration_state_is_pinned_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::create(&path, RecordKey::derive(&[0; 32])).unwrap();
        store.write_now(|w| w.put_meta(META_STATE, &encode(&state()))).unwrap();
        let read = store.read_now(|r| r.meta(META_STATE)).unwrap().unwrap();
        assert_eq!(decode(&read).unwrap(), state());
        drop(store);
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
        let raw = table.get(META_STATE).unwrap().unwrap().value().to_vec();
        assert_eq!(String::from_utf8(raw).unwrap(), STORED);
    }
}
