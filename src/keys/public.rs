//! The public half of a key: its JWK members, its RFC 7638 thumbprint (which
//! is its [`Kid`]) and signature verification.
//!
//! A `PublicKey` can only express public members, so a JWK rendered from it
//! cannot carry `d`, `p`, `q`, `dp`, `dq`, `qi` or `k`.

use aws_lc_rs::{digest, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Algorithm, KeySpec, Kid};

/// A public key in JWK terms. Byte fields are big-endian, without padding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum PublicKey {
    #[serde(rename = "RSA")]
    Rsa {
        #[serde(with = "crate::encoding::b64url_serde")]
        n: Vec<u8>,
        #[serde(with = "crate::encoding::b64url_serde")]
        e: Vec<u8>,
    },
    #[serde(rename = "OKP")]
    Ed25519 {
        #[serde(with = "crate::encoding::b64url_serde")]
        x: Vec<u8>,
    },
    #[serde(rename = "EC")]
    P256 {
        #[serde(with = "crate::encoding::b64url_serde")]
        x: Vec<u8>,
        #[serde(with = "crate::encoding::b64url_serde")]
        y: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("public key does not match key spec {0}")]
    SpecMismatch(&'static str),
    #[error("malformed public key: {0}")]
    Malformed(&'static str),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.thumbprint())
    }
}

impl PublicKey {
    /// Builds an Ed25519 key from its 32-byte encoding.
    pub fn ed25519(x: &[u8]) -> Result<Self, PublicKeyError> {
        if x.len() != 32 {
            return Err(PublicKeyError::Malformed("Ed25519 key must be 32 bytes"));
        }
        Ok(Self::Ed25519 { x: x.to_vec() })
    }

    /// Builds a P-256 key from its uncompressed SEC1 point (`04 || x || y`).
    pub fn p256_uncompressed(point: &[u8]) -> Result<Self, PublicKeyError> {
        match point {
            [4, rest @ ..] if rest.len() == 64 => Ok(Self::P256 { x: rest[..32].to_vec(), y: rest[32..].to_vec() }),
            _ => Err(PublicKeyError::Malformed("P-256 point must be 65 bytes, uncompressed")),
        }
    }

    /// Builds an RSA key from modulus and exponent (leading zero bytes stripped).
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        let strip = |b: &[u8]| {
            let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[first..].to_vec()
        };
        Self::Rsa { n: strip(n), e: strip(e) }
    }

    /// Checks that this key is of the shape `spec` promises (curve, modulus size).
    pub fn check_spec(&self, spec: KeySpec) -> Result<(), PublicKeyError> {
        let ok = match (self, spec) {
            (Self::Rsa { n, .. }, _) => spec.rsa_bits().is_some_and(|bits| n.len() * 8 == bits as usize),
            (Self::Ed25519 { x }, KeySpec::Ed25519) => x.len() == 32,
            (Self::P256 { x, y }, KeySpec::P256) => x.len() == 32 && y.len() == 32,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(PublicKeyError::SpecMismatch(spec.as_str()))
        }
    }

    /// The RFC 7638 thumbprint: base64url SHA-256 of the required members in
    /// lexicographic order, no whitespace.
    pub fn thumbprint(&self) -> Kid {
        let canonical = match self {
            Self::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, B64.encode(e), B64.encode(n)),
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x)),
            Self::P256 { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, B64.encode(x), B64.encode(y))
            }
        };
        let hash = digest::digest(&digest::SHA256, canonical.as_bytes());
        Kid(B64.encode(hash.as_ref()))
    }

    /// The JWKS entry for this key: `kty, use, alg, kid` and the public members.
    pub fn to_jwk(&self, alg: Algorithm, kid: &Kid) -> Value {
        let mut jwk = json!({ "kty": "", "use": "sig", "alg": alg.as_str(), "kid": kid.as_str() });
        let fields: &[(&str, String)] = &match self {
            Self::Rsa { n, e } => vec![("kty", "RSA".into()), ("n", B64.encode(n)), ("e", B64.encode(e))],
            Self::Ed25519 { x } => vec![("kty", "OKP".into()), ("crv", "Ed25519".into()), ("x", B64.encode(x))],
            Self::P256 { x, y } => {
                vec![("kty", "EC".into()), ("crv", "P-256".into()), ("x", B64.encode(x)), ("y", B64.encode(y))]
            }
        };
        if let Some(obj) = jwk.as_object_mut() {
            for (k, v) in fields {
                obj.insert((*k).to_owned(), Value::String(v.clone()));
            }
        }
        jwk
    }

    /// Verifies a JOSE-form signature (RSASSA-PKCS1-v1_5 SHA-256, Ed25519, or
    /// ECDSA P-256 SHA-256 as fixed `r || s`) over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            Self::Ed25519 { x } => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok()
            }
            Self::P256 { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 section 3.1: the example RSA key and its thumbprint.
    #[test]
    fn rfc7638_section_3_1_known_answer() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let key = PublicKey::rsa(&B64.decode(n).unwrap(), &B64.decode("AQAB").unwrap());
        assert_eq!(key.thumbprint().as_str(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    /// RFC 8037 appendix A.3: the Ed25519 example key's thumbprint.
    #[test]
    fn rfc8037_okp_thumbprint_known_answer() {
        let x = B64.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let key = PublicKey::ed25519(&x).unwrap();
        assert_eq!(key.thumbprint().as_str(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn jwk_has_only_public_members() {
        let key = PublicKey::ed25519(&[7; 32]).unwrap();
        let jwk = key.to_jwk(Algorithm::EdDsa, &key.thumbprint());
        let mut names: Vec<_> = jwk.as_object().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
    }

    #[test]
    fn serde_form_is_the_jwk_member_set() {
        let key = PublicKey::p256_uncompressed(&[[4u8].as_slice(), &[1; 32], &[2; 32]].concat()).unwrap();
        let text = serde_json::to_string(&key).unwrap();
        assert_eq!(
            text,
            r#"{"kty":"EC","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE","y":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI"}"#
        );
        assert_eq!(serde_json::from_str::<PublicKey>(&text).unwrap(), key);
    }
}
