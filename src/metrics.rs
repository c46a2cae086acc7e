//! Process counters, rendered in the Prometheus text format on the admin
//! listener's `/metrics`. Plain atomics: no registry, no allocation per hit.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub auth_failures: AtomicU64,
    pub auth_rate_limited: AtomicU64,
    pub jwks_requests: AtomicU64,
    pub jwks_not_modified: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition, with `extra` gauges/counters from other services.
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let own = [
            ("kmsd_auth_failures_total", "Failed authentications (API key or bearer).", &self.auth_failures),
            (
                "kmsd_auth_rate_limited_total",
                "Requests refused 429 by the auth-failure limiter.",
                &self.auth_rate_limited,
            ),
            ("kmsd_jwks_requests_total", "JWKS requests served.", &self.jwks_requests),
            ("kmsd_jwks_not_modified_total", "JWKS requests answered 304.", &self.jwks_not_modified),
        ];
        let mut out = String::new();
        let mut emit = |name: &str, help: &str, value: u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        };
        for (name, help, c) in own {
            emit(name, help, c.load(Ordering::Relaxed));
        }
        for (name, help, value) in extra {
            emit(name, help, *value);
        }
        out
    }
}
