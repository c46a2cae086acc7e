//! Scopes and the coverage relation, with relayauth's semantics.
//!
//! A structured scope is `plane:resource:action[:path]`; a missing path means
//! `*`. A granted scope covers a requested one when plane and resource are `*`
//! or equal, the action is `*`, equal, or `manage` (which covers read, write,
//! create and delete), and the path is `*`, equal, or — for `relayfile:fs` — a
//! granted `/dir/*` and a requested path under `/dir/`. A `*` on the requested
//! side is literal: it asks for the wildcard, it does not match anything.
//! `apikey` is another spelling of `api-key`.
//!
//! An opaque scope (e.g. `specialist:invoke`) is anything with fewer than three
//! segments; only the identical string or `*:*:*:*` grants it.
//!
//! Granting is stricter than matching: [`check_grantable`] refuses paths with
//! `..`, `//`, `**` or a `*` other than a final `/*` (some verifiers would let
//! `/frontend/../secret` through), and [`check_grant`] refuses any scope the
//! granter does not itself cover (no escalation). Acting on a principal (an
//! API key or identity) needs the same: [`check_covers`] its every scope.
//!
//! The scope alphabet (what [`check_grantable`] lets through; anything else is
//! 400 `invalid_scope` wherever scopes are granted: API keys, identities,
//! tokens):
//!
//! - plane, resource and action: `[a-z0-9_-]+`, or `*`;
//! - path: ASCII `[A-Za-z0-9._~/@+=,-]`, plus `*` as the whole path or as a
//!   final `/*`. No `%` (so no percent-encoded `..` or `/` for a verifier to
//!   decode into something else), no non-ASCII (zero-width and bidi controls,
//!   look-alikes such as U+2025, combining marks), no whitespace, `\` or `:`;
//! - an opaque scope: `[a-z0-9][a-z0-9_.:-]*`.

use std::borrow::Cow;

pub const UNIVERSAL: &str = "*:*:*:*";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    plane: &'a str,
    resource: Cow<'a, str>,
    action: &'a str,
    path: &'a str,
}

fn parts(scope: &str) -> Option<Parts<'_>> {
    let mut it = scope.splitn(4, ':');
    let (plane, resource, action) = (it.next()?, it.next()?, it.next()?);
    let path = it.next().unwrap_or("*");
    let resource = if resource == "apikey" { Cow::Borrowed("api-key") } else { Cow::Borrowed(resource) };
    Some(Parts { plane, resource, action, path })
}

/// Whether the single `granted` scope covers `requested`.
pub fn covers(granted: &str, requested: &str) -> bool {
    if granted == requested || granted == UNIVERSAL {
        return true;
    }
    let (Some(g), Some(r)) = (parts(granted), parts(requested)) else {
        return false;
    };
    let plane = g.plane == "*" || g.plane == r.plane;
    let resource = g.resource == "*" || g.resource == r.resource;
    let action = g.action == "*"
        || g.action == r.action
        || (g.action == "manage" && matches!(r.action, "read" | "write" | "create" | "delete"));
    let path = g.path == "*"
        || g.path == r.path
        || (r.plane == "relayfile"
            && r.resource == "fs"
            && g.path
                .strip_suffix('*')
                .is_some_and(|dir| dir.ends_with('/') && r.path.starts_with(dir) && r.path.len() > dir.len()));
    plane && resource && action && path
}

/// Whether any of `granted` covers `requested`.
pub fn any_covers<S: AsRef<str>>(granted: &[S], requested: &str) -> bool {
    granted.iter().any(|g| covers(g.as_ref(), requested))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("scope {scope:?} is not grantable: {reason}")]
    Invalid { scope: String, reason: &'static str },
    #[error("scope {scope:?} is not covered by the caller's scopes")]
    Escalation { scope: String },
    #[error("the target holds scope {scope:?}, which the caller's scopes do not cover")]
    Stronger { scope: String },
}

