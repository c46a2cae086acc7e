//! Key identities and kinds: [`Kid`], [`KeysetName`], [`KeySpec`] and the JOSE
//! [`Algorithm`] it implies, the public half of a key ([`PublicKey`]) and the
//! lifecycle of a key version ([`KeyRecord`], [`KeyState`]), and the
//! [`Keyset`] those versions belong to, with its parsed [`CronSchedule`].
//!
//! Nothing here holds private key material; that stays inside a backend.

mod cron;
mod keyset;
mod lifecycle;
mod public;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use cron::CronSchedule;
pub use keyset::{KeyUse, Keyset};
pub use lifecycle::{KeyHandle, KeyRecord, KeyState, Schedule};
pub use public::{PublicKey, PublicKeyError};

/// A key id: the RFC 7638 JWK thumbprint (base64url SHA-256, 43 characters).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kid(String);

impl Kid {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Kid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A keyset: a named signing purpose with one key spec and one backend.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeysetName(String);

impl KeysetName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut bytes = s.bytes();
        let ok = s.len() <= 32
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Keyset(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}
string_newtype_impls!(Kid);
string_newtype_impls!(KeysetName);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("not a key id (expected a 43-character base64url RFC 7638 thumbprint)")]
    Kid,
    #[error("invalid keyset name {0:?} (expected [a-z][a-z0-9_-]*, at most 32 characters)")]
    Keyset(String),
    #[error("unknown key spec {0:?}")]
    KeySpec(String),
}

/// The JOSE signature algorithm a key signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[serde(rename = "ES256")]
    Es256,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }
}

/// The exact kind of key: algorithm plus size or curve. Spelled as AWS KMS
/// spells its `KeySpec`, so a record reads the same whichever backend holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum KeySpec {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ed25519,
    P256,
}

impl KeySpec {
    pub const ALL: [KeySpec; 5] = [Self::Rsa2048, Self::Rsa3072, Self::Rsa4096, Self::Ed25519, Self::P256];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rsa2048 => "RSA_2048",
            Self::Rsa3072 => "RSA_3072",
            Self::Rsa4096 => "RSA_4096",
            Self::Ed25519 => "ECC_NIST_EDWARDS25519",
            Self::P256 => "ECC_NIST_P256",
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| IdError::KeySpec(s.to_owned()))
    }

    pub const fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => Algorithm::Rs256,
            Self::Ed25519 => Algorithm::EdDsa,
            Self::P256 => Algorithm::Es256,
        }
    }

    /// The RSA modulus size in bits, for RSA specs.
    pub const fn rsa_bits(self) -> Option<u32> {
        match self {
            Self::Rsa2048 => Some(2048),
            Self::Rsa3072 => Some(3072),
            Self::Rsa4096 => Some(4096),
            Self::Ed25519 | Self::P256 => None,
        }
    }
}

impl TryFrom<String> for KeySpec {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<KeySpec> for &'static str {
    fn from(k: KeySpec) -> &'static str {
        k.as_str()
    }
}

/// Where a key's private half lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Vault,
    AwsKms,
}

impl BackendKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::AwsKms => "aws-kms",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_names_are_lowercase_identifiers() {
        assert!(KeysetName::parse("access").is_ok());
        assert!(KeysetName::parse("edge-2_b").is_ok());
        for bad in ["", "Access", "1st", "a b", "a/b", &"x".repeat(33)] {
            assert!(KeysetName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_specs_round_trip_through_their_stable_strings() {
        for spec in KeySpec::ALL {
            assert_eq!(KeySpec::parse(spec.as_str()), Ok(spec));
        }
        assert!(KeySpec::parse("RSA_1024").is_err());
    }
}
