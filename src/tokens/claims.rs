//! Token claims in the relayauth dialect, serialized in CONTRACT order, and the
//! compact JWS encoding kmsd assembles itself (header, claims, base64url) so
//! that the signature can come from any backend, including AWS KMS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::{SessionId, TokenId, TokenType};
use crate::api_keys::OrgId;
use crate::encoding::{b64url, b64url_decode};
use crate::identities::IdentityId;

/// `sub, org, wks, scopes, sponsorId, sponsorChain, token_type, iss, aud, exp,
/// iat, jti, sid` then the optional claims; field order is wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: IdentityId,
    pub org: OrgId,
    pub wks: String,
    pub scopes: Vec<String>,
    #[serde(rename = "sponsorId")]
    pub sponsor_id: String,
    #[serde(rename = "sponsorChain")]
    pub sponsor_chain: Vec<String>,
    pub token_type: TokenType,
    pub iss: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: TokenId,
    pub sid: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "parentTokenId", default, skip_serializing_if = "Option::is_none")]
    pub parent_token_id: Option<TokenId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Value>,
}

/// The protected header, exactly `{"alg","typ":"JWT","kid"}`.
#[derive(Debug, Deserialize)]
pub struct Header {
    pub alg: String,
    pub typ: Option<String>,
    pub kid: Option<String>,
}

pub fn header_b64(alg: &str, kid: &str) -> String {
    b64url(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#).as_bytes())
}

/// `base64url(header) . base64url(claims)`: the bytes that get signed.
pub fn signing_input(alg: &str, kid: &str, claims: &Claims) -> String {
    let body = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}", header_b64(alg, kid), b64url(&body))
}

/// A compact JWS split into its parts, nothing verified yet.
pub struct Compact<'a> {
    pub signing_input: &'a str,
    pub header: Header,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Tokens larger than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

pub fn split(token: &str) -> Option<Compact<'_>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Header = serde_json::from_slice(&b64url_decode(h).ok()?).ok()?;
    let payload = b64url_decode(p).ok()?;
    let signature = b64url_decode(s).ok()?;
    Some(Compact { signing_input: &token[..h.len() + 1 + p.len()], header, payload, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_serialize_in_contract_order_with_array_aud() {
        let c = Claims {
            sub: "agent_1".into(),
            org: "org_1".into(),
            wks: "default".into(),
            scopes: vec!["a:b:c".into()],
            sponsor_id: "user_1".into(),
            sponsor_chain: vec!["user_1".into(), "agent_1".into()],
            token_type: TokenType::Access,
            iss: "https://relayauth.dev".into(),
            aud: vec!["relayauth".into()],
            exp: 20,
            iat: 10,
            jti: "tok_1".into(),
            sid: "sess_1".into(),
            nbf: None,
            meta: None,
            parent_token_id: None,
            budget: None,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"sub":"agent_1","org":"org_1","wks":"default","scopes":["a:b:c"],"sponsorId":"user_1","sponsorChain":["user_1","agent_1"],"token_type":"access","iss":"https://relayauth.dev","aud":["relayauth"],"exp":20,"iat":10,"jti":"tok_1","sid":"sess_1"}"#
        );
        let string_aud = text.replace(r#""aud":["relayauth"]"#, r#""aud":"relayauth""#);
        assert!(serde_json::from_str::<Claims>(&string_aud).is_err(), "a string aud is not accepted");
    }

    #[test]
    fn split_refuses_malformed_compact_tokens() {
        assert!(split("a.b").is_none());
        assert!(split("a.b.c.d").is_none());
        assert!(split("!!.e30.AA").is_none());
        // A well-formed token refused for its length alone.
        let header = crate::encoding::b64url(br#"{"alg":"EdDSA","kid":"k"}"#);
        let sized = |len: usize| format!("{header}.{}.AA", "A".repeat((len - header.len() - 4) / 4 * 4));
        let (fits, over) = (sized(MAX_TOKEN_LEN), sized(MAX_TOKEN_LEN + 8));
        assert!(fits.len() <= MAX_TOKEN_LEN && over.len() > MAX_TOKEN_LEN);
        assert!(split(&fits).is_some());
        assert!(split(&over).is_none());
    }
}
