//! The two DER structures AWS KMS hands back: the SubjectPublicKeyInfo of
//! GetPublicKey (RFC 5280) and the ECDSA signature of Sign (`ECDSA-Sig-Value`,
//! RFC 3279). A strict reader for exactly these shapes, nothing more: definite
//! minimal lengths, no trailing bytes, only the algorithms kmsd uses.

use crate::keys::{KeySpec, PublicKey};

/// rsaEncryption, 1.2.840.113549.1.1.1
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (P-256), 1.2.840.10045.3.1.7
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// id-Ed25519, 1.3.101.112
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER: {0}")]
pub struct DerError(pub &'static str);

/// A cursor over DER bytes that reads one tag-length-value at a time.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads an element with `tag` and returns its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let [t, first, rest @ ..] = self.0 else { return Err(DerError("truncated element")) };
        if *t != tag {
            return Err(DerError("unexpected tag"));
        }
        let (len, rest) = match *first {
            n @ 0..=0x7f => (usize::from(n), rest),
            0x81 => match rest {
                [n @ 0x80..=0xff, rest @ ..] => (usize::from(*n), rest),
                _ => return Err(DerError("non-minimal length")),
            },
            0x82 => match rest {
                [hi @ 1..=0xff, lo, rest @ ..] => (usize::from(*hi) << 8 | usize::from(*lo), rest),
                _ => return Err(DerError("non-minimal length")),
            },
            _ => return Err(DerError("unsupported length")),
        };
        if rest.len() < len {
            return Err(DerError("truncated element"));
        }
        let (value, after) = rest.split_at(len);
        self.0 = after;
        Ok(value)
    }

    fn finish(&self) -> Result<(), DerError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DerError("trailing bytes"))
        }
    }

    /// A positive INTEGER's magnitude, big-endian, without leading zeros.
    fn unsigned(&mut self) -> Result<&'a [u8], DerError> {
        match self.read(INTEGER)? {
            [] => Err(DerError("empty INTEGER")),
            [0] => Ok(&[]),
            [0, next, ..] if *next < 0x80 => Err(DerError("non-minimal INTEGER")),
            [0, magnitude @ ..] => Ok(magnitude),
            [first, ..] if *first >= 0x80 => Err(DerError("negative INTEGER")),
            magnitude => Ok(magnitude),
        }
    }
}

/// Reads an entire DER element with `tag` from `bytes` and returns its contents.
fn whole(bytes: &[u8], tag: u8) -> Result<&[u8], DerError> {
    let mut r = Reader(bytes);
    let value = r.read(tag)?;
    r.finish()?;
    Ok(value)
}

/// Parses a SubjectPublicKeyInfo into the [`PublicKey`] of `spec`: RSA `n, e`,
/// an Ed25519 `x`, or a P-256 uncompressed point. Anything else is an error.
pub fn public_key_from_spki(spki: &[u8], spec: KeySpec) -> Result<PublicKey, DerError> {
    let mut info = Reader(whole(spki, SEQUENCE)?);
    let mut alg = Reader(info.read(SEQUENCE)?);
    let key = match info.read(BIT_STRING)? {
        [0, key @ ..] => key,
        _ => return Err(DerError("BIT STRING with unused bits")),
    };
    info.finish()?;
    let oid = alg.read(OID)?;
    let public = match (oid, spec) {
        (OID_RSA, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) => {
            if !alg.read(NULL)?.is_empty() {
                return Err(DerError("rsaEncryption parameters are not NULL"));
            }
            let mut rsa = Reader(whole(key, SEQUENCE)?);
            let (n, e) = (rsa.unsigned()?, rsa.unsigned()?);
            rsa.finish()?;
            PublicKey::rsa(n, e)
        }
        (OID_EC, KeySpec::P256) => {
            if alg.read(OID)? != OID_P256 {
                return Err(DerError("EC key is not on P-256"));
            }
            PublicKey::p256_uncompressed(key).map_err(|_| DerError("P-256 point is not uncompressed"))?
        }
        (OID_ED25519, KeySpec::Ed25519) => {
            PublicKey::ed25519(key).map_err(|_| DerError("Ed25519 key is not 32 bytes"))?
        }
        _ => return Err(DerError("key algorithm does not match the key spec")),
    };
    alg.finish()?;
    public.check_spec(spec).map_err(|_| DerError("key size does not match the key spec"))?;
    Ok(public)
}

