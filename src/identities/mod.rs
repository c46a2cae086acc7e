//! Identities: who tokens are issued to. Held in memory (token issuance reads
//! one per request) and written through to the store, each change with its
//! audit event in one transaction. Suspending, retiring or deleting an
//! identity sets its revocation epoch, which revokes every token it holds.
//!
//! Invariants: an identity never holds a scope its creator (or last editor)
//! does not hold; only a caller covering all of an identity's scopes may
//! change it; every change is a read-modify-write of the stored record in
//! one write transaction, shown in memory by the same blocking task
//! ([`Store::commit_then_apply`]), so a change that returned sticks. Names
//! are unique per org: checked against the stored records inside the write
//! transaction that adds or renames one. Every text field a client sets
//! passes [`crate::text::check`].

mod filter;
mod memory;
mod record;
mod request;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use filter::ListFilter;
pub use record::{IdentityId, IdentityRecord, IdentityStatus};
use request::{check_fields, checked_kind};
pub use request::{CheckedPatch, IdentityPatch, NewIdentity, Transition};

use crate::api_keys::Actor;
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::scopes::{self, GrantError};
use crate::storage::{StorageError, Store, Writer};
use crate::text;

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

impl From<text::UnsafeText> for IdentityError {
    fn from(e: text::UnsafeText) -> Self {
        IdentityError::Invalid(e.to_string())
    }
}

#[derive(Clone)]
pub struct Identities {
    store: Store,
    by_id: Arc<RwLock<HashMap<IdentityId, Arc<IdentityRecord>>>>,
}

