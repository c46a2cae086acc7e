//! The vault's data key as the store keeps it: wrapped under a KEK
//! ([`WrappedDataKey`], versioned, its encoding pinned), and the errors of
//! every KEK source. Both local KEKs (`kek`) and an AWS KMS KEK (`kms_kek`)
//! make and read this record; it knows neither.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::seal::{DataKey, SealError, SecretKey};
use crate::encoding::{b64url, b64url_decode};

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("KEK file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read KEK file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("KEK file {path} is accessible to group or others (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{origin} does not hold a KEK (expected base64url of exactly 32 bytes)")]
    Malformed { origin: String },
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("passphrase in {0} is shorter than 12 characters")]
    WeakPassphrase(String),
    #[error("cannot create KEK file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "the key-encryption key does not unwrap the vault's data key (wrong KEK for this store); nothing was changed"
    )]
    Wrong,
    #[error("the vault data key is wrapped under kek = \"{stored}\" but the config names kek = \"{configured}\"")]
    KindMismatch { stored: &'static str, configured: &'static str },
    #[error("stored vault data key record is corrupt: {0}")]
    Corrupt(String),
    #[error("AWS KMS is unavailable ({op} with key {key_id}): {reason}; nothing was changed")]
    KmsUnavailable { key_id: String, op: &'static str, reason: String },
    #[error("AWS KMS refused {op} with key {key_id}: {reason}; nothing was changed")]
    KmsRefused { key_id: String, op: &'static str, reason: String },
    #[error(
        "AWS KMS key {key_id} does not unwrap the vault's data key (wrapped under {wrapped_by} for vault {vault_id}: \
         wrong KMS key for this store, or an encryption context that does not match): {reason}; nothing was changed"
    )]
    KmsWrong { key_id: String, wrapped_by: String, vault_id: String, reason: String },
    #[error("argon2: {0}")]
    Argon2(String),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Argon2id parameters, stored with a passphrase-wrapped data key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    pub salt: String,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// The vault data key, wrapped under a KEK, as stored in the `meta` table.
///
/// Version 2 added the optional fields; a version 1 record (without them)
/// still decodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDataKey {
    pub v: u32,
    pub kek: KekKind,
    pub argon2: Option<Argon2Params>,
    /// The data key under the KEK: AES-256-GCM (base64url of the sealed
    /// layout), or for AWS KMS the CiphertextBlob (base64url).
    pub sealed: String,
    /// Names the vault (base64url of 16 random bytes, made at init and kept
    /// across rekeys); a KMS KEK binds the ciphertext to it through the
    /// encryption context `kmsd:vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_id: Option<String>,
    /// The ARN of the KMS key that wrapped the data key (AWS KMS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// The record version this code writes; it reads every version up to it.
pub const WRAPPED_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KekKind {
    File,
    Env,
    Passphrase,
    AwsKms,
}

impl KekKind {
    /// The `[vault] kek` value (and the stored form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Env => "env",
            Self::Passphrase => "passphrase",
            Self::AwsKms => "aws-kms",
        }
    }
}

/// A new vault id: base64url of 16 random bytes.
pub fn new_vault_id() -> Result<String, KekError> {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| SealError::Random)?;
    Ok(b64url(&id))
}

impl WrappedDataKey {
    /// Decodes a stored record, refusing a version this code does not know.
    pub fn decode(bytes: &[u8]) -> Result<Self, KekError> {
        let wrapped: Self = serde_json::from_slice(bytes).map_err(|e| KekError::Corrupt(e.to_string()))?;
        if !(1..=WRAPPED_VERSION).contains(&wrapped.v) {
            return Err(KekError::Corrupt(format!("unsupported record version {}", wrapped.v)));
        }
        Ok(wrapped)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(super) fn sealed_bytes(&self) -> Result<Vec<u8>, KekError> {
        b64url_decode(&self.sealed).map_err(|e| KekError::Corrupt(e.to_string()))
    }
}

/// A data key from its unwrapped bytes.
pub(super) fn data_key_from(plain: &[u8]) -> Result<DataKey, KekError> {
    let bytes: [u8; 32] = plain.try_into().map_err(|_| KekError::Corrupt("data key is not 32 bytes".into()))?;
    Ok(SecretKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored encodings, pinned: a local KEK's and an AWS KMS KEK's.
    #[test]
    fn the_wrapped_record_encoding_is_pinned() {
        let kms = WrappedDataKey {
            v: WRAPPED_VERSION,
            kek: KekKind::AwsKms,
            argon2: None,
            sealed: "AQID".into(),
            vault_id: Some("dmF1bHQ".into()),
            kms_key_id: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
        };
        assert_eq!(
            String::from_utf8(kms.encode()).unwrap(),
            r#"{"v":2,"kek":"aws-kms","argon2":null,"sealed":"AQID","vault_id":"dmF1bHQ","kms_key_id":"arn:aws:kms:us-east-1:111122223333:key/k"}"#
        );
        let file = WrappedDataKey { kek: KekKind::File, kms_key_id: None, ..kms.clone() };
        assert_eq!(
            String::from_utf8(file.encode()).unwrap(),
            r#"{"v":2,"kek":"file","argon2":null,"sealed":"AQID","vault_id":"dmF1bHQ"}"#
        );
        assert_eq!(WrappedDataKey::decode(&kms.encode()).unwrap(), kms);
        let future = br#"{"v":3,"kek":"file","argon2":null,"sealed":"AQID"}"#;
        assert!(matches!(WrappedDataKey::decode(future), Err(KekError::Corrupt(m)) if m.contains("version 3")));
    }
}
