//! Envelope encryption for the vault, all AES-256-GCM with random 96-bit nonces:
//!
//! - a key-encryption key ([`Kek`]) wraps the vault's data key ([`DataKey`]);
//! - the data key seals each private key, with associated data naming the
//!   keyset and kid, so a sealed key copied into another record fails to open.
//!
//! Sealed layout: `version (1) || nonce (12) || ciphertext || tag (16)`.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use crate::keys::{KeysetName, Kid};

const SEALED_V1: u8 = 1;
const TAG_LEN: usize = 16;

/// A 256-bit AES key. Zeroized on drop; `Debug` shows nothing.
pub struct SecretKey(Zeroizing<[u8; 32]>);

/// The key-encryption key, from a key file, an environment variable or a passphrase.
pub type Kek = SecretKey;
/// The vault's data key, which seals every private key.
pub type DataKey = SecretKey;

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("ciphertext failed authentication")]
    Authentication,
    #[error("unsupported sealed format version {0}")]
    Version(u8),
    #[error("sealed data is truncated")]
    Truncated,
    #[error("the system random generator failed")]
    Random,
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn generate() -> Result<Self, SealError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| SealError::Random)?;
        Ok(Self(k))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The store's record and audit MAC keys, derived from this (data) key.
    pub fn record_key(&self) -> crate::storage::RecordKey {
        crate::storage::RecordKey::derive(&self.0)
    }

    fn aead(&self) -> Result<LessSafeKey, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, self.0.as_ref()).map_err(|_| SealError::Authentication)?;
        Ok(LessSafeKey::new(key))
    }

    /// Encrypts `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| SealError::Authentication)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Truncated)?;
        if version != SEALED_V1 {
            return Err(SealError::Version(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .aead()?
            .open_in_place(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), buf.as_mut_slice())
            .map_err(|_| SealError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// Associated data for a sealed private key.
pub fn key_aad(keyset: &KeysetName, kid: &Kid) -> Vec<u8> {
    format!("kmsd/vault/private-key/v1|{keyset}|{kid}").into_bytes()
}

/// Associated data for the wrapped data key.
pub const DATA_KEY_AAD: &[u8] = b"kmsd/vault/data-key/v1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_the_same_key_and_aad() {
        let k = SecretKey::generate().unwrap();
        let sealed = k.seal(b"aad-1", b"secret").unwrap();
        assert_eq!(k.open(b"aad-1", &sealed).unwrap().as_slice(), b"secret");
        assert_eq!(k.open(b"aad-2", &sealed), Err(SealError::Authentication));
        let other = SecretKey::generate().unwrap();
        assert_eq!(other.open(b"aad-1", &sealed), Err(SealError::Authentication));
        for i in 1..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert_eq!(k.open(b"aad-1", &flipped), Err(SealError::Authentication), "byte {i}");
        }
        assert_eq!(k.open(b"aad-1", &sealed[..10]), Err(SealError::Truncated));
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(k.open(b"aad-1", &v2), Err(SealError::Version(2)));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
    }
}
