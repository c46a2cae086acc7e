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

#[cfg(test)]
mod tests {
    use super::*;

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
}
