//! The key-backend contract, written once and run against every backend
//! (SPIRE's keymanagertest pattern). Here: the vault; `kms.rs` runs it against
//! AWS KMS on the emulator. Each signature is checked against the public key
//! the backend reported, and a fresh backend instance must be able to load the
//! recorded handle and sign with the same key.

use std::sync::Arc;

use kmsd::backend::{BackendError, KeyBackend};
use kmsd::keys::{KeyHandle, KeySpec, KeysetName};
use kmsd::vault::{SecretKey, VaultBackend};

const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudF8xIn0";

pub async fn contract(make: impl Fn() -> Arc<dyn KeyBackend>) {
    let keyset = KeysetName::parse("contract").unwrap();
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Ed25519, KeySpec::P256] {
        let first = make();
        let created = first.create(&keyset, spec).await.unwrap();
        assert_eq!(created.public.thumbprint(), created.kid, "{spec:?}: kid is the thumbprint");
        created.public.check_spec(spec).unwrap();

        let sig = first.sign(&created.kid, MESSAGE).await.unwrap();
        let expected_len = match spec {
            KeySpec::Rsa2048 => 256,
            KeySpec::Rsa3072 => 384,
            KeySpec::Rsa4096 => 512,
            KeySpec::Ed25519 | KeySpec::P256 => 64,
        };
        assert_eq!(sig.len(), expected_len, "{spec:?}: JOSE signature length");
        assert!(created.public.verify(MESSAGE, &sig), "{spec:?}: signature verifies");
        assert!(!created.public.verify(b"another message", &sig), "{spec:?}: bound to the message");

        // A fresh instance (a restart) knows nothing until it loads the handle.
        let second = make();
        assert!(matches!(second.sign(&created.kid, MESSAGE).await, Err(BackendError::NotFound { .. })));
        let loaded = second.load(&keyset, &created.kid, spec, &created.handle).await.unwrap();
        assert_eq!(loaded, created.public, "{spec:?}: same public key after reload");
        second.load(&keyset, &created.kid, spec, &created.handle).await.unwrap();
        let sig2 = second.sign(&created.kid, MESSAGE).await.unwrap();
        assert!(created.public.verify(MESSAGE, &sig2), "{spec:?}: reloaded key signs");

        second.destroy(&created.kid).await.unwrap();
        second.destroy(&created.kid).await.unwrap();
        assert!(second.sign(&created.kid, MESSAGE).await.is_err(), "{spec:?}: destroyed key cannot sign");
        second.health().await.unwrap();
    }
}

fn vault_factory() -> impl Fn() -> Arc<dyn KeyBackend> {
    let bytes = [0x5a; 32];
    move || Arc::new(VaultBackend::new(SecretKey::from_bytes(bytes))) as Arc<dyn KeyBackend>
}

#[tokio::test]
async fn vault_passes_the_backend_contract() {
    contract(vault_factory()).await;
}

#[tokio::test]
async fn vault_refuses_a_sealed_key_under_another_kid_or_keyset_or_data_key() {
    let make = vault_factory();
    let backend = make();
    let a = KeysetName::parse("a").unwrap();
    let b = KeysetName::parse("b").unwrap();
    let k1 = backend.create(&a, KeySpec::Ed25519).await.unwrap();
    let k2 = backend.create(&a, KeySpec::Ed25519).await.unwrap();
    let fresh = make();
    let moved = fresh.load(&a, &k2.kid, KeySpec::Ed25519, &k1.handle).await.unwrap_err();
    assert!(matches!(moved, BackendError::Corrupt { .. }), "{moved}");
    let other_keyset = fresh.load(&b, &k1.kid, KeySpec::Ed25519, &k1.handle).await.unwrap_err();
    assert!(matches!(other_keyset, BackendError::Corrupt { .. }), "{other_keyset}");
    let KeyHandle::Vault { sealed } = &k1.handle else { panic!("vault handle") };
    let mut flipped = sealed.clone();
    flipped[20] ^= 0x80;
    let err = fresh.load(&a, &k1.kid, KeySpec::Ed25519, &KeyHandle::Vault { sealed: flipped }).await.unwrap_err();
    assert!(err.to_string().contains("is corrupt"), "{err}");
    let other_vault = VaultBackend::new(SecretKey::from_bytes([1; 32]));
    assert!(other_vault.load(&a, &k1.kid, KeySpec::Ed25519, &k1.handle).await.is_err());
}
