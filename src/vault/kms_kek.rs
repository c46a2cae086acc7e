//! The data key wrapped by an AWS KMS key (`[vault] kek = "aws-kms"`): the
//! KMS calls are `kms::envelope`'s; here, the wrapped record they make and
//! what a failure means for the vault. Every failure names KMS and the key,
//! and comes before anything is written.

use super::seal::DataKey;
use super::wrapped::{data_key_from, KekError, KekKind, WrappedDataKey, WRAPPED_VERSION};
use crate::encoding::b64url;
use crate::kms::envelope::Ciphertext;
use crate::kms::{Class, KmsFailure, KmsKek};

/// GenerateDataKey: a new data key for the vault `vault_id`.
pub(super) async fn generate(kek: &KmsKek, vault_id: &str) -> Result<(DataKey, WrappedDataKey), KekError> {
    let (plain, ciphertext) = kek.connect().await.generate_data_key(vault_id).await.map_err(|f| refused(kek, f))?;
    Ok((data_key_from(&plain)?, record(ciphertext, vault_id)))
}

/// Encrypt: `data_key` under the KMS key.
pub(super) async fn wrap(kek: &KmsKek, data_key: &DataKey, vault_id: &str) -> Result<WrappedDataKey, KekError> {
    let ciphertext = kek.connect().await.encrypt(data_key.expose(), vault_id).await.map_err(|f| refused(kek, f))?;
    Ok(record(ciphertext, vault_id))
}

/// Decrypt, with the configured key and the record's vault id as context.
pub(super) async fn unwrap(kek: &KmsKek, wrapped: &WrappedDataKey) -> Result<DataKey, KekError> {
    let vault_id = wrapped.vault_id.as_deref().ok_or_else(|| KekError::Corrupt("no vault id".into()))?;
    let plain = kek.connect().await.decrypt(&wrapped.sealed_bytes()?, vault_id).await.map_err(|f| match f.class {
        Class::Transient => refused(kek, f),
        Class::Rejected | Class::NotFound => KekError::KmsWrong {
            key_id: kek.key_id.clone(),
            wrapped_by: wrapped.kms_key_id.clone().unwrap_or_else(|| "an unrecorded key".into()),
            vault_id: vault_id.to_owned(),
            reason: reason(&f),
        },
    })?;
    data_key_from(&plain)
}

fn record(ciphertext: Ciphertext, vault_id: &str) -> WrappedDataKey {
    WrappedDataKey {
        v: WRAPPED_VERSION,
        kek: KekKind::AwsKms,
        argon2: None,
        sealed: b64url(&ciphertext.blob),
        vault_id: Some(vault_id.to_owned()),
        kms_key_id: Some(ciphertext.key_arn),
    }
}

/// KMS could not be reached (or answered that it cannot serve now), or it
/// refused the call.
fn refused(kek: &KmsKek, f: KmsFailure) -> KekError {
    let (key_id, op, reason) = (kek.key_id.clone(), f.op, reason(&f));
    match f.class {
        Class::Transient => KekError::KmsUnavailable { key_id, op, reason },
        Class::Rejected | Class::NotFound => KekError::KmsRefused { key_id, op, reason },
    }
}

/// What KMS said; the SDK's full account goes to the log.
fn reason(f: &KmsFailure) -> String {
    tracing::debug!(op = f.op, error = %f.detail, "AWS KMS call for the vault KEK failed");
    f.summary.clone()
}
