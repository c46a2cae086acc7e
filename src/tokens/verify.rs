//! Verification of tokens kmsd issued: the checks behind introspection,
//! validation, bearer authentication, refresh and the public revocation check.
//!
//! kmsd accepts only tokens it recorded as issued: on a first sight of a
//! token, after the signature and claims pass, one indexed read of its
//! issued-token row (which must describe exactly this token) ends the checks,
//! so a validly signed token kmsd never issued — a leaked private key — is
//! refused and counted. Legacy HS256 tokens, whose jtis kmsd never saw, are
//! the one exception while the migration accepts them. Everything else is
//! answered from memory (key ring, revocations, identities). A token seen
//! before skips the signature check, the parse and the row read
//! ([`super::verified`]); every other check runs on every call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::claims::{split, Claims, Compact};
use super::records::{SessionId, TokenId, TokenType};
use super::verified::Checked;
use super::TokenService;
use crate::api_keys::OrgId;
use crate::clock::Timestamp;
use crate::identities::{IdentityId, IdentityStatus};
use crate::keys::KeyUse;
use crate::keys::{KeyRecord, KeyState};
use crate::storage::StorageError;

/// Why a token was refused. `Expired` and `Revoked` have their own error
/// codes; everything else is `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is malformed")]
    Malformed,
    #[error("token header must have typ JWT and a kid")]
    Header,
    #[error("token is signed by a key kmsd does not trust")]
    UnknownKey,
    #[error("token alg does not match its key")]
    AlgorithmMismatch,
    #[error("token signature does not verify")]
    Signature,
    #[error("token is not of the expected type")]
    WrongType,
    #[error("token has the wrong issuer or audience")]
    Claims,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has expired")]
    Expired,
    #[error("token has been revoked")]
    Revoked,
    #[error("token was not issued by kmsd")]
    NotIssued,
    /// The store could not be read to confirm the token: never "valid".
    #[error("the issued-token record could not be read")]
    Unavailable,
}

impl TokenService {
    /// Verifies a token of kind `expect` and returns its claims (shared with
    /// the memo of checked tokens: a hit copies nothing and reads no store).
    pub async fn verify(&self, token: &str, expect: TokenType) -> Result<Arc<Claims>, VerifyError> {
        let now = self.clock.now();
        if let Some(hit) = self.verified.get(token) {
            self.trust(&hit.kid, &hit.alg, expect, now)?;
            self.check_claims(&hit.claims, expect, now.unix()).await?;
            return Ok(hit.claims.clone());
        }
        let jws = split(token).ok_or(VerifyError::Malformed)?;
        if jws.header.typ.as_deref() != Some("JWT") {
            return Err(VerifyError::Header);
        }
        let kid = jws.header.kid.as_deref().ok_or(VerifyError::Header)?;
        if jws.header.alg == "HS256" {
            return self.verify_hs256(kid, &jws, expect, now).await;
        }
        let key = self.trust(kid, &jws.header.alg, expect, now)?;
        if !key.public.verify(jws.signing_input.as_bytes(), &jws.signature) {
            return Err(VerifyError::Signature);
        }
        let claims: Arc<Claims> = Arc::new(serde_json::from_slice(&jws.payload).map_err(|_| VerifyError::Malformed)?);
        self.check_claims(&claims, expect, now.unix()).await?;
        self.check_issued(jws.signing_input, &claims).await?;
        let checked = Checked { kid: kid.to_owned(), alg: jws.header.alg.clone(), claims: claims.clone() };
        self.verified.insert(token, checked);
        Ok(claims)
    }

    /// The token's issued-token row must exist and describe exactly it.
    async fn check_issued(&self, signing_input: &str, claims: &Claims) -> Result<(), VerifyError> {
        let row = self.issued_row(&claims.jti).await.map_err(|e| {
            tracing::warn!(error = %e, "issued-token lookup failed; the token is not trusted");
            VerifyError::Unavailable
        })?;
        if row.is_some_and(|row| row.describes(signing_input, claims)) {
            return Ok(());
        }
        self.unknown_jtis.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(jti = %claims.jti, sub = %claims.sub, "validly signed token with a jti kmsd never issued");
        Err(VerifyError::NotIssued)
    }

    async fn issued_row(&self, jti: &TokenId) -> Result<Option<super::IssuedToken>, StorageError> {
        let jti = jti.clone();
        self.store.read(move |r| r.issued(jti.as_str())).await
    }

    /// Validly signed tokens refused because their jti was never issued.
    pub fn unknown_jtis(&self) -> u64 {
        self.unknown_jtis.load(Ordering::Relaxed)
    }

