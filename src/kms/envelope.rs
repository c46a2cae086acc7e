//! A symmetric AWS KMS key as the vault's key-encryption key (envelope
//! encryption): GenerateDataKey makes a vault's data key, Encrypt wraps an
//! existing one (a rekey) and Decrypt unwraps it, always under an encryption
//! context naming the vault (`kmsd:vault = <vault id>`), so a ciphertext opens
//! only with the context it was made with.
//!
//! The key-encryption key never leaves KMS. Plaintext data keys that kmsd
//! owns are held in zeroizing buffers; the SDK's own request and response
//! buffers are beyond reach (as for any KMS client). Not here: the wrapped
//! record and what a failure means for the vault (`vault::kek`).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;
use zeroize::Zeroizing;

use super::error::KmsFailure;
use super::{client, load_sdk_config, AwsKmsConfig};

/// The encryption context key; its value is the vault id.
pub const VAULT_CONTEXT: &str = "kmsd:vault";

/// The `[vault] kek = "aws-kms"` setting: which KMS key, and the `[aws_kms]`
/// settings (region, endpoint, timeouts) for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKek {
    /// A key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub key_id: String,
    pub settings: AwsKmsConfig,
}

/// A connection to KMS for one [`KmsKek`].
pub struct KmsEnvelope {
    client: Client,
    key_id: String,
}

/// A data key under the KEK: the CiphertextBlob and the ARN of the key KMS used.
#[derive(Debug)]
pub struct Ciphertext {
    pub blob: Vec<u8>,
    pub key_arn: String,
}

impl KmsKek {
    /// Uses the standard AWS credential chain, with the `[aws_kms]` settings on top.
    pub async fn connect(&self) -> KmsEnvelope {
        KmsEnvelope {
            client: client(&load_sdk_config(&self.settings).await, &self.settings),
            key_id: self.key_id.clone(),
        }
    }
}

impl KmsEnvelope {
    /// GenerateDataKey (AES_256): a new data key and its ciphertext.
    pub async fn generate_data_key(&self, vault_id: &str) -> Result<(Zeroizing<Vec<u8>>, Ciphertext), KmsFailure> {
        const OP: &str = "GenerateDataKey";
        let mut out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(VAULT_CONTEXT, vault_id)
            .send()
            .await
            .map_err(|e| KmsFailure::from_sdk(OP, e))?;
        let plaintext = Zeroizing::new(out.plaintext.take().map(Blob::into_inner).unwrap_or_default());
        let ciphertext = ciphertext(OP, out.ciphertext_blob.take(), out.key_id.take())?;
        Ok((plaintext, ciphertext))
    }

    /// Encrypt: wraps an existing data key.
    pub async fn encrypt(&self, plaintext: &[u8], vault_id: &str) -> Result<Ciphertext, KmsFailure> {
        const OP: &str = "Encrypt";
        let mut out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext))
            .encryption_context(VAULT_CONTEXT, vault_id)
            .send()
            .await
            .map_err(|e| KmsFailure::from_sdk(OP, e))?;
        ciphertext(OP, out.ciphertext_blob.take(), out.key_id.take())
    }

    /// Decrypt, naming the key: KMS refuses a ciphertext made under another
    /// key or with another context.
    pub async fn decrypt(&self, blob: &[u8], vault_id: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure> {
        let mut out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob))
            .encryption_context(VAULT_CONTEXT, vault_id)
            .send()
            .await
            .map_err(|e| KmsFailure::from_sdk("Decrypt", e))?;
        Ok(Zeroizing::new(out.plaintext.take().map(Blob::into_inner).unwrap_or_default()))
    }
}

fn ciphertext(op: &'static str, blob: Option<Blob>, key_arn: Option<String>) -> Result<Ciphertext, KmsFailure> {
    match (blob.map(Blob::into_inner), key_arn) {
        (Some(blob), Some(key_arn)) if !blob.is_empty() => Ok(Ciphertext { blob, key_arn }),
        _ => Err(KmsFailure::invalid_reply(op, "the reply has no CiphertextBlob or KeyId")),
    }
}

/// Whether `id` has the shape of a KMS key reference (key id, key ARN, alias
/// name or alias ARN); whether the key exists is for KMS to say.
pub fn check_key_id(id: &str) -> Result<(), &'static str> {
    let chars = |s: &str, extra: &[u8]| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
    };
    let ok = if id.len() > 2048 {
        false
    } else if let Some(name) = id.strip_prefix("alias/") {
        chars(name, b"/_:")
    } else if let Some(rest) = id.strip_prefix("arn:") {
        rest.split_once(":kms:").is_some_and(|(_, r)| {
            r.split_once(":key/").is_some_and(|(_, key)| chars(key, b""))
                || r.split_once(":alias/").is_some_and(|(_, name)| chars(name, b"/_:"))
        })
    } else {
        chars(id, b"")
    };
    if ok {
        Ok(())
    } else {
        Err("is not a KMS key id, key ARN, alias name (alias/...) or alias ARN")
    }
}

#[cfg(test)]
mod tests {
    use super::check_key_id;

    #[test]
    fn key_ids_arns_and_aliases_are_key_references_and_other_text_is_not() {
        for ok in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/kmsd-vault",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/kmsd/vault",
        ] {
            assert_eq!(check_key_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "alias/", "key id", "arn:aws:s3:::bucket", "arn:aws:kms:us-east-1:1:key/", "a\"b"] {
            assert!(check_key_id(bad).is_err(), "{bad:?}");
        }
    }
}
