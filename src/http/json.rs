//! Our JSON body extractor: malformed JSON, wrong types and oversized bodies
//! become our error format (400 `invalid_json` / `invalid_request`, 413
//! `payload_too_large`), never axum's plain-text rejections. The body is
//! parsed as JSON whatever the `Content-Type`, as relayauth clients send it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::{ApiError, ErrorCode};

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The raw body (within the body limit), for routes that accept more than
/// JSON; oversized or unreadable bodies get our error format.
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::invalid_request("request body could not be read")
            }
        })?;
        Ok(ApiBody(bytes))
    }
}

/// Parses a JSON body, telling syntax errors from shape errors.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid_request(format!("request body has the wrong shape: {e}")),
            _ => ApiError::new(ErrorCode::InvalidJson, format!("request body is not valid JSON: {e}")),
        }
    })
}

/// A JSON object of strings that names each key once. serde_json keeps the
/// last of two equal keys in a map; `{"a":"1","a":"2"}` is refused instead,
/// as serde refuses a struct field given twice, so that what kmsd stores is
/// what every reader of the body sees.
#[derive(Default)]
pub struct UniqueMap(pub BTreeMap<String, String>);

impl<'de> serde::Deserialize<'de> for UniqueMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueMapVisitor)
    }
}

struct UniqueMapVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueMapVisitor {
    type Value = UniqueMap;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of strings, each key once")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut access: M) -> Result<UniqueMap, M::Error> {
        let mut map = BTreeMap::new();
        while let Some((key, value)) = access.next_entry::<String, String>()? {
            if map.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.insert(key, value);
        }
        Ok(UniqueMap(map))
    }
}

/// A lifetime in whole seconds, as relayauth's server reads one: a JSON
/// integer (`600`) or a string of decimal digits (`"600"`). Anything else
/// (`"10m"`, `-1`, `1.5`, `true`) is refused with a message naming `field`.
pub struct Seconds(pub &'static str);

impl<'de> serde::de::Visitor<'de> for Seconds {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} as a whole number of seconds: an integer or a string of digits such as \"600\"", self.0)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(n))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match s.parse::<u64>() {
            Ok(n) if digits => Ok(Some(n)),
            _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
        }
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `#[serde(default, deserialize_with = "...")]` for `expiresIn`.
pub fn expires_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(Seconds("expiresIn"))
}

/// `#[serde(default, deserialize_with = "...")]` for `refreshTokenTtlSeconds`.
pub fn refresh_token_ttl_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(Seconds("refreshTokenTtlSeconds"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Body {
        #[serde(default, deserialize_with = "super::expires_in")]
        ttl: Option<u64>,
    }

    fn ttl(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Body>(json).map(|b| b.ttl).map_err(|e| e.to_string())
    }

    #[test]
    fn a_unique_map_refuses_a_key_given_twice() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            m: super::UniqueMap,
        }
        let m = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.m.0).map_err(|e| e.to_string());
        assert_eq!(m(r#"{}"#).unwrap().len(), 0);
        assert_eq!(m(r#"{"m":{"a":"1","b":"1"}}"#).unwrap().len(), 2);
        for dup in [r#"{"m":{"a":"1","a":"2"}}"#, r#"{"m":{"a":"1","b":"2","a":"1"}}"#] {
            assert!(m(dup).unwrap_err().starts_with("duplicate key \"a\""), "{dup}: {:?}", m(dup));
        }
        assert!(m(r#"{"m":{"a":1}}"#).is_err(), "values are strings");
    }

    #[test]
    fn seconds_are_integers_or_digit_strings_and_nothing_else() {
        assert_eq!(ttl(r#"{}"#), Ok(None));
        assert_eq!(ttl(r#"{"ttl": null}"#), Ok(None));
        assert_eq!(ttl(r#"{"ttl": 600}"#), Ok(Some(600)));
        assert_eq!(ttl(r#"{"ttl": "600"}"#), Ok(Some(600)));
        assert_eq!(ttl(r#"{"ttl": "0"}"#), Ok(Some(0)), "zero is refused later, as a lifetime");
        for bad in [
            r#""10m""#,
            "-1",
            "1.5",
            "true",
            r#""""#,
            r#"" 60""#,
            r#""+60""#,
            r#""-5""#,
            "[60]",
            r#""99999999999999999999""#,
        ] {
            let e = ttl(&format!(r#"{{"ttl": {bad}}}"#)).unwrap_err();
            assert!(e.contains("expiresIn as a whole number of seconds"), "{bad}: {e}");
        }
    }
}
