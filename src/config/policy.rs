//! The policy file's trusted form: token, JWKS and rotation policy (each
//! defined by its domain) and the rotation invariants they must satisfy together.
//! A policy that could strand a token (a key signing before verifiers can have
//! fetched it, or a token outliving its key's publication) is refused.

use std::time::Duration;

use super::duration::render;
use super::file::{DurationText, PolicyFile};
use super::{deserialize, duration_or, join, parse_toml, Problems, DEFAULT_POLICY};
use crate::jwks::JwksPolicy;
use crate::rotation::RotationPolicy;
use crate::tokens::{TokenKeysets, TokenPolicy};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub tokens: TokenPolicy,
    pub jwks: JwksPolicy,
    pub rotation: RotationPolicy,
    /// How often the rotation reconcile loop runs.
    pub tick: Duration,
}

impl Policy {
    /// Every broken invariant, each naming its numbers.
    pub fn violations(&self) -> Vec<(String, String)> {
        let (t, j, r) = (&self.tokens, &self.jwks, &self.rotation);
        let mut out = Vec::new();
        let need_lead = j.max_age_cap + j.verifier_cache + r.margin;
        if r.publish_lead < need_lead && !r.unsafe_short_publish_lead {
            out.push((
                "rotation.publish_lead".into(),
                format!(
                    "publish_lead {} < jwks.max_age_cap {} + jwks.verifier_cache {} + margin {}: a key would sign before every verifier can have fetched it",
                    render(r.publish_lead), render(j.max_age_cap), render(j.verifier_cache), render(r.margin)
                ),
            ));
        }
        if r.overlap < t.access_ttl_max + t.skew {
            out.push((
                "rotation.overlap".into(),
                format!(
                    "overlap {} < access_ttl_max {} + skew {}: a token could outlive its key's publication",
                    render(r.overlap),
                    render(t.access_ttl_max),
                    render(t.skew)
                ),
            ));
        }
        if r.destroy_delay < t.refresh_ttl_max {
            out.push((
                "rotation.destroy_delay".into(),
                format!(
                    "destroy_delay {} < refresh_ttl_max {}: a refresh token could outlive its key",
                    render(r.destroy_delay),
                    render(t.refresh_ttl_max)
                ),
            ));
        }
        for (field, default, max) in [
            ("tokens.access_ttl_default", t.access_ttl_default, t.access_ttl_max),
            ("tokens.refresh_ttl_default", t.refresh_ttl_default, t.refresh_ttl_max),
        ] {
            if default > max {
                out.push((field.into(), format!("default {} exceeds its maximum {}", render(default), render(max))));
            }
        }
        if t.refresh_reuse_grace > Duration::from_secs(30) {
            out.push((
                "tokens.refresh_reuse_grace".into(),
                format!("{} exceeds the 30s maximum", render(t.refresh_reuse_grace)),
            ));
        }
        if self.tick.is_zero() {
            out.push(("rotation.tick".into(), "must be more than 0s".into()));
        }
        if j.max_age_cap.is_zero() {
            out.push(("jwks.max_age_cap".into(), "must be more than 0s".into()));
        }
        out
    }
}

/// Reads the policy file (or the built-in one) and checks its invariants.
pub(super) fn load_policy(path: Option<&str>, problems: &mut Problems) -> Option<Policy> {
    let (origin, text) = match path {
        None => (DEFAULT_POLICY.0.to_owned(), DEFAULT_POLICY.1.to_owned()),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (p.to_owned(), t),
            Err(e) => {
                problems.add("policy_file", format!("cannot read {p}: {e}"));
                return None;
            }
        },
    };
    let table = parse_toml(&text, &origin, problems);
    let raw: PolicyFile = deserialize(table, &origin, problems)?;
    let before = problems.0.len();
    let mut d = |field: &str, value: Option<DurationText>, default: u64| -> Duration {
        duration_or(problems, &join(&origin, field), value, default)
    };
    let (t, j, r) = (raw.tokens, raw.jwks, raw.rotation);
    let policy = Policy {
        tokens: TokenPolicy {
            access_ttl_default: d("tokens.access_ttl_default", t.access_ttl_default, 3600),
            access_ttl_max: d("tokens.access_ttl_max", t.access_ttl_max, 86_400),
            refresh_ttl_default: d("tokens.refresh_ttl_default", t.refresh_ttl_default, 86_400),
            refresh_ttl_max: d("tokens.refresh_ttl_max", t.refresh_ttl_max, 30 * 86_400),
            skew: d("tokens.skew", t.skew, 60),
            refresh_reuse_grace: d("tokens.refresh_reuse_grace", t.refresh_reuse_grace, 0),
            keysets: TokenKeysets {
                rs256: t.keysets.rs256.unwrap_or_else(|| "access".into()),
                eddsa: t.keysets.eddsa.unwrap_or_else(|| "edge".into()),
                refresh: t.keysets.refresh.unwrap_or_else(|| "refresh".into()),
            },
        },
        jwks: JwksPolicy {
            max_age_cap: d("jwks.max_age_cap", j.max_age_cap, 300),
            verifier_cache: d("jwks.verifier_cache", j.verifier_cache, 300),
        },
        rotation: RotationPolicy {
            publish_lead: d("rotation.publish_lead", r.publish_lead, 3600),
            overlap: d("rotation.overlap", r.overlap, 25 * 3600),
            destroy_delay: d("rotation.destroy_delay", r.destroy_delay, 31 * 86_400),
            margin: d("rotation.margin", r.margin, 60),
            unsafe_short_publish_lead: r.unsafe_allow_short_publish_lead.unwrap_or(false),
        },
        tick: d("rotation.tick", r.tick, 1),
    };
    for (field, message) in policy.violations() {
        problems.add(join(&origin, &field), message);
    }
    (problems.0.len() == before).then_some(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let h = |n: u64| Duration::from_secs(n * 3600);
        Policy {
            tokens: TokenPolicy {
                access_ttl_default: h(1),
                access_ttl_max: h(24),
                refresh_ttl_default: h(24),
                refresh_ttl_max: h(720),
                skew: Duration::from_secs(60),
                refresh_reuse_grace: Duration::ZERO,
                keysets: TokenKeysets { rs256: "access".into(), eddsa: "edge".into(), refresh: "refresh".into() },
            },
            jwks: JwksPolicy { max_age_cap: Duration::from_secs(300), verifier_cache: Duration::from_secs(300) },
            rotation: RotationPolicy {
                publish_lead: h(1),
                overlap: h(25),
                destroy_delay: h(744),
                margin: Duration::from_secs(60),
                unsafe_short_publish_lead: false,
            },
            tick: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_shipped_numbers_hold_every_invariant() {
        assert!(policy().violations().is_empty());
    }

    #[test]
    fn a_short_overlap_is_refused_naming_the_numbers() {
        let mut p = policy();
        p.rotation.overlap = Duration::from_secs(1800);
        p.rotation.publish_lead = Duration::from_secs(600);
        let v = p.violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(
            v[0].1.split(':').next().unwrap(),
            "publish_lead 10m < jwks.max_age_cap 5m + jwks.verifier_cache 5m + margin 1m"
        );
        assert_eq!(v[1].1.split(':').next().unwrap(), "overlap 30m < access_ttl_max 24h + skew 1m");
    }
}
