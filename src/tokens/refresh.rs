//! Refresh: a refresh token is exchanged once for a new pair; a second use
//! revokes its whole session.

use super::{rows, TokenError, TokenPair, TokenService, TokenType, VerifyError};
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::scopes;
use crate::storage::StorageError;

impl TokenService {
    /// Exchanges a refresh token for a new pair. Single use: presenting a spent
    /// refresh token (outside the configured grace for the immediately previous
    /// one) revokes the whole session.
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, TokenError> {
        let claims = self.verify(token, TokenType::Refresh).await?;
        let now = self.clock.now();
        let identity = self.identities.find_any(&claims.sub).await.ok_or(VerifyError::Revoked)?;
        let sid = claims.sid.clone();
        let mut session = self.store.read(move |r| r.session(sid.as_str())).await?.ok_or(VerifyError::Revoked)?;
        // Scopes the identity no longer holds are dropped, never re-granted.
        session.scopes.retain(|s| scopes::any_covers(&identity.scopes, s));
        if session.scopes.is_empty() {
            return Err(VerifyError::Revoked.into());
        }
        let (pair, issued) = self.mint(&identity, &mut session, now).await?;
        let mut rows = rows(&pair, session, issued);
        let presented = claims.jti.clone();
        let grace = self.policy.refresh_reuse_grace;
        let (revocations, keep) = (self.revocations.clone(), now.plus(self.policy.access_ttl_max));
        let sid = claims.sid.clone();
        let outcome = self
            .store
            .commit_then_apply(
                move |w| {
                    let next = &mut rows.session;
                    let Some(mut current) = w.session(next.sid.as_str())? else { return Ok(Rotation::Gone) };
                    if current.revoked_at.is_some() {
                        return Ok(Rotation::Gone);
                    }
                    let in_grace = current.previous_refresh_jti.as_ref() == Some(&presented)
                        && current.rotated_at.is_some_and(|at| now < at.plus(grace));
                    if current.refresh_jti != presented && !in_grace {
                        current.revoked_at = Some(now);
                        w.put_session(&current)?;
                        w.audit(
                            AuditEvent::new(now, current.identity_id.clone(), AuditAction::TokenRefreshReuse)
                                .target(current.sid.clone())
                                .detail(serde_json::json!({ "jti": presented })),
                        )?;
                        return Ok(Rotation::Reused(current.expires_at));
                    }
                    if !in_grace {
                        next.previous_refresh_jti = Some(presented);
                        next.rotated_at = Some(now);
                    } else {
                        next.previous_refresh_jti = current.previous_refresh_jti.clone();
                        next.rotated_at = current.rotated_at;
                    }
                    rows.put(w)?;
                    Ok::<_, StorageError>(Rotation::Rotated)
                },
                move |outcome| {
                    if let Rotation::Reused(until) = outcome {
                        revocations.revoke_session(&sid, (*until).max(keep));
                    }
                },
            )
            .await?;
        match outcome {
            Rotation::Rotated => Ok(pair),
            Rotation::Gone | Rotation::Reused(_) => Err(VerifyError::Revoked.into()),
        }
    }
}

enum Rotation {
    Rotated,
    Gone,
    Reused(Timestamp),
}
