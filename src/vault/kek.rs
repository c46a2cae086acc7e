//! Key-encryption key sources: where the KEK comes from, and wrapping the
//! data key under a local KEK (an AWS KMS KEK is `kms_kek`'s).
//!
//! The KEK comes from a key file (base64url of 32 random bytes, mode 0600), an
//! environment variable holding the same, a passphrase in an environment
//! variable stretched with Argon2id, or it is a symmetric AWS KMS key that
//! never leaves KMS (envelope encryption, see `kms_kek`). It only ever wraps
//! the vault's data key; the wrapped form (`wrapped::WrappedDataKey`) is what
//! the store keeps.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::kms_kek;
use super::seal::{DataKey, Kek, SealError, SecretKey, DATA_KEY_AAD};
use super::wrapped::{data_key_from, Argon2Params, KekError, KekKind, WrappedDataKey, WRAPPED_VERSION};
use crate::encoding::{b64url, b64url_decode};
use crate::kms::KmsKek;

/// Where the KEK comes from (the trusted form of the `[vault]` config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekSource {
    File(PathBuf),
    Env(String),
    Passphrase(String),
    AwsKms(KmsKek),
}

impl KekSource {
    pub fn kind(&self) -> KekKind {
        match self {
            Self::File(_) => KekKind::File,
            Self::Env(_) => KekKind::Env,
            Self::Passphrase(_) => KekKind::Passphrase,
            Self::AwsKms(_) => KekKind::AwsKms,
        }
    }

    /// Checks that the source can be read, without deriving anything (for
    /// `check-config`). An AWS KMS key is only checked by using it.
    pub fn check(&self) -> Result<(), KekError> {
        match self {
            Self::File(path) => read_key_file(path).map(drop),
            Self::Env(var) => key_from_text(&env_var(var)?, &format!("environment variable {var}")).map(drop),
            Self::Passphrase(var) => passphrase(var).map(drop),
            Self::AwsKms(_) => Ok(()),
        }
    }

    /// Creates the key file for a `File` source if it does not exist (0600).
    pub fn create_if_missing(&self) -> Result<(), KekError> {
        let Self::File(path) = self else { return Ok(()) };
        if path.exists() {
            return Ok(());
        }
        let kek = SecretKey::generate()?;
        let create = |source| KekError::Create { path: path.clone(), source };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(path).map_err(create)?;
        let text = Zeroizing::new(format!("{}\n", b64url(kek.expose())));
        file.write_all(text.as_bytes()).map_err(create)?;
        file.sync_all().map_err(create)
    }

    /// A new data key for the vault `vault_id`, and its wrapped form (AWS KMS
    /// generates it: GenerateDataKey).
    pub async fn generate(&self, vault_id: &str) -> Result<(DataKey, WrappedDataKey), KekError> {
        if let Self::AwsKms(kms) = self {
            return kms_kek::generate(kms, vault_id).await;
        }
        let data_key = SecretKey::generate()?;
        let wrapped = self.wrap_locally(&data_key, vault_id)?;
        Ok((data_key, wrapped))
    }

    /// Wraps `data_key` of the vault `vault_id` under this KEK.
    pub async fn wrap(&self, data_key: &DataKey, vault_id: &str) -> Result<WrappedDataKey, KekError> {
        match self {
            Self::AwsKms(kms) => kms_kek::wrap(kms, data_key, vault_id).await,
            local => local.wrap_locally(data_key, vault_id),
        }
    }

    /// Unwraps a stored data key. [`KekError::Wrong`] (or, for AWS KMS,
    /// [`KekError::KmsWrong`]) if this KEK is not the one that wrapped it.
    pub async fn unwrap(&self, wrapped: &WrappedDataKey) -> Result<DataKey, KekError> {
        if wrapped.kek != self.kind() {
            return Err(KekError::KindMismatch { stored: wrapped.kek.as_str(), configured: self.kind().as_str() });
        }
        match self {
            Self::AwsKms(kms) => kms_kek::unwrap(kms, wrapped).await,
            local => local.unwrap_locally(wrapped),
        }
    }

    /// Wraps under a local KEK: AES-256-GCM (a fresh salt for a passphrase).
    fn wrap_locally(&self, data_key: &DataKey, vault_id: &str) -> Result<WrappedDataKey, KekError> {
        let argon2 = match self {
            Self::Passphrase(_) => {
                let mut salt = [0u8; 16];
                aws_lc_rs::rand::fill(&mut salt).map_err(|_| SealError::Random)?;
                Some(Argon2Params { salt: b64url(&salt), m_kib: 19 * 1024, t: 2, p: 1 })
            }
            _ => None,
        };
        let kek = self.derive(argon2.as_ref())?;
        let sealed = kek.seal(DATA_KEY_AAD, data_key.expose())?;
        Ok(WrappedDataKey {
            v: WRAPPED_VERSION,
            kek: self.kind(),
            argon2,
            sealed: b64url(&sealed),
            vault_id: Some(vault_id.to_owned()),
            kms_key_id: None,
        })
    }

    fn unwrap_locally(&self, wrapped: &WrappedDataKey) -> Result<DataKey, KekError> {
        let kek = self.derive(wrapped.argon2.as_ref())?;
        let plain = kek.open(DATA_KEY_AAD, &wrapped.sealed_bytes()?).map_err(|e| match e {
            SealError::Authentication => KekError::Wrong,
            other => KekError::Seal(other),
        })?;
        data_key_from(&plain)
    }

