//! Configuration: one TOML file plus `KMSD_*` environment overrides, keyset
//! declarations (`keys/*.toml`) and policy (`policy/*.toml`), with defaults
//! built into the binary so `kmsd serve` runs with no files at all.
//!
//! Two layers: [`file`] is what the files say; [`Config`] is what the program
//! trusts. [`Config::load`] reports every problem at once, each with its field
//! path, and never stops at the first.
//!
//! Environment overrides: `KMSD_<FIELD>` sets a top-level field and `__`
//! separates sections, e.g. `KMSD_DATA_DIR=/var/lib/kmsd`,
//! `KMSD_LISTEN__PUBLIC=0.0.0.0:8787`. Variables that carry secrets or select
//! the config file are never read as overrides.

mod aws_kms;
mod connections;
mod duration;
mod env;
mod file;
mod keysets;
mod log;
mod plan;
mod policy;
mod storage;
mod tls;
mod vault;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Re-exported: the listeners' limits are `listener`'s type.
pub use crate::listener::ConnectionLimits;
pub use duration::render as render_duration;
pub use log::{LogConfig, LogFormat};
pub use plan::offline_plan;
pub use policy::Policy;
pub use storage::{PostgresSettings, StorageConfigError, StorageEngine, UrlSource, DEFAULT_STORAGE_URL_ENV};
pub use tls::{ListenTls, TlsFiles};

use crate::auth_limit::LimitPolicy;
use crate::keys::{Keyset, KeysetName};
use crate::kms::AwsKmsConfig;
use crate::storage::STORE_FILE;
use crate::vault::KekSource;
use env::apply_env;
use file::{ConfigFile, DurationText};
use keysets::{check_token_keysets, load_keysets};
use policy::load_policy;
use vault::{check_kek, kek_source};

/// Built-in keyset declarations and policy (the files under `keys/` and `policy/`).
pub const DEFAULT_KEYSETS: &[(&str, &str)] = &[
    ("keys/access.toml", include_str!("../../keys/access.toml")),
    ("keys/edge.toml", include_str!("../../keys/edge.toml")),
    ("keys/refresh.toml", include_str!("../../keys/refresh.toml")),
    ("keys/sign.toml", include_str!("../../keys/sign.toml")),
];
pub const DEFAULT_POLICY: (&str, &str) = ("policy/default.toml", include_str!("../../policy/default.toml"));

pub const DEFAULT_KEK_ENV: &str = "KMSD_VAULT_KEK";
pub const DEFAULT_PASSPHRASE_ENV: &str = "KMSD_VAULT_PASSPHRASE";

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub issuer: String,
    pub public_base_url: String,
    pub listen_public: SocketAddr,
    pub listen_admin: SocketAddr,
    pub body_limit: usize,
    /// Timeouts, caps and the drain deadline of both listeners.
    pub connections: ConnectionLimits,
    /// TLS and mTLS of the listeners (`[listen]` `*_tls_*` fields).
    pub tls: ListenTls,
    /// Memory redb may use for cached and pending pages (`storage.cache_mib`).
    pub store_cache_bytes: usize,
    /// `[storage] engine`: redb, or PostgreSQL (refused at start for now).
    pub storage_engine: StorageEngine,
    pub kek: KekSource,
    pub keysets: Vec<Keyset>,
    pub policy: Policy,
    pub auth: AuthConfig,
    /// Used only if a keyset has `backend = "aws-kms"` or the vault's KEK is
    /// in AWS KMS (`kek` holds a copy then).
    pub aws_kms: AwsKmsConfig,
    /// The HS256 cut-over, when enabled.
    pub migration: Option<MigrationSettings>,
    /// `[log]`: format and level.
    pub log: LogConfig,
}

