//! How each domain's error becomes an [`ApiError`]: one `From` impl per
//! domain error, so handlers use `?` and no handler spells a code. The codes
//! and their statuses are in [`ErrorCode`]; only the message and context
//! fields are chosen here. Causes that are ours (storage, a failing backend)
//! are logged and answered generically.

use super::code::ErrorCode;
use super::ApiError;
use crate::api_keys::ApiKeyError;
use crate::backend::BackendError;
use crate::identities::IdentityError;
use crate::migration::MigrationError;
use crate::rotation::RotationError;
use crate::scopes::GrantError;
use crate::storage::StorageError;
use crate::tokens::{TokenError, VerifyError};

/// A refused grant: 400 `invalid_scope` (malformed) or 403 `scope_escalation`.
impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Invalid { scope, reason } => {
                ApiError::new(ErrorCode::InvalidScope, format!("scope {scope:?}: {reason}")).with("scope", scope)
            }
            GrantError::Escalation { scope } => ApiError::new(
                ErrorCode::ScopeEscalation,
                format!("cannot grant {scope:?}: the caller does not hold it"),
            )
            .with("scope", scope),
            GrantError::Stronger { scope } => ApiError::new(
                ErrorCode::ScopeEscalation,
                format!("the target holds {scope:?}, which the caller does not; acting on it needs all its scopes"),
            )
            .with("scope", scope),
        }
    }
}

/// A refused token: `token_expired`, `token_revoked`, else `invalid_token`;
/// a store that cannot confirm it is a 503, never a verdict.
impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        let (code, message) = match e {
            VerifyError::Unavailable => return ApiError::unavailable(&e, 1),
            VerifyError::Expired => (ErrorCode::TokenExpired, "token has expired"),
            VerifyError::Revoked => (ErrorCode::TokenRevoked, "token has been revoked"),
            VerifyError::Malformed => (ErrorCode::InvalidToken, "token is malformed"),
            _ => (ErrorCode::InvalidToken, "token is not valid"),
        };
        ApiError::new(code, message)
    }
}

/// A key backend's failure: throttling is 429 with its `Retry-After`, what a
/// retry can cure is 503, the rest is ours.
impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Throttled { retry_after, .. } => {
                ApiError::new(ErrorCode::RateLimited, "signing rate limit reached; retry later")
                    .with("retryAfter", retry_after.as_secs().max(1))
            }
            e if e.is_transient() => ApiError::unavailable(&e, 2),
            e => ApiError::internal(&e),
        }
    }
}

/// A store fault (full disk, a store being reopened) is 503 with
/// `Retry-After`; any other store error is 500.
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::storage(&e)
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::IdentityNotFound => IdentityError::NotFound.into(),
            TokenError::IdentitySuspended(s) => ApiError::new(ErrorCode::IdentitySuspended, format!("identity is {s}")),
            TokenError::InsufficientScope(missing) => {
                let first = missing.first().cloned().unwrap_or_default();
                ApiError::new(
                    ErrorCode::InsufficientScope,
                    format!("scopes {missing:?} are not held by both the identity and the caller"),
                )
                .with("required", first.clone())
                .with("requiredScopes", missing)
                .with("scope", first)
            }
            TokenError::InvalidScope { scope, reason } => GrantError::Invalid { scope, reason }.into(),
            TokenError::Invalid(m) => ApiError::invalid_request(m),
            TokenError::UnsupportedAlgorithm(a) => {
                ApiError::new(ErrorCode::UnsupportedAlgorithm, format!("algorithm {a:?} is not available"))
            }
            TokenError::Grant(g) => g.into(),
            TokenError::Verify(v) => v.into(),
            TokenError::NotFound => ApiError::new(ErrorCode::TokenNotFound, "no matching token"),
            TokenError::NoSigner(ks) => ApiError::unavailable(&format!("keyset {ks} has no active key"), 5),
            TokenError::Backend(e) => e.into(),
            TokenError::Storage(e) => e.into(),
            TokenError::Commit(e) => ApiError::unavailable(&e, 1),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid(m) => ApiError::invalid_request(m),
            IdentityError::Grant(g) => g.into(),
            IdentityError::NotFound => ApiError::new(ErrorCode::IdentityNotFound, "identity not found"),
            IdentityError::Duplicate(name) => {
                ApiError::new(ErrorCode::IdentityAlreadyExists, format!("an identity named {name:?} already exists"))
            }
            IdentityError::State(s) => {
                ApiError::new(ErrorCode::InvalidState, format!("not allowed while the identity is {s}"))
            }
            IdentityError::Storage(e) => e.into(),
        }
    }
}

impl From<ApiKeyError> for ApiError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::Invalid(msg) => ApiError::invalid_request(msg),
            ApiKeyError::Grant(g) => g.into(),
            ApiKeyError::NotFound(id) => ApiError::new(ErrorCode::ApiKeyNotFound, format!("API key {id} not found")),
            ApiKeyError::Storage(e) => e.into(),
            ApiKeyError::Format(e) => ApiError::internal(&e),
        }
    }
}

impl From<RotationError> for ApiError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::UnknownKeyset(k) => {
                ApiError::new(ErrorCode::KeysetNotFound, format!("no keyset named {k:?}"))
            }
            RotationError::UnknownKey(k) => ApiError::new(ErrorCode::KeyNotFound, format!("no key {k}")),
            RotationError::AlreadyRevoked(k) => {
                ApiError::new(ErrorCode::KeyAlreadyRevoked, format!("key {k} is already revoked"))
            }
            RotationError::InProgress(k) => ApiError::new(
                ErrorCode::RotationInProgress,
                format!("a successor of keyset {k} is already waiting to activate; revoke it or wait"),
            ),
            RotationError::Rollback(e) => ApiError::new(ErrorCode::NothingToRollBack, e.to_string()),
            RotationError::Ring(e) => ApiError::unavailable(&e, 2),
            RotationError::Storage(e) => e.into(),
        }
    }
}

impl From<MigrationError> for ApiError {
    fn from(e: MigrationError) -> Self {
        match e {
            MigrationError::Phase { .. } | MigrationError::TooEarly { .. } | MigrationError::NoAsymmetricKey => {
                ApiError::new(ErrorCode::MigrationConflict, e.to_string())
            }
            other => ApiError::internal(&other),
        }
    }
}
