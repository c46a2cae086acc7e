//! Record encoding: JSON objects carrying a format version `v`. A record with
//! an unknown version or that does not parse is reported as corrupt, naming
//! its table and key, and never half-read.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::api_keys::ApiKeyRecord;
use crate::audit::AuditEntry;
use crate::keys::KeyRecord;

/// A value stored in a table, with its current format version.
pub trait Record: Serialize + DeserializeOwned {
    const VERSION: u32;

    fn encode(&self) -> Vec<u8> {
        // Serializing plain data structs to JSON cannot fail.
        serde_json::to_vec(&Versioned { v: Self::VERSION, body: self }).unwrap_or_default()
    }

    fn decode(table: &'static str, key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt { table, key: key.to_owned(), reason };
        let versioned: Versioned<Self> = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if versioned.v != Self::VERSION {
            return Err(corrupt(format!("format version {} (expected {})", versioned.v, Self::VERSION)));
        }
        Ok(versioned.body)
    }
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

impl Record for KeyRecord {
    const VERSION: u32 = 1;
}

impl Record for ApiKeyRecord {
    const VERSION: u32 = 1;
}

impl Record for AuditEntry {
    const VERSION: u32 = 1;
}

#[cfg(test)]
mod tests {
    //! Golden bytes: these pin each encoding. A change that breaks one needs a
    //! new format version and a migration, not a new golden string.
    use super::*;
    use crate::api_keys::ApiKeyId;
    use crate::audit::AuditEvent;
    use crate::clock::Timestamp;
    use crate::keys::{BackendKind, KeyHandle, KeySpec, KeysetName, PublicKey, Schedule};

    #[test]
    fn key_record_golden_bytes() {
        let public = PublicKey::ed25519(&[1; 32]).unwrap();
        let record = KeyRecord {
            kid: public.thumbprint(),
            keyset: KeysetName::parse("edge").unwrap(),
            spec: KeySpec::Ed25519,
            backend: BackendKind::Vault,
            handle: KeyHandle::Vault { sealed: vec![1, 2, 3] },
            public,
            created_at: Timestamp::from_unix(100),
            schedule: Schedule {
                published_at: Timestamp::from_unix(100),
                activated_at: Timestamp::from_unix(100),
                retired_at: None,
                removed_at: Some(Timestamp::from_unix(500)),
                destroy_at: None,
            },
            revoked_at: None,
        };
        let golden = r#"{"v":1,"kid":"_9sEdkpM-VSozh9DaEbUdK72XWmZ3Zg2bvTDzBeuHDM","keyset":"edge","spec":"ECC_NIST_EDWARDS25519","backend":"vault","handle":{"type":"vault","sealed":"AQID"},"public":{"kty":"OKP","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"},"created_at":100,"schedule":{"published_at":100,"activated_at":100,"retired_at":null,"removed_at":500,"destroy_at":null},"revoked_at":null}"#;
        assert_eq!(String::from_utf8(record.encode()).unwrap(), golden);
        assert_eq!(KeyRecord::decode("keys", "k", golden.as_bytes()).unwrap(), record);
    }

    #[test]
    fn api_key_record_golden_bytes() {
        let record = ApiKeyRecord {
            id: ApiKeyId::parse("ak_0123456789abcdef0123456789abcdef").unwrap(),
            org_id: "org_default".into(),
            prefix: "rak_AbCdEfGhIjKl".into(),
            name: "bootstrap".into(),
            scopes: vec!["*:*:*:*".into()],
            key_hash: "ab".repeat(32),
            created_at: Timestamp::from_unix(7),
            revoked_at: None,
            last_used_at: None,
            expires_at: None,
            identity_id: None,
        };
        // A key that acts for no identity encodes exactly as before the
        // field existed, so records written by older kmsd decode unchanged.
        let golden = r#"{"v":1,"id":"ak_0123456789abcdef0123456789abcdef","org_id":"org_default","prefix":"rak_AbCdEfGhIjKl","name":"bootstrap","scopes":["*:*:*:*"],"key_hash":"abababababababababababababababababababababababababababababababab","created_at":7,"revoked_at":null,"last_used_at":null,"expires_at":null}"#;
        assert_eq!(String::from_utf8(record.encode()).unwrap(), golden);
        assert_eq!(ApiKeyRecord::decode("api_keys", "k", golden.as_bytes()).unwrap(), record);
        // One minted by a bearer token names its identity.
        let minted = ApiKeyRecord { identity_id: Some("agent_1".into()), ..record };
        let golden = golden.replace(r#""expires_at":null}"#, r#""expires_at":null,"identity_id":"agent_1"}"#);
        assert_eq!(String::from_utf8(minted.encode()).unwrap(), golden);
        assert_eq!(ApiKeyRecord::decode("api_keys", "k", golden.as_bytes()).unwrap(), minted);
    }

    #[test]
    fn audit_entry_golden_bytes() {
        let entry =
            AuditEntry::chain(None, AuditEvent::new(Timestamp::from_unix(9), "system", "vault.init").target("vault"));
        let golden = r#"{"v":1,"seq":1,"at":9,"actor":"system","action":"vault.init","target":"vault","detail":null,"prev_hash":"","hash":"HASH"}"#
            .replace("HASH", &entry.hash);
        assert_eq!(String::from_utf8(entry.encode()).unwrap(), golden);
        assert_eq!(AuditEntry::decode("audit", "1", golden.as_bytes()).unwrap(), entry);
    }

    #[test]
    fn unknown_versions_and_garbage_are_corrupt_not_panics() {
        let err = KeyRecord::decode("keys", "kid1", br#"{"v":2}"#).unwrap_err();
        assert!(err.to_string().contains("table keys, record kid1"), "{err}");
        assert!(KeyRecord::decode("keys", "kid1", b"\xff\x00").is_err());
    }
}
