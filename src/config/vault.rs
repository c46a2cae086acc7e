//! `[vault]`: where the KEK comes from, and whether it is usable now.

use std::path::{Path, PathBuf};

use super::{file, Problems, DEFAULT_KEK_ENV, DEFAULT_PASSPHRASE_ENV};
use crate::kms::{AwsKmsConfig, KmsKek};
use crate::storage::STORE_FILE;
use crate::vault::KekSource;

pub(super) fn kek_source(
    v: &file::VaultSection,
    data_dir: &Path,
    aws_kms: &AwsKmsConfig,
    problems: &mut Problems,
) -> Option<KekSource> {
    let kek = v.kek.as_deref().unwrap_or("file");
    if kek != "aws-kms" && v.kms_key_id.is_some() {
        problems.add("vault.kms_key_id", format!("only applies to kek = \"aws-kms\", not {kek:?}"));
    }
    match kek {
        "file" => Some(KekSource::File(v.kek_file.as_ref().map_or_else(|| data_dir.join("vault.kek"), PathBuf::from))),
        "env" => Some(KekSource::Env(v.kek_env.clone().unwrap_or_else(|| DEFAULT_KEK_ENV.into()))),
        "passphrase" => {
            Some(KekSource::Passphrase(v.passphrase_env.clone().unwrap_or_else(|| DEFAULT_PASSPHRASE_ENV.into())))
        }
        "aws-kms" => match v.kms_key_id.as_deref().map(|id| (id, crate::kms::envelope::check_key_id(id))) {
            Some((id, Ok(()))) => Some(KekSource::AwsKms(KmsKek { key_id: id.to_owned(), settings: aws_kms.clone() })),
            Some((_, Err(e))) => {
                problems.add("vault.kms_key_id", e);
                None
            }
            None => {
                problems
                    .add("vault.kms_key_id", "missing: kek = \"aws-kms\" needs the KMS key that wraps the data key");
                None
            }
        },
        other => {
            problems.add(
                "vault.kek",
                format!("{other:?} is not a KEK source (use \"file\", \"env\", \"passphrase\" or \"aws-kms\")"),
            );
            None
        }
    }
}

/// The KEK must be usable whenever it will be needed: always for an existing
/// store; for a new one, a key file may be missing (init creates it).
pub(super) fn check_kek(kek: &KekSource, data_dir: &Path, problems: &mut Problems) {
    let store_exists = data_dir.join(STORE_FILE).exists();
    let file_missing = matches!(kek, KekSource::File(p) if !p.exists());
    if file_missing && !store_exists {
        return;
    }
    if let Err(e) = kek.check() {
        let field = match kek {
            KekSource::File(_) => "vault.kek_file",
            KekSource::Env(_) => "vault.kek_env",
            KekSource::Passphrase(_) => "vault.passphrase_env",
            KekSource::AwsKms(_) => "vault.kms_key_id",
        };
        problems.add(field, e.to_string());
    }
}
