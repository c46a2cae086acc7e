//! The table of stable error codes: every machine code the HTTP API answers
//! with, and its status, written once. Clients and tests match on these
//! strings; changing one is a breaking change of the wire contract. The
//! README's "Error codes" table is checked against this one by a unit test.

use axum::http::StatusCode;

/// Declares [`ErrorCode`] from `Variant => "code", STATUS, "when";` rows.
macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:ident, $when:literal;)*) => {
        /// A stable machine code of an error reply (`error` and `code` of the body).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $when] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it is sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// The HTTP status every reply with this code has.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            /// When it is sent (the README's wording).
            pub const fn when(self) -> &'static str {
                match self {
                    $(Self::$variant => $when,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest => "invalid_request", BAD_REQUEST, "a field, query or path parameter is missing, malformed or given twice";
    InvalidJson => "invalid_json", BAD_REQUEST, "the body is not valid JSON";
    InvalidScope => "invalid_scope", BAD_REQUEST, "a scope to grant is malformed or refused (`..`, `//`, a stray `*`)";
    UnsupportedAlgorithm => "unsupported_algorithm", BAD_REQUEST, "the requested token algorithm is not available";
    ConfirmationRequired => "confirmation_required", BAD_REQUEST, "DELETE of an identity without `X-Confirm-Delete: true`";
    MissingAuthorization => "missing_authorization", UNAUTHORIZED, "no bearer token and no API key";
    InvalidAuthorization => "invalid_authorization", UNAUTHORIZED, "an `Authorization` header that is not `Bearer <token>`";
    InvalidApiKey => "invalid_api_key", UNAUTHORIZED, "the API key is unknown, revoked, expired or fails its checksum";
    InvalidToken => "invalid_token", UNAUTHORIZED, "the token is malformed or its signature or claims do not verify";
    TokenExpired => "token_expired", UNAUTHORIZED, "the token has expired";
    TokenRevoked => "token_revoked", UNAUTHORIZED, "the token, its session, identity or key was revoked (also a reused refresh token)";
    InsufficientScope => "insufficient_scope", FORBIDDEN, "the caller (or the identity) does not hold a required scope";
    ScopeEscalation => "scope_escalation", FORBIDDEN, "granting or acting on scopes the caller does not hold";
    IdentitySuspended => "identity_suspended", FORBIDDEN, "issuing for a suspended or retired identity";
    KeysetNotSignable => "keyset_not_signable", FORBIDDEN, "raw signing with a token keyset";
    NotFound => "not_found", NOT_FOUND, "no such route";
    IdentityNotFound => "identity_not_found", NOT_FOUND, "no such identity in the caller's org";
    TokenNotFound => "token_not_found", NOT_FOUND, "a revoke matched no token";
    ApiKeyNotFound => "api_key_not_found", NOT_FOUND, "no such API key in the caller's org";
    KeysetNotFound => "keyset_not_found", NOT_FOUND, "no keyset of that name (or of that use)";
    KeyNotFound => "key_not_found", NOT_FOUND, "no key with that kid";
    MigrationDisabled => "migration_disabled", NOT_FOUND, "no HS256 migration is configured";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED, "the route does not take this method";
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT, "the request body did not arrive within `http.request_timeout`";
    IdentityAlreadyExists => "identity_already_exists", CONFLICT, "another identity of the org has that name";
    InvalidState => "invalid_state", CONFLICT, "the identity's status does not allow this transition";
    KeyAlreadyRevoked => "key_already_revoked", CONFLICT, "the key is already revoked";
    RotationInProgress => "rotation_in_progress", CONFLICT, "a successor is already waiting to activate";
    NothingToRollBack => "nothing_to_roll_back", CONFLICT, "no previous, still-published key to return to";
    MigrationConflict => "migration_conflict", CONFLICT, "the HS256 migration cannot take this step now";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, "the body is over `http.body_limit_bytes`";
    RateLimited => "rate_limited", TOO_MANY_REQUESTS, "too many failed authentications, or the signing rate limit (with `Retry-After`)";
    InternalError => "internal_error", INTERNAL_SERVER_ERROR, "a server-side failure (the cause is logged, not sent)";
    ServiceUnavailable => "service_unavailable", SERVICE_UNAVAILABLE, "a dependency (key backend, store) is unavailable (with `Retry-After`)";
    Overloaded => "overloaded", SERVICE_UNAVAILABLE, "too many requests in flight (with `Retry-After`)";
    DeadlineExceeded => "deadline_exceeded", SERVICE_UNAVAILABLE, "the request took longer than `http.request_timeout` (with `Retry-After`)";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The wire contract, written out by hand: a code renamed or moved to
    /// another status in the table above fails here.
    const CONTRACT: &[(&str, u16)] = &[
        ("invalid_request", 400),
        ("invalid_json", 400),
        ("invalid_scope", 400),
        ("unsupported_algorithm", 400),
        ("confirmation_required", 400),
        ("missing_authorization", 401),
        ("invalid_authorization", 401),
        ("invalid_api_key", 401),
        ("invalid_token", 401),
        ("token_expired", 401),
        ("token_revoked", 401),
        ("insufficient_scope", 403),
        ("scope_escalation", 403),
        ("identity_suspended", 403),
        ("keyset_not_signable", 403),
        ("not_found", 404),
        ("identity_not_found", 404),
        ("token_not_found", 404),
        ("api_key_not_found", 404),
        ("keyset_not_found", 404),
        ("key_not_found", 404),
        ("migration_disabled", 404),
        ("method_not_allowed", 405),
        ("request_timeout", 408),
        ("identity_already_exists", 409),
        ("invalid_state", 409),
        ("key_already_revoked", 409),
        ("rotation_in_progress", 409),
        ("nothing_to_roll_back", 409),
        ("migration_conflict", 409),
        ("payload_too_large", 413),
        ("rate_limited", 429),
        ("internal_error", 500),
        ("service_unavailable", 503),
        ("overloaded", 503),
        ("deadline_exceeded", 503),
    ];

    fn table() -> BTreeMap<&'static str, u16> {
        ErrorCode::ALL.iter().map(|c| (c.as_str(), c.status().as_u16())).collect()
    }

    #[test]
    fn every_code_has_the_string_and_status_of_the_contract() {
        assert_eq!(table(), CONTRACT.iter().copied().collect::<BTreeMap<_, _>>());
        assert_eq!(ErrorCode::ALL.len(), CONTRACT.len(), "a code is listed twice");
    }

    /// The rows of the README's "Error codes" table: `| `code` | status | when |`.
    fn readme_rows() -> BTreeMap<String, (u16, String)> {
        let readme = include_str!("../../README.md");
        let start = readme.find("### Error codes").unwrap_or(readme.len());
        readme[start..]
            .lines()
            .skip_while(|l| !l.starts_with("| `"))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                let code = cells.first()?.trim_matches('`').to_owned();
                Some((code, (cells.get(1)?.parse().ok()?, cells.get(2)?.to_string())))
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_code_with_its_status_and_meaning() {
        let readme = readme_rows();
        let ours: BTreeMap<String, (u16, String)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_owned(), (c.status().as_u16(), c.when().to_owned())))
            .collect();
        assert_eq!(readme, ours, "README.md `### Error codes` and src/http/code.rs disagree");
    }
}
