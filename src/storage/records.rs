//! Record encoding: JSON objects carrying a format version `v`. A record with
//! an unknown version or that does not parse is reported as corrupt, naming
//! its table and key, and never half-read.
//!
//! Security-relevant records ([`Sealed`]: key records, API keys, identities,
//! meta values) are authenticated: the stored bytes are the JSON object with
//! a last member `"mac"`, the [`RecordKey`] MAC over the table, the record's
//! key and the object without that member:
//!
//! ```text
//! {"v":2,...fields...,"mac":"<43 base64url chars>"}
//! MAC over: {"v":2,...fields...}
//! ```
//!
//! Sessions, issued-token rows and audit entries are plain [`Record`]s (an
//! audit entry's keyed hash is its MAC, see [`crate::audit`]). Sessions and
//! token rows are written by group commit thousands of times a second and
//! give an attacker little: a refresh keeps only the session scopes its
//! (authenticated) identity still holds, and un-revoking by editing a row is
//! no easier than deleting one, which no per-record MAC can prevent.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::mac::RecordKey;
use super::StorageError;
use crate::api_keys::ApiKeyRecord;
use crate::audit::AuditEntry;
use crate::keys::KeyRecord;

/// A value stored in a table, with its current format version.
pub trait Record: Serialize + DeserializeOwned {
    const VERSION: u32;
    /// The oldest format version that still decodes (as this type, unchanged).
    const OLDEST_VERSION: u32 = Self::VERSION;

    fn encode(&self) -> Vec<u8> {
        // Serializing plain data structs to JSON cannot fail.
        serde_json::to_vec(&Versioned { v: Self::VERSION, body: self }).unwrap_or_default()
    }

    fn decode(table: &'static str, key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        parse(table, key, bytes, Self::OLDEST_VERSION..=Self::VERSION)
    }
}

/// A value stored with a MAC (see the module docs). There is no way to read
/// one without checking its MAC, except [`decode_unsealed`](Self::decode_unsealed)
/// for the one-time upgrade of a store written before records had MACs.
pub trait Sealed: Serialize + DeserializeOwned {
    /// The current format version (the first with a MAC).
    const VERSION: u32;
    /// The last format version without a MAC.
    const UNSEALED_VERSION: u32 = Self::VERSION - 1;

    fn encode(&self, mac: &RecordKey, table: &'static str, key: &str) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(&Versioned { v: Self::VERSION, body: self }).unwrap_or_default();
        let tag = mac.record_mac(table, key, &bytes);
        bytes.pop(); // the closing brace
        bytes.extend_from_slice(MAC_OPEN);
        bytes.extend_from_slice(tag.as_bytes());
        bytes.extend_from_slice(MAC_CLOSE);
        bytes
    }

    fn decode(mac: &RecordKey, table: &'static str, key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |reason: &str| StorageError::Corrupt { table, key: key.to_owned(), reason: reason.to_owned() };
        let (body, tag) = split_mac(bytes).ok_or_else(|| corrupt(NO_MAC))?;
        mac.check_record(table, key, &body, tag).map_err(|_| corrupt(BAD_MAC))?;
        parse(table, key, &body, Self::VERSION..=Self::VERSION)
    }

    /// Reads a record as the format before MACs wrote it (upgrade only).
    fn decode_unsealed(table: &'static str, key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        if has_mac(bytes) {
            return Err(StorageError::Corrupt { table, key: key.to_owned(), reason: MAC_WITHOUT_MARKER.into() });
        }
        parse(table, key, bytes, Self::UNSEALED_VERSION..=Self::UNSEALED_VERSION)
    }
}

const MAC_OPEN: &[u8] = br#","mac":""#;
const MAC_CLOSE: &[u8] = br#""}"#;
/// base64url of a 32-byte MAC.
const MAC_LEN: usize = 43;
const NO_MAC: &str = "has no MAC (a record from before record MACs, in a store whose records are authenticated)";
const BAD_MAC: &str = "its MAC does not verify (edited outside kmsd, or moved from another record)";
pub(super) const MAC_WITHOUT_MARKER: &str =
    "has a MAC, but the store has no record-MAC marker (the marker was removed); refusing to re-authenticate";