impl Identities {
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
        text::check("name", &name)?;
        let kind = checked_kind(req.kind.unwrap_or_else(|| "agent".into()))?;
        let sponsor_id = req.sponsor_id.trim().to_owned();
        if sponsor_id.is_empty() || sponsor_id.len() > 128 {
            return Err(IdentityError::Invalid("sponsorId is required".into()));
        }
        text::check("sponsorId", &sponsor_id)?;
        check_fields(req.workspace_id.as_deref(), Some(req.roles.as_slice()), Some(&req.metadata))?;
        scopes::check_grant(&actor.scopes, &req.scopes)?;
        let id = IdentityId::generate();
        let mut chain: Vec<String> = match caller_chain {
            Some(c) if c.first() == Some(&sponsor_id) => c.to_vec(),
            _ => vec![sponsor_id.clone()],
        };
        chain.push(id.to_string());
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
        let event = AuditEvent::new(now, actor.id.clone(), AuditAction::IdentityCreate)
            .target(record.id.clone())
            .detail(serde_json::json!({ "name": record.name, "scopes": record.scopes }));
        self.store
            .commit_then_apply(
                move |w| {
                    unique_name(w, &record, None)?;
                    w.put_identity(&record)?;
                    w.audit(event)?;
                    Ok(record)
                },
                {
                    let memory = self.by_id.clone();
                    move |rec: &IdentityRecord| apply(&memory, rec, false)
                },
            )
            .await
    }

    /// Edits an identity with a patch checked against `actor`'s scopes
    /// ([`IdentityPatch::check`]). Narrowing or replacing its scopes needs the
    /// caller to cover both the new scopes and the current ones.
    pub async fn patch(
        &self,
        actor: &Actor,
        id: &IdentityId,
        patch: CheckedPatch,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        self.change(actor, id, now, move |rec| {
            patch.apply(rec);
            rec.updated_at = now;
            Ok(Edit::put(AuditAction::IdentityUpdate, serde_json::json!({ "scopes": rec.scopes })))
        })
        .await
    }

    /// Suspend (reason required), retire or reactivate. Suspend and retire
    /// revoke every token the identity holds.
    pub async fn transition(
        &self,
        actor: &Actor,
        id: &IdentityId,
        to: Transition,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        self.change(actor, id, now, move |rec| {
            let action = match (to, rec.status) {
                (Transition::Suspend, IdentityStatus::Active) => {
                    let reason = reason
                        .filter(|r| !r.trim().is_empty())
                        .ok_or_else(|| IdentityError::Invalid("reason is required".into()))?;
                    text::check("reason", &reason)?;
                    rec.status = IdentityStatus::Suspended;
                    rec.suspended_at = Some(now);
                    rec.suspend_reason = Some(reason);
                    rec.tokens_revoked_before = Some(now);
                    AuditAction::IdentitySuspend
                }
                (Transition::Retire, IdentityStatus::Active | IdentityStatus::Suspended) => {
                    rec.status = IdentityStatus::Retired;
                    if let Some(r) = reason {
                        text::check("reason", &r)?;
                        rec.suspend_reason = Some(r);
                    }
                    rec.tokens_revoked_before = Some(now);
                    AuditAction::IdentityRetire
                }
                (Transition::Reactivate, IdentityStatus::Suspended) => {
                    rec.status = IdentityStatus::Active;
                    rec.suspended_at = None;
                    rec.suspend_reason = None;
                    AuditAction::IdentityReactivate
                }
                (_, status) => return Err(IdentityError::State(status.as_str())),
            };
            rec.updated_at = now;
            Ok(Edit::put(action, serde_json::Value::Null))
        })
        .await
    }

    /// Deletes an identity; its tokens stop verifying because the identity is
    /// gone (verification requires a known, active identity).
    pub async fn delete(
        &self,
        actor: &Actor,
        id: &IdentityId,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        self.change(actor, id, now, |_| {
            Ok(Edit { action: AuditAction::IdentityDelete, detail: serde_json::Value::Null, delete: true })
        })
        .await
    }

    /// Revokes every token of `id` issued up to now (revoke-by-identity).
    pub async fn revoke_tokens(
        &self,
        actor: &Actor,
        id: &IdentityId,
        now: Timestamp,
    ) -> Result<IdentityRecord, IdentityError> {
        self.change(actor, id, now, move |rec| {
            rec.tokens_revoked_before = Some(now);
            Ok(Edit::put(AuditAction::TokenRevokeIdentity, serde_json::Value::Null))
        })
        .await
    }

    /// The one way an existing identity changes: `edit` runs on the current
    /// stored record inside a write transaction, the result commits with its
    /// audit event, and memory shows it before this returns (or, if the
    /// caller goes away, anyway). redb admits one write transaction at a
    /// time, so nothing can change the record between this read and this
    /// commit: the write transaction is the lock that makes the
    /// read-modify-write safe, and concurrent changes (a suspend and a PATCH)
    /// apply one after the other instead of one overwriting the other.
    ///
    /// A change that gives the identity a name another identity of its org
    /// holds is refused, checked in the same transaction (see [`unique_name`]).
    ///
    /// The caller must cover every scope the identity currently holds.
    async fn change<F>(
        &self,
        actor: &Actor,
        id: &IdentityId,
        now: Timestamp,
        edit: F,
    ) -> Result<IdentityRecord, IdentityError>
    where
        F: FnOnce(&mut IdentityRecord) -> Result<Edit, IdentityError> + Send + 'static,
    {
        let (org, held, who, id) = (actor.org_id.clone(), actor.scopes.clone(), actor.id.clone(), id.clone());
        let memory = self.by_id.clone();
        let (rec, _) = self
            .store
            .commit_then_apply(
                move |w| {
                    let mut rec =
                        w.identity(id.as_str())?.filter(|r| r.org_id == org).ok_or(IdentityError::NotFound)?;
                    scopes::check_covers(&held, &rec.scopes)?;
                    let name = rec.name.clone();
                    let edit = edit(&mut rec)?;
                    if !edit.delete && rec.name != name {
                        unique_name(w, &rec, Some(rec.id.as_str()))?;
                    }
                    if edit.delete {
                        w.delete_identity(rec.id.as_str())?;
                    } else {
                        w.put_identity(&rec)?;
                    }
                    w.audit(AuditEvent::new(now, who, edit.action).target(rec.id.clone()).detail(edit.detail))?;
                    Ok::<_, IdentityError>((rec, edit.delete))
                },
                move |(rec, delete)| apply(&memory, rec, *delete),
            )
            .await?;
        Ok(rec)
    }
}

/// What [`Identities::change`] does with the edited record.
struct Edit {
    action: AuditAction,
    detail: serde_json::Value,
    delete: bool,
}

impl Edit {
    fn put(action: AuditAction, detail: serde_json::Value) -> Self {
        Self { action, detail, delete: false }
    }
}

type Memory = RwLock<HashMap<IdentityId, Arc<IdentityRecord>>>;

/// Refuses `rec`'s name if another identity of its org holds it. Runs inside
/// the write transaction that stores `rec`: redb admits one writer at a time,
/// so of two racing creates (or renames) to one name the second sees the
/// first's record and fails. The stored records are the authority: memory is
/// only as current as every writer's discipline in updating it.
fn unique_name(w: &Writer, rec: &IdentityRecord, except: Option<&str>) -> Result<(), IdentityError> {
    match w.identity_named(rec.org_id.as_str(), &rec.name, except)? {
        Some(_) => Err(IdentityError::Duplicate(rec.name.clone())),
        None => Ok(()),
    }
}

/// Shows a committed record (or its deletion) in memory.
fn apply(memory: &Memory, rec: &IdentityRecord, delete: bool) {
    // A poisoned lock: recover the map so the committed change still shows.
    let mut map = memory.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if delete {
        map.remove(&rec.id);
    } else {
        map.insert(rec.id.clone(), Arc::new(rec.clone()));
    }
}
