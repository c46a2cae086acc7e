//! Issuance: a token pair for an identity, within what both the identity and
//! the caller hold, signed by the keysets' active keys (or the HS256 secret
//! during the migration's `hs256` phase), lifetimes clamped to the policy and
//! to the signing key's publication.

use std::sync::Arc;
use std::time::Duration;

use super::claims::signing_input;
use super::{
    records, rows, Claims, Clamp, IssueRequest, IssuedToken, SessionId, SessionRecord, TokenError, TokenId, TokenPair,
    TokenService, TokenType, REFRESH_AUDIENCE, REFRESH_SCOPE,
};
use crate::api_keys::Actor;
use crate::clock::Timestamp;
use crate::identities::{IdentityRecord, IdentityStatus};
use crate::keys::{Algorithm, KeyRecord, KeysetName};
use crate::scopes::{self, GrantError};

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
    /// Issues a token pair for an identity of the caller's org.
    pub async fn issue(&self, caller: &Actor, req: IssueRequest) -> Result<TokenPair, TokenError> {
        let now = self.clock.now();
        let identity =
            self.identities.find(&caller.org_id, &req.identity_id).await.ok_or(TokenError::IdentityNotFound)?;
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
            sid: SessionId::generate(),
            identity_id: identity.id.clone(),
            org_id: identity.org_id.clone(),
            scopes,
            audience,
            algorithm,
            access_ttl: ttl(req.expires_in, self.policy.access_ttl_default)?,
            refresh_ttl: ttl(req.refresh_ttl, self.policy.refresh_ttl_default)?,
            // Set by `mint`, to the refresh token it signs.
            refresh_jti: TokenId::from(String::new()),
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
    pub(super) async fn mint(
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
            jti: TokenId::generate(),
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