    fn derive(&self, argon2: Option<&Argon2Params>) -> Result<Kek, KekError> {
        match (self, argon2) {
            (Self::File(path), _) => read_key_file(path),
            (Self::Env(var), _) => key_from_text(&env_var(var)?, &format!("environment variable {var}")),
            (Self::Passphrase(var), Some(params)) => stretch(&passphrase(var)?, params),
            (Self::Passphrase(_), None) => {
                Err(KekError::Corrupt("passphrase-wrapped key without Argon2 parameters".into()))
            }
            (Self::AwsKms(_), _) => Err(KekError::Corrupt("an AWS KMS key is not a local KEK".into())),
        }
    }
}

fn read_key_file(path: &Path) -> Result<Kek, KekError> {
    if !path.exists() {
        return Err(KekError::Missing { path: path.to_owned() });
    }
    let unreadable = |source| KekError::Unreadable { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            return Err(KekError::Permissions { path: path.to_owned(), mode });
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(unreadable)?);
    key_from_text(&text, &format!("KEK file {}", path.display()))
}

fn key_from_text(text: &str, origin: &str) -> Result<Kek, KekError> {
    let malformed = || KekError::Malformed { origin: origin.to_owned() };
    let bytes = Zeroizing::new(b64url_decode(text.trim()).map_err(|_| malformed())?);
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
    Ok(SecretKey::from_bytes(arr))
}

fn env_var(var: &str) -> Result<Zeroizing<String>, KekError> {
    std::env::var(var).map(Zeroizing::new).map_err(|_| KekError::EnvUnset(var.to_owned()))
}

fn passphrase(var: &str) -> Result<Zeroizing<String>, KekError> {
    let p = env_var(var)?;
    if p.chars().count() < 12 {
        return Err(KekError::WeakPassphrase(var.to_owned()));
    }
    Ok(p)
}

fn stretch(passphrase: &str, params: &Argon2Params) -> Result<Kek, KekError> {
    let salt = b64url_decode(&params.salt).map_err(|e| KekError::Corrupt(e.to_string()))?;
    let argon_params =
        argon2::Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|e| KekError::Argon2(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), &salt, out.as_mut())
        .map_err(|e| KekError::Argon2(e.to_string()))?;
    Ok(SecretKey::from_bytes(*out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_file_wraps_and_only_it_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let a = KekSource::File(dir.path().join("a.kek"));
        let b = KekSource::File(dir.path().join("b.kek"));
        a.create_if_missing().unwrap();
        b.create_if_missing().unwrap();
        let data_key = SecretKey::generate().unwrap();
        let wrapped = a.wrap(&data_key, "vault-1").await.unwrap();
        assert_eq!(wrapped.vault_id.as_deref(), Some("vault-1"));
        assert_eq!(a.unwrap(&wrapped).await.unwrap().expose(), data_key.expose());
        assert!(matches!(b.unwrap(&wrapped).await, Err(KekError::Wrong)));
        assert!(matches!(
            KekSource::Env("KMSD_TEST_UNSET_VAR".into()).unwrap(&wrapped).await,
            Err(KekError::KindMismatch { .. })
        ));
    }

    /// A record written before vault ids and KMS KEKs (version 1) still
    /// decodes and unwraps. The bytes were made outside kmsd (Python
    /// `cryptography`, AES-256-GCM, the sealed layout): KEK = 1..=32, data
    /// key = [7; 32].
    #[tokio::test]
    async fn a_version_1_record_still_decodes_and_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.kek");
        std::fs::write(&path, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let v1 = br#"{"v":1,"kek":"file","argon2":null,"sealed":"AWRlZmdoaWprbG1ub2dYdEuWhbt-_1Conx8r_zvzmB_M-OHwBqfV5fh-5u50LiIiCIcOVd71qNTKd4r5Bg"}"#;
        let wrapped = WrappedDataKey::decode(v1).unwrap();
        assert_eq!((wrapped.v, wrapped.kek, wrapped.vault_id.as_deref()), (1, KekKind::File, None));
        let data_key = KekSource::File(path).unwrap(&wrapped).await.unwrap();
        assert_eq!(data_key.expose(), &[7u8; 32]);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_created_0600_and_looser_modes_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.kek");
        let src = KekSource::File(path.clone());
        src.create_if_missing().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(src.check(), Err(KekError::Permissions { .. })));
    }

    #[test]
    fn a_directory_or_garbage_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(KekSource::File(dir.path().to_owned()).check(), Err(KekError::Unreadable { .. })));
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a key").unwrap();
        std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert!(matches!(KekSource::File(junk).check(), Err(KekError::Malformed { .. })));
    }

    #[test]
    fn argon2id_stretches_a_passphrase_deterministically_per_salt() {
        let params = Argon2Params { salt: b64url(&[3; 16]), m_kib: 64, t: 1, p: 1 };
        let a = stretch("correct horse battery staple", &params).unwrap();
        let b = stretch("correct horse battery staple", &params).unwrap();
        let c = stretch("correct horse battery stapler", &params).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }
}