/// Whether `scope` is well formed enough to be granted (to a key, identity or token).
pub fn check_grantable(scope: &str) -> Result<(), GrantError> {
    let invalid = |reason| Err(GrantError::Invalid { scope: scope.to_owned(), reason });
    if scope.is_empty() || scope.len() > 256 {
        return invalid("must be 1 to 256 characters");
    }
    let segments = scope.splitn(4, ':').count();
    if segments < 3 {
        let mut bytes = scope.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b));
        return if first_ok && rest_ok {
            Ok(())
        } else {
            invalid("opaque scopes are [a-z0-9][a-z0-9_.:-]* with no '*'")
        };
    }
    let Some(p) = parts(scope) else { return invalid("malformed") };
    let segment_ok = |s: &str| {
        s == "*"
            || (!s.is_empty()
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
    };
    if !(segment_ok(p.plane) && segment_ok(&p.resource) && segment_ok(p.action)) {
        return invalid("plane, resource and action are [a-z0-9_-]+ or '*'");
    }
    let path = p.path;
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b"._~/@+=,-*".contains(&b);
    if !path.bytes().all(alphabet) {
        return invalid("path characters are ASCII [A-Za-z0-9._~/@+=,-] and '*'");
    }
    if path.contains("..") || path.contains("//") || path.contains("**") {
        return invalid("path must not contain '..', '//' or '**'");
    }
    let stars = path.matches('*').count();
    let star_ok = stars == 0 || path == "*" || (stars == 1 && path.ends_with("/*"));
    if !star_ok {
        return invalid("'*' in a path is only allowed as the whole path or a final '/*'");
    }
    Ok(())
}

/// Checks that a granter holding `held` may grant every scope in `requested`.
pub fn check_grant<S: AsRef<str>, R: AsRef<str>>(held: &[S], requested: &[R]) -> Result<(), GrantError> {
    for scope in requested {
        let scope = scope.as_ref();
        check_grantable(scope)?;
        if !any_covers(held, scope) {
            return Err(GrantError::Escalation { scope: scope.to_owned() });
        }
    }
    Ok(())
}

/// Checks that a caller holding `held` covers every scope of the principal
/// it acts on (revoking a key, suspending or editing an identity).
pub fn check_covers<S: AsRef<str>, T: AsRef<str>>(held: &[S], target: &[T]) -> Result<(), GrantError> {
    match target.iter().find(|s| !any_covers(held, s.as_ref())) {
        Some(scope) => Err(GrantError::Stronger { scope: scope.as_ref().to_owned() }),
        None => Ok(()),
    }
}

