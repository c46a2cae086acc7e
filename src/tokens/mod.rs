//! Tokens: issuance, refresh, revocation and verification, in the relayauth
//! dialect. Request path: `http -> tokens -> keyring -> backend`.
//!
//! Invariants:
//! - a token never carries a scope that both its identity and its caller do
//!   not hold;
//! - a token never outlives the publication of the key that signed it (`exp`
//!   is clamped to the key's removal minus skew; refresh tokens to its
//!   destruction);
//! - a token is returned only after its session and token rows are durable;
//! - a refresh token is good for one use; a second use revokes its session.

mod claims;
mod group_commit;
mod policy;
mod records;
mod revocations;
mod verified;
mod verify;

use std::sync::Arc;
use std::time::Duration;

pub use claims::Claims;
pub use policy::{TokenKeysets, TokenPolicy};
pub use records::{IssuedToken, SessionRecord, TokenType};
pub use verify::VerifyError;

use claims::signing_input;
use group_commit::GroupCommit;
use revocations::Revocations;

use crate::api_keys::Actor;
use crate::audit::AuditEvent;
use crate::backend::BackendError;
use crate::clock::{Clock, Timestamp};
use crate::encoding::time_ordered_hex;
use crate::identities::{Identities, IdentityError, IdentityRecord, IdentityStatus};
use crate::keyring::KeyRing;
use crate::keys::{Algorithm, KeyRecord, KeysetName};
use crate::migration::Migration;
use crate::scopes::{self, GrantError};
use crate::storage::{StorageError, Store};

pub const REFRESH_SCOPE: &str = "relayauth:token:refresh";
pub const REFRESH_AUDIENCE: &str = "relayauth";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("identity not found")]
    IdentityNotFound,
    #[error("identity is {0}")]
    IdentitySuspended(&'static str),
    /// Every requested scope that the identity and the caller do not both hold.
    #[error("scopes {0:?} are not held by both the identity and the caller")]
    InsufficientScope(Vec<String>),
    #[error("scope {scope:?} is not grantable: {reason}")]
    InvalidScope { scope: String, reason: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("algorithm {0:?} is not available for tokens")]
    UnsupportedAlgorithm(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("token not found")]
    NotFound,
    #[error("keyset {0} has no active signing key")]
    NoSigner(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Commit(#[from] group_commit::CommitError),
}

/// What the caller asked for on `POST /v1/tokens`.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    pub identity_id: String,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<Vec<String>>,
    pub expires_in: Option<u64>,
    pub refresh_ttl: Option<u64>,
    pub algorithm: Option<String>,
}

/// A lifetime that was shortened, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamp {
    pub token: TokenType,
    pub requested: u64,
    pub granted: u64,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: Timestamp,
    pub refresh_expires_at: Timestamp,
    pub clamped: Vec<Clamp>,
    /// The access token is HS256 (migration phase `hs256`).
    pub hs256: bool,
}

pub struct TokenService {
    ring: Arc<KeyRing>,
    identities: Identities,
    store: Store,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    issuer: String,
    keysets: TokenKeysets<Option<KeysetName>>,
    revocations: Arc<Revocations>,
    commit: GroupCommit,
    migration: Option<Arc<Migration>>,
    verified: verified::Verified,
    /// Validly signed tokens refused because kmsd never issued their jti.
    unknown_jtis: std::sync::atomic::AtomicU64,
}

/// A token about to be signed.
struct Draft {
    signer: Signer,
    claims: Claims,
    clamp: Option<Clamp>,
}

enum Signer {
    Key(Arc<KeyRecord>),
    /// The legacy shared secret, during the HS256 migration's `hs256` phase.
    Hs256(zeroize::Zeroizing<Vec<u8>>),
}

