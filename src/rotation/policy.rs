//! How keys rotate: the publish lead, the overlap and the destroy delay.
//! `config` builds it and checks it against the token and JWKS policy (see
//! `config::Policy::violations`); rotation only reads it.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    pub publish_lead: Duration,
    pub overlap: Duration,
    pub destroy_delay: Duration,
    pub margin: Duration,
    /// Accept a publish lead shorter than verifiers' caches (tests and
    /// demonstrations only: tokens will fail at verifiers after rotations).
    pub unsafe_short_publish_lead: bool,
}