/// Whether `bytes` end in a `"mac"` member (are in the sealed format).
pub(super) fn has_mac(bytes: &[u8]) -> bool {
    split_mac(bytes).is_some()
}

/// Splits sealed bytes into the object they MAC (the closing brace put
/// back) and the MAC text, if they end in a `"mac"` member.
fn split_mac(bytes: &[u8]) -> Option<(Vec<u8>, &str)> {
    let tail = MAC_OPEN.len() + MAC_LEN + MAC_CLOSE.len();
    let cut = bytes.len().checked_sub(tail)?;
    let (body, suffix) = bytes.split_at(cut);
    let tag = suffix.strip_prefix(MAC_OPEN)?.strip_suffix(MAC_CLOSE)?;
    let mut object = Vec::with_capacity(body.len() + 1);
    object.extend_from_slice(body);
    object.push(b'}');
    Some((object, std::str::from_utf8(tag).ok()?))
}

fn parse<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
    versions: std::ops::RangeInclusive<u32>,
) -> Result<T, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt { table, key: key.to_owned(), reason };
    let versioned: Versioned<T> = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if !versions.contains(&versioned.v) {
        let expected = versions.end();
        return Err(corrupt(format!("format version {} (expected {expected})", versioned.v)));
    }
    Ok(versioned.body)
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// A meta value (UTF-8 text: a number, a flag or JSON), authenticated like a
/// record. Format 1 was the bare value.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct MetaValue {
    pub value: String,
}

impl Sealed for MetaValue {
    const VERSION: u32 = 2;
}

impl Sealed for KeyRecord {
    const VERSION: u32 = 2;
}

impl Sealed for ApiKeyRecord {
    const VERSION: u32 = 2;
}

/// Format 2 added the optional `request_id` and `client` members. A format 1
/// entry decodes as one without them and its hash still verifies; an older
/// kmsd refuses a format 2 entry rather than report a broken chain.
impl Record for AuditEntry {
    const VERSION: u32 = 2;
    const OLDEST_VERSION: u32 = 1;
}

#[cfg(test)]
pub(super) mod tests {
    //! Golden bytes: these pin each encoding. A change that breaks one needs a
    //! new format version and a migration, not a new golden string. The MACs
    //! in the sealed strings were computed independently (Python hmac/hashlib,
    //! HKDF-SHA256 of an all-zero data key), not copied from this code.
    use std::collections::BTreeMap;

    use super::*;
    use crate::api_keys::ApiKeyId;
    use crate::audit::{AuditAction, AuditEvent, Link};
    use crate::clock::Timestamp;
    use crate::identities::{IdentityRecord, IdentityStatus};
    use crate::keys::{BackendKind, KeyHandle, KeySpec, KeysetName, PublicKey, Schedule};

    pub(in crate::storage) fn zero_key() -> RecordKey {
        RecordKey::derive(&[0; 32])
    }

    pub(in crate::storage) fn key_record() -> KeyRecord {
        let public = PublicKey::ed25519(&[1; 32]).unwrap();
        KeyRecord {
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
        }
    }

    pub(in crate::storage) fn api_key_record() -> ApiKeyRecord {
        ApiKeyRecord {
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
        }
    }

    pub(in crate::storage) fn identity_record() -> IdentityRecord {
        IdentityRecord {
            id: "agent_1".into(),
            name: "bot".into(),
            kind: "agent".into(),
            org_id: "org_default".into(),
            status: IdentityStatus::Active,
            scopes: vec!["relayauth:token:read:*".into()],
            roles: vec![],
            metadata: BTreeMap::new(),
            created_at: Timestamp::from_unix(5),
            updated_at: Timestamp::from_unix(6),
            sponsor_id: "user_1".into(),
            sponsor_chain: vec!["user_1".into()],
            workspace_id: "ws_1".into(),
            suspended_at: None,
            suspend_reason: None,
            tokens_revoked_before: None,
        }
    }

