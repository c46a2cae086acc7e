//! `[storage]`: which engine holds the store, checked. `engine = "redb"` (the
//! default: one file in the data dir) or `"postgres"` with a connection URL,
//! given inline as `url` or, better, in the environment variable `url_env`
//! (default `KMSD_STORAGE_URL`), read at start and never logged: the URL is
//! held as a [`PgUrl`], whose `Debug` and `Display` hide the password.

use std::time::Duration;

use super::file::{HaSection, StorageSection};
use super::{duration_or, Problems};
use crate::storage::postgres::pool::PoolConfig;
use crate::storage::postgres::{tls, PgUrl};

pub const DEFAULT_STORAGE_URL_ENV: &str = "KMSD_STORAGE_URL";

#[derive(Clone, Debug)]
pub enum StorageEngine {
    Redb,
    Postgres(Box<PostgresSettings>),
}

/// Where the URL comes from.
#[derive(Clone, Debug)]
pub enum UrlSource {
    Inline(Box<PgUrl>),
    /// The variable's name; its value is read at start.
    Env(String),
}

#[derive(Clone, Debug)]
pub struct PostgresSettings {
    pub url: UrlSource,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    /// `storage.tls`: `Some(true)` verify-full, `Some(false)` disable,
    /// `None` by host (off for this machine, verify-full for any other).
    pub tls: Option<bool>,
    /// Trust anchors for the server's certificate (default: the system's).
    pub ca_file: Option<std::path::PathBuf>,
    pub ha: HaSettings,
}

/// `[ha]`: how the replicas on one database share the work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaSettings {
    /// This replica's name, unique among the replicas: it holds the leader
    /// lease under it and health reports it.
    pub replica: String,
    /// Another replica leads within this long of the leader's loss.
    pub failover: Duration,
    /// Every cache is reloaded from the store in full this often (the
    /// change feed keeps them current in between).
    pub resync: Duration,
}

impl HaSettings {
    /// The leader lease's time to live: a replica that stops renewing is
    /// replaced once it has run out and a follower's next try comes.
    pub fn lease_ttl(&self) -> Duration {
        self.failover.mul_f64(0.7)
    }

    /// How often a follower tries for the lease and the leader renews it.
    pub fn renew_every(&self) -> Duration {
        self.failover / 5
    }
}

/// The default replica name: the host name (a pod's name under a
/// StatefulSet) and the process id, so two processes on one host differ.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "kmsd" } else { host }, std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum StorageConfigError {
    #[error("storage.url_env: environment variable {0} is not set")]
    UrlEnvUnset(String),
    #[error("storage.url_env: {var}: {source}")]
    UrlEnvInvalid { var: String, source: crate::storage::postgres::UrlError },
    #[error("storage.ca_file: {0}")]
    Tls(String),
}

impl PostgresSettings {
    /// The URL, read from the environment now if it comes from there, with
    /// its TLS settings (the CA file read now).
    pub fn resolve_url(&self, env: impl Fn(&str) -> Option<String>) -> Result<PgUrl, StorageConfigError> {
        let url = match &self.url {
            UrlSource::Inline(url) => PgUrl::clone(url),
            UrlSource::Env(var) => {
                let text = env(var).ok_or_else(|| StorageConfigError::UrlEnvUnset(var.clone()))?;
                PgUrl::parse(&text).map_err(|source| StorageConfigError::UrlEnvInvalid { var: var.clone(), source })?
            }
        };
        if !self.tls.unwrap_or(!url.is_local()) {
            return Ok(url);
        }
        let roots = crate::listener::tls::trust_roots("storage.ca_file", self.ca_file.as_deref())
            .map_err(|e| StorageConfigError::Tls(e.to_string()))?;
        let config = tls::client_config(roots).map_err(|e| StorageConfigError::Tls(e.to_string()))?;
        Ok(url.with_tls(tls::MakeRustls(Some(config))))
    }

    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig { size: self.pool_size, statement_timeout: self.statement_timeout, ..PoolConfig::default() }
    }
}

/// The variable that `[storage]` reads the URL from (so that the override
/// mechanism leaves it alone).
pub(super) fn url_env_name(url_env: Option<&str>) -> String {
    url_env.unwrap_or(DEFAULT_STORAGE_URL_ENV).to_owned()
}

