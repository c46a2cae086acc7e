//! What callers ask of [`super::Identities`]: a create, a PATCH, a lifecycle
//! transition, and the field checks they share. No storage here.

use std::collections::BTreeMap;

use super::record::{is_identity_type, IdentityRecord, IDENTITY_TYPES};
use super::IdentityError;
use crate::scopes;
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

/// A PATCH whose fields passed [`IdentityPatch::check`] (the name trimmed).
#[derive(Debug, Clone)]
pub struct CheckedPatch(IdentityPatch);

impl IdentityPatch {
    /// This patch, if every field it sets is acceptable and `held` (the
    /// caller's scopes) covers the scopes it sets: what a PATCH is refused
    /// for before the identity it names is looked up.
    pub fn check(self, held: &[String]) -> Result<CheckedPatch, IdentityError> {
        let name = match self.name {
            Some(name) => {
                let name = name.trim().to_owned();
                if name.is_empty() || name.chars().count() > 128 {
                    return Err(IdentityError::Invalid("name must be 1 to 128 characters".into()));
                }
                text::check("name", &name)?;
                Some(name)
            }
            None => None,
        };
        if let Some(scopes) = &self.scopes {
            scopes::check_grant(held, scopes)?;
        }
        check_fields(self.workspace_id.as_deref(), self.roles.as_deref(), self.metadata.as_ref())?;
        let kind = self.kind.map(checked_kind).transpose()?;
        Ok(CheckedPatch(Self { name, kind, ..self }))
    }
}

impl CheckedPatch {
    /// Sets on `rec` every field the patch sets.
    pub(super) fn apply(self, rec: &mut IdentityRecord) {
        let IdentityPatch { name, scopes, roles, metadata, workspace_id, kind } = self.0;
        if let Some(name) = name {
            rec.name = name;
        }
        if let Some(scopes) = scopes {
            rec.scopes = scopes;
        }
        if let Some(roles) = roles {
            rec.roles = roles;
        }
        if let Some(metadata) = metadata {
            rec.metadata = metadata;
        }
        if let Some(w) = workspace_id {
            rec.workspace_id = w;
        }
        if let Some(kind) = kind {
            rec.kind = kind;
        }
    }
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