impl TokenService {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        ring: Arc<KeyRing>,
        identities: Identities,
        store: Store,
        clock: Arc<dyn Clock>,
        policy: TokenPolicy,
        issuer: String,
        keysets: TokenKeysets<Option<KeysetName>>,
        migration: Option<Arc<Migration>>,
    ) -> Result<Self, StorageError> {
        let (jtis, sessions) = store.read(|r| r.revocations()).await?;
        let revocations = Arc::new(Revocations::load(jtis, sessions));
        let commit = GroupCommit::start(store.clone());
        let verified = verified::Verified::default();
        Ok(Self {
            ring,
            identities,
            store,
            clock,
            policy,
            issuer,
            keysets,
            revocations,
            commit,
            migration,
            verified,
            unknown_jtis: Default::default(),
        })
    }

    pub fn migration(&self) -> Option<&Arc<Migration>> {
        self.migration.as_ref()
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// Issues a token pair for an identity of the caller's org.
    pub async fn issue(&self, caller: &Actor, req: IssueRequest) -> Result<TokenPair, TokenError> {
        let now = self.clock.now();
        let identity = self.identities.get(&caller.org_id, &req.identity_id).ok_or(TokenError::IdentityNotFound)?;
        if identity.status != IdentityStatus::Active {
            return Err(TokenError::IdentitySuspended(identity.status.as_str()));
        }
        let scopes = req.scopes.unwrap_or_else(|| identity.scopes.clone());
        if scopes.is_empty() {
            return Err(TokenError::Invalid("scopes must not be empty".into()));
        }
        for s in &scopes {
            scopes::check_grantable(s).map_err(|e| match e {
                GrantError::Invalid { scope, reason } => TokenError::InvalidScope { scope, reason },
                GrantError::Escalation { scope } | GrantError::Stronger { scope } => {
                    TokenError::InsufficientScope(vec![scope])
                }
            })?;
        }
        let missing: Vec<String> = scopes
            .iter()
            .filter(|s| !scopes::any_covers(&identity.scopes, s) || !scopes::any_covers(&caller.scopes, s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(TokenError::InsufficientScope(missing));
        }
        let audience = match req.audience {
            Some(a) if a.is_empty() || a.len() > 16 || a.iter().any(|x| x.is_empty() || x.len() > 256) => {
                return Err(TokenError::Invalid("audience must hold 1 to 16 non-empty strings".into()))
            }
            Some(a) => {
                crate::text::check_each("audience", &a).map_err(|e| TokenError::Invalid(e.to_string()))?;
                a
            }
            None => default_audience(&scopes),
        };
        let algorithm = match req.algorithm.as_deref() {
            None | Some("RS256") => Algorithm::Rs256,
            Some("EdDSA") => Algorithm::EdDsa,
            Some(other) => return Err(TokenError::UnsupportedAlgorithm(other.to_owned())),
        };
        let ttl = |v: Option<u64>, default: Duration| match v {
            Some(0) => Err(TokenError::Invalid("lifetimes must be positive".into())),
            Some(n) => Ok(n),
            None => Ok(default.as_secs()),
        };
        let mut session = SessionRecord {
            sid: format!("sess_{}", time_ordered_hex()),
            identity_id: identity.id.clone(),
            org_id: identity.org_id.clone(),
            scopes,
            audience,
            algorithm,
            access_ttl: ttl(req.expires_in, self.policy.access_ttl_default)?,
            refresh_ttl: ttl(req.refresh_ttl, self.policy.refresh_ttl_default)?,
            refresh_jti: String::new(),
            previous_refresh_jti: None,
            rotated_at: None,
            created_at: now,
            expires_at: now,
            revoked_at: None,
        };
        let ticket = self.commit.ticket();
        let (pair, issued) = self.mint(&identity, &mut session, now).await?;
        self.commit.commit(rows(&pair, session, issued), ticket).await?;
        Ok(pair)
    }

    /// Signs a new pair for `session` and updates it to expect the new refresh token.
    async fn mint(
        &self,
        identity: &IdentityRecord,
        session: &mut SessionRecord,
        now: Timestamp,
    ) -> Result<(TokenPair, Vec<IssuedToken>), TokenError> {
        let access_keyset = match session.algorithm {
            Algorithm::Rs256 => &self.keysets.rs256,
            Algorithm::EdDsa => &self.keysets.eddsa,
            Algorithm::Es256 => &None,
        }
        .as_ref()
        .ok_or_else(|| TokenError::UnsupportedAlgorithm(session.algorithm.as_str().into()))?;
        let refresh_keyset =
            self.keysets.refresh.as_ref().ok_or_else(|| TokenError::UnsupportedAlgorithm("refresh".into()))?;
        let access = self.draft(identity, session, access_keyset, TokenType::Access, now)?;
        let refresh = self.draft(identity, session, refresh_keyset, TokenType::Refresh, now)?;
        let (a, r) = tokio::join!(self.sign(&access), self.sign(&refresh));
        let (access_token, refresh_token) = (a?, r?);
        session.refresh_jti = refresh.claims.jti.clone();
        // Until every token the session ever issued has expired (an access
        // token may outlive its refresh token): what a revocation must cover.
        let last = Timestamp::from_unix(access.claims.exp.max(refresh.claims.exp));
        session.expires_at = session.expires_at.max(last);
        let row = |d: &Draft, token: &str| IssuedToken {
            jti: d.claims.jti.clone(),
            sid: session.sid.clone(),
            identity_id: identity.id.clone(),
            org_id: identity.org_id.clone(),
            kind: d.claims.token_type,
            exp: Timestamp::from_unix(d.claims.exp),
            kid: Some(match &d.signer {
                Signer::Key(k) => k.kid.as_str().to_owned(),
                Signer::Hs256(_) => self.migration.as_ref().map_or_else(String::new, |m| m.kid().to_owned()),
            }),
            iat: Some(Timestamp::from_unix(d.claims.iat)),
            input_sha256: token.rsplit_once('.').map(|(input, _)| records::input_digest(input)),
        };
        let issued = vec![row(&access, &access_token), row(&refresh, &refresh_token)];
        let pair = TokenPair {
            access_token,
            refresh_token,
            access_expires_at: Timestamp::from_unix(access.claims.exp),
            refresh_expires_at: Timestamp::from_unix(refresh.claims.exp),
            hs256: matches!(access.signer, Signer::Hs256(_)),
            clamped: [access.clamp, refresh.clamp].into_iter().flatten().collect(),
        };
        Ok((pair, issued))
    }

    fn draft(
        &self,
        identity: &IdentityRecord,
        session: &SessionRecord,
        keyset: &KeysetName,
        kind: TokenType,
        now: Timestamp,
    ) -> Result<Draft, TokenError> {
        let legacy = match kind {
            TokenType::Access => self.migration.as_ref().and_then(|m| m.signing_secret()),
            TokenType::Refresh => None,
        };
        let signer = match legacy {
            Some(secret) => Signer::Hs256(secret),
            None => Signer::Key(self.ring.active(keyset, now).ok_or_else(|| TokenError::NoSigner(keyset.to_string()))?),
        };
        let key_end = match (&signer, kind) {
            (Signer::Key(k), TokenType::Access) => k.schedule.removed_at,
            (Signer::Key(k), TokenType::Refresh) => k.schedule.destroy_at,
            (Signer::Hs256(_), _) => None,
        };
        let (requested, cap) = match kind {
            TokenType::Access => (session.access_ttl, self.policy.access_ttl_max),
            TokenType::Refresh => (session.refresh_ttl, self.policy.refresh_ttl_max),
        };
        let mut granted = requested.min(cap.as_secs());
        let mut reason = "policy_max";
        if let Some(end) = key_end {
            let room = now.until(end.minus(self.policy.skew)).as_secs().max(1);
            if room < granted {
                granted = room;
                reason = "signing_key_removal";
            }
        }
        let clamp = (granted < requested).then_some(Clamp { token: kind, requested, granted, reason });
        let (scopes, aud) = match kind {
            TokenType::Access => (session.scopes.clone(), session.audience.clone()),
            TokenType::Refresh => (vec![REFRESH_SCOPE.to_owned()], vec![REFRESH_AUDIENCE.to_owned()]),
        };
        let claims = Claims {
            sub: identity.id.clone(),
            org: identity.org_id.clone(),
            wks: identity.workspace_id.clone(),
            scopes,
            sponsor_id: identity.sponsor_id.clone(),
            sponsor_chain: identity.sponsor_chain.clone(),
            token_type: kind,
            iss: self.issuer.clone(),
            aud,
            exp: now.plus(Duration::from_secs(granted)).unix(),
            iat: now.unix(),
            jti: format!("tok_{}", time_ordered_hex()),
            sid: session.sid.clone(),
            nbf: None,
            meta: None,
            parent_token_id: None,
            budget: None,
        };
        Ok(Draft { signer, claims, clamp })
    }

    async fn sign(&self, d: &Draft) -> Result<String, TokenError> {
        let (input, sig) = match &d.signer {
            Signer::Key(key) => {
                let input = signing_input(key.algorithm().as_str(), key.kid.as_str(), &d.claims);
                let sig = self.ring.sign(key, input.as_bytes()).await?;
                (input, sig)
            }
            Signer::Hs256(secret) => {
                let kid = self.migration.as_ref().map_or("", |m| m.kid());
                let input = signing_input("HS256", kid, &d.claims);
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                (input.clone(), aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref().to_vec())
            }
        };
        Ok(format!("{input}.{}", crate::encoding::b64url(&sig)))
    }

    /// Exchanges a refresh token for a new pair. Single use: presenting a spent
    /// refresh token (outside the configured grace for the immediately previous
    /// one) revokes the whole session.
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, TokenError> {
        let claims = self.verify(token, TokenType::Refresh).await?;
        let now = self.clock.now();
        let identity = self.identities.get_any(&claims.sub).ok_or(VerifyError::Revoked)?;
        let sid = claims.sid.clone();
        let mut session = self.store.read(move |r| r.session(&sid)).await?.ok_or(VerifyError::Revoked)?;
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
                    let Some(mut current) = w.session(&next.sid)? else { return Ok(Rotation::Gone) };
                    if current.revoked_at.is_some() {
                        return Ok(Rotation::Gone);
                    }
                    let in_grace = current.previous_refresh_jti.as_deref() == Some(presented.as_str())
                        && current.rotated_at.is_some_and(|at| now < at.plus(grace));
                    if current.refresh_jti != presented && !in_grace {
                        current.revoked_at = Some(now);
                        w.put_session(&current)?;
                        w.audit(
                            AuditEvent::new(now, current.identity_id.clone(), "token.refresh_reuse")
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

    /// Revokes one token (by jti), one session, or every token of an identity.
    /// Memory shows the revocation before this returns, and even if the
    /// caller goes away first ([`Store::commit_then_apply`]).
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
                            let Some(t) = w.issued(&jti)?.filter(|t| t.org_id == org) else { return Ok(None) };
                            w.revoke_jti(&t.jti, t.exp)?;
                            w.audit(AuditEvent::new(now, who, "token.revoke").target(t.jti.clone()))?;
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
                            let Some(mut s) = w.session(&sid)?.filter(|s| s.org_id == org) else { return Ok(None) };
                            s.revoked_at.get_or_insert(now);
                            w.put_session(&s)?;
                            w.audit(AuditEvent::new(now, who, "token.revoke_session").target(s.sid.clone()))?;
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
                let identity = self.identities.get(&actor.org_id, &id).ok_or(TokenError::NotFound)?;
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
    pub async fn revoke_sessions_of(&self, identity_id: &str, now: Timestamp) -> Result<usize, TokenError> {
        let id = identity_id.to_owned();
        let revocations = self.revocations.clone();
        let keep = now.plus(self.policy.access_ttl_max);
        let live_after = now.minus(self.policy.skew);
        let revoked = self
            .store
            .commit_then_apply(
                move |w| {
                    let sessions = w.sessions_of(&id)?;
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

    /// Verifications answered without a signature check, and those that needed one.
    pub fn verify_cache_counts(&self) -> (u64, u64) {
        self.verified.counts()
    }

    /// Every `every` until `stop`, forgets sessions, token rows and
    /// revocations whose tokens have all expired.
    pub async fn collect_garbage_every(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.collect_garbage().await {
                Ok(c) if c != Default::default() => tracing::info!(
                    sessions = c.sessions,
                    issued = c.issued,
                    revoked = c.revoked,
                    "collected expired token state"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "token garbage collection failed"),
            }
        }
    }

    /// Deletes sessions, token rows and revocations whose tokens all expired.
    pub async fn collect_garbage(&self) -> Result<crate::storage::Collected, StorageError> {
        let before = self.clock.now().minus(self.policy.skew);
        let done = self.store.write(move |w| w.collect_garbage(before)).await?;
        self.revocations.collect(before);
        Ok(done)
    }
}

/// The rows a freshly minted pair leaves in the store.
fn rows(pair: &TokenPair, session: SessionRecord, issued: Vec<IssuedToken>) -> group_commit::Rows {
    group_commit::Rows { session, issued, hs256_exp: pair.hs256.then_some(pair.access_expires_at) }
}

enum Rotation {
    Rotated,
    Gone,
    Reused(Timestamp),
}

/// What `POST /v1/tokens/revoke` names, in precedence order.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    Token(String),
    Identity(String),
    Session(String),
}

/// The default audience: the distinct planes of the scopes, else `relayauth`.
pub fn default_audience(scopes: &[String]) -> Vec<String> {
    let mut planes: Vec<String> = Vec::new();
    for s in scopes {
        let mut parts = s.split(':');
        if let (Some(plane), Some(_), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            if plane != "*" && !planes.iter().any(|p| p == plane) {
                planes.push(plane.to_owned());
            }
        }
    }
    if planes.is_empty() {
        planes.push(REFRESH_AUDIENCE.to_owned());
    }
    planes
}