/// Converts a DER `ECDSA-Sig-Value` into JOSE's fixed-width `r || s` for a
/// curve whose scalars are `width` bytes (32 for P-256).
pub fn ecdsa_der_to_fixed(der: &[u8], width: usize) -> Result<Vec<u8>, DerError> {
    let mut seq = Reader(whole(der, SEQUENCE)?);
    let (r, s) = (seq.unsigned()?, seq.unsigned()?);
    seq.finish()?;
    let mut out = vec![0u8; 2 * width];
    for (i, part) in [r, s].into_iter().enumerate() {
        if part.len() > width {
            return Err(DerError("ECDSA scalar wider than the curve"));
        }
        let end = (i + 1) * width;
        out[end - part.len()..end].copy_from_slice(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, KeyPair};
    use proptest::prelude::*;

    use super::*;

    fn spki(key: &impl AsDer<aws_lc_rs::encoding::PublicKeyX509Der<'static>>) -> Vec<u8> {
        key.as_der().unwrap().as_ref().to_vec()
    }

    #[test]
    fn rsa_spki_yields_a_key_that_verifies_the_pair_s_signatures() {
        let pair = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = public_key_from_spki(&spki(pair.public_key()), KeySpec::Rsa2048).unwrap();
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), b"msg", &mut sig).unwrap();
        assert!(public.verify(b"msg", &sig));
        let PublicKey::Rsa { e, .. } = &public else { panic!("RSA") };
        assert_eq!(e, &[1, 0, 1]);
        assert!(public_key_from_spki(&spki(pair.public_key()), KeySpec::Rsa3072).is_err(), "size is checked");
        assert!(public_key_from_spki(&spki(pair.public_key()), KeySpec::P256).is_err(), "algorithm is checked");
    }

    #[test]
    fn ed25519_spki_yields_the_raw_key() {
        let pair = signature::Ed25519KeyPair::generate().unwrap();
        let public = public_key_from_spki(&spki(pair.public_key()), KeySpec::Ed25519).unwrap();
        assert_eq!(public, PublicKey::ed25519(pair.public_key().as_ref()).unwrap());
    }

    #[test]
    fn p256_spki_and_der_signature_verify_as_jose() {
        let pair = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let public = public_key_from_spki(&spki(pair.public_key()), KeySpec::P256).unwrap();
        assert_eq!(public, PublicKey::p256_uncompressed(pair.public_key().as_ref()).unwrap());
        for _ in 0..20 {
            let der = pair.sign(&SystemRandom::new(), b"msg").unwrap();
            let fixed = ecdsa_der_to_fixed(der.as_ref(), 32).unwrap();
            assert_eq!(fixed.len(), 64);
            assert!(public.verify(b"msg", &fixed));
        }
        assert!(public_key_from_spki(&spki(pair.public_key()), KeySpec::Ed25519).is_err());
    }

    #[test]
    fn malformed_encodings_are_refused() {
        assert!(ecdsa_der_to_fixed(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00], 32).is_err(), "trailing");
        assert!(ecdsa_der_to_fixed(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01], 32).is_err(), "negative");
        assert!(ecdsa_der_to_fixed(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], 32).is_err(), "padded");
        assert!(ecdsa_der_to_fixed(&[0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], 32).is_err(), "long len");
        let wide = [[0x30, 0x26, 0x02, 0x21, 0x01].as_slice(), &[7; 32], &[0x02, 0x01, 0x01]].concat();
        assert!(ecdsa_der_to_fixed(&wide, 32).is_err(), "33-byte scalar");
    }

    fn der_integer(magnitude: &[u8]) -> Vec<u8> {
        let first = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
        let mut body = magnitude[first..].to_vec();
        if body.first().is_none_or(|&b| b >= 0x80) {
            body.insert(0, 0);
        }
        [vec![INTEGER, u8::try_from(body.len()).unwrap()], body].concat()
    }

    proptest! {
        #[test]
        fn ecdsa_der_round_trips_to_fixed_width(r in any::<[u8; 32]>(), s in any::<[u8; 32]>()) {
            let body = [der_integer(&r), der_integer(&s)].concat();
            let der = [vec![SEQUENCE, u8::try_from(body.len()).unwrap()], body].concat();
            prop_assert_eq!(ecdsa_der_to_fixed(&der, 32).unwrap(), [r, s].concat());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for spec in KeySpec::ALL {
                let _ = public_key_from_spki(&bytes, spec);
            }
            let _ = ecdsa_der_to_fixed(&bytes, 32);
        }
    }
}
