//! What kmsd's text identifiers share: the newtype shape ([`text_id!`]) and
//! the form of the ids kmsd makes itself (a prefix then 32 lower-case hex
//! digits). The types live with their domains: `IdentityId` in
//! `identities`, `SessionId` and `TokenId` in `tokens`, `OrgId` in
//! `api_keys`.
//!
//! Invariant: an id is stored and sent exactly as its text (serde
//! transparent). Decoding does not check it: stored records, signed claims
//! and legacy HS256 tokens hold ids of other shapes, and a record must read
//! back byte for byte. Text a client sends goes through the type's `parse`,
//! and what `parse` refuses names nothing kmsd holds.

/// Declares `$name`, a newtype over the text of an identifier: stored and
/// serialized as that text, `Debug` and `Display` as the text would be,
/// [`as_str`](Self::as_str) to read it. `From<String>` and `From<&str>` do
/// not check: they are for ids kmsd made or stored; text from a client goes
/// through the type's own `parse`.
macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(text.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}
pub(crate) use text_id;

/// Whether `text` is `prefix` then 32 lower-case hex digits: the form of
/// every id kmsd makes (`agent_`, `sess_`, `tok_`, `ak_`).
pub fn is_prefixed_hex32(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    text_id!(
        /// A type for the tests of the macro.
        SampleId
    );

    #[test]
    fn prefixed_hex32_is_the_prefix_then_exactly_32_lower_case_hex_digits() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(is_prefixed_hex32(&format!("tok_{hex}"), "tok_"));
        assert!(!is_prefixed_hex32(hex, "tok_"), "no prefix");
        assert!(!is_prefixed_hex32(&format!("sess_{hex}"), "tok_"), "another prefix");
        assert!(!is_prefixed_hex32(&format!("tok_{}", &hex[1..]), "tok_"), "31 digits");
        assert!(!is_prefixed_hex32(&format!("tok_{hex}0"), "tok_"), "33 digits");
        assert!(!is_prefixed_hex32(&format!("tok_{}", hex.to_uppercase()), "tok_"), "upper case");
        assert!(!is_prefixed_hex32(&format!("tok_{}g", &hex[1..]), "tok_"), "not hex");
        assert!(!is_prefixed_hex32("tok_", "tok_") && !is_prefixed_hex32("", "tok_"));
    }

    #[test]
    fn a_text_id_is_stored_shown_and_debugged_as_its_text() {
        let id = SampleId::from("sess_1");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""sess_1""#);
        assert_eq!(serde_json::from_str::<SampleId>(r#""any text""#).unwrap().as_str(), "any text", "unchecked");
        assert_eq!((id.to_string(), format!("{id:?}")), ("sess_1".to_owned(), r#""sess_1""#.to_owned()));
        assert_eq!(String::from(id), "sess_1");
    }
}
