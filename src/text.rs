//! What an identifier or a display field may hold: any printable Unicode,
//! but no control character (general category Cc: C0 controls such as NUL,
//! ESC, CR and LF, DEL, C1 controls), no bidi control (U+200E, U+200F,
//! U+202A to U+202E, U+2066 to U+2069) and no zero-width character (U+200B
//! to U+200D, U+FEFF). Such characters break log lines and headers, make a
//! console or web page show a name as something else, or hide in a value
//! that looks equal to another. [`check`] is the one test; the domain
//! modules apply it to every such field a client sets (identity names,
//! sponsor and workspace ids, roles, metadata, suspend reasons, API-key
//! names, token audiences). Scopes have a stricter alphabet of their own
//! ([`crate::scopes`]).

use std::fmt::Display;

/// A field holding a character [`check`] refuses. The message names the
/// field and the code point, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must not contain control, bidi or zero-width characters (U+{code:04X} at character {at})")]
pub struct UnsafeText {
    pub field: String,
    pub code: u32,
    pub at: usize,
}

/// Whether `c` is refused in identifiers and display fields.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `value` of the field `field`, if it holds no refused character.
pub fn check(field: impl Display, value: &str) -> Result<(), UnsafeText> {
    match value.chars().enumerate().find(|(_, c)| is_unsafe(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(UnsafeText { field: field.to_string(), code: u32::from(c), at }),
    }
}

/// Every entry of the list `field` (named `field[i]` in the error).
pub fn check_each<'a>(field: &str, values: impl IntoIterator<Item = &'a String>) -> Result<(), UnsafeText> {
    values.into_iter().enumerate().try_for_each(|(i, v)| check(format_args!("{field}[{i}]"), v))
}

/// Every key and value of the map `field`.
pub fn check_map<'a>(field: &str, map: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), UnsafeText> {
    map.into_iter().try_for_each(|(k, v)| {
        check(format_args!("{field} key"), k)?;
        check(format_args!("{field}[{k:?}]"), v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_zero_width_characters_are_refused_and_printable_text_is_not() {
        let refused = [
            '\u{0}', '\u{7}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{200b}',
            '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}',
            '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{feff}',
        ];
        for c in refused {
            let e = check("name", &format!("ab{c}")).unwrap_err();
            assert_eq!((e.code, e.at), (u32::from(c), 2), "{c:?}");
            assert!(e.to_string().starts_with("name must not contain"), "{e}");
        }
        for fine in ["agent-1", "Zoë", "東京", "🚀", "שלום", "a b", "\u{a0}", "\u{2028}x", "\u{2060}", "\u{2070}"]
        {
            assert_eq!(check("name", fine), Ok(()), "{fine:?}");
        }
    }

    #[test]
    fn lists_and_maps_name_the_entry_that_is_refused() {
        let roles = ["ok".to_owned(), "b\u{0}".to_owned()];
        assert_eq!(check_each("roles", &roles).unwrap_err().field, "roles[1]");
        let map: std::collections::BTreeMap<String, String> =
            [("k".to_owned(), "v\u{202e}".to_owned())].into_iter().collect();
        assert_eq!(check_map("metadata", &map).unwrap_err().field, "metadata[\"k\"]");
        let map: std::collections::BTreeMap<String, String> =
            [("k\u{1b}".to_owned(), "v".to_owned())].into_iter().collect();
        assert_eq!(check_map("metadata", &map).unwrap_err().field, "metadata key");
    }
}