/// `[migration]`: the legacy HS256 kid, where its secret comes from (an
/// environment variable, read at startup, never stored in the config), and
/// the longest lifetime of tokens the legacy system issued.
#[derive(Clone, Debug)]
pub struct MigrationSettings {
    pub kid: String,
    pub secret_env: String,
    pub legacy_ttl_cap: Duration,
}

pub const DEFAULT_HS256_SECRET_ENV: &str = "KMSD_HS256_SECRET";

/// Throttling of failed authentication and how often it is audited.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub limit: LimitPolicy,
    pub report_interval: Duration,
}

impl Config {
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }

    pub fn keyset(&self, name: &KeysetName) -> Option<&Keyset> {
        self.keysets.iter().find(|k| &k.name == name)
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration has {} problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {}: {}", p.path, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }
}

impl Config {
    /// Loads the config file at `path` (or none: all defaults) with overrides
    /// from `env`, then every keyset and the policy, and validates everything.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
        let mut problems = Problems::default();
        let origin = path.map_or_else(|| "config".to_owned(), |p| p.display().to_string());
        let mut table = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => parse_toml(&text, &origin, &mut problems),
                Err(e) => {
                    problems.add(origin.clone(), format!("cannot read config file: {e}"));
                    toml::Table::new()
                }
            },
            None => toml::Table::new(),
        };
        apply_env(&mut table, env, &mut problems);
        let raw: ConfigFile = deserialize(table, "", &mut problems).unwrap_or_default();
        let config = validate(raw, &mut problems);
        match config {
            Some(c) if problems.0.is_empty() => Ok(c),
            _ => Err(ConfigErrors(problems.0)),
        }
    }
}

fn parse_toml(text: &str, origin: &str, problems: &mut Problems) -> toml::Table {
    text.parse::<toml::Table>().unwrap_or_else(|e| {
        problems.add(origin, format!("not valid TOML: {}", e.message()));
        toml::Table::new()
    })
}

/// Deserializes `table`, recording unknown fields and type errors under `prefix`.
fn deserialize<T: DeserializeOwned>(table: toml::Table, prefix: &str, problems: &mut Problems) -> Option<T> {
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(toml::Value::Table(table), |path| unknown.push(path.to_string()));
    for field in unknown {
        problems.add(join(prefix, &field), "unknown field");
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            problems.add(if prefix.is_empty() { "config" } else { prefix }, e.to_string());
            None
        }
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}: {field}")
    }
}

