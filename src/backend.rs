//! The key backend capability: where private keys are created, held and used.
//!
//! One small object-safe trait, implemented by the local vault
//! ([`crate::vault::VaultBackend`]) and AWS KMS ([`crate::kms::AwsKmsBackend`]), and used as
//! `Arc<dyn KeyBackend>`. Every backend passes the same contract tests.
//! Backends return signatures in JOSE form (RSASSA-PKCS1-v1_5 bytes, Ed25519
//! bytes, ECDSA as fixed `r || s`), and the [`Guarded`] wrapper makes sure
//! each one verifies under the recorded public key before it leaves this
//! module: by verifying it, or — for keys computed in this process whose
//! backend already checks every result against faults — by a sign-and-verify
//! self-test when the key is created or loaded.

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

    /// Whether `sign` with this key already checks each result against faults,
    /// so that verifying it again would repeat the work. Only a backend that
    /// computes the signature in this process, from material that passed the
    /// guard's self-test, can say so; a remote one never does.
    fn checks_own_signatures(&self, public: &PublicKey) -> bool {
        let _ = public;
        false
    }

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

    /// What is left of kmsd's own call budget for this backend, by quota
    /// class (e.g. `rsa`, `ecc`), for `/metrics`. Empty for a backend without one.
    fn budget_remaining(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
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

const SELF_TEST_MESSAGE: &[u8] = b"kmsd key self-test";

/// A backend behind the guard every call goes through: no signature is
/// released that does not verify under the recorded public key.
///
/// A remote backend (AWS KMS) is checked on every signature: the key behind
/// an id can change, and a response can be wrong. A local key whose backend
/// checks its own results ([`KeyBackend::checks_own_signatures`]) is checked
/// once, by a sign-and-verify self-test when it is created or loaded, and
/// then trusted to catch faults itself — the vault's RSA signatures are
/// checked by aws-lc with the public exponent, and its Ed25519 signatures are
/// computed twice and compared — which costs a fraction of a verification.
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
        if self.inner.checks_own_signatures(public) {
            return Ok(sig);
        }
        self.verified(kid, public, message, sig)
    }

    fn verified(&self, kid: &Kid, public: &PublicKey, message: &[u8], sig: Vec<u8>) -> Result<Vec<u8>, BackendError> {
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
        self.self_test(&created.kid, &created.public).await?;
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
        self.self_test(kid, &public).await?;
        Ok(public)
    }

    /// Before a key whose signatures will not be verified one by one signs
    /// anything, one signature by it must verify under its public key.
    async fn self_test(&self, kid: &Kid, public: &PublicKey) -> Result<(), BackendError> {
        if self.inner.checks_own_signatures(public) {
            let sig = self.inner.sign(kid, SELF_TEST_MESSAGE).await?;
            self.verified(kid, public, SELF_TEST_MESSAGE, sig)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::vault::PrivateKey;

    /// A backend holding one Ed25519 key whose signatures can be made faulty.
    struct Flaky {
        key: PrivateKey,
        self_checking: bool,
        faulty: AtomicBool,
    }

    impl Flaky {
        fn guarded(self_checking: bool, faulty: bool) -> Guarded {
            let (key, _) = PrivateKey::generate(KeySpec::Ed25519).unwrap();
            Guarded::new(Arc::new(Self { key, self_checking, faulty: AtomicBool::new(faulty) }))
        }
    }

    #[async_trait]
    impl KeyBackend for Flaky {
        fn kind(&self) -> BackendKind {
            BackendKind::Vault
        }
        async fn create(&self, _: &KeysetName, _: KeySpec) -> Result<CreatedKey, BackendError> {
            let public = self.key.public_key();
            Ok(CreatedKey { kid: public.thumbprint(), public, handle: KeyHandle::Vault { sealed: Vec::new() } })
        }
        async fn load(&self, _: &KeysetName, _: &Kid, _: KeySpec, _: &KeyHandle) -> Result<PublicKey, BackendError> {
            Ok(self.key.public_key())
        }
        async fn sign(&self, _: &Kid, message: &[u8]) -> Result<Vec<u8>, BackendError> {
            let mut sig = self.key.sign(message).unwrap();
            if self.faulty.load(Ordering::Relaxed) {
                sig[0] ^= 1;
            }
            Ok(sig)
        }
        fn checks_own_signatures(&self, _: &PublicKey) -> bool {
            self.self_checking
        }
        async fn destroy(&self, _: &Kid) -> Result<(), BackendError> {
            Ok(())
        }
        async fn health(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }

    fn keyset() -> KeysetName {
        KeysetName::parse("edge").unwrap()
    }

    #[tokio::test]
    async fn a_backend_that_does_not_check_itself_has_every_signature_verified() {
        let guarded = Flaky::guarded(false, true);
        let key = guarded.create(&keyset(), KeySpec::Ed25519).await.unwrap();
        let err = guarded.sign(&key.kid, &key.public, b"m").await.unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[tokio::test]
    async fn a_self_checking_key_that_fails_its_self_test_is_neither_created_nor_loaded() {
        let guarded = Flaky::guarded(true, true);
        let err = guarded.create(&keyset(), KeySpec::Ed25519).await.unwrap_err();
        assert!(matches!(err, BackendError::Corrupt { .. }) && err.to_string().contains("does not verify"), "{err}");
        let kid = guarded.backend().create(&keyset(), KeySpec::Ed25519).await.unwrap().kid;
        let handle = KeyHandle::Vault { sealed: Vec::new() };
        let err = guarded.load(&keyset(), &kid, KeySpec::Ed25519, &handle).await.unwrap_err();
        assert!(matches!(err, BackendError::Corrupt { .. }), "{err}");

        let sound = Flaky::guarded(true, false);
        let key = sound.create(&keyset(), KeySpec::Ed25519).await.unwrap();
        assert!(key.public.verify(b"m", &sound.sign(&key.kid, &key.public, b"m").await.unwrap()));
    }
}
