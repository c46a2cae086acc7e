//! Key-encryption key sources and the wrapped data key.
//!
//! The KEK comes from a key file (base64url of 32 random bytes, mode 0600), an
//! environment variable holding the same, or a passphrase in an environment
//! variable stretched with Argon2id. It only ever wraps the vault's data key;
//! the wrapped form ([`WrappedDataKey`]) is what the store keeps.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::seal::{DataKey, Kek, SealError, SecretKey, DATA_KEY_AAD};
use crate::encoding::{b64url, b64url_decode};

/// Where the KEK comes from (the trusted form of the `[vault]` config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekSource {
    File(PathBuf),
    Env(String),
    Passphrase(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("KEK file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read KEK file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("KEK file {path} is accessible to group or others (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{origin} does not hold a KEK (expected base64url of exactly 32 bytes)")]
    Malformed { origin: String },
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("passphrase in {0} is shorter than 12 characters")]
    WeakPassphrase(String),
    #[error("cannot create KEK file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "the key-encryption key does not unwrap the vault's data key (wrong KEK for this store); nothing was changed"
    )]
    Wrong,
    #[error("the vault data key was wrapped by a {stored} KEK but the config names a {configured} KEK")]
    KindMismatch { stored: &'static str, configured: &'static str },
    #[error("stored vault data key record is corrupt: {0}")]
    Corrupt(String),
    #[error("argon2: {0}")]
    Argon2(String),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Argon2id parameters, stored with a passphrase-wrapped data key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    pub salt: String,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// The vault data key, wrapped under a KEK, as stored in the `meta` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDataKey {
    pub v: u32,
    pub kek: KekKind,
    pub argon2: Option<Argon2Params>,
    pub sealed: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KekKind {
    File,
    Env,
    Passphrase,
}

impl KekKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Env => "env",
            Self::Passphrase => "passphrase",
        }
    }
}

impl KekSource {
    pub fn kind(&self) -> KekKind {
        match self {
            Self::File(_) => KekKind::File,
            Self::Env(_) => KekKind::Env,
            Self::Passphrase(_) => KekKind::Passphrase,
        }
    }

    /// Checks that the source can be read, without deriving anything (for
    /// `check-config`).
    pub fn check(&self) -> Result<(), KekError> {
        match self {
            Self::File(path) => read_key_file(path).map(drop),
            Self::Env(var) => key_from_text(&env_var(var)?, &format!("environment variable {var}")).map(drop),
            Self::Passphrase(var) => passphrase(var).map(drop),
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

    /// Wraps `data_key` under this KEK (a fresh salt for a passphrase).
    pub fn wrap(&self, data_key: &DataKey) -> Result<WrappedDataKey, KekError> {
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
        Ok(WrappedDataKey { v: 1, kek: self.kind(), argon2, sealed: b64url(&sealed) })
    }

    /// Unwraps a stored data key. [`KekError::Wrong`] if this KEK is not the one
    /// that wrapped it.
    pub fn unwrap(&self, wrapped: &WrappedDataKey) -> Result<DataKey, KekError> {
        if wrapped.kek != self.kind() {
            return Err(KekError::KindMismatch { stored: wrapped.kek.as_str(), configured: self.kind().as_str() });
        }
        let kek = self.derive(wrapped.argon2.as_ref())?;
        let sealed = b64url_decode(&wrapped.sealed).map_err(|e| KekError::Corrupt(e.to_string()))?;
        let plain = kek.open(DATA_KEY_AAD, &sealed).map_err(|e| match e {
            SealError::Authentication => KekError::Wrong,
            other => KekError::Seal(other),
        })?;
        let bytes: [u8; 32] =
            plain.as_slice().try_into().map_err(|_| KekError::Corrupt("data key is not 32 bytes".into()))?;
        Ok(SecretKey::from_bytes(bytes))
    }

    fn derive(&self, argon2: Option<&Argon2Params>) -> Result<Kek, KekError> {
        match (self, argon2) {
            (Self::File(path), _) => read_key_file(path),
            (Self::Env(var), _) => key_from_text(&env_var(var)?, &format!("environment variable {var}")),
            (Self::Passphrase(var), Some(params)) => stretch(&passphrase(var)?, params),
            (Self::Passphrase(_), None) => {
                Err(KekError::Corrupt("passphrase-wrapped key without Argon2 parameters".into()))
            }
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

    #[test]
    fn a_key_file_wraps_and_only_it_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let a = KekSource::File(dir.path().join("a.kek"));
        let b = KekSource::File(dir.path().join("b.kek"));
        a.create_if_missing().unwrap();
        b.create_if_missing().unwrap();
        let data_key = SecretKey::generate().unwrap();
        let wrapped = a.wrap(&data_key).unwrap();
        assert_eq!(a.unwrap(&wrapped).unwrap().expose(), data_key.expose());
        assert!(matches!(b.unwrap(&wrapped), Err(KekError::Wrong)));
        assert!(matches!(
            KekSource::Env("KMSD_TEST_UNSET_VAR".into()).unwrap(&wrapped),
            Err(KekError::KindMismatch { .. })
        ));
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
