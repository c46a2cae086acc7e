//! An identity (agent, human or service) as stored, in relayauth's shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::encoding::random_hex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityStatus {
    Active,
    Suspended,
    Retired,
}

impl IdentityStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Retired => "retired",
        }
    }

    /// The status named `text` (`active`, `suspended`, `retired`), if any.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Suspended, Self::Retired].into_iter().find(|s| s.as_str() == text)
    }
}

/// The identity types relayauth defines (`IdentityType`).
pub const IDENTITY_TYPES: [&str; 3] = ["agent", "human", "service"];

/// Whether `kind` is one of [`IDENTITY_TYPES`].
pub fn is_identity_type(kind: &str) -> bool {
    IDENTITY_TYPES.contains(&kind)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub org_id: String,
    pub status: IdentityStatus,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub sponsor_id: String,
    pub sponsor_chain: Vec<String>,
    pub workspace_id: String,
    pub suspended_at: Option<Timestamp>,
    pub suspend_reason: Option<String>,
    /// Every token of this identity with `iat` before this instant is revoked
    /// (set by suspend, retire and revoke-by-identity). Tokens from the same
    /// second are caught by their session's revocation, which those
    /// operations also perform; this epoch is the net for a session row lost
    /// in a crash.
    pub tokens_revoked_before: Option<Timestamp>,
}

pub fn new_identity_id() -> String {
    format!("agent_{}", random_hex(16))
}

impl IdentityRecord {
    /// The relayauth StoredIdentity object.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "type": self.kind,
            "orgId": self.org_id,
            "status": self.status.as_str(),
            "scopes": self.scopes,
            "roles": self.roles,
            "metadata": self.metadata,
            "createdAt": self.created_at.to_iso(),
            "updatedAt": self.updated_at.to_iso(),
            "sponsorId": self.sponsor_id,
            "sponsorChain": self.sponsor_chain,
            "workspaceId": self.workspace_id,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(at) = self.suspended_at {
                obj.insert("suspendedAt".into(), at.to_iso().into());
            }
            if let Some(r) = &self.suspend_reason {
                obj.insert("suspendReason".into(), r.clone().into());
            }
        }
        v
    }
}
