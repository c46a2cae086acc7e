//! What callers ask of [`super::Identities`]: a create, a PATCH, a lifecycle
//! transition, and the field checks they share. No storage here.

use std::collections::BTreeMap;

use super::record::{is_identity_type, IDENTITY_TYPES};
use super::IdentityError;
use crate::text;

/// A create request.
#[derive(Debug, Clone, Default)]
pub struct NewIdentity {
    pub name: String,
    pub kind: Option<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub sponsor_id: String,
    pub workspace_id: Option<String>,
}

/// A partial update (PATCH).
#[derive(Debug, Clone, Default)]
pub struct IdentityPatch {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub workspace_id: Option<String>,
    pub kind: Option<String>,
}

/// `kind` if it is one of relayauth's identity types.
pub(super) fn checked_kind(kind: String) -> Result<String, IdentityError> {
    if is_identity_type(&kind) {
        Ok(kind)
    } else {
        Err(IdentityError::Invalid(format!("type must be one of {} (got {kind:?})", IDENTITY_TYPES.join(", "))))
    }
}

/// What a lifecycle operation does to the identity.
#[derive(Debug, Clone, Copy)]
pub enum Transition {
    Suspend,
    Retire,
    Reactivate,
}

/// The text checks of the optional fields a create or a PATCH sets.
pub(super) fn check_fields(
    workspace_id: Option<&str>,
    roles: Option<&[String]>,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), text::UnsafeText> {
    if let Some(w) = workspace_id {
        text::check("workspaceId", w)?;
    }
    if let Some(roles) = roles {
        text::check_each("roles", roles)?;
    }
    metadata.map_or(Ok(()), |m| text::check_map("metadata", m))
}