    pub(in crate::storage) const KID: &str = "_9sEdkpM-VSozh9DaEbUdK72XWmZ3Zg2bvTDzBeuHDM";
    pub(in crate::storage) const AK: &str = "ak_0123456789abcdef0123456789abcdef";
    /// The format 1 (unsealed) strings, as the code before record MACs wrote them:
    /// what the upgrade reads.
    pub(in crate::storage) const KEY_V1: &str = r#"{"v":1,"kid":"_9sEdkpM-VSozh9DaEbUdK72XWmZ3Zg2bvTDzBeuHDM","keyset":"edge","spec":"ECC_NIST_EDWARDS25519","backend":"vault","handle":{"type":"vault","sealed":"AQID"},"public":{"kty":"OKP","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"},"created_at":100,"schedule":{"published_at":100,"activated_at":100,"retired_at":null,"removed_at":500,"destroy_at":null},"revoked_at":null}"#;
    pub(in crate::storage) const KEY_V2: &str = r#"{"v":2,"kid":"_9sEdkpM-VSozh9DaEbUdK72XWmZ3Zg2bvTDzBeuHDM","keyset":"edge","spec":"ECC_NIST_EDWARDS25519","backend":"vault","handle":{"type":"vault","sealed":"AQID"},"public":{"kty":"OKP","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"},"created_at":100,"schedule":{"published_at":100,"activated_at":100,"retired_at":null,"removed_at":500,"destroy_at":null},"revoked_at":null,"mac":"pG3CWpVrZ0PlB0UQybQvoH2K2XXc_AaPJ1sfJprKEzI"}"#;
    pub(in crate::storage) const API_V1: &str = r#"{"v":1,"id":"ak_0123456789abcdef0123456789abcdef","org_id":"org_default","prefix":"rak_AbCdEfGhIjKl","name":"bootstrap","scopes":["*:*:*:*"],"key_hash":"abababababababababababababababababababababababababababababababab","created_at":7,"revoked_at":null,"last_used_at":null,"expires_at":null}"#;
    pub(in crate::storage) const API_V2: &str = r#"{"v":2,"id":"ak_0123456789abcdef0123456789abcdef","org_id":"org_default","prefix":"rak_AbCdEfGhIjKl","name":"bootstrap","scopes":["*:*:*:*"],"key_hash":"abababababababababababababababababababababababababababababababab","created_at":7,"revoked_at":null,"last_used_at":null,"expires_at":null,"mac":"mn6SdKyC61OmQrlt7AnIh1WFmlop7KwuJPgc9itkfpw"}"#;
    pub(in crate::storage) const IDENTITY_V2: &str = r#"{"v":2,"id":"agent_1","name":"bot","kind":"agent","org_id":"org_default","status":"active","scopes":["relayauth:token:read:*"],"roles":[],"metadata":{},"created_at":5,"updated_at":6,"sponsor_id":"user_1","sponsor_chain":["user_1"],"workspace_id":"ws_1","suspended_at":null,"suspend_reason":null,"tokens_revoked_before":null,"mac":"jXoFM_bjNQcEoD8fxD8-MMCV8E1JEXYz_duC-Yzxu8A"}"#;
    pub(in crate::storage) const META_V2: &str =
        r#"{"v":2,"value":"1700000000","mac":"VWP8SefIaem4GNaPmQS2zmbYFLRiEzq2xtsYbW7Oea4"}"#;