/// `[storage]` but `cache_mib` (the redb cache, checked with the other sizes).
pub(super) fn storage_engine(raw: StorageSection, ha: HaSection, problems: &mut Problems) -> Option<StorageEngine> {
    let postgres_only = |problems: &mut Problems, field: &str, set: bool| {
        if set {
            problems.add(format!("storage.{field}"), "applies only to engine = \"postgres\"");
        }
    };
    Some(match raw.engine.as_deref().unwrap_or("redb") {
        "redb" => {
            postgres_only(problems, "url", raw.url.is_some());
            postgres_only(problems, "url_env", raw.url_env.is_some());
            postgres_only(problems, "pool_size", raw.pool_size.is_some());
            postgres_only(problems, "statement_timeout", raw.statement_timeout.is_some());
            postgres_only(problems, "tls", raw.tls.is_some());
            postgres_only(problems, "ca_file", raw.ca_file.is_some());
            for (field, set) in [
                ("replica", ha.replica.is_some()),
                ("failover", ha.failover.is_some()),
                ("resync", ha.resync.is_some()),
            ] {
                if set {
                    problems.add(format!("ha.{field}"), "applies only to storage.engine = \"postgres\"");
                }
            }
            StorageEngine::Redb
        }
        "postgres" => StorageEngine::Postgres(Box::new(postgres_settings(raw, ha, problems)?)),
        other => {
            problems.add("storage.engine", format!("{other:?} is not an engine (\"redb\" or \"postgres\")"));
            return None;
        }
    })
}

fn postgres_settings(raw: StorageSection, ha: HaSection, problems: &mut Problems) -> Option<PostgresSettings> {
    let url = match (raw.url, raw.url_env) {
        (Some(_), Some(_)) => {
            problems.add("storage.url", "give url or url_env, not both");
            None
        }
        (Some(text), None) => PgUrl::parse(&text)
            .map(|url| UrlSource::Inline(Box::new(url)))
            .map_err(|e| problems.add("storage.url", e.to_string()))
            .ok(),
        (None, env) => Some(UrlSource::Env(url_env_name(env.as_deref()))),
    };
    let pool_size = raw.pool_size.unwrap_or(8);
    if !(1..=256).contains(&pool_size) {
        problems.add("storage.pool_size", format!("{pool_size} is outside 1..=256"));
    }
    let statement_timeout = duration_or(problems, "storage.statement_timeout", raw.statement_timeout, 5);
    if !(1..=600).contains(&statement_timeout.as_secs()) {
        problems.add("storage.statement_timeout", "must be within 1s..=600s");
    }
    let tls = match raw.tls.as_deref() {
        None => None,
        Some("verify-full") => Some(true),
        Some("disable") => Some(false),
        Some(other) => {
            problems.add("storage.tls", format!("{other:?} is not a mode (\"verify-full\" or \"disable\")"));
            None
        }
    };
    if tls == Some(false) && raw.ca_file.is_some() {
        problems.add("storage.ca_file", "applies only with TLS (storage.tls = \"verify-full\")");
    }
    let ca_file = raw.ca_file.map(std::path::PathBuf::from);
    let ha = ha_settings(ha, problems);
    let pool_size = usize::try_from(pool_size).ok()?;
    Some(PostgresSettings { url: url?, pool_size, statement_timeout, tls, ca_file, ha })
}