    /// The public revocation check: `true` for every jti whose token kmsd
    /// itself refuses, its own expiry aside: a revoked jti or session; an
    /// identity deleted, suspended, retired or with its tokens revoked since
    /// the token's `iat`; a signing key kmsd no longer trusts (revoked, or
    /// out of its trusted states); HS256 after the sunset; and a jti kmsd
    /// never issued (or whose row expired and was collected), except while
    /// the HS256 migration still accepts legacy tokens, whose jtis kmsd
    /// never saw. Memory first, then at most one indexed store read.
    pub async fn is_jti_revoked(&self, jti: &TokenId) -> Result<bool, StorageError> {
        if self.revocations.is_jti_revoked(jti) {
            return Ok(true);
        }
        let legacy_open = self.migration.as_ref().is_some_and(|m| m.accepts_hs256());
        let Some(row) = self.issued_row(jti).await? else { return Ok(self.is_unissued_jti_revoked()) };
        let now = self.clock.now();
        let key_refused = match row.kid.as_deref() {
            Some(kid) if self.migration.as_ref().is_some_and(|m| m.kid() == kid) => !legacy_open,
            Some(kid) => self.trusted_key(kid, row.kind, now).is_err(),
            // A row from before kmsd recorded kids: only its key is unknown.
            None => false,
        };
        let iat = row.iat.map(Timestamp::unix);
        Ok(key_refused || self.check_standing(&row.jti, &row.sid, &row.identity_id, &row.org_id, iat).await.is_err())
    }

    /// The public revocation check's answer for a jti kmsd never issued (no
    /// row, or text that is no jti kmsd could have made, which needs no
    /// lookup): revoked, except while the HS256 migration still accepts
    /// legacy tokens, whose jtis kmsd never saw.
    pub fn is_unissued_jti_revoked(&self) -> bool {
        !self.migration.as_ref().is_some_and(|m| m.accepts_hs256())
    }

    /// The key `kid` if kmsd trusts it, now, for tokens of kind `expect` with `alg`.
    fn trust(&self, kid: &str, alg: &str, expect: TokenType, now: Timestamp) -> Result<Arc<KeyRecord>, VerifyError> {
        let key = self.trusted_key(kid, expect, now)?;
        if alg != key.algorithm().as_str() {
            return Err(VerifyError::AlgorithmMismatch);
        }
        Ok(key)
    }

    /// The key `kid` if it may have signed a token of kind `expect` that kmsd
    /// still accepts at `now`: a token keyset's key (never a `sign` keyset's),
    /// published for access tokens, not yet destroyed for refresh tokens.
    fn trusted_key(&self, kid: &str, expect: TokenType, now: Timestamp) -> Result<Arc<KeyRecord>, VerifyError> {
        let key = self.ring.record(kid).ok_or(VerifyError::UnknownKey)?;
        if self.ring.usage(&key.keyset) != KeyUse::Tokens {
            return Err(VerifyError::UnknownKey);
        }
        let state = key.state_at(now);
        let refresh_keyset = self.keysets.refresh.as_ref() == Some(&key.keyset);
        let trusted = match expect {
            TokenType::Access => !refresh_keyset && state.is_published(),
            TokenType::Refresh => {
                refresh_keyset
                    && matches!(state, KeyState::Pending | KeyState::Active | KeyState::Retiring | KeyState::Retired)
            }
        };
        if !trusted {
            return Err(VerifyError::UnknownKey);
        }
        Ok(key)
    }

    /// Legacy HS256 access tokens, only while the migration still accepts them.
    async fn verify_hs256(
        &self,
        kid: &str,
        jws: &Compact<'_>,
        expect: TokenType,
        now: Timestamp,
    ) -> Result<Arc<Claims>, VerifyError> {
        let migration = self.migration.as_ref().ok_or(VerifyError::UnknownKey)?;
        if expect != TokenType::Access || kid != migration.kid() {
            return Err(VerifyError::UnknownKey);
        }
        if !migration.verify(kid, jws.signing_input.as_bytes(), &jws.signature) {
            return Err(VerifyError::Signature);
        }
        let claims: Arc<Claims> = Arc::new(serde_json::from_slice(&jws.payload).map_err(|_| VerifyError::Malformed)?);
        self.check_claims(&claims, expect, now.unix()).await?;
        Ok(claims)
    }

    async fn check_claims(&self, c: &Claims, expect: TokenType, now: i64) -> Result<(), VerifyError> {
        if c.token_type != expect {
            return Err(VerifyError::WrongType);
        }
        if c.iss != self.issuer || (expect == TokenType::Refresh && c.aud != [super::REFRESH_AUDIENCE]) {
            return Err(VerifyError::Claims);
        }
        let skew = i64::try_from(self.policy.skew.as_secs()).unwrap_or(0);
        if c.nbf.is_some_and(|nbf| nbf > now + skew) || c.iat > now + skew {
            return Err(VerifyError::NotYetValid);
        }
        if now > c.exp + skew {
            return Err(VerifyError::Expired);
        }
        self.check_standing(&c.jti, &c.sid, &c.sub, &c.org, Some(c.iat)).await
    }

