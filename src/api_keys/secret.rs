//! The API key itself. Format: `rak_` + 43 base62 characters of secret (256 bits) + a 6-character
//! base62 CRC32 of everything before it, so secret scanners and kmsd itself can
//! reject a mistyped or forged key offline, before any store lookup. Only the
//! lower-case hex SHA-256 of the whole key is stored; the plain key is shown
//! once, at creation, and its `Debug` is redacted.

use zeroize::Zeroizing;

use crate::encoding::sha256_hex;

const PREFIX: &str = "rak_";
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const KEY_LEN: usize = PREFIX.len() + SECRET_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A plain API key, as presented by a client or shown once at creation.
pub struct ApiKeySecret(Zeroizing<String>);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.prefix())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyFormatError {
    #[error("API key does not have the rak_ format")]
    Format,
    #[error("API key checksum does not match")]
    Checksum,
    #[error("the system random generator failed")]
    Random,
}

impl ApiKeySecret {
    /// A fresh key with 256 bits of secret.
    pub fn generate() -> Result<Self, ApiKeyFormatError> {
        let mut secret = Zeroizing::new(String::with_capacity(KEY_LEN));
        secret.push_str(PREFIX);
        let mut buf = [0u8; 64];
        while secret.len() < PREFIX.len() + SECRET_LEN {
            aws_lc_rs::rand::fill(&mut buf).map_err(|_| ApiKeyFormatError::Random)?;
            // Rejection sampling keeps each character uniform over 62 symbols.
            for b in buf.iter().filter(|b| **b < 248) {
                if secret.len() == PREFIX.len() + SECRET_LEN {
                    break;
                }
                secret.push(BASE62[usize::from(*b % 62)] as char);
            }
        }
        let checksum = checksum(&secret);
        secret.push_str(&checksum);
        Ok(Self(secret))
    }

    /// Checks the format and checksum; touches no storage.
    pub fn parse(text: &str) -> Result<Self, ApiKeyFormatError> {
        let ok = text.len() == KEY_LEN
            && text.starts_with(PREFIX)
            && text[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(ApiKeyFormatError::Format);
        }
        let (body, sum) = text.split_at(KEY_LEN - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(ApiKeyFormatError::Checksum);
        }
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first 16 characters, safe to show in lists.
    pub fn prefix(&self) -> &str {
        &self.0[..16]
    }

    /// The stored form: lower-case hex SHA-256 of the whole key.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_any_single_change_is_caught() {
        let key = ApiKeySecret::generate().unwrap();
        let text = key.expose().to_owned();
        assert_eq!(text.len(), 53);
        assert!(ApiKeySecret::parse(&text).is_ok());
        let mut changed = text.clone().into_bytes();
        changed[10] = if changed[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            ApiKeySecret::parse(std::str::from_utf8(&changed).unwrap()).unwrap_err(),
            ApiKeyFormatError::Checksum
        );
        assert_eq!(ApiKeySecret::parse(&text[..52]).unwrap_err(), ApiKeyFormatError::Format);
        assert!(!format!("{key:?}").contains(&text[16..]));
    }
}
