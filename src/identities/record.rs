//! An identity (agent, human or service) as stored, in relayauth's shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api_keys::OrgId;
use crate::clock::Timestamp;
use crate::encoding::random_hex;
use crate::ids::{is_prefixed_hex32, text_id};

text_id!(
    /// An identity id: `agent_` + 32 hex as kmsd makes them (for agents,
    /// humans and services alike). Records and claims hold it unchecked.
    IdentityId
);

impl IdentityId {
    pub fn generate() -> Self {
        Self(format!("agent_{}", random_hex(16)))
    }

    /// The id a client names (a path segment, a body field), if it has the
    /// form kmsd makes; text of any other form names no identity.
    pub fn parse(text: &str) -> Option<Self> {
        is_prefixed_hex32(text, "agent_").then(|| Self(text.to_owned()))
    }
}

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
    pub id: IdentityId,
    pub name: String,
    pub kind: String,
    pub org_id: OrgId,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_id_parses_only_in_the_form_kmsd_makes() {
        let made = IdentityId::generate();
        assert_eq!(IdentityId::parse(made.as_str()), Some(made));
        assert!(IdentityId::parse("agent_00000000000000000000000000000000").is_some());
        for refused in [
            "agent_x",
            "agent_1",
            "",
            "agent_",
            "sess_00000000000000000000000000000000",
            "AGENT_00000000000000000000000000000000",
            "agent_0000000000000000000000000000000G",
            " agent_00000000000000000000000000000000",
            "agent_00000000000000000000000000000000/x",
        ] {
            assert_eq!(IdentityId::parse(refused), None, "{refused:?}");
        }
    }
}