    #[test]
    fn key_record_golden_bytes() {
        let k = zero_key();
        assert_eq!(String::from_utf8(key_record().encode(&k, "keys", KID)).unwrap(), KEY_V2);
        assert_eq!(KeyRecord::decode(&k, "keys", KID, KEY_V2.as_bytes()).unwrap(), key_record());
        assert_eq!(KeyRecord::decode_unsealed("keys", KID, KEY_V1.as_bytes()).unwrap(), key_record());
    }

    #[test]
    fn api_key_record_golden_bytes() {
        let k = zero_key();
        assert_eq!(String::from_utf8(api_key_record().encode(&k, "api_keys", AK)).unwrap(), API_V2);
        assert_eq!(ApiKeyRecord::decode(&k, "api_keys", AK, API_V2.as_bytes()).unwrap(), api_key_record());
        assert_eq!(ApiKeyRecord::decode_unsealed("api_keys", AK, API_V1.as_bytes()).unwrap(), api_key_record());
        // A key minted by a bearer token names its identity; one that acts
        // for no identity encodes exactly as before the field existed.
        let minted = ApiKeyRecord { identity_id: Some("agent_1".into()), ..api_key_record() };
        let bytes = String::from_utf8(minted.encode(&k, "api_keys", AK)).unwrap();
        assert!(bytes.contains(r#""expires_at":null,"identity_id":"agent_1","mac":"#), "{bytes}");
        assert_eq!(ApiKeyRecord::decode(&k, "api_keys", AK, bytes.as_bytes()).unwrap(), minted);
    }

    /// The format 1 identity: the sealed one without its MAC, at version 1.
    pub(in crate::storage) fn identity_v1() -> String {
        let v1 = IDENTITY_V2.replacen(r#""v":2"#, r#""v":1"#, 1);
        v1.split(r#","mac":"#).next().unwrap().to_owned() + "}"
    }

    #[test]
    fn identity_record_golden_bytes() {
        let k = zero_key();
        assert_eq!(String::from_utf8(identity_record().encode(&k, "identities", "agent_1")).unwrap(), IDENTITY_V2);
        let v1 = identity_v1();
        assert_eq!(IdentityRecord::decode_unsealed("identities", "agent_1", v1.as_bytes()).unwrap(), identity_record());
        assert_eq!(
            IdentityRecord::decode(&k, "identities", "agent_1", IDENTITY_V2.as_bytes()).unwrap(),
            identity_record()
        );
    }

    #[test]
    fn meta_value_golden_bytes() {
        let k = zero_key();
        let value = MetaValue { value: "1700000000".into() };
        assert_eq!(String::from_utf8(value.encode(&k, "meta", "hs256_max_exp")).unwrap(), META_V2);
        assert_eq!(MetaValue::decode(&k, "meta", "hs256_max_exp", META_V2.as_bytes()).unwrap(), value);
    }

    #[test]
    fn audit_entry_golden_bytes() {
        let k = zero_key();
        let event = AuditEvent::new(Timestamp::from_unix(9), "system", AuditAction::VaultInit).target("vault");
        let entry = AuditEntry::chain(None, event.clone(), Link::Keyed(&k));
        // Format 1 (before request stamps) still decodes, and its hash verifies.
        let v1 = r#"{"v":1,"seq":1,"at":9,"actor":"system","action":"vault.init","target":"vault","detail":null,"prev_hash":"","hash":"e0c2133b4076a3dee8b1f6f9ae400764e8e1b2aef3f0ffb0143463d3f258e802"}"#;
        let old = AuditEntry::decode("audit", "1", v1.as_bytes()).unwrap();
        assert_eq!(old, entry);
        assert!(old.is_intact_after(None, Link::Keyed(&k)));
        let golden = r#"{"v":2,"seq":1,"at":9,"actor":"system","action":"vault.init","target":"vault","detail":null,"prev_hash":"","hash":"e0c2133b4076a3dee8b1f6f9ae400764e8e1b2aef3f0ffb0143463d3f258e802"}"#;
        assert_eq!(String::from_utf8(entry.encode()).unwrap(), golden);
        assert_eq!(AuditEntry::decode("audit", "1", golden.as_bytes()).unwrap(), entry);
        // Format 2 with a request's stamp: the id and address are hashed too.
        let mut stamped =
            AuditEvent::new(Timestamp::from_unix(9), "ak_0123", crate::audit::AuditAction::KeyRotate).target("kid");
        stamped.request_id = Some("req_1".into());
        stamped.client = Some("127.0.0.1".into());
        let entry2 = AuditEntry::chain(None, stamped, Link::Keyed(&k));
        let golden2 = r#"{"v":2,"seq":1,"at":9,"actor":"ak_0123","action":"key.rotate","target":"kid","detail":null,"request_id":"req_1","client":"127.0.0.1","prev_hash":"","hash":"4b479d46235408c59793e8fd5caac325fb2d56a34b4c2e90871fca6c54942533"}"#;
        assert_eq!(String::from_utf8(entry2.encode()).unwrap(), golden2);
        assert_eq!(AuditEntry::decode("audit", "1", golden2.as_bytes()).unwrap(), entry2);
        let mut moved = entry2.clone();
        moved.event.request_id = Some("req_2".into());
        assert!(!moved.is_intact_after(None, Link::Keyed(&k)), "the stamp is covered by the hash");
        // Entries from before keyed hashes keep their plain SHA-256.
        let plain = AuditEntry::chain(None, event, Link::Sha256);
        assert_eq!(
            plain.hash,
            crate::encoding::sha256_hex(
                b"\n1\n{\"at\":9,\"actor\":\"system\",\"action\":\"vault.init\",\"target\":\"vault\",\"detail\":null}"
            )
        );
    }

    #[test]
    fn unknown_versions_and_garbage_are_corrupt_not_panics() {
        let err = AuditEntry::decode("audit", "7", br#"{"v":3}"#).unwrap_err();
        assert!(err.to_string().contains("table audit, record 7"), "{err}");
        assert!(AuditEntry::decode("audit", "7", b"\xff\x00").is_err());
        let k = zero_key();
        let err = KeyRecord::decode(&k, "keys", KID, KEY_V1.as_bytes()).unwrap_err();
        assert!(err.to_string().contains(&format!("table keys, record {KID}: has no MAC")), "{err}");
        assert!(KeyRecord::decode_unsealed("keys", KID, KEY_V2.as_bytes()).is_err(), "the upgrade never re-seals");
        assert!(KeyRecord::decode(&k, "keys", KID, b"\xff\x00").is_err());
    }

    /// Every single-byte change to every sealed record, and every truncation,
    /// is a corruption error naming the table and record; none panics.
    #[test]
    fn every_edit_of_a_sealed_record_is_named_corruption() {
        fn check<R: Sealed>(table: &'static str, key: &str, golden: &str) {
            let k = zero_key();
            let bytes = golden.as_bytes();
            let named = format!("table {table}, record {key}:");
            for i in 0..bytes.len() {
                for edit in [0x01u8, 0x20, 0x80] {
                    let mut edited = bytes.to_vec();
                    edited[i] ^= edit;
                    let err = R::decode(&k, table, key, &edited).err().unwrap_or_else(|| panic!("{table} byte {i}"));
                    assert!(err.to_string().contains(&named), "{err}");
                }
            }
            for len in 0..bytes.len() {
                assert!(R::decode(&k, table, key, &bytes[..len]).is_err(), "{table} truncated to {len}");
            }
            // The same bytes under another key or in another table do not verify.
            assert!(R::decode(&k, table, "other", bytes).is_err());
            assert!(R::decode(&k, "elsewhere", key, bytes).is_err());
        }
        check::<KeyRecord>("keys", KID, KEY_V2);
        check::<ApiKeyRecord>("api_keys", AK, API_V2);
        check::<IdentityRecord>("identities", "agent_1", IDENTITY_V2);
        check::<MetaValue>("meta", "hs256_max_exp", META_V2);
    }
}
