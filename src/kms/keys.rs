//! One KMS key's life: created with its tags and alias, its public key read
//! once, signing (digest or raw, JOSE form, verified before release), and
//! disable / scheduled deletion, both idempotent.

use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyUsageType, MessageType, SigningAlgorithmSpec, Tag};

use super::error::KmsFailure;
use super::{
    der, AwsKmsBackend, LoadedKey, TokenBucket, MAX_RAW_MESSAGE, NAME, TAG_INSTANCE, TAG_KEYSET, TAG_KID, TAG_MANAGED,
};
use crate::backend::{BackendError, CreatedKey, KeyBackend};
use crate::keys::{Algorithm, BackendKind, KeyHandle, KeySpec, KeysetName, Kid, PublicKey};

impl AwsKmsBackend {
    fn tags(&self, keyset: &KeysetName) -> Result<Vec<Tag>, BackendError> {
        let mut pairs = vec![(TAG_MANAGED, "true"), (TAG_KEYSET, keyset.as_str())];
        if let Some(instance) = &self.config.instance {
            pairs.push((TAG_INSTANCE, instance));
        }
        pairs.into_iter().map(|(k, v)| tag(k, v)).collect()
    }

    /// Reads the public key of `key_id` and checks that it is a signing key of `spec`.
    async fn fetch_public(&self, key_id: &str, spec: KeySpec, kid: Option<&Kid>) -> Result<PublicKey, BackendError> {
        let out = self
            .client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| self.failure("GetPublicKey", e).into_backend(kid))?;
        let mismatch = |reason: String| match kid {
            Some(kid) => BackendError::Corrupt { backend: NAME, kid: kid.clone(), reason },
            None => KmsFailure::invalid_reply("GetPublicKey", reason).into_backend(None),
        };
        // The SubjectPublicKeyInfo says algorithm, curve and size; the usage is
        // only in the reply.
        if out.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(mismatch(format!("KMS key {key_id} has usage {:?}, not SIGN_VERIFY", out.key_usage())));
        }
        let der = out.public_key().map(|b| b.as_ref()).unwrap_or_default();
        der::public_key_from_spki(der, spec).map_err(|e| mismatch(format!("KMS key {key_id}: public key: {e}")))
    }

    /// The steps of `create` after CreateKey; on failure the caller schedules
    /// the new key's deletion.
    async fn finish_create(
        &self,
        keyset: &KeysetName,
        spec: KeySpec,
        key_id: &str,
    ) -> Result<CreatedKey, BackendError> {
        let public = self.fetch_public(key_id, spec, None).await?;
        let kid = public.thumbprint();
        self.client
            .tag_resource()
            .key_id(key_id)
            .tags(tag(TAG_KID, kid.as_str())?)
            .send()
            .await
            .map_err(|e| self.failure("TagResource", e).into_backend(None))?;
        self.point_alias(keyset, key_id).await?;
        self.loaded.insert(kid.clone(), LoadedKey { key_id: key_id.to_owned(), spec, public: public.clone() });
        Ok(CreatedKey { kid, public, handle: KeyHandle::AwsKms { key_id: key_id.to_owned() } })
    }

    /// Creates the keyset's alias, or moves it to `key_id`.
    async fn point_alias(&self, keyset: &KeysetName, key_id: &str) -> Result<(), BackendError> {
        let alias = self.alias(keyset);
        let created = self.client.create_alias().alias_name(&alias).target_key_id(key_id).send().await;
        let failure = match created {
            Ok(_) => return Ok(()),
            Err(e) => self.failure("CreateAlias", e),
        };
        if !failure.is("AlreadyExistsException") {
            return Err(failure.into_backend(None));
        }
        self.client
            .update_alias()
            .alias_name(&alias)
            .target_key_id(key_id)
            .send()
            .await
            .map(drop)
            .map_err(|e| self.failure("UpdateAlias", e).into_backend(None))
    }

    fn budget(&self, spec: KeySpec) -> &TokenBucket {
        match spec.algorithm() {
            Algorithm::Rs256 => &self.rsa,
            Algorithm::Es256 | Algorithm::EdDsa => &self.ecc,
        }
    }

    /// Schedules deletion of `key_id`; a key already pending deletion or gone
    /// counts as done.
    pub(super) async fn schedule_deletion(&self, key_id: &str) -> Result<(), KmsFailure> {
        let sent = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(self.config.deletion_window_days)
            .send()
            .await;
        match sent.map_err(|e| self.failure("ScheduleKeyDeletion", e)) {
            Ok(_) => Ok(()),
            Err(f) if f.is("NotFoundException") => Ok(()),
            Err(f) if f.is("KMSInvalidStateException") && self.state_is(key_id, &["PendingDeletion"]).await => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Whether DescribeKey says `key_id` is in one of `states`.
    async fn state_is(&self, key_id: &str, states: &[&str]) -> bool {
        let described = self.client.describe_key().key_id(key_id).send().await;
        described
            .ok()
            .and_then(|d| d.key_metadata)
            .and_then(|m| m.key_state)
            .is_some_and(|s| states.contains(&s.as_str()))
    }
}

fn tag(key: &str, value: &str) -> Result<Tag, BackendError> {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .map_err(|e| BackendError::Rejected { backend: NAME, reason: e.to_string() })
}

fn kms_key_spec(spec: KeySpec) -> aws_sdk_kms::types::KeySpec {
    aws_sdk_kms::types::KeySpec::from(spec.as_str())
}

#[async_trait]
impl KeyBackend for AwsKmsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AwsKms
    }

    async fn create(&self, keyset: &KeysetName, spec: KeySpec) -> Result<CreatedKey, BackendError> {
        let out = self
            .client
            .create_key()
            .key_spec(kms_key_spec(spec))
            .key_usage(KeyUsageType::SignVerify)
            .description(format!("kmsd signing key of keyset {keyset}"))
            .set_tags(Some(self.tags(keyset)?))
            .send()
            .await
            .map_err(|e| self.failure("CreateKey", e).into_backend(None))?;
        let key_id = out
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| KmsFailure::invalid_reply("CreateKey", "no key metadata in the reply").into_backend(None))?;
        match self.finish_create(keyset, spec, &key_id).await {
            Ok(created) => Ok(created),
            Err(e) => {
                // Best effort; a key left behind is found by its tags later.
                if let Err(cleanup) = self.schedule_deletion(&key_id).await {
                    tracing::warn!(%key_id, error = %cleanup.detail, "could not schedule deletion of a half-created KMS key");
                }
                Err(e)
            }
        }
    }

    async fn load(
        &self,
        _keyset: &KeysetName,
        kid: &Kid,
        spec: KeySpec,
        handle: &KeyHandle,
    ) -> Result<PublicKey, BackendError> {
        let KeyHandle::AwsKms { key_id } = handle else {
            return Err(BackendError::Corrupt {
                backend: NAME,
                kid: kid.clone(),
                reason: format!("record holds a {handle:?} handle, not an AWS KMS one"),
            });
        };
        if let Some(known) = self.loaded.get(kid).filter(|k| &k.key_id == key_id && k.spec == spec) {
            return Ok(known.public.clone());
        }
        let public = self.fetch_public(key_id, spec, Some(kid)).await?;
        if &public.thumbprint() != kid {
            return Err(BackendError::Corrupt {
                backend: NAME,
                kid: kid.clone(),
                reason: format!("KMS key {key_id} holds a different public key"),
            });
        }
        self.loaded.insert(kid.clone(), LoadedKey { key_id: key_id.clone(), spec, public: public.clone() });
        Ok(public)
    }

    async fn sign(&self, kid: &Kid, message: &[u8]) -> Result<Vec<u8>, BackendError> {
        let key = self.loaded.get(kid).ok_or_else(|| BackendError::NotFound { backend: NAME, kid: kid.clone() })?;
        let digest = || aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref().to_vec();
        let (algorithm, message_type, payload) = match key.spec.algorithm() {
            Algorithm::Rs256 => (SigningAlgorithmSpec::RsassaPkcs1V15Sha256, MessageType::Digest, digest()),
            Algorithm::Es256 => (SigningAlgorithmSpec::EcdsaSha256, MessageType::Digest, digest()),
            Algorithm::EdDsa if message.len() > MAX_RAW_MESSAGE => {
                return Err(BackendError::Rejected {
                    backend: NAME,
                    reason: format!(
                        "EdDSA signing input is {} bytes; KMS signs at most {MAX_RAW_MESSAGE} raw bytes",
                        message.len()
                    ),
                });
            }
            Algorithm::EdDsa => (SigningAlgorithmSpec::Ed25519Sha512, MessageType::Raw, message.to_vec()),
        };
        self.budget(key.spec)
            .try_take(Instant::now())
            .map_err(|retry_after| BackendError::Throttled { backend: NAME, retry_after })?;
        self.sign_requests.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .sign()
            .key_id(&key.key_id)
            .message(Blob::new(payload))
            .message_type(message_type)
            .signing_algorithm(algorithm)
            .send()
            .await
            .map_err(|e| self.failure("Sign", e).into_backend(Some(kid)))?;
        let raw = out.signature().map(|b| b.as_ref()).unwrap_or_default();
        let corrupt = |reason: String| BackendError::Corrupt { backend: NAME, kid: kid.clone(), reason };
        let sig = match key.spec.algorithm() {
            Algorithm::Es256 => {
                der::ecdsa_der_to_fixed(raw, 32).map_err(|e| corrupt(format!("ECDSA signature: {e}")))?
            }
            Algorithm::Rs256 | Algorithm::EdDsa => raw.to_vec(),
        };
        if !key.public.verify(message, &sig) {
            return Err(corrupt(format!("KMS key {} returned a signature that does not verify", key.key_id)));
        }
        Ok(sig)
    }

    async fn disable(&self, kid: &Kid) -> Result<(), BackendError> {
        let Some(key_id) = self.resolve(kid).await? else {
            tracing::warn!(%kid, "no KMS key carries this kid; nothing to disable");
            return Ok(());
        };
        match self.client.disable_key().key_id(&key_id).send().await.map_err(|e| self.failure("DisableKey", e)) {
            Ok(_) => Ok(()),
            Err(f) if f.is("NotFoundException") => Ok(()),
            Err(f)
                if f.is("KMSInvalidStateException")
                    && self.state_is(&key_id, &["Disabled", "PendingDeletion"]).await =>
            {
                Ok(())
            }
            Err(f) => Err(f.into_backend(Some(kid))),
        }
    }

    async fn destroy(&self, kid: &Kid) -> Result<(), BackendError> {
        if let Some(key_id) = self.resolve(kid).await? {
            self.schedule_deletion(&key_id).await.map_err(|f| f.into_backend(Some(kid)))?;
        }
        self.loaded.remove(kid);
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.client
            .list_keys()
            .limit(1)
            .send()
            .await
            .map(drop)
            .map_err(|e| self.failure("ListKeys", e).into_backend(None))
    }

    fn budget_remaining(&self) -> Vec<(&'static str, f64)> {
        let now = Instant::now();
        vec![("rsa", self.rsa.available(now)), ("ecc", self.ecc.available(now))]
    }
}
