//! How the listeners treat connections: the `[http]` timeouts and in-flight
//! bound and the `[listen]` connection caps, checked. The public cap may be
//! left to the listener, which derives it from the file-descriptor limit at
//! start (see `crate::listener::Budgets`).

use std::ops::RangeInclusive;
use std::time::Duration;

use super::file::{DurationText, HttpSection};
use super::{duration_or, Problems};
use crate::listener::ConnectionLimits;

/// `[http]` and the `[listen]` caps `[public_max_connections, admin_max_connections]`.
pub(super) fn connection_limits(
    http: &HttpSection,
    caps: [Option<u64>; 2],
    problems: &mut Problems,
) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let mut timeout = |field: &str, value: &Option<DurationText>, default: Duration, range: RangeInclusive<u64>| {
        let path = format!("http.{field}");
        let t = duration_or(problems, &path, value.clone(), default.as_secs());
        if !range.contains(&t.as_secs()) {
            problems.add(path, format!("must be within {}s..={}s", range.start(), range.end()));
        }
        t
    };
    let header_read_timeout = timeout("header_read_timeout", &http.header_read_timeout, d.header_read_timeout, 1..=600);
    let idle_timeout = timeout("idle_timeout", &http.idle_timeout, d.idle_timeout, 1..=3600);
    let request_timeout = timeout("request_timeout", &http.request_timeout, d.request_timeout, 1..=600);
    let drain_timeout = timeout("drain_timeout", &http.drain_timeout, d.drain_timeout, 0..=600);
    let mut count = |field: &str, value: Option<u64>, range: RangeInclusive<u64>| {
        let n = value?;
        if !range.contains(&n) {
            problems.add(field, format!("{n} is outside {}..={}", range.start(), range.end()));
        }
        usize::try_from(n).ok()
    };
    let max_in_flight = count("http.max_in_flight", http.max_in_flight, 1..=1_000_000).unwrap_or(d.max_in_flight);
    let public_max_connections = count("listen.public_max_connections", caps[0], 1..=10_000_000);
    let admin_max_connections =
        count("listen.admin_max_connections", caps[1], 1..=100_000).unwrap_or(d.admin_max_connections);
    ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        request_timeout,
        drain_timeout,
        max_in_flight,
        public_max_connections,
        admin_max_connections,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{Config, ConfigErrors};

    /// The config from the built-in defaults and these overrides.
    pub(in crate::config) fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let env: Vec<(String, String)> = [("KMSD_DATA_DIR", data.to_str().unwrap())]
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load(None, &env)
    }

    #[test]
    fn connection_limits_default_to_the_documented_values() {
        assert_eq!(load(&[]).unwrap().connections, ConnectionLimits::default());
    }

    #[test]
    fn connection_limits_are_read_from_http_and_listen() {
        let c = load(&[
            ("KMSD_HTTP__HEADER_READ_TIMEOUT", "2s"),
            ("KMSD_HTTP__IDLE_TIMEOUT", "1m"),
            ("KMSD_HTTP__REQUEST_TIMEOUT", "5"),
            ("KMSD_HTTP__DRAIN_TIMEOUT", "0s"),
            ("KMSD_HTTP__MAX_IN_FLIGHT", "2"),
            ("KMSD_LISTEN__PUBLIC_MAX_CONNECTIONS", "500"),
            ("KMSD_LISTEN__ADMIN_MAX_CONNECTIONS", "8"),
        ])
        .unwrap();
        let want = ConnectionLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            drain_timeout: Duration::ZERO,
            max_in_flight: 2,
            public_max_connections: Some(500),
            admin_max_connections: 8,
        };
        assert_eq!(c.connections, want);
    }

    #[test]
    fn out_of_range_connection_limits_are_each_reported() {
        let e = load(&[
            ("KMSD_HTTP__HEADER_READ_TIMEOUT", "0s"),
            ("KMSD_HTTP__IDLE_TIMEOUT", "2h"),
            ("KMSD_HTTP__REQUEST_TIMEOUT", "soon"),
            ("KMSD_HTTP__MAX_IN_FLIGHT", "0"),
            ("KMSD_LISTEN__ADMIN_MAX_CONNECTIONS", "0"),
        ])
        .unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "http.header_read_timeout",
                "http.idle_timeout",
                "http.request_timeout",
                "http.max_in_flight",
                "listen.admin_max_connections"
            ],
            "{e}"
        );
    }
}
