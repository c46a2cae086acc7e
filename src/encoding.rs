//! Byte encodings used on the wire and in records: base64url without padding
//! (JOSE), lower-case hex, and a serde adapter for base64url byte fields.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// `n` random bytes from the system CSPRNG, as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // aws-lc's RNG does not fail on supported platforms; an all-zero id would be
    // caught by uniqueness checks downstream.
    let _ = aws_lc_rs::rand::fill(&mut buf);
    hex(&buf)
}

/// A 16-byte id as 32 lower-case hex digits: the wall-clock time in
/// milliseconds (6 bytes, big-endian, as in UUIDv7) then 10 random bytes. Ids
/// made later sort later, so the rows keyed by them (sessions, issued tokens)
/// are appended at the end of their table, a commit's rows sharing a few
/// pages, instead of each landing on a page of its own. The time part is for
/// that locality only (nothing reads it back); it tells no more than the `iat`
/// of the token that carries the id, and 80 random bits keep ids unique and
/// unguessable.
pub fn time_ordered_hex() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    let mut out = hex(&ms.to_be_bytes()[2..]);
    out.push_str(&random_hex(10));
    out
}

/// `#[serde(with = "crate::encoding::b64url_serde")]` for `Vec<u8>` fields.
pub mod b64url_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64url(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::b64url_decode(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case() {
        assert_eq!(super::hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(super::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn time_ordered_ids_sort_by_time_and_stay_random() {
        let a = super::time_ordered_hex();
        let b = super::time_ordered_hex();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = super::time_ordered_hex();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert!(a < later && b < later, "{a} {b} {later}");
    }
}
