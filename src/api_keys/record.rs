//! The stored form of an API key: never the key, only its SHA-256.

use serde::{Deserialize, Serialize};

use super::ApiKeyFormatError;
use super::ApiKeySecret;
use crate::clock::Timestamp;
use crate::encoding::random_hex;

/// `ak_` + 32 hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn generate() -> Self {
        Self(format!("ak_{}", random_hex(16)))
    }

    pub fn parse(s: &str) -> Result<Self, ApiKeyFormatError> {
        if crate::ids::is_prefixed_hex32(s, "ak_") {
            Ok(Self(s.to_owned()))
        } else {
            Err(ApiKeyFormatError::Format)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ApiKeyId {
    type Error = ApiKeyFormatError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ApiKeyId> for String {
    fn from(id: ApiKeyId) -> String {
        id.0
    }
}

crate::ids::text_id!(
    /// An organisation: free-form text. No request field names one: it comes
    /// with the credential acting (an API key's record, a token's `org`
    /// claim) and is copied onto what that credential creates.
    OrgId
);

impl OrgId {
    /// [`DEFAULT_ORG`], the organisation every key belongs to until multi-org lands.
    pub fn default_org() -> Self {
        Self::from(DEFAULT_ORG)
    }
}

/// An API key as stored: never the key itself, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub prefix: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub key_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// The identity whose bearer token minted this key (directly, or through
    /// keys so minted): the key authenticates only while that identity is
    /// active, and never beyond its current scopes. Absent for keys minted
    /// by keys that act for no identity (and in records written before the
    /// field existed). An identity id as text: `api_keys` sits below
    /// `identities` (which names its callers by [`super::Actor`]), so it
    /// carries the id without its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
}

impl ApiKeyRecord {
    pub fn new(secret: &ApiKeySecret, org_id: &OrgId, name: &str, scopes: Vec<String>, now: Timestamp) -> Self {
        Self {
            id: ApiKeyId::generate(),
            org_id: org_id.clone(),
            prefix: secret.prefix().to_owned(),
            name: name.to_owned(),
            scopes,
            key_hash: secret.hash(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            expires_at: None,
            identity_id: None,
        }
    }

    /// Whether this record authenticates the key whose hash is `key_hash`
    /// ([`ApiKeySecret::hash`]) at `now`: hash equal (compared in constant
    /// time), not revoked, not expired.
    pub fn authenticates(&self, key_hash: &str, now: Timestamp) -> bool {
        let same =
            aws_lc_rs::constant_time::verify_slices_are_equal(self.key_hash.as_bytes(), key_hash.as_bytes()).is_ok();
        same && self.revoked_at.is_none() && self.expires_at.is_none_or(|exp| now < exp)
    }
}

/// The organisation every key belongs to until multi-org lands.
pub const DEFAULT_ORG: &str = "org_default";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_respects_revocation_and_expiry() {
        let key = ApiKeySecret::generate().unwrap();
        let now = Timestamp::from_unix(1000);
        let mut rec = ApiKeyRecord::new(&key, &OrgId::default_org(), "k", vec![], now);
        assert!(rec.authenticates(&key.hash(), now));
        assert!(!rec.authenticates(&ApiKeySecret::generate().unwrap().hash(), now));
        rec.expires_at = Some(Timestamp::from_unix(1001));
        assert!(!rec.authenticates(&key.hash(), Timestamp::from_unix(1001)));
        rec.expires_at = None;
        rec.revoked_at = Some(now);
        assert!(!rec.authenticates(&key.hash(), now));
    }
}
