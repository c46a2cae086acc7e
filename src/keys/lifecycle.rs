//! The life of one key version. Each record stores its planned instants; its
//! state at any time `t` is derived from them, never stored:
//!
//! ```text
//! pending    published_at <= t < activated_at   in JWKS, not signing
//! active     activated_at <= t < retired_at     in JWKS, the keyset's signer
//! retiring   retired_at   <= t < removed_at     in JWKS, no longer signs
//! retired    removed_at   <= t < destroy_at     out of JWKS, kmsd still verifies
//! destroyed  destroy_at   <= t                  private material gone
//! revoked    revoked_at   <= t                  out of JWKS, nothing it signed is trusted
//! ```
//!
//! An open-ended instant (`None`) lies in the unbounded future.

use serde::{Deserialize, Serialize};

use super::{Algorithm, BackendKind, KeySpec, KeysetName, Kid, PublicKey};
use crate::clock::Timestamp;

/// The planned instants of a key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub published_at: Timestamp,
    pub activated_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    pub removed_at: Option<Timestamp>,
    pub destroy_at: Option<Timestamp>,
}

impl Schedule {
    /// Published and active at once, with no end planned (a keyset's first key).
    pub fn immediate(now: Timestamp) -> Self {
        Self { published_at: now, activated_at: now, retired_at: None, removed_at: None, destroy_at: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Created, not yet published (its publication lies in the future).
    Planned,
    Pending,
    Active,
    Retiring,
    Retired,
    Destroyed,
    Revoked,
}

impl KeyState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
            Self::Destroyed => "destroyed",
            Self::Revoked => "revoked",
        }
    }

    /// Whether a key in this state appears in the JWKS.
    pub const fn is_published(self) -> bool {
        matches!(self, Self::Pending | Self::Active | Self::Retiring)
    }

    /// The relayauth status vocabulary (`active | rotating | expired`).
    pub const fn relayauth_status(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Planned | Self::Pending | Self::Retiring => "rotating",
            Self::Retired | Self::Destroyed | Self::Revoked => "expired",
        }
    }
}

/// Where a backend keeps the private half, as recorded with the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum KeyHandle {
    /// Sealed under the vault's data key (AEAD ciphertext, safe to store).
    Vault {
        #[serde(with = "crate::encoding::b64url_serde")]
        sealed: Vec<u8>,
    },
    /// An AWS KMS key id or ARN.
    AwsKms { key_id: String },
    /// Private material was destroyed; only the public key remains.
    Destroyed,
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vault { sealed } => write!(f, "Vault(<{} sealed bytes>)", sealed.len()),
            Self::AwsKms { key_id } => write!(f, "AwsKms({key_id})"),
            Self::Destroyed => f.write_str("Destroyed"),
        }
    }
}

/// One key version as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: Kid,
    pub keyset: KeysetName,
    pub spec: KeySpec,
    pub backend: BackendKind,
    pub handle: KeyHandle,
    pub public: PublicKey,
    pub created_at: Timestamp,
    pub schedule: Schedule,
    pub revoked_at: Option<Timestamp>,
}

impl AsRef<KeyRecord> for KeyRecord {
    fn as_ref(&self) -> &KeyRecord {
        self
    }
}

impl KeyRecord {
    pub fn algorithm(&self) -> Algorithm {
        self.spec.algorithm()
    }

    pub fn state_at(&self, t: Timestamp) -> KeyState {
        let reached = |at: Option<Timestamp>| at.is_some_and(|at| at <= t);
        let s = &self.schedule;
        if reached(self.revoked_at) {
            KeyState::Revoked
        } else if reached(s.destroy_at) {
            KeyState::Destroyed
        } else if reached(s.removed_at) {
            KeyState::Retired
        } else if reached(s.retired_at) {
            KeyState::Retiring
        } else if s.activated_at <= t {
            KeyState::Active
        } else if s.published_at <= t {
            KeyState::Pending
        } else {
            KeyState::Planned
        }
    }

    /// The instants after `t` at which this key enters or leaves the JWKS.
    pub fn jwks_changes_after(&self, t: Timestamp) -> impl Iterator<Item = Timestamp> {
        let s = self.schedule;
        [Some(s.published_at), s.removed_at, s.destroy_at].into_iter().flatten().filter(move |at| *at > t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(schedule: Schedule) -> KeyRecord {
        let public = PublicKey::ed25519(&[9; 32]).unwrap();
        KeyRecord {
            kid: public.thumbprint(),
            keyset: KeysetName::parse("edge").unwrap(),
            spec: KeySpec::Ed25519,
            backend: BackendKind::Vault,
            handle: KeyHandle::Destroyed,
            public,
            created_at: Timestamp::from_unix(0),
            schedule,
            revoked_at: None,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix(s)
    }

    #[test]
    fn state_follows_the_planned_instants() {
        let r = record(Schedule {
            published_at: t(10),
            activated_at: t(20),
            retired_at: Some(t(30)),
            removed_at: Some(t(40)),
            destroy_at: Some(t(50)),
        });
        let expect = [
            (9, KeyState::Planned),
            (10, KeyState::Pending),
            (19, KeyState::Pending),
            (20, KeyState::Active),
            (30, KeyState::Retiring),
            (40, KeyState::Retired),
            (50, KeyState::Destroyed),
        ];
        for (at, state) in expect {
            assert_eq!(r.state_at(t(at)), state, "at {at}");
        }
        let changes: Vec<_> = r.jwks_changes_after(t(15)).collect();
        assert_eq!(changes, [t(40), t(50)]);
    }

    #[test]
    fn revocation_wins_over_every_planned_state() {
        let mut r = record(Schedule {
            published_at: t(0),
            activated_at: t(0),
            retired_at: None,
            removed_at: None,
            destroy_at: None,
        });
        assert_eq!(r.state_at(t(1_000_000)), KeyState::Active);
        r.revoked_at = Some(t(5));
        assert_eq!(r.state_at(t(4)), KeyState::Active);
        assert_eq!(r.state_at(t(5)), KeyState::Revoked);
        assert!(!KeyState::Revoked.is_published());
    }
}
