//! The store's integrity key: HMAC-SHA256 keys derived from the vault data key
//! with HKDF-SHA256 (fixed labels, so the data key itself never MACs), one
//! for authenticated records and one for the audit chain.
//!
//! A record MAC covers the table, the record's key (id, kid or meta name)
//! and the exact stored bytes, so an edited record, or one copied under
//! another key or into another table, does not verify. Whoever can write the
//! file but does not hold the data key cannot make a record that does.

use std::sync::Arc;

use aws_lc_rs::{hkdf, hmac};

use crate::encoding::{b64url, b64url_decode, hex};

const SALT: &[u8] = b"kmsd/store/v1";
const RECORD_LABEL: &[u8] = b"kmsd record mac v1";
const AUDIT_LABEL: &[u8] = b"kmsd audit chain v1";

/// The MAC keys of one store. Cheap to clone; the key state lives in aws-lc
/// contexts that are cleansed on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct RecordKey(Arc<Keys>);

struct Keys {
    records: hmac::Key,
    audit: hmac::Key,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(<redacted>)")
    }
}

/// A MAC that did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMac;

impl RecordKey {
    /// Derives the store's keys from the vault data key (32 uniformly random bytes).
    pub fn derive(data_key: &[u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(data_key);
        let expand = |label: &'static [u8]| -> hmac::Key {
            match prk.expand(&[label], hmac::HMAC_SHA256) {
                Ok(okm) => hmac::Key::from(okm),
                // 32 bytes is far below HKDF's 255 * 32 limit, so this cannot happen;
                // a key made from the label alone would still be a valid (if weak) key.
                Err(_) => hmac::Key::new(hmac::HMAC_SHA256, label),
            }
        };
        Self(Arc::new(Keys { records: expand(RECORD_LABEL), audit: expand(AUDIT_LABEL) }))
    }

    fn record_context(&self, table: &str, key: &str, bytes: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0.records);
        for part in [table.as_bytes(), key.as_bytes()] {
            ctx.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(bytes);
        ctx.sign()
    }

    /// The MAC of `bytes` stored under `key` in `table`, base64url.
    pub fn record_mac(&self, table: &str, key: &str, bytes: &[u8]) -> String {
        b64url(self.record_context(table, key, bytes).as_ref())
    }

    /// Checks (in constant time) a MAC made by [`record_mac`](Self::record_mac).
    pub fn check_record(&self, table: &str, key: &str, bytes: &[u8], mac: &str) -> Result<(), BadMac> {
        let given = b64url_decode(mac).map_err(|_| BadMac)?;
        let expected = self.record_context(table, key, bytes);
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &given).map_err(|_| BadMac)
    }

    /// The keyed hash that links an audit entry, lower-case hex.
    pub fn audit_hash(&self, message: &[u8]) -> String {
        hex(hmac::sign(&self.0.audit, message).as_ref())
    }
}

impl crate::audit::ChainKey for RecordKey {
    fn keyed_hash(&self, message: &[u8]) -> String {
        self.audit_hash(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_table_key_and_bytes_and_differ_per_data_key() {
        let k = RecordKey::derive(&[7; 32]);
        let mac = k.record_mac("api_keys", "ak_1", b"{}");
        assert_eq!(mac.len(), 43);
        assert_eq!(k.check_record("api_keys", "ak_1", b"{}", &mac), Ok(()));
        assert_eq!(k.check_record("api_keys", "ak_2", b"{}", &mac), Err(BadMac));
        assert_eq!(k.check_record("identities", "ak_1", b"{}", &mac), Err(BadMac));
        assert_eq!(k.check_record("api_keys", "ak_1", b"{ }", &mac), Err(BadMac));
        // Length-prefixed framing: moving a byte between table and key changes the MAC.
        assert_ne!(k.record_mac("ab", "c", b""), k.record_mac("a", "bc", b""));
        assert_eq!(k.check_record("api_keys", "ak_1", b"{}", "not base64!"), Err(BadMac));
        let other = RecordKey::derive(&[8; 32]);
        assert_eq!(other.check_record("api_keys", "ak_1", b"{}", &mac), Err(BadMac));
        assert_ne!(k.audit_hash(b"x"), other.audit_hash(b"x"));
        assert_eq!(format!("{k:?}"), "RecordKey(<redacted>)");
    }

    #[test]
    fn the_derivation_is_pinned() {
        // RFC 5869 HKDF-SHA256 then HMAC-SHA256, as computed independently (Python
        // hmac/hashlib). A change here would make every existing store fail to verify.
        let k = RecordKey::derive(&[0; 32]);
        assert_eq!(k.record_mac("t", "k", b"v"), "pAD8UTM3D2v9VMUuqa7JhGCtnhmGg7ft7UV1PeTkI-o");
        assert_eq!(k.audit_hash(b"m"), "2eeb7d153226a6a5d20d958c2a6990d7a661aeff39c34f265d7001e572e80232");
    }
}
