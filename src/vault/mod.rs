//! The local vault backend: private keys generated with aws-lc-rs, sealed with
//! AES-256-GCM under the vault's data key (bound to keyset and kid), recorded
//! in the store, and held in memory as parsed key objects while kmsd runs.
//!
//! Private key bytes never leave this module unencrypted.

mod kek;
mod kms_kek;
mod material;
mod seal;
mod wrapped;

use std::path::Path;

use async_trait::async_trait;

pub use kek::KekSource;
pub use material::{MaterialError, PrivateKey};
pub use seal::{DataKey, SealError, SecretKey};
pub use wrapped::{new_vault_id, KekError, KekKind, WrappedDataKey};

use crate::audit::{AuditAction, AuditEvent};
use crate::backend::{BackendError, CreatedKey, KeyBackend, LoadedKeys};
use crate::clock::Clock;
use crate::keys::{BackendKind, KeyHandle, KeySpec, KeysetName, Kid, PublicKey};
use crate::storage::{StorageError, Store, Writer, META_DATA_KEY};

const NAME: &str = "vault";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault: {0}")]
    Kek(#[from] KekError),
    #[error("vault: {0}")]
    Storage(#[from] StorageError),
    #[error("vault: the store has no wrapped data key (it was not created by `kmsd init`)")]
    NoDataKey,
}

/// Reads the wrapped data key from the store at `path` without opening it for
/// writing, and unwraps it with `kek`. Called before the store is opened, so a
/// wrong KEK (or a KMS that refuses) leaves the file untouched.
pub async fn unlock(path: &Path, kek: &KekSource) -> Result<DataKey, VaultError> {
    let bytes = Store::peek_meta(path, META_DATA_KEY)?.ok_or(VaultError::NoDataKey)?;
    unwrap_stored(&bytes, kek).await
}

/// Unwraps the wrapped data key as a store holds it (`bytes`) with `kek`.
pub async fn unwrap_stored(bytes: &[u8], kek: &KekSource) -> Result<DataKey, VaultError> {
    Ok(kek.unwrap(&WrappedDataKey::decode(bytes)?).await?)
}

/// A new vault's data key, wrapped under `kek` (which may call AWS KMS, so it
/// runs before the store exists); [`init`] then records it.
pub async fn new_data_key(kek: &KekSource) -> Result<(DataKey, WrappedDataKey), VaultError> {
    kek.create_if_missing()?;
    let (data_key, wrapped) = kek.generate(&new_vault_id()?).await?;
    check_unwraps(kek, &wrapped, &data_key).await?;
    Ok((data_key, wrapped))
}

/// Records a new vault's wrapped data key in `w`.
pub fn init(w: &mut Writer, wrapped: &WrappedDataKey) -> Result<(), VaultError> {
    Ok(w.put_meta(META_DATA_KEY, &wrapped.encode())?)
}

/// Unwraps `wrapped` with `kek` again before it is written: a KEK that can
/// wrap but not unwrap (say, a KMS key policy without `kms:Decrypt`) must not
/// lock the vault.
async fn check_unwraps(kek: &KekSource, wrapped: &WrappedDataKey, data_key: &DataKey) -> Result<(), KekError> {
    let back = kek.unwrap(wrapped).await?;
    aws_lc_rs::constant_time::verify_slices_are_equal(back.expose(), data_key.expose())
        .map_err(|_| KekError::Corrupt("the new wrapping does not unwrap to the data key".into()))
}

/// The vault as a [`KeyBackend`].
pub struct VaultBackend {
    data_key: DataKey,
    loaded: LoadedKeys<PrivateKey>,
}

impl VaultBackend {
    pub fn new(data_key: DataKey) -> Self {
        Self { data_key, loaded: LoadedKeys::default() }
    }
}

fn corrupt(kid: &Kid, reason: impl Into<String>) -> BackendError {
    BackendError::Corrupt { backend: NAME, kid: kid.clone(), reason: reason.into() }
}

#[async_trait]
impl KeyBackend for VaultBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vault
    }

    async fn create(&self, keyset: &KeysetName, spec: KeySpec) -> Result<CreatedKey, BackendError> {
        // RSA generation takes up to a second: keep it off the async workers.
        let (key, pkcs8) = tokio::task::spawn_blocking(move || PrivateKey::generate(spec))
            .await
            .map_err(|e| BackendError::Unavailable { backend: NAME, reason: e.to_string() })?
            .map_err(|e| BackendError::Rejected { backend: NAME, reason: e.to_string() })?;
        let public = key.public_key();
        let kid = public.thumbprint();
        let sealed = self
            .data_key
            .seal(&seal::key_aad(keyset, &kid), &pkcs8)
            .map_err(|e| BackendError::Rejected { backend: NAME, reason: e.to_string() })?;
        self.loaded.insert(kid.clone(), key);
        Ok(CreatedKey { kid, public, handle: KeyHandle::Vault { sealed } })
    }

    async fn load(
        &self,
        keyset: &KeysetName,
        kid: &Kid,
        spec: KeySpec,
        handle: &KeyHandle,
    ) -> Result<PublicKey, BackendError> {
        let KeyHandle::Vault { sealed } = handle else {
            return Err(corrupt(kid, format!("record holds a {handle:?} handle, not a vault one")));
        };
        let pkcs8 = self
            .data_key
            .open(&seal::key_aad(keyset, kid), sealed)
            .map_err(|e| corrupt(kid, format!("sealed private key: {e} (tampered, or moved from another record)")))?;
        let key = PrivateKey::from_pkcs8(spec, &pkcs8).map_err(|e| corrupt(kid, e.to_string()))?;
        let public = key.public_key();
        self.loaded.insert(kid.clone(), key);
        Ok(public)
    }

    async fn sign(&self, kid: &Kid, message: &[u8]) -> Result<Vec<u8>, BackendError> {
        let key = self.loaded.get(kid).ok_or_else(|| BackendError::NotFound { backend: NAME, kid: kid.clone() })?;
        key.sign(message).map_err(|e| match e {
            MaterialError::Fault => corrupt(kid, e.to_string()),
            _ => BackendError::Rejected { backend: NAME, reason: e.to_string() },
        })
    }

    /// RSA: aws-lc verifies every private-key result with the public exponent
    /// before returning it (the Boneh-DeMillo-Lipton check, `rsa_impl.c`).
    /// Ed25519: [`PrivateKey::sign`] computes the signature twice and compares.
    /// P-256 signatures are randomised, so neither applies: the guard verifies.
    fn checks_own_signatures(&self, public: &PublicKey) -> bool {
        matches!(public, PublicKey::Rsa { .. } | PublicKey::Ed25519 { .. })
    }

    async fn disable(&self, kid: &Kid) -> Result<(), BackendError> {
        self.loaded.remove(kid);
        Ok(())
    }

    async fn destroy(&self, kid: &Kid) -> Result<(), BackendError> {
        self.loaded.remove(kid);
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// `kmsd vault rekey`: opens the store (which must not be in use), re-wraps the
/// data key from `current` to `new` and records the new wrapping with its audit
/// event in one transaction: the store holds either the old wrapping or the
/// new one, never neither. The current KEK unwraps the data key first (the
/// store's record MACs need it to open); the new KEK is used while this
/// process holds the store exclusively, after checking that the wrapped
/// record is still the one unwrapped, so nothing can change it in between.
/// Private keys are not re-encrypted and record MACs stay valid (both are
/// keyed by the data key, which does not change); the vault id is kept (one
/// is made for a record from before vault ids).
pub async fn rekey_store(
    path: &Path,
    current: &KekSource,
    new: &KekSource,
    clock: &dyn Clock,
) -> Result<(), VaultError> {
    // The data key (hence the record MAC key) is needed to open the store;
    // it does not change here, so every record MAC stays valid.
    let stored = Store::peek_meta(path, META_DATA_KEY)?.ok_or(VaultError::NoDataKey)?;
    let old = WrappedDataKey::decode(&stored)?;
    let data_key = current.unwrap(&old).await?;
    let store = Store::open(path, 16 << 20, data_key.record_key(), clock.now())?;
    if store.read(|r| r.meta(META_DATA_KEY)).await?.as_deref() != Some(stored.as_slice()) {
        return Err(KekError::Corrupt("the wrapped data key changed while rekeying; nothing was changed".into()).into());
    }
    let vault_id = match old.vault_id {
        Some(id) => id,
        None => new_vault_id()?,
    };
    new.create_if_missing()?;
    let wrapped = new.wrap(&data_key, &vault_id).await?;
    check_unwraps(new, &wrapped, &data_key).await?;
    let event = AuditEvent::new(clock.now(), "cli", AuditAction::VaultRekey)
        .target("vault")
        .detail(serde_json::json!({ "kek": new.kind().as_str() }));
    store
        .write(move |w| {
            w.put_meta(META_DATA_KEY, &wrapped.encode())?;
            w.audit(event)?;
            Ok::<_, VaultError>(())
        })
        .await
}