/// What holding both `a` and `b` allows, conservatively: each scope of either
/// that the other covers. (A scope both cover only through different
/// wildcards, e.g. `p:*:read` and `p:r:*`, is left out.)
pub fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = a.iter().filter(|s| any_covers(b, s)).cloned().collect();
    for s in b {
        if any_covers(a, s) && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn coverage_table() {
        let rows: &[(&str, &str, bool)] = &[
            ("*:*:*:*", "relayauth:admin:manage:*", true),
            ("relayauth:admin:manage:*", "relayauth:admin:read:*", true),
            ("relayauth:admin:manage", "relayauth:admin:read:*", true),
            ("relayauth:admin:read:*", "relayauth:admin:manage:*", false),
            ("relayauth:apikey:manage:*", "relayauth:api-key:create:*", true),
            ("relayfile:fs:read:/frontend/*", "relayfile:fs:read:/frontend/app.ts", true),
            ("relayfile:fs:read:/frontend/*", "relayfile:fs:read:/frontendevil/x", false),
            ("relayfile:fs:read:/frontend/*", "relayfile:fs:read:/frontend", false),
            ("relayfile:fs:read:/a", "relayfile:fs:read:*", false),
            ("specialist:invoke", "specialist:invoke", true),
            ("*:*:*:*", "specialist:invoke", true),
            ("specialist:*", "specialist:invoke", false),
        ];
        for (g, r, want) in rows {
            assert_eq!(covers(g, r), *want, "{g} covers {r}");
        }
    }

    #[test]
    fn grantability() {
        for ok in [
            "relayfile:fs:read:/a/b/*",
            "relayauth:token:create",
            "*:*:*:*",
            "specialist:invoke",
            "relayfile:fs:read:/x.txt",
        ] {
            assert_eq!(check_grantable(ok), Ok(()), "{ok}");
        }
        for bad in [
            "relayfile:fs:read:/a/../b",
            "relayfile:fs:read://a",
            "relayfile:fs:read:/a\\b",
            "relayfile:fs:read:/a/**",
            "relayfile:fs:read:/a*",
            "relayfile:fs:read:/*/b",
            "Relay:fs:read",
            "specialist:*",
            "",
            "relayfile:fs:read:/a b",
        ] {
            assert!(check_grantable(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_outside_the_alphabet_are_not_grantable() {
        for (class, path) in [
            ("encoded dot-dot", "/a/%2e%2e/b"),
            ("encoded slash", "/a%2fb"),
            ("any percent escape", "/a/%41"),
            ("zero-width space", "/a/\u{200B}b"),
            ("zero-width joiner", "/a\u{200D}"),
            ("bidi override", "/a/\u{202E}b"),
            ("bidi isolate", "/a/\u{2066}b"),
            ("two-dot leader", "/a/\u{2025}/b"),
            ("one-dot leader", "/a/\u{2024}\u{2024}/b"),
            ("fullwidth solidus", "/a\u{FF0F}b"),
            ("combining acute", "/a/e\u{0301}"),
            ("combining dot", "/a/.\u{0307}"),
            ("non-ASCII letter", "/a/\u{00E9}"),
            ("colon", "/a:b"),
            ("tab", "/a\tb"),
            ("NUL", "/a\0b"),
            ("backslash", "/a\\b"),
        ] {
            let scope = format!("relayfile:fs:read:{path}");
            let err = check_grantable(&scope).unwrap_err();
            assert!(matches!(err, GrantError::Invalid { .. }), "{class}: {err:?}");
            assert!(check_grant(&[UNIVERSAL], &[&scope]).is_err(), "{class} granted by *:*:*:*");
        }
        assert_eq!(check_grantable("relayfile:fs:read:/A-z_0/9.a~b@c+d=e,f/*"), Ok(()));
    }

    #[test]
    fn acting_on_a_principal_needs_all_its_scopes() {
        let manager = ["relayauth:api-key:manage:*"];
        assert_eq!(check_covers(&manager, &[UNIVERSAL]), Err(GrantError::Stronger { scope: UNIVERSAL.to_owned() }));
        assert!(check_covers(&manager, &["relayauth:api-key:read:*", "relayauth:api-key:manage:*"]).is_ok());
        assert!(check_covers(&manager, &["relayauth:api-key:read:*", "relayfile:fs:read:*"]).is_err());
        assert!(check_covers(&[UNIVERSAL], &[UNIVERSAL]).is_ok());
        assert!(check_covers(&manager, &[] as &[&str]).is_ok());
    }

    #[test]
    fn intersection_keeps_only_what_both_sides_allow() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let token = v(&["relayauth:api-key:manage:*", "relayauth:identity:read:*", "relayfile:fs:read:*"]);
        let identity = v(&["relayauth:api-key:manage:*", "relayfile:fs:read:/a/*"]);
        assert_eq!(intersect(&token, &identity), v(&["relayauth:api-key:manage:*", "relayfile:fs:read:/a/*"]));
        assert_eq!(intersect(&v(&[UNIVERSAL]), &identity), identity);
        assert!(intersect(&v(&["relayauth:identity:read:*"]), &identity).is_empty());
    }

    #[test]
    fn escalation_matrix() {
        let held = ["relayauth:api-key:manage:*", "relayfile:fs:read:/a/*"];
        for denied in ["*:*:*:*", "relayfile:fs:read:/*", "relayfile:fs:read:/ab/*", "relayfile:fs:read:/a/../b"] {
            assert!(check_grant(&held, &[denied]).is_err(), "{denied} granted");
        }
        assert_eq!(check_grant(&held, &["relayfile:fs:read:/a/b/*"]), Ok(()));
        assert_eq!(check_grant(&held, &["relayauth:apikey:read"]), Ok(()));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![Just("*".to_owned()), "[a-z][a-z0-9-]{0,6}"]
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![Just("*".to_owned()), "(/[a-z0-9]{1,4}){1,4}", "(/[a-z0-9]{1,4}){1,3}/\\*"]
    }

    proptest! {
        #[test]
        fn a_granted_scope_always_covers_itself(p in segment(), r in segment(), a in segment(), path in path()) {
            let scope = format!("{p}:{r}:{a}:{path}");
            prop_assert!(covers(&scope, &scope));
        }

        #[test]
        fn a_directory_grant_never_covers_a_path_outside_it(
            dir in "(/[a-z]{1,3}){1,3}",
            other in "/[a-z/.]{0,12}",
        ) {
            let granted = format!("relayfile:fs:read:{dir}/*");
            let requested = format!("relayfile:fs:read:{other}");
            if covers(&granted, &requested) {
                let prefix = format!("{dir}/");
                prop_assert!(other.starts_with(&prefix) && other.len() > prefix.len());
            }
        }
    }
}
