//! Revocation: one token, one session, or every token of an identity;
//! committed, then shown in memory, as one unit.

use super::{SessionId, TokenError, TokenId, TokenService};
use crate::api_keys::Actor;
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::identities::{IdentityError, IdentityId};
use crate::scopes;
use crate::storage::StorageError;

impl TokenService {
    /// Revokes one token (by jti), one session, or every token of an identity.
    /// Memory shows the revocation before this returns, and even if the
    /// caller goes away first ([`crate::storage::Store::commit_then_apply`]).
    pub async fn revoke(&self, actor: &Actor, target: RevokeTarget, now: Timestamp) -> Result<(), TokenError> {
        let org = actor.org_id.clone();
        let who = actor.id.clone();
        let revocations = self.revocations.clone();
        let keep = now.plus(self.policy.access_ttl_max);
        match target {
            RevokeTarget::Token(jti) => {
                self.store
                    .commit_then_apply(
                        move |w| {
                            let Some(t) = w.issued(jti.as_str())?.filter(|t| t.org_id == org) else { return Ok(None) };
                            w.revoke_jti(t.jti.as_str(), t.exp)?;
                            w.audit(AuditEvent::new(now, who, AuditAction::TokenRevoke).target(t.jti.clone()))?;
                            Ok::<_, StorageError>(Some(t))
                        },
                        move |t| {
                            if let Some(t) = t {
                                revocations.revoke_jti(&t.jti, t.exp);
                            }
                        },
                    )
                    .await?
                    .ok_or(TokenError::NotFound)?;
            }
            RevokeTarget::Session(sid) => {
                self.store
                    .commit_then_apply(
                        move |w| {
                            let Some(mut s) = w.session(sid.as_str())?.filter(|s| s.org_id == org) else {
                                return Ok(None);
                            };
                            s.revoked_at.get_or_insert(now);
                            w.put_session(&s)?;
                            w.audit(AuditEvent::new(now, who, AuditAction::TokenRevokeSession).target(s.sid.clone()))?;
                            Ok::<_, StorageError>(Some(s))
                        },
                        move |s| {
                            if let Some(s) = s {
                                revocations.revoke_session(&s.sid, s.expires_at.max(keep));
                            }
                        },
                    )
                    .await?
                    .ok_or(TokenError::NotFound)?;
            }
            RevokeTarget::Identity(id) => {
                // Every token kmsd issued has a session, so no live session
                // means nothing left to revoke ("nothing matched", as for a
                // jti or sid) — unless legacy HS256 tokens, which have none,
                // still verify: only the identity's epoch reaches those.
                let identity = self.identities.find(&actor.org_id, &id).await.ok_or(TokenError::NotFound)?;
                // Authorized before any session is touched; the epoch's own
                // transaction checks again against the stored record.
                scopes::check_covers(&actor.scopes, &identity.scopes).map_err(TokenError::Grant)?;
                let live = self.revoke_sessions_of(&id, now).await?;
                if live == 0 && !self.migration.as_ref().is_some_and(|m| m.accepts_hs256()) {
                    return Err(TokenError::NotFound);
                }
                self.identities.revoke_tokens(actor, &id, now).await.map_err(|e| match e {
                    IdentityError::Storage(e) => TokenError::Storage(e),
                    IdentityError::Grant(g) => TokenError::Grant(g),
                    _ => TokenError::NotFound,
                })?;
            }
        }
        Ok(())
    }

    /// Revokes every session of an identity (after suspend, retire, delete);
    /// returns how many of them still had a token that could verify.
    pub async fn revoke_sessions_of(&self, identity_id: &IdentityId, now: Timestamp) -> Result<usize, TokenError> {
        let id = identity_id.clone();
        let revocations = self.revocations.clone();
        let keep = now.plus(self.policy.access_ttl_max);
        let live_after = now.minus(self.policy.skew);
        let revoked = self
            .store
            .commit_then_apply(
                move |w| {
                    let sessions = w.sessions_of(id.as_str())?;
                    let mut out = Vec::new();
                    for mut s in sessions {
                        s.revoked_at = Some(now);
                        w.put_session(&s)?;
                        out.push((s.sid, s.expires_at));
                    }
                    Ok::<_, StorageError>(out)
                },
                move |revoked| {
                    for (sid, until) in revoked {
                        revocations.revoke_session(sid, (*until).max(keep));
                    }
                },
            )
            .await?;
        Ok(revoked.iter().filter(|(_, until)| *until >= live_after).count())
    }
}

/// What `POST /v1/tokens/revoke` names, in precedence order.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    Token(TokenId),
    Identity(IdentityId),
    Session(SessionId),
}
