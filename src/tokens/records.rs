//! What kmsd stores about issued tokens: the session a token pair belongs to,
//! and one row per issued token (so revoke-by-tokenId can tell "not found"),
//! and the ids that name them ([`SessionId`], [`TokenId`]).

use serde::{Deserialize, Serialize};

use crate::api_keys::OrgId;
use crate::clock::Timestamp;
use crate::encoding::time_ordered_hex;
use crate::identities::IdentityId;
use crate::ids::{is_prefixed_hex32, text_id};
use crate::keys::Algorithm;

text_id!(
    /// A session id (the `sid` claim): `sess_` + 32 hex as kmsd makes them.
    /// Rows and claims hold it unchecked.
    SessionId
);

text_id!(
    /// A token id (the `jti` claim): `tok_` + 32 hex as kmsd makes them.
    /// Rows and claims hold it unchecked: a legacy HS256 token's jti may
    /// have any form.
    TokenId
);

impl SessionId {
    pub fn generate() -> Self {
        Self(format!("sess_{}", time_ordered_hex()))
    }

    /// The session a client names (`sessionId` of a revoke), if the text has
    /// the form kmsd makes; text of any other form names no session.
    pub fn parse(text: &str) -> Option<Self> {
        is_prefixed_hex32(text, "sess_").then(|| Self(text.to_owned()))
    }
}

impl TokenId {
    pub fn generate() -> Self {
        Self(format!("tok_{}", time_ordered_hex()))
    }

    /// The token a client names (`tokenId` of a revoke, `jti=` of the public
    /// revocation check), if the text has the form kmsd makes; text of any
    /// other form names no token kmsd issued.
    pub fn parse(text: &str) -> Option<Self> {
        is_prefixed_hex32(text, "tok_").then(|| Self(text.to_owned()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// A refresh session: the narrowed grant that every refresh reissues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: SessionId,
    pub identity_id: IdentityId,
    pub org_id: OrgId,
    pub scopes: Vec<String>,
    pub audience: Vec<String>,
    pub algorithm: Algorithm,
    /// Requested lifetimes, reused (and re-clamped) on refresh.
    pub access_ttl: u64,
    pub refresh_ttl: u64,
    /// The one refresh token that may be used next.
    pub refresh_jti: TokenId,
    /// The refresh token it replaced, and when (for the reuse grace).
    pub previous_refresh_jti: Option<TokenId>,
    pub rotated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// When the last token the session issued expires (an access token may
    /// outlive its refresh token); the session is garbage after, and a
    /// revocation of it must last until then (also across a restart).
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// One issued token. kmsd accepts a token only if its row is here and
/// describes it ([`IssuedToken::describes`]); the public revocation check
/// judges a jti from its row alone.
///
/// `kid`, `iat` and `input_sha256` came later than the other fields: rows
/// written before them decode with `None` (same format version, since old
/// bytes still decode to the same values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub jti: TokenId,
    pub sid: SessionId,
    pub identity_id: IdentityId,
    pub org_id: OrgId,
    pub kind: TokenType,
    pub exp: Timestamp,
    /// The header's kid: the signing key, or the legacy HS256 kid.
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub iat: Option<Timestamp>,
    /// base64url SHA-256 of the exact signing input (`header.payload`) kmsd
    /// signed: a token with the same jti but other claims is not this one.
    #[serde(default)]
    pub input_sha256: Option<String>,
}

/// base64url SHA-256 of a token's signing input, as [`IssuedToken`] keeps it.
pub fn input_digest(signing_input: &str) -> String {
    crate::encoding::b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signing_input.as_bytes()).as_ref())
}

impl IssuedToken {
    /// Whether this row records the token with `signing_input` and `claims`.
    /// Rows from before the digest was kept are compared field by field.
    pub fn describes(&self, signing_input: &str, claims: &super::Claims) -> bool {
        let fields = self.jti == claims.jti
            && self.sid == claims.sid
            && self.identity_id == claims.sub
            && self.org_id == claims.org
            && self.kind == claims.token_type
            && self.exp.unix() == claims.exp;
        fields
            && match &self.input_sha256 {
                Some(d) => *d == input_digest(signing_input),
                None => self.iat.is_none_or(|iat| iat.unix() == claims.iat),
            }
    }
}

#[cfg(test)]
mod tests {
    //! Golden bytes of the session row (the issued-token row's are in
    //! `storage::tokens`): a change that breaks them needs a new format
    //! version, not a new golden string.
    use super::*;
    use crate::storage::Record;

    fn session() -> SessionRecord {
        SessionRecord {
            sid: "sess_1".into(),
            identity_id: "agent_1".into(),
            org_id: "org_default".into(),
            scopes: vec!["relayfile:fs:read:/a/*".into()],
            audience: vec!["relayfile".into()],
            algorithm: Algorithm::EdDsa,
            access_ttl: 3600,
            refresh_ttl: 86400,
            refresh_jti: "tok_r2".into(),
            previous_refresh_jti: Some("tok_r1".into()),
            rotated_at: Some(Timestamp::from_unix(150)),
            created_at: Timestamp::from_unix(100),
            expires_at: Timestamp::from_unix(86_500),
            revoked_at: None,
        }
    }

    const SESSION_V1: &str = r#"{"v":1,"sid":"sess_1","identity_id":"agent_1","org_id":"org_default","scopes":["relayfile:fs:read:/a/*"],"audience":["relayfile"],"algorithm":"EdDSA","access_ttl":3600,"refresh_ttl":86400,"refresh_jti":"tok_r2","previous_refresh_jti":"tok_r1","rotated_at":150,"created_at":100,"expires_at":86500,"revoked_at":null}"#;

    #[test]
    fn session_golden_bytes() {
        assert_eq!(String::from_utf8(session().encode()).unwrap(), SESSION_V1);
        assert_eq!(SessionRecord::decode("sessions", "sess_1", SESSION_V1.as_bytes()).unwrap(), session());
        let revoked = SessionRecord { revoked_at: Some(Timestamp::from_unix(200)), ..session() };
        let bytes = SESSION_V1.replace(r#""revoked_at":null"#, r#""revoked_at":200"#);
        assert_eq!(String::from_utf8(revoked.encode()).unwrap(), bytes);
        assert_eq!(SessionRecord::decode("sessions", "sess_1", bytes.as_bytes()).unwrap(), revoked);
    }

    #[test]
    fn session_and_token_ids_parse_only_in_the_form_kmsd_makes() {
        let (sid, jti) = (SessionId::generate(), TokenId::generate());
        assert_eq!(SessionId::parse(sid.as_str()), Some(sid.clone()));
        assert_eq!(TokenId::parse(jti.as_str()), Some(jti.clone()));
        assert_eq!(SessionId::parse(jti.as_str()), None, "a jti is no session id");
        assert_eq!(TokenId::parse(sid.as_str()), None, "a sid is no token id");
        let hex = "0123456789abcdef0123456789abcdef";
        for refused in ["", "sess_1", "sess_", &format!("sess_{hex}0"), &format!("SESS_{hex}"), &format!("sess_{hex} ")]
        {
            assert_eq!(SessionId::parse(refused), None, "{refused:?}");
        }
        for refused in ["", "tok_r1", "tok_", &format!("tok_{}", &hex[2..]), &format!("tok_{}", hex.to_uppercase())] {
            assert_eq!(TokenId::parse(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn access_and_refresh_kinds_keep_their_stored_names() {
        assert_eq!(serde_json::to_string(&TokenType::Access).unwrap(), r#""access""#);
        assert_eq!(serde_json::to_string(&TokenType::Refresh).unwrap(), r#""refresh""#);
    }
}
