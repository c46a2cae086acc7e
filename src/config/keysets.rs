//! Keyset declarations (`keys/*.toml`, or the built-in ones) read into
//! [`Keyset`]s, and the check that the token keysets the policy names can
//! sign the tokens they are named for.

use std::path::PathBuf;

use super::file::KeysetFile;
use super::{deserialize, join, parse_toml, Policy, Problems, DEFAULT_KEYSETS};
use crate::keys::{BackendKind, CronSchedule, KeySpec, KeyUse, Keyset, KeysetName};
use crate::tokens::TokenKeysets;

pub(super) fn load_keysets(dir: Option<&str>, problems: &mut Problems) -> Vec<Keyset> {
    let files: Vec<(String, String)> = match dir {
        None => DEFAULT_KEYSETS.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect(),
        Some(dir) => read_toml_dir(dir, "keys_dir", problems),
    };
    let mut out: Vec<Keyset> = Vec::new();
    for (origin, text) in files {
        let table = parse_toml(&text, &origin, problems);
        let Some(raw) = deserialize::<KeysetFile>(table, &origin, problems) else { continue };
        if let Some(ks) = keyset(raw, &origin, problems) {
            if out.iter().any(|k| k.name == ks.name) {
                problems.add(join(&origin, "name"), format!("keyset {} is declared twice", ks.name));
            } else {
                out.push(ks);
            }
        }
    }
    if out.is_empty() && problems.0.is_empty() {
        problems.add("keys_dir", "declares no keysets");
    }
    out
}

fn read_toml_dir(dir: &str, field: &str, problems: &mut Problems) -> Vec<(String, String)> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect()
        }
        Err(e) => {
            problems.add(field, format!("cannot read directory {dir}: {e}"));
            return Vec::new();
        }
    };
    entries.sort();
    entries
        .into_iter()
        .filter_map(|p| match std::fs::read_to_string(&p) {
            Ok(t) => Some((p.display().to_string(), t)),
            Err(e) => {
                problems.add(p.display().to_string(), format!("cannot read: {e}"));
                None
            }
        })
        .collect()
}

fn keyset(raw: KeysetFile, origin: &str, problems: &mut Problems) -> Option<Keyset> {
    let name = match raw.name.as_deref().map(KeysetName::parse) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            problems.add(join(origin, "name"), e.to_string());
            None
        }
        None => {
            problems.add(join(origin, "name"), "missing");
            None
        }
    };
    let spec = match (raw.algorithm.as_deref(), raw.rsa_bits) {
        (Some("RS256"), bits) => match bits.unwrap_or(3072) {
            2048 => Some(KeySpec::Rsa2048),
            3072 => Some(KeySpec::Rsa3072),
            4096 => Some(KeySpec::Rsa4096),
            other => {
                problems
                    .add(join(origin, "rsa_bits"), format!("RSA-{other} is not supported (use 2048, 3072 or 4096)"));
                None
            }
        },
        (Some(alg @ ("EdDSA" | "ES256")), bits) => {
            if bits.is_some() {
                problems.add(join(origin, "rsa_bits"), format!("only applies to RS256, not {alg}"));
            }
            Some(if alg == "EdDSA" { KeySpec::Ed25519 } else { KeySpec::P256 })
        }
        (Some(other), _) => {
            problems.add(
                join(origin, "algorithm"),
                format!("{other:?} is not supported (use \"RS256\", \"EdDSA\" or \"ES256\")"),
            );
            None
        }
        (None, _) => {
            problems.add(join(origin, "algorithm"), "missing");
            None
        }
    };
    let backend = match raw.backend.as_deref().unwrap_or("vault") {
        "vault" => Some(BackendKind::Vault),
        "aws-kms" => Some(BackendKind::AwsKms),
        other => {
            problems.add(
                join(origin, "backend"),
                format!("{other:?} is not an available backend (use \"vault\" or \"aws-kms\")"),
            );
            None
        }
    };
    let schedule = match raw.schedule.as_deref().map(CronSchedule::parse) {
        Some(Ok(s)) => Some(Some(s)),
        Some(Err(e)) => {
            problems.add(join(origin, "schedule"), e);
            None
        }
        None => Some(None),
    };
    let usage = match raw.usage.as_deref().unwrap_or("tokens") {
        "tokens" => Some(KeyUse::Tokens),
        "sign" => Some(KeyUse::Sign),
        other => {
            problems.add(join(origin, "use"), format!("{other:?} is not a key use (use \"tokens\" or \"sign\")"));
            None
        }
    };
    Some(Keyset { name: name?, spec: spec?, backend: backend?, schedule: schedule?, usage: usage? })
}

/// A keyset named for tokens must sign with the algorithm it is named for. A
/// keyset that is not declared just leaves that kind of token unavailable.
pub(super) fn check_token_keysets(policy: &Policy, keysets: &[Keyset], problems: &mut Problems) {
    let wanted = TokenKeysets {
        rs256: Some(crate::keys::Algorithm::Rs256),
        eddsa: Some(crate::keys::Algorithm::EdDsa),
        refresh: None,
    };
    for ((field, alg), (_, name)) in wanted.named().into_iter().zip(policy.tokens.keysets.named()) {
        let Some(ks) = keysets.iter().find(|k| k.name.as_str() == name) else { continue };
        if ks.usage == KeyUse::Sign {
            problems.add(
                format!("tokens.keysets.{field}"),
                format!("keyset {name} is declared use = \"sign\" (raw signing), so it cannot sign tokens"),
            );
        }
        if alg.is_some_and(|a| ks.spec.algorithm() != a) {
            problems.add(
                format!("tokens.keysets.{field}"),
                format!("keyset {name} signs {}, not {field}", ks.spec.algorithm().as_str()),
            );
        }
    }
}
