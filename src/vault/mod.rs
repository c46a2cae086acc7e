//! The local vault backend: private keys generated with aws-lc-rs, sealed with
//! AES-256-GCM under the vault's data key (bound to keyset and kid), recorded
//! in the store, and held in memory as parsed key objects while kmsd runs.
//!
//! Private key bytes never leave this module unencrypted.

mod kek;
mod material;
mod seal;

use std::path::Path;

use async_trait::async_trait;

pub use kek::{KekError, KekSource, WrappedDataKey};
pub use material::{MaterialError, PrivateKey};
pub use seal::{DataKey, SealError, SecretKey};

use crate::backend::{BackendError, CreatedKey, KeyBackend, LoadedKeys};
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
/// wrong KEK leaves the file untouched.
pub fn unlock(path: &Path, kek: &KekSource) -> Result<DataKey, VaultError> {
    let bytes = Store::peek_meta(path, META_DATA_KEY)?.ok_or(VaultError::NoDataKey)?;
    Ok(kek.unwrap(&parse_wrapped(&bytes)?)?)
}

/// Creates a data key, wraps it under `kek` and records it in `w`.
pub fn init(w: &mut Writer, kek: &KekSource) -> Result<DataKey, VaultError> {
    kek.create_if_missing()?;
    let data_key = SecretKey::generate().map_err(KekError::from)?;
    w.put_meta(META_DATA_KEY, &encode_wrapped(&kek.wrap(&data_key)?))?;
    Ok(data_key)
}

/// Re-wraps the data key under `new`, in `w`'s transaction: the store holds
/// either the old wrapping or the new one, never neither. Private keys are not
/// re-encrypted (they are sealed under the data key, which does not change).
pub fn rekey(w: &mut Writer, current: &KekSource, new: &KekSource) -> Result<(), VaultError> {
    let bytes = w.meta(META_DATA_KEY)?.ok_or(VaultError::NoDataKey)?;
    let data_key = current.unwrap(&parse_wrapped(&bytes)?)?;
    new.create_if_missing()?;
    w.put_meta(META_DATA_KEY, &encode_wrapped(&new.wrap(&data_key)?))?;
    Ok(())
}

fn parse_wrapped(bytes: &[u8]) -> Result<WrappedDataKey, KekError> {
    serde_json::from_slice(bytes).map_err(|e| KekError::Corrupt(e.to_string()))
}

fn encode_wrapped(w: &WrappedDataKey) -> Vec<u8> {
    serde_json::to_vec(w).unwrap_or_default()
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
        key.sign(message).map_err(|e| BackendError::Rejected { backend: NAME, reason: e.to_string() })
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
/// data key from `current` to `new` and records the event, in one transaction.
pub fn rekey_store(
    path: &Path,
    current: &KekSource,
    new: &KekSource,
    clock: &dyn crate::clock::Clock,
) -> Result<(), VaultError> {
    let store = Store::open(path)?;
    let now = clock.now();
    store.write_now(|w| {
        rekey(w, current, new)?;
        w.audit(
            crate::audit::AuditEvent::new(now, "cli", "vault.rekey")
                .target("vault")
                .detail(serde_json::json!({ "kek": format!("{:?}", new.kind()).to_lowercase() })),
        )?;
        Ok::<_, VaultError>(())
    })
}
