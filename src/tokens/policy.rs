//! Token policy: lifetimes, skew, the refresh reuse grace, and which keyset
//! signs which kind of token. `config` builds it; tokens only read it.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    pub access_ttl_default: Duration,
    pub access_ttl_max: Duration,
    pub refresh_ttl_default: Duration,
    pub refresh_ttl_max: Duration,
    pub skew: Duration,
    pub refresh_reuse_grace: Duration,
    /// The keyset names the policy gives for each kind of token.
    pub keysets: TokenKeysets<String>,
}

/// Which keyset signs which kind of token: names in the policy
/// (`TokenKeysets<String>`), the declared keysets in the token service
/// (`TokenKeysets<Option<KeysetName>>`, `None`: that kind cannot be issued).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenKeysets<T> {
    /// RS256 access tokens.
    pub rs256: T,
    /// EdDSA access tokens.
    pub eddsa: T,
    /// Refresh tokens (verified by kmsd only).
    pub refresh: T,
}

impl<T> TokenKeysets<T> {
    /// Each entry with its field name in `[tokens.keysets]`.
    pub fn named(&self) -> [(&'static str, &T); 3] {
        [("RS256", &self.rs256), ("EdDSA", &self.eddsa), ("refresh", &self.refresh)]
    }

    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> TokenKeysets<U> {
        TokenKeysets { rs256: f(&self.rs256), eddsa: f(&self.eddsa), refresh: f(&self.refresh) }
    }
}