fn ha_settings(raw: HaSection, problems: &mut Problems) -> HaSettings {
    let replica = raw.replica.unwrap_or_else(default_replica);
    let name_ok =
        (1..=63).contains(&replica.len()) && replica.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        problems.add("ha.replica", "must be 1 to 63 of [A-Za-z0-9._-]");
    }
    let failover = duration_or(problems, "ha.failover", raw.failover, 10);
    if !(2..=300).contains(&failover.as_secs()) {
        problems.add("ha.failover", "must be within 2s..=300s");
    }
    let resync = duration_or(problems, "ha.resync", raw.resync, 60);
    if !(1..=86_400).contains(&resync.as_secs()) {
        problems.add("ha.resync", "must be within 1s..=1d");
    }
    HaSettings { replica, failover, resync }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::DurationText;

    fn check(raw: StorageSection) -> (Option<StorageEngine>, Vec<String>) {
        let mut problems = Problems::default();
        let c = storage_engine(raw, HaSection::default(), &mut problems);
        (c, problems.0.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect())
    }

    #[test]
    fn redb_is_the_default_and_postgres_takes_its_url_from_the_environment_by_default() {
        let (c, problems) = check(StorageSection::default());
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.unwrap();
        assert!(matches!(c, StorageEngine::Redb));

        let raw = StorageSection { engine: Some("postgres".into()), pool_size: Some(4), ..Default::default() };
        let (c, problems) = check(raw);
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.unwrap();
        let StorageEngine::Postgres(pg) = &c else { panic!("{c:?}") };
        assert!(matches!(&pg.url, UrlSource::Env(v) if v == DEFAULT_STORAGE_URL_ENV));
        assert_eq!((pg.pool_size, pg.statement_timeout), (4, Duration::from_secs(5)));
    }

    #[test]
    fn the_url_password_never_appears_in_debug_or_problems() {
        let secret = "hunter2-very-secret";
        let raw = StorageSection {
            engine: Some("postgres".into()),
            url: Some(format!("postgres://kmsd:{secret}@db.internal:5432/kmsd")),
            ..Default::default()
        };
        let (c, problems) = check(raw);
        assert!(problems.is_empty(), "{problems:?}");
        let shown = format!("{c:?}");
        assert!(!shown.contains(secret) && shown.contains("kmsd:***@db.internal"), "{shown}");

        let bad = StorageSection {
            engine: Some("postgres".into()),
            url: Some(format!("postgres://kmsd:{secret}@db.internal:notaport/kmsd")),
            ..Default::default()
        };
        let (_, problems) = check(bad);
        assert!(problems.iter().any(|p| p.starts_with("storage.url:")), "{problems:?}");
        assert!(!format!("{problems:?}").contains(secret), "{problems:?}");

        let pg = PostgresSettings {
            url: UrlSource::Env("PG_URL".into()),
            pool_size: 1,
            statement_timeout: Duration::from_secs(1),
            tls: None,
            ca_file: None,
            ha: ha_settings(HaSection::default(), &mut Problems::default()),
        };
        let from_env = |_: &str| Some(format!("postgres://kmsd:{secret}@db:x/k"));
        let err = pg.resolve_url(from_env).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(secret), "{err}");
        assert!(matches!(pg.resolve_url(|_| None), Err(StorageConfigError::UrlEnvUnset(v)) if v == "PG_URL"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let raw = StorageSection {
            engine: Some("postgres".into()),
            url: Some("postgres://db/k".into()),
            url_env: Some("X".into()),
            pool_size: Some(0),
            statement_timeout: Some(DurationText::Seconds(0)),
            ..Default::default()
        };
        let (_, problems) = check(raw);
        assert_eq!(problems.len(), 3, "{problems:?}");
        let (_, problems) = check(StorageSection { pool_size: Some(3), ..Default::default() });
        assert_eq!(problems, ["storage.pool_size: applies only to engine = \"postgres\""]);
        let (_, problems) = check(StorageSection { engine: Some("sqlite".into()), ..Default::default() });
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn tls_is_verify_full_or_disable_chosen_by_host_unless_given() {
        let pg = |tls: Option<&str>, ca: Option<&str>, url: &str| StorageSection {
            engine: Some("postgres".into()),
            url: Some(url.into()),
            tls: tls.map(Into::into),
            ca_file: ca.map(Into::into),
            ..Default::default()
        };
        let resolved = |raw| {
            let (c, problems) = check(raw);
            assert!(problems.is_empty(), "{problems:?}");
            let Some(StorageEngine::Postgres(pg)) = c else { panic!() };
            pg.resolve_url(|_| None).map(|u| format!("{:?}", u.tls()))
        };
        assert_eq!(resolved(pg(None, None, "postgres://k@127.0.0.1/k")).unwrap(), "disable");
        assert_eq!(resolved(pg(None, None, "postgres://k@db.internal/k")).unwrap(), "verify-full");
        assert_eq!(resolved(pg(Some("verify-full"), None, "postgres://k@localhost/k")).unwrap(), "verify-full");
        assert_eq!(resolved(pg(Some("disable"), None, "postgres://k@db.internal/k")).unwrap(), "disable");
        let missing = resolved(pg(Some("verify-full"), Some("/nonexistent/ca.pem"), "postgres://k@db/k")).unwrap_err();
        assert!(
            missing.to_string().starts_with("storage.ca_file: ") && missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );

        let (_, problems) = check(pg(Some("prefer"), None, "postgres://k@db/k"));
        assert!(problems[0].starts_with("storage.tls:"), "{problems:?}");
        let (_, problems) = check(pg(Some("disable"), Some("/ca.pem"), "postgres://k@db/k"));
        assert!(problems[0].starts_with("storage.ca_file:"), "{problems:?}");
        let (_, problems) = check(StorageSection { tls: Some("verify-full".into()), ..Default::default() });
        assert_eq!(problems, ["storage.tls: applies only to engine = \"postgres\""]);
    }

    #[test]
    fn ha_settings_default_to_a_ten_second_failover_and_apply_only_to_postgres() {
        let mut problems = Problems::default();
        let ha = ha_settings(HaSection::default(), &mut problems);
        assert!(problems.0.is_empty());
        assert_eq!((ha.failover, ha.resync), (Duration::from_secs(10), Duration::from_secs(60)));
        assert!(ha.replica.ends_with(&format!("-{}", std::process::id())), "{}", ha.replica);
        assert!(ha.lease_ttl() + ha.renew_every() <= ha.failover, "a lost leader is replaced within failover");

        let bad = HaSection {
            replica: Some("two words".into()),
            failover: Some(DurationText::Seconds(1)),
            resync: Some(DurationText::Seconds(0)),
        };
        let mut problems = Problems::default();
        ha_settings(bad, &mut problems);
        let fields: Vec<_> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(fields, ["ha.replica", "ha.failover", "ha.resync"]);

        let set = HaSection { failover: Some(DurationText::Seconds(5)), ..Default::default() };
        let mut problems = Problems::default();
        storage_engine(StorageSection::default(), set, &mut problems);
        assert_eq!(problems.0[0].path, "ha.failover");
    }
}
