//! Private key material, parsed once into aws-lc-rs key objects and kept for
//! the life of the process. PKCS#8 bytes exist only transiently, in
//! [`Zeroizing`] buffers; aws-lc clears the parsed keys when they are freed.
//! `Debug` names the key kind and nothing else.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::keys::{KeySpec, PublicKey};

pub enum PrivateKey {
    Rsa(signature::RsaKeyPair),
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("key generation failed")]
    Generate,
    #[error("private key does not parse as {0}")]
    Parse(&'static str),
    #[error("signing failed")]
    Sign,
    #[error("two computations of the same Ed25519 signature differ (a fault); nothing was released")]
    Fault,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Rsa(_) => "RSA",
            Self::Ed25519(_) => "Ed25519",
            Self::P256(_) => "P-256",
        };
        write!(f, "PrivateKey({kind}, <redacted>)")
    }
}

impl PrivateKey {
    /// Generates a key and returns it with its PKCS#8 encoding (for sealing).
    pub fn generate(spec: KeySpec) -> Result<(Self, Zeroizing<Vec<u8>>), MaterialError> {
        let gen = |_| MaterialError::Generate;
        let (key, pkcs8) = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let size = match spec {
                    KeySpec::Rsa2048 => KeySize::Rsa2048,
                    KeySpec::Rsa3072 => KeySize::Rsa3072,
                    _ => KeySize::Rsa4096,
                };
                let kp = signature::RsaKeyPair::generate(size).map_err(gen)?;
                let der = Zeroizing::new(kp.as_der().map_err(gen)?.as_ref().to_vec());
                (Self::Rsa(kp), der)
            }
            KeySpec::Ed25519 => {
                let kp = Ed25519KeyPair::generate().map_err(gen)?;
                let der = Zeroizing::new(kp.to_pkcs8().map_err(gen)?.as_ref().to_vec());
                (Self::Ed25519(kp), der)
            }
            KeySpec::P256 => {
                let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(gen)?;
                let der = Zeroizing::new(kp.to_pkcs8v1().map_err(gen)?.as_ref().to_vec());
                (Self::P256(kp), der)
            }
        };
        Ok((key, pkcs8))
    }

    pub fn from_pkcs8(spec: KeySpec, der: &[u8]) -> Result<Self, MaterialError> {
        let key = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                Self::Rsa(signature::RsaKeyPair::from_pkcs8(der).map_err(|_| MaterialError::Parse("RSA PKCS#8"))?)
            }
            KeySpec::Ed25519 => {
                Self::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(|_| MaterialError::Parse("Ed25519 PKCS#8"))?)
            }
            KeySpec::P256 => Self::P256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| MaterialError::Parse("P-256 PKCS#8"))?,
            ),
        };
        Ok(key)
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Rsa(kp) => {
                let pk = kp.public_key();
                PublicKey::rsa(
                    pk.modulus().big_endian_without_leading_zero(),
                    pk.exponent().big_endian_without_leading_zero(),
                )
            }
            Self::Ed25519(kp) => PublicKey::Ed25519 { x: kp.public_key().as_ref().to_vec() },
            Self::P256(kp) => PublicKey::p256_uncompressed(kp.public_key().as_ref())
                .unwrap_or(PublicKey::P256 { x: Vec::new(), y: Vec::new() }),
        }
    }

    /// Signs `message`; JOSE form (ECDSA as fixed-width `r || s`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, MaterialError> {
        match self {
            Self::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
                    .map_err(|_| MaterialError::Sign)?;
                Ok(sig)
            }
            // Ed25519 is deterministic, so a fault in either computation shows
            // as a difference; a faulty signature must never leave, since with
            // a good one it can reveal the key.
            Self::Ed25519(kp) => agree(kp.sign(message).as_ref(), kp.sign(message).as_ref()),
            Self::P256(kp) => {
                Ok(kp.sign(&SystemRandom::new(), message).map_err(|_| MaterialError::Sign)?.as_ref().to_vec())
            }
        }
    }
}

/// The signature, if both computations of it are the same.
fn agree(first: &[u8], second: &[u8]) -> Result<Vec<u8>, MaterialError> {
    if first == second {
        Ok(first.to_vec())
    } else {
        Err(MaterialError::Fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_computations_of_a_deterministic_signature_release_nothing() {
        assert_eq!(agree(b"sig", b"sig").unwrap(), b"sig");
        assert!(matches!(agree(b"sig", b"sih"), Err(MaterialError::Fault)));
    }

    #[test]
    fn every_spec_generates_signs_and_round_trips_through_pkcs8() {
        for spec in [KeySpec::Rsa2048, KeySpec::Ed25519, KeySpec::P256] {
            let (key, der) = PrivateKey::generate(spec).unwrap();
            let public = key.public_key();
            public.check_spec(spec).unwrap();
            let sig = key.sign(b"header.payload").unwrap();
            assert!(public.verify(b"header.payload", &sig), "{spec:?}");
            assert!(!public.verify(b"header.payloaX", &sig), "{spec:?}");
            let reparsed = PrivateKey::from_pkcs8(spec, &der).unwrap();
            assert_eq!(reparsed.public_key(), public);
            assert!(format!("{key:?}").contains("redacted"));
        }
    }
}