fn validate(raw: ConfigFile, problems: &mut Problems) -> Option<Config> {
    if let Some(v) = raw.version.filter(|v| *v != 1) {
        problems.add("version", format!("config format version {v} is not supported (expected 1)"));
    }
    let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| "kmsd-data".into()));
    let addr = |field: &str, value: Option<String>, default: &str, problems: &mut Problems| {
        let text = value.unwrap_or_else(|| default.into());
        text.parse::<SocketAddr>()
            .map_err(|_| problems.add(field, format!("{text:?} is not a socket address (e.g. \"127.0.0.1:8787\")")))
            .ok()
    };
    let listen_public = addr("listen.public", raw.listen.public.clone(), "127.0.0.1:8787", problems);
    let listen_admin = addr("listen.admin", raw.listen.admin.clone(), "127.0.0.1:8788", problems);
    let tls = tls::listen_tls(&raw.listen, listen_admin, problems);
    let issuer = raw.issuer.unwrap_or_else(|| "https://relayauth.dev".into());
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        problems.add("issuer", format!("{issuer:?} is not an http(s) URL"));
    }
    let scheme = if tls.public.is_some() { "https" } else { "http" };
    let public_base_url = raw.public_base_url.unwrap_or_else(|| {
        format!("{scheme}://{}", listen_public.map_or_else(|| "127.0.0.1:8787".into(), |a| a.to_string()))
    });
    if !(public_base_url.starts_with("https://") || public_base_url.starts_with("http://")) {
        problems.add("public_base_url", format!("{public_base_url:?} is not an http(s) URL"));
    }
    let body_limit = raw.http.body_limit_bytes.unwrap_or(64 * 1024);
    if !(1024..=16 * 1024 * 1024).contains(&body_limit) {
        problems.add("http.body_limit_bytes", format!("{body_limit} is outside 1024..=16777216"));
    }
    let connections = connections::connection_limits(
        &raw.http,
        [raw.listen.public_max_connections, raw.listen.admin_max_connections],
        problems,
    );
    let cache_mib = raw.storage.cache_mib.unwrap_or(64);
    if !(4..=65_536).contains(&cache_mib) {
        problems.add("storage.cache_mib", format!("{cache_mib} is outside 4..=65536"));
    }
    let storage_engine = storage::storage_engine(raw.storage, raw.ha, problems);
    let aws_kms = aws_kms::aws_kms_config(raw.aws_kms, problems);
    let kek = kek_source(&raw.vault, &data_dir, &aws_kms, problems);
    if let Some(kek) = &kek {
        check_kek(kek, &data_dir, problems);
    }
    let auth = auth_config(raw.auth, problems);
    let migration = migration_settings(raw.migration, problems);
    let log = log::log_config(raw.log, problems);
    let keysets = load_keysets(raw.keys_dir.as_deref(), problems);
    let policy = load_policy(raw.policy_file.as_deref(), problems);
    if let Some(p) = &policy {
        check_token_keysets(p, &keysets, problems);
    }
    Some(Config {
        data_dir,
        issuer,
        public_base_url: public_base_url.trim_end_matches('/').to_owned(),
        listen_public: listen_public?,
        listen_admin: listen_admin?,
        body_limit: usize::try_from(body_limit).ok()?,
        connections,
        tls,
        store_cache_bytes: usize::try_from(cache_mib << 20).ok()?,
        storage_engine: storage_engine?,
        kek: kek?,
        keysets,
        policy: policy?,
        auth,
        aws_kms,
        migration,
        log,
    })
}

fn migration_settings(m: file::MigrationSection, problems: &mut Problems) -> Option<MigrationSettings> {
    if !m.enabled.unwrap_or(false) {
        return None;
    }
    let kid = m.kid.unwrap_or_else(|| "hs256-legacy".into());
    let kid_ok = !kid.is_empty()
        && kid.len() <= 128
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && crate::keys::Kid::parse(&kid).is_err();
    if !kid_ok {
        problems.add("migration.kid", "must be 1 to 128 of [A-Za-z0-9._-] and not look like a key thumbprint");
    }
    let legacy_ttl_cap = duration_or(problems, "migration.legacy_ttl_cap", m.legacy_ttl_cap, 86_400);
    Some(MigrationSettings {
        kid,
        secret_env: m.secret_env.unwrap_or_else(|| DEFAULT_HS256_SECRET_ENV.into()),
        legacy_ttl_cap,
    })
}

fn auth_config(a: file::AuthSection, problems: &mut Problems) -> AuthConfig {
    let burst = a.failure_burst.unwrap_or(20);
    if burst == 0 {
        problems.add("auth.failure_burst", "must be at least 1");
    }
    let refill = duration_or(problems, "auth.failure_refill", a.failure_refill, 3);
    let report_interval = duration_or(problems, "auth.failure_report_interval", a.failure_report_interval, 60);
    for (field, d) in [("auth.failure_refill", refill), ("auth.failure_report_interval", report_interval)] {
        if d.is_zero() {
            problems.add(field, "must be more than 0s");
        }
    }
    AuthConfig { limit: LimitPolicy { burst, refill_every: refill }, report_interval }
}

fn duration_or(problems: &mut Problems, field: &str, value: Option<DurationText>, default: u64) -> Duration {
    match value.map(|v| duration::parse(&v)) {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.add(field, e);
            Duration::from_secs(default)
        }
        None => Duration::from_secs(default),
    }
}

#[cfg(test)]
mod tests;
