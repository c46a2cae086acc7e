//! What kmsd stores about issued tokens: the session a token pair belongs to,
//! and one row per issued token (so revoke-by-tokenId can tell "not found").

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::keys::Algorithm;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// A refresh session: the narrowed grant that every refresh reissues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub identity_id: String,
    pub org_id: String,
    pub scopes: Vec<String>,
    pub audience: Vec<String>,
    pub algorithm: Algorithm,
    /// Requested lifetimes, reused (and re-clamped) on refresh.
    pub access_ttl: u64,
    pub refresh_ttl: u64,
    /// The one refresh token that may be used next.
    pub refresh_jti: String,
    /// The refresh token it replaced, and when (for the reuse grace).
    pub previous_refresh_jti: Option<String>,
    pub rotated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// When the last token the session issued expires (an access token may
    /// outlive its refresh token); the session is garbage after, and a
    /// revocation of it must last until then (also across a restart).
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// One issued token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub jti: String,
    pub sid: String,
    pub identity_id: String,
    pub org_id: String,
    pub kind: TokenType,
    pub exp: Timestamp,
}
