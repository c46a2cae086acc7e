//! What kmsd counts as it runs, for the admin listener's `/metrics`
//! (OpenMetrics text, `prometheus-client`). This module owns the counters and
//! histograms that events update ([`Metrics`]); values that are a function of
//! state at scrape time (keyset gauges, migration phase, KMS budget, process
//! figures) are read then, by `http`, into a [`Scrape`] that lives for one
//! response, so no series goes stale.
//!
//! Label cardinality is bounded by construction: every label value is a
//! keyset name (from the configuration), an algorithm, a backend, a route
//! template, a status code or one of a fixed set of words; never a raw path,
//! kid, jti or API key id.

pub mod process;

use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::BackendError;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub listener: &'static str,
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub keyset: String,
    pub algorithm: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevokeLabels {
    /// What the revocation named: `token`, `session` or `identity`.
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyEventLabels {
    pub keyset: String,
    /// The audited action without its `key.` prefix: `create`, `rotate`,
    /// `rotate_immediate`, `promote`, `revoke`, `rollback`, `destroy`.
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendOutcome {
    pub backend: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The event-driven metrics of one process. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    pub auth_failures: Family<ReasonLabel, Counter>,
    pub auth_rate_limited: Counter,
    pub jwks_requests: Counter,
    pub jwks_not_modified: Counter,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub tokens_issued: Family<TokenLabels, Counter>,
    pub tokens_refreshed: Family<TokenLabels, Counter>,
    pub tokens_revoked: Family<RevokeLabels, Counter>,
    pub key_events: Family<KeyEventLabels, Counter>,
    pub audit_events: Family<ActionLabel, Counter>,
    pub sign_duration: Family<BackendLabel, Histogram, fn() -> Histogram>,
    pub backend_calls: Family<BackendOutcome, Counter>,
    pub reloads: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            auth_failures: Family::default(),
            auth_rate_limited: Counter::default(),
            jwks_requests: Counter::default(),
            jwks_not_modified: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            tokens_issued: Family::default(),
            tokens_refreshed: Family::default(),
            tokens_revoked: Family::default(),
            key_events: Family::default(),
            audit_events: Family::default(),
            sign_duration: Family::new_with_constructor(latency_histogram),
            backend_calls: Family::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        let version = vec![("version", env!("CARGO_PKG_VERSION"))];
        r.register("kmsd_build", "The running kmsd's version.", Info::new(version));
        r.register("kmsd_auth_failures", "Failed authentications, by error code.", m.auth_failures.clone());
        r.register(
            "kmsd_auth_rate_limited",
            "Requests refused 429 by the auth-failure limiter.",
            m.auth_rate_limited.clone(),
        );
        r.register("kmsd_jwks_requests", "JWKS requests served.", m.jwks_requests.clone());
        r.register("kmsd_jwks_not_modified", "JWKS requests answered 304.", m.jwks_not_modified.clone());
        r.register(
            "kmsd_http_requests",
            "HTTP requests, by listener, method, route template and status.",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "kmsd_http_request_duration",
            "HTTP request duration, by listener, method and route template.",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "kmsd_tokens_issued",
            "Token pairs issued, by access keyset and algorithm.",
            m.tokens_issued.clone(),
        );
        r.register(
            "kmsd_tokens_refreshed",
            "Token pairs issued by refresh, by access keyset and algorithm.",
            m.tokens_refreshed.clone(),
        );
        r.register(
            "kmsd_tokens_revoked",
            "Revocation calls that matched, by what they named.",
            m.tokens_revoked.clone(),
        );
        r.register(
            "kmsd_key_events",
            "Key lifecycle actions committed (rotations, revocations, rollbacks...), by keyset and event.",
            m.key_events.clone(),
        );
        r.register("kmsd_audit_events", "Audit events committed, by action.", m.audit_events.clone());
        r.register_with_unit(
            "kmsd_sign_duration",
            "Time to sign through a key backend (including its guard), by backend.",
            Unit::Seconds,
            m.sign_duration.clone(),
        );
        r.register(
            "kmsd_backend_sign_calls",
            "Sign calls through a key backend, by backend and outcome class.",
            m.backend_calls.clone(),
        );
        r.register("kmsd_config_reloads", "SIGHUP reloads, by result (ok or failed).", m.reloads.clone());
        Self { registry: r, ..m }
    }

    /// Records a sign call through `backend` that took `took`.
    pub fn signed(&self, backend: &'static str, took: Duration, result: Result<(), &BackendError>) {
        self.sign_duration.get_or_create(&BackendLabel { backend }).observe(took.as_secs_f64());
        let outcome = match result {
            Ok(()) => "ok",
            Err(BackendError::Unavailable { .. }) => "unavailable",
            Err(BackendError::Throttled { .. }) => "throttled",
            Err(BackendError::Rejected { .. }) => "rejected",
            Err(BackendError::NotFound { .. }) => "not_found",
            Err(BackendError::Corrupt { .. }) => "corrupt",
            Err(BackendError::Unsupported { .. }) => "unsupported",
        };
        self.backend_calls.get_or_create(&BackendOutcome { backend, outcome }).inc();
    }

    /// Counts a committed audit event, and a key lifecycle event by keyset.
    pub fn audited(&self, action: &str, keyset: Option<&str>) {
        self.audit_events.get_or_create(&ActionLabel { action: action.to_owned() }).inc();
        if let (Some(event), Some(keyset)) = (action.strip_prefix("key."), keyset) {
            self.key_events.get_or_create(&KeyEventLabels { keyset: keyset.to_owned(), event: event.to_owned() }).inc();
        }
    }

    /// The exposition: these metrics, then `scrape`'s, then the EOF marker.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut out = String::new();
        let done = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &scrape.registry))
            .and_then(|()| encode_eof(&mut out));
        if done.is_err() {
            // Writing to a String cannot fail; say so rather than serve half.
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

/// Values read at scrape time, registered for one response.
#[derive(Default)]
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    /// A counter (`name` without `_total`) with value `value`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }

    /// A float counter (e.g. CPU seconds).
    pub fn counter_f64(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let c: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
        c.inc_by(value);
        match unit {
            Some(u) => self.registry.register_with_unit(name, help, u, c),
            None => self.registry.register(name, help, c),
        }
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// A gauge family: one series per `(labels, value)`.
    pub fn gauges<L>(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (L, f64)>)
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family: Family<L, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
        for (labels, value) in series {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help, family);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_build_info_labelled_counters_and_an_eof() {
        let m = Metrics::new();
        m.auth_failures.get_or_create(&ReasonLabel { reason: "invalid_api_key" }).inc();
        m.audited("key.rotate", Some("access"));
        m.audited("api_key.create", None);
        let mut s = Scrape::default();
        s.counter("kmsd_store_reads", "Store read transactions.", 7);
        s.gauges("kmsd_keyset_has_active_key", "x", [(vec![("keyset", "access".to_owned())], 1.0)]);
        let text = m.render(&s);
        assert!(text.contains(&format!("kmsd_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.contains("kmsd_auth_failures_total{reason=\"invalid_api_key\"} 1"), "{text}");
        assert!(text.contains("kmsd_key_events_total{keyset=\"access\",event=\"rotate\"} 1"), "{text}");
        assert!(!text.contains("event=\"create\""), "an event without a keyset is not a key event: {text}");
        assert!(text.contains("kmsd_store_reads_total 7"), "{text}");
        assert!(text.contains("kmsd_keyset_has_active_key{keyset=\"access\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
