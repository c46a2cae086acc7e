//! The key backend capability: where private keys are created, held and used.
//!
//! One small object-safe trait, implemented by the local vault
//! ([`crate::vault::VaultBackend`]) and AWS KMS ([`crate::kms::AwsKmsBackend`]), and used as
//! `Arc<dyn KeyBackend>`. Every backend passes the same contract tests.
//! Backends return signatures in JOSE form (RSASSA-PKCS1-v1_5 bytes, Ed25519
//! bytes, ECDSA as fixed `r || s`), and the [`Guarded`] wrapper verifies each
//! one against the recorded public key before it leaves this module.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::keys::{BackendKind, KeyHandle, KeySpec, KeysetName, Kid, PublicKey};

/// What `create` returns: the public key (whose thumbprint is the kid) and the
/// handle to record with it.
#[derive(Debug)]
pub struct CreatedKey {
    pub kid: Kid,
    pub public: PublicKey,
    pub handle: KeyHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Throttling, timeout, network or 5xx: a retry may help.
    #[error("{backend}: unavailable: {reason}")]
    Unavailable { backend: &'static str, reason: String },
    /// Access denied, disabled key, invalid request: a retry will not help.
    #[error("{backend}: rejected: {reason}")]
    Rejected { backend: &'static str, reason: String },
    #[error("{backend}: key {kid} not found")]
    NotFound { backend: &'static str, kid: Kid },
    /// Stored material failed authentication or does not match its record.
    #[error("{backend}: key {kid} is corrupt: {reason}")]
    Corrupt { backend: &'static str, kid: Kid, reason: String },
    #[error("{backend} does not support {op}")]
    Unsupported { backend: &'static str, op: &'static str },
    /// kmsd's own budget of calls to the backend is spent (it keeps kmsd under
    /// the provider's quota); nothing was sent. Retry after `retry_after`.
    #[error("{backend}: rate limited by kmsd's budget for the backend, retry after {retry_after:?}")]
    Throttled { backend: &'static str, retry_after: Duration },
}

impl BackendError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Throttled { .. })
    }

    /// How long to wait before retrying, when the backend knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A place where private keys live.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;

    /// Creates a new key of `spec` for `keyset`. Not idempotent: every call
    /// creates a distinct key. The key can sign as soon as this returns.
    async fn create(&self, keyset: &KeysetName, spec: KeySpec) -> Result<CreatedKey, BackendError>;

    /// Makes a recorded key usable after a restart and returns its public key.
    /// Idempotent. `Corrupt` if the stored material fails authentication or
    /// does not belong to `kid`.
    async fn load(
        &self,
        keyset: &KeysetName,
        kid: &Kid,
        spec: KeySpec,
        handle: &KeyHandle,
    ) -> Result<PublicKey, BackendError>;

    /// Signs `message` (for JWTs, the JWS signing input) with `kid`.
    /// `NotFound` if the key was never loaded or has been destroyed.
    async fn sign(&self, kid: &Kid, message: &[u8]) -> Result<Vec<u8>, BackendError>;

    /// Stops `kid` from ever signing again. Idempotent.
    async fn disable(&self, kid: &Kid) -> Result<(), BackendError> {
        let _ = kid;
        Err(BackendError::Unsupported { backend: self.kind().as_str(), op: "disable" })
    }

    /// Destroys the private material of `kid` (or schedules its deletion).
    /// Idempotent: an unknown key counts as destroyed.
    async fn destroy(&self, kid: &Kid) -> Result<(), BackendError>;

    /// Whether the backend can sign right now.
    async fn health(&self) -> Result<(), BackendError>;
}

/// What a backend has made usable, by kid: what `sign` looks up. A poisoned
/// lock reads as empty and drops writes, so it never panics.
pub struct LoadedKeys<T>(RwLock<HashMap<Kid, Arc<T>>>);

impl<T> Default for LoadedKeys<T> {
    fn default() -> Self {
        Self(RwLock::new(HashMap::new()))
    }
}

impl<T> LoadedKeys<T> {
    pub fn get(&self, kid: &Kid) -> Option<Arc<T>> {
        self.0.read().ok().and_then(|m| m.get(kid).cloned())
    }

    pub fn insert(&self, kid: Kid, key: T) {
        if let Ok(mut map) = self.0.write() {
            map.insert(kid, Arc::new(key));
        }
    }

    pub fn remove(&self, kid: &Kid) {
        if let Ok(mut map) = self.0.write() {
            map.remove(kid);
        }
    }
}

/// A backend behind the guard every call goes through: signatures are
/// verified against the recorded public key before they are released.
#[derive(Clone)]
pub struct Guarded {
    inner: Arc<dyn KeyBackend>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn KeyBackend>) -> Self {
        Self { inner }
    }

    pub fn backend(&self) -> &dyn KeyBackend {
        self.inner.as_ref()
    }

    pub async fn sign(&self, kid: &Kid, public: &PublicKey, message: &[u8]) -> Result<Vec<u8>, BackendError> {
        let sig = self.inner.sign(kid, message).await?;
        if public.verify(message, &sig) {
            Ok(sig)
        } else {
            Err(BackendError::Corrupt {
                backend: self.inner.kind().as_str(),
                kid: kid.clone(),
                reason: "signature does not verify under the recorded public key".into(),
            })
        }
    }

    /// Creates a key and checks that what came back matches the spec and kid.
    pub async fn create(&self, keyset: &KeysetName, spec: KeySpec) -> Result<CreatedKey, BackendError> {
        let created = self.inner.create(keyset, spec).await?;
        self.check_public(&created.kid, spec, &created.public)?;
        Ok(created)
    }

    pub async fn load(
        &self,
        keyset: &KeysetName,
        kid: &Kid,
        spec: KeySpec,
        handle: &KeyHandle,
    ) -> Result<PublicKey, BackendError> {
        let public = self.inner.load(keyset, kid, spec, handle).await?;
        self.check_public(kid, spec, &public)?;
        Ok(public)
    }

    fn check_public(&self, kid: &Kid, spec: KeySpec, public: &PublicKey) -> Result<(), BackendError> {
        let corrupt =
            |reason: String| BackendError::Corrupt { backend: self.inner.kind().as_str(), kid: kid.clone(), reason };
        public.check_spec(spec).map_err(|e| corrupt(e.to_string()))?;
        if &public.thumbprint() != kid {
            return Err(corrupt("public key thumbprint does not equal the kid".into()));
        }
        Ok(())
    }
}
