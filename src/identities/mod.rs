//! Identities: who tokens are issued to. Held in memory (token issuance reads
//! one per request) and written through to the store, each change with its
//! audit event in one transaction. Suspending, retiring or deleting an
//! identity sets its revocation epoch, which revokes every token it holds.
//!
//! Invariant: an identity never holds a scope its creator (or last editor)
//! does not hold.

mod filter;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

pub use filter::ListFilter;
use record::{is_identity_type, IDENTITY_TYPES};
pub use record::{new_identity_id, IdentityRecord, IdentityStatus};

use crate::api_keys::Actor;
use crate::audit::AuditEvent;
use crate::clock::Timestamp;
use crate::scopes::{self, GrantError};
use crate::storage::{StorageError, Store};

/// The longest sponsor chain (sponsor first, the identity last).
pub const MAX_CHAIN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("identity not found")]
    NotFound,
    #[error("an identity named {0:?} already exists")]
    Duplicate(String),
    #[error("identity is {0}")]
    State(&'static str),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

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
fn checked_kind(kind: String) -> Result<String, IdentityError> {
    if is_identity_type(&kind) {
        Ok(kind)
    } else {
        Err(IdentityError::Invalid(format!("type must be one of {} (got {kind:?})", IDENTITY_TYPES.join(", "))))
    }
}

#[derive(Clone)]
pub struct Identities {
    store: Store,
    by_id: Arc<RwLock<HashMap<String, Arc<IdentityRecord>>>>,
}

/// What a lifecycle operation does to the identity.
#[derive(Debug, Clone, Copy)]
pub enum Transition {
    Suspend,
    Retire,
    Reactivate,
}

impl Identities {
    pub async fn load(store: Store) -> Result<Self, StorageError> {
        let all = store.read(|r| r.identities()).await?;
        let by_id = all.into_iter().map(|i| (i.id.clone(), Arc::new(i))).collect();
        Ok(Self { store, by_id: Arc::new(RwLock::new(by_id)) })
    }

    /// The identity `id` if it belongs to `org` (another org's identity is
    /// indistinguishable from a missing one).
    pub fn get(&self, org: &str, id: &str) -> Option<Arc<IdentityRecord>> {
        self.by_id.read().ok()?.get(id).filter(|i| i.org_id == org).cloned()
    }

    /// Token-verification view: the identity by id, any org.
    pub fn get_any(&self, id: &str) -> Option<Arc<IdentityRecord>> {
        self.by_id.read().ok()?.get(id).cloned()
    }

    /// One page of `org`'s identities that match `filter`, in id order after `cursor`.
    pub fn list(
        &self,
        org: &str,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<IdentityRecord>>, bool) {
        let Ok(map) = self.by_id.read() else { return (Vec::new(), false) };
        let mut all: Vec<&Arc<IdentityRecord>> = map
            .values()
            .filter(|i| i.org_id == org && cursor.is_none_or(|c| i.id.as_str() > c) && filter.matches(i))
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let more = all.len() > limit;
        (all.into_iter().take(limit).cloned().collect(), more)
    }

    fn name_taken(&self, org: &str, name: &str, except: Option<&str>) -> bool {
        self.by_id
            .read()
            .map(|m| m.values().any(|i| i.org_id == org && i.name == name && Some(i.id.as_str()) != except))
            .unwrap_or(false)
    }

    /// Creates an identity in `actor`'s org. `chain` is the caller's own
    /// sponsor chain when it is a token whose chain starts at `sponsor_id`.
    pub async fn create(
        &self,
        actor: &Actor,
        caller_chain: Option<&[String]>,
        req: NewIdentity,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(IdentityError::Invalid("name is required (1 to 128 characters)".into()));
        }
        let kind = checked_kind(req.kind.unwrap_or_else(|| "agent".into()))?;
        let sponsor_id = req.sponsor_id.trim().to_owned();
        if sponsor_id.is_empty() || sponsor_id.len() > 128 {
            return Err(IdentityError::Invalid("sponsorId is required".into()));
        }
        scopes::check_grant(&actor.scopes, &req.scopes)?;
        if self.name_taken(&actor.org_id, &name, None) {
            return Err(IdentityError::Duplicate(name));
        }
        let id = new_identity_id();
        let mut chain: Vec<String> = match caller_chain {
            Some(c) if c.first() == Some(&sponsor_id) => c.to_vec(),
            _ => vec![sponsor_id.clone()],
        };
        chain.push(id.clone());
        if chain.len() > MAX_CHAIN {
            return Err(IdentityError::Invalid(format!("sponsor chain would exceed {MAX_CHAIN} entries")));
        }
        let record = IdentityRecord {
            id,
            name,
            kind,
            org_id: actor.org_id.clone(),
            status: IdentityStatus::Active,
            scopes: req.scopes,
            roles: req.roles,
            metadata: req.metadata,
            created_at: now,
            updated_at: now,
            sponsor_id,
            sponsor_chain: chain,
            workspace_id: req.workspace_id.unwrap_or_else(|| "default".into()),
            suspended_at: None,
            suspend_reason: None,
            tokens_revoked_before: None,
        };
        let event = AuditEvent::new(now, actor.id.clone(), "identity.create")
            .target(record.id.clone())
            .detail(serde_json::json!({ "name": record.name, "scopes": record.scopes }));
        self.commit(record, event, false).await
    }

    pub async fn patch(
        &self,
        actor: &Actor,
        id: &str,
        patch: IdentityPatch,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        let mut rec = self.get(&actor.org_id, id).ok_or(IdentityError::NotFound)?.as_ref().clone();
        if let Some(name) = patch.name {
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 128 {
                return Err(IdentityError::Invalid("name must be 1 to 128 characters".into()));
            }
            if self.name_taken(&actor.org_id, &name, Some(id)) {
                return Err(IdentityError::Duplicate(name));
            }
            rec.name = name;
        }
        if let Some(scopes) = patch.scopes {
            scopes::check_grant(&actor.scopes, &scopes)?;
            rec.scopes = scopes;
        }
        if let Some(roles) = patch.roles {
            rec.roles = roles;
        }
        if let Some(metadata) = patch.metadata {
            rec.metadata = metadata;
        }
        if let Some(w) = patch.workspace_id {
            rec.workspace_id = w;
        }
        if let Some(kind) = patch.kind {
            rec.kind = checked_kind(kind)?;
        }
        rec.updated_at = now;
        let event = AuditEvent::new(now, actor.id.clone(), "identity.update")
            .target(rec.id.clone())
            .detail(serde_json::json!({ "scopes": rec.scopes }));
        self.commit(rec, event, false).await
    }

    /// Suspend (reason required), retire or reactivate. Suspend and retire
    /// revoke every token the identity holds.
    pub async fn transition(
        &self,
        actor: &Actor,
        id: &str,
        to: Transition,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        let mut rec = self.get(&actor.org_id, id).ok_or(IdentityError::NotFound)?.as_ref().clone();
        let action = match (to, rec.status) {
            (Transition::Suspend, IdentityStatus::Active) => {
                let reason = reason
                    .filter(|r| !r.trim().is_empty())
                    .ok_or_else(|| IdentityError::Invalid("reason is required".into()))?;
                rec.status = IdentityStatus::Suspended;
                rec.suspended_at = Some(now);
                rec.suspend_reason = Some(reason);
                rec.tokens_revoked_before = Some(now);
                "identity.suspend"
            }
            (Transition::Retire, IdentityStatus::Active | IdentityStatus::Suspended) => {
                rec.status = IdentityStatus::Retired;
                if let Some(r) = reason {
                    rec.suspend_reason = Some(r);
                }
                rec.tokens_revoked_before = Some(now);
                "identity.retire"
            }
            (Transition::Reactivate, IdentityStatus::Suspended) => {
                rec.status = IdentityStatus::Active;
                rec.suspended_at = None;
                rec.suspend_reason = None;
                "identity.reactivate"
            }
            (_, status) => return Err(IdentityError::State(status.as_str())),
        };
        rec.updated_at = now;
        let event = AuditEvent::new(now, actor.id.clone(), action).target(rec.id.clone());
        self.commit(rec, event, false).await
    }

    /// Deletes an identity; its tokens stop verifying because the identity is
    /// gone (verification requires a known, active identity).
    pub async fn delete(&self, actor: &Actor, id: &str, now: Timestamp) -> Result<IdentityRecord, IdentityError> {
        let rec = self.get(&actor.org_id, id).ok_or(IdentityError::NotFound)?.as_ref().clone();
        let event = AuditEvent::new(now, actor.id.clone(), "identity.delete").target(rec.id.clone());
        self.commit(rec, event, true).await
    }

    /// Revokes every token of `id` issued up to now (revoke-by-identity).
    pub async fn revoke_tokens(
        &self,
        actor: &Actor,
        id: &str,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        let mut rec = self.get(&actor.org_id, id).ok_or(IdentityError::NotFound)?.as_ref().clone();
        rec.tokens_revoked_before = Some(now);
        let event = AuditEvent::new(now, actor.id.clone(), "token.revoke_identity").target(rec.id.clone());
        self.commit(rec, event, false).await
    }

    async fn commit(
        &self,
        rec: IdentityRecord,
        event: AuditEvent,
        delete: bool,
    ) -> Result<IdentityRecord, IdentityError> {
        let stored = rec.clone();
        self.store
            .write(move |w| {
                if delete {
                    w.delete_identity(&stored.id)?;
                } else {
                    w.put_identity(&stored)?;
                }
                w.audit(event)?;
                Ok::<_, StorageError>(())
            })
            .await?;
        if let Ok(mut map) = self.by_id.write() {
            if delete {
                map.remove(&rec.id);
            } else {
                map.insert(rec.id.clone(), Arc::new(rec.clone()));
            }
        }
        Ok(rec)
    }
}
