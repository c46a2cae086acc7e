//! Which identities a list returns: relayauth's `GET /v1/identities` filters
//! (`status`, `type`, `workspaceId`), validated once at the edge.

use super::record::{IdentityRecord, IdentityStatus};
use super::IdentityError;

/// A conjunction of optional conditions; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    status: Option<IdentityStatus>,
    kind: Option<String>,
    workspace_id: Option<String>,
}

impl ListFilter {
    /// Parses the query values; an empty value means "no condition", an
    /// unknown status or type is an error naming the allowed values.
    pub fn parse(status: Option<&str>, kind: Option<&str>, workspace_id: Option<&str>) -> Result<Self, IdentityError> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty())
        }
        let status = match given(status) {
            None => None,
            Some(s) => Some(IdentityStatus::parse(s).ok_or_else(|| {
                IdentityError::Invalid(format!("status must be one of active, suspended, retired (got {s:?})"))
            })?),
        };
        let kind = given(kind).map(|k| super::checked_kind(k.to_owned())).transpose()?;
        Ok(Self { status, kind, workspace_id: given(workspace_id).map(str::to_owned) })
    }

    pub fn matches(&self, rec: &IdentityRecord) -> bool {
        self.status.is_none_or(|s| rec.status == s)
            && self.kind.as_deref().is_none_or(|k| rec.kind == k)
            && self.workspace_id.as_deref().is_none_or(|w| rec.workspace_id == w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_no_condition_and_unknown_ones_are_refused() {
        assert_eq!(ListFilter::parse(None, Some(""), Some("")).unwrap(), ListFilter::default());
        let f = ListFilter::parse(Some("suspended"), Some("human"), None).unwrap();
        assert_eq!((f.status, f.kind.as_deref()), (Some(IdentityStatus::Suspended), Some("human")));
        for (status, kind) in [(Some("Active"), None), (Some("gone"), None), (None, Some("robot"))] {
            let e = ListFilter::parse(status, kind, None).unwrap_err();
            assert!(matches!(e, IdentityError::Invalid(ref m) if m.contains("must be one of")), "{e}");
        }
    }
}
