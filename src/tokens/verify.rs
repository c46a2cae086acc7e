//! Verification of tokens kmsd issued: the checks behind introspection,
//! validation, bearer authentication and refresh. Everything is answered from
//! memory (key ring, revocations, identities); nothing reads storage. A token
//! seen before skips only the signature check and the parse
//! ([`super::verified`]); every other check runs on every call.

use std::sync::Arc;

use super::claims::{split, Claims, Compact};
use super::records::TokenType;
use super::verified::Checked;
use super::TokenService;
use crate::clock::Timestamp;
use crate::identities::IdentityStatus;
use crate::keys::{KeyRecord, KeyState};

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
}

impl TokenService {
    /// Verifies a token of kind `expect` and returns its claims (shared with
    /// the memo of checked tokens: a hit copies nothing).
    pub fn verify(&self, token: &str, expect: TokenType) -> Result<Arc<Claims>, VerifyError> {
        let now = self.clock.now();
        if let Some(hit) = self.verified.get(token) {
            self.trust(&hit.kid, &hit.alg, expect, now)?;
            self.check_claims(&hit.claims, expect, now.unix())?;
            return Ok(hit.claims.clone());
        }
        let jws = split(token).ok_or(VerifyError::Malformed)?;
        if jws.header.typ.as_deref() != Some("JWT") {
            return Err(VerifyError::Header);
        }
        let kid = jws.header.kid.as_deref().ok_or(VerifyError::Header)?;
        if jws.header.alg == "HS256" {
            return self.verify_hs256(kid, &jws, expect, now);
        }
        let key = self.trust(kid, &jws.header.alg, expect, now)?;
        if !key.public.verify(jws.signing_input.as_bytes(), &jws.signature) {
            return Err(VerifyError::Signature);
        }
        let claims: Arc<Claims> = Arc::new(serde_json::from_slice(&jws.payload).map_err(|_| VerifyError::Malformed)?);
        self.check_claims(&claims, expect, now.unix())?;
        let checked = Checked { kid: kid.to_owned(), alg: jws.header.alg.clone(), claims: claims.clone() };
        self.verified.insert(token, checked);
        Ok(claims)
    }

    /// The key `kid` if kmsd trusts it, now, for tokens of kind `expect` with `alg`.
    fn trust(&self, kid: &str, alg: &str, expect: TokenType, now: Timestamp) -> Result<Arc<KeyRecord>, VerifyError> {
        let key = self.ring.record(kid).ok_or(VerifyError::UnknownKey)?;
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
        if alg != key.algorithm().as_str() {
            return Err(VerifyError::AlgorithmMismatch);
        }
        Ok(key)
    }

    /// Legacy HS256 access tokens, only while the migration still accepts them.
    fn verify_hs256(
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
        self.check_claims(&claims, expect, now.unix())?;
        Ok(claims)
    }

    fn check_claims(&self, c: &Claims, expect: TokenType, now: i64) -> Result<(), VerifyError> {
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
        if self.revocations.is_revoked(&c.jti, &c.sid) {
            return Err(VerifyError::Revoked);
        }
        let identity = self.identities.get_any(&c.sub).ok_or(VerifyError::Revoked)?;
        let epoch_hit = identity.tokens_revoked_before.is_some_and(|before| c.iat < before.unix());
        if identity.status != IdentityStatus::Active || epoch_hit || identity.org_id != c.org {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }
}
