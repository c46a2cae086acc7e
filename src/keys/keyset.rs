//! A keyset as the program trusts it: its name, key spec, backend, parsed
//! rotation schedule and what its keys sign. Built once, by `config`, from
//! the keyset declarations; nothing here reads files.

use super::cron::CronSchedule;
use super::{BackendKind, KeySpec, KeysetName};

/// A named signing purpose with one key spec and one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyset {
    pub name: KeysetName,
    pub spec: KeySpec,
    pub backend: BackendKind,
    /// When scheduled rotation is due; `None`: rotated by hand only.
    pub schedule: Option<CronSchedule>,
    pub usage: KeyUse,
}

/// What a keyset's keys sign (`use` in its declaration), never both: a raw
/// signature by a token key over a JWT signing input is a forged token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyUse {
    /// Tokens kmsd issues; published in `/.well-known/jwks.json`.
    #[default]
    Tokens,
    /// Raw signatures (`POST /v1/sign`); published in the keyset's own JWKS,
    /// never trusted for tokens.
    Sign,
}

impl KeyUse {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Sign => "sign",
        }
    }
}