    /// Whether the jti, its session and its identity still stand (memory;
    /// the store only for an identity made on another replica a moment ago). An unknown `iat` counts as before any identity-wide revocation.
    async fn check_standing(
        &self,
        jti: &TokenId,
        sid: &SessionId,
        sub: &IdentityId,
        org: &OrgId,
        iat: Option<i64>,
    ) -> Result<(), VerifyError> {
        if self.revocations.is_revoked(jti, sid) {
            return Err(VerifyError::Revoked);
        }
        let identity = self.identities.find_any(sub).await.ok_or(VerifyError::Revoked)?;
        let epoch_hit = identity.tokens_revoked_before.is_some_and(|before| iat.is_none_or(|iat| iat < before.unix()));
        if identity.status != IdentityStatus::Active || epoch_hit || identity.org_id != *org {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A leaked private key, simulated in process: tokens signed by the ring's
    //! own active key whose rows were never committed.
    use super::super::claims::signing_input;
    use super::*;
    use crate::api_keys::{Actor, DEFAULT_ORG};
    use crate::identities::NewIdentity;
    use crate::keys::KeysetName;
    use crate::tokens::IssueRequest;

    /// `claims` signed by `key` through the ring, exactly as kmsd signs, but
    /// with no issued-token row.
    async fn forge(tokens: &TokenService, key: &KeyRecord, claims: &Claims) -> String {
        let input = signing_input("EdDSA", key.kid.as_str(), claims);
        let sig = tokens.ring.sign(key, input.as_bytes()).await.unwrap();
        format!("{input}.{}", crate::encoding::b64url(&sig))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_validly_signed_token_kmsd_never_recorded_is_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = crate::app::testing::app(dir.path()).await;
        let tokens = &app.state().tokens;
        let admin = Actor {
            id: "ak_test".into(),
            org_id: DEFAULT_ORG.into(),
            scopes: vec!["*:*:*:*".into()],
            identity_id: None,
        };
        let now = tokens.clock.now();
        let who = NewIdentity {
            name: "victim".into(),
            kind: None,
            scopes: vec!["relayfile:fs:read:/a/*".into()],
            roles: vec![],
            metadata: Default::default(),
            sponsor_id: "user_1".into(),
            workspace_id: None,
        };
        let who = tokens.identities().create(&admin, None, who, now).await.unwrap();
        let req = IssueRequest {
            identity_id: who.id.clone(),
            scopes: None,
            audience: None,
            expires_in: None,
            refresh_ttl: None,
            algorithm: Some("EdDSA".into()),
        };
        let pair = tokens.issue(&admin, req).await.unwrap();
        let real = tokens.verify(&pair.access_token, TokenType::Access).await.unwrap();
        let key = tokens.ring.active(&KeysetName::parse("edge").unwrap(), now).unwrap();

        let mut minted = (*real).clone();
        minted.jti = "tok_00000000000000000000000000000000".into();
        minted.scopes = vec!["*:*:*:*".into()];
        let forged = forge(tokens, &key, &minted).await;
        assert_eq!(tokens.verify(&forged, TokenType::Access).await.unwrap_err(), VerifyError::NotIssued);
        assert_eq!(
            tokens.verify(&forged, TokenType::Access).await.unwrap_err(),
            VerifyError::NotIssued,
            "not remembered"
        );
        assert_eq!(tokens.unknown_jtis(), 2);

        // The jti of a real token does not lend its standing to other claims.
        let mut widened = (*real).clone();
        widened.scopes = vec!["*:*:*:*".into()];
        let forged = forge(tokens, &key, &widened).await;
        assert_eq!(tokens.verify(&forged, TokenType::Access).await.unwrap_err(), VerifyError::NotIssued);
        assert_eq!(tokens.unknown_jtis(), 3);

        // Re-signing the real claims gives back the real token, which stands.
        assert_eq!(forge(tokens, &key, &real).await, pair.access_token, "Ed25519 is deterministic");
        assert!(tokens.verify(&pair.access_token, TokenType::Access).await.is_ok());
        assert!(tokens.verify(&pair.refresh_token, TokenType::Refresh).await.is_ok());
        assert_eq!(tokens.unknown_jtis(), 3);
        assert!(!tokens.is_jti_revoked(&real.jti).await.unwrap());
        assert!(tokens.is_jti_revoked(&minted.jti).await.unwrap(), "a jti kmsd never issued is refused");
    }
}
