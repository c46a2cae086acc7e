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
mod file;
mod policy;
mod storage;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use connections::ConnectionLimits;
pub use duration::render as render_duration;
pub use policy::{JwksPolicy, Policy, RotationPolicy, TokenPolicy};
pub use storage::{PostgresSettings, StorageConfigError, StorageEngine, UrlSource, DEFAULT_STORAGE_URL_ENV};

use crate::auth_limit::LimitPolicy;

use crate::keys::{BackendKind, KeySpec, KeysetName};
use crate::kms::{AwsKmsConfig, KmsKek};
use crate::storage::STORE_FILE;
use crate::vault::KekSource;
use file::{ConfigFile, DurationText, KeysetFile, PolicyFile};

/// Built-in keyset declarations and policy (the files under `keys/` and `policy/`).
pub const DEFAULT_KEYSETS: &[(&str, &str)] = &[
    ("keys/access.toml", include_str!("../../keys/access.toml")),
    ("keys/edge.toml", include_str!("../../keys/edge.toml")),
    ("keys/refresh.toml", include_str!("../../keys/refresh.toml")),
    ("keys/sign.toml", include_str!("../../keys/sign.toml")),
];
pub const DEFAULT_POLICY: (&str, &str) = ("policy/default.toml", include_str!("../../policy/default.toml"));

/// Environment variables that are not overrides.
const RESERVED_ENV: &[&str] = &["KMSD_CONFIG", "KMSD_LOG", "KMSD_BOOTSTRAP_API_KEY", "KMSD_ADMIN_API_KEY"];
pub const DEFAULT_KEK_ENV: &str = "KMSD_VAULT_KEK";
pub const DEFAULT_PASSPHRASE_ENV: &str = "KMSD_VAULT_PASSPHRASE";

/// A keyset as the program trusts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyset {
    pub name: KeysetName,
    pub spec: KeySpec,
    pub backend: BackendKind,
    pub schedule: Option<String>,
    pub usage: KeyUse,
}

/// What a keyset's keys sign (`use` in its declaration), never both: a raw
/// signature by a token key over a JWT signing input is a forged token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyUse {
    /// Tokens kmsd issues; published in `/.well-known/jwks.json`.
    #[default]
    Tokens,
    /// Raw signatures (`POST /v1/sign`); published in the keyset's own JWKS,
    /// never trusted for tokens.
    Sign,
}

impl KeyUse {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Sign => "sign",
        }
    }
}

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

fn apply_env(table: &mut toml::Table, env: &[(String, String)], problems: &mut Problems) {
    let named = |section: &str, field: &str| {
        table
            .get(section)
            .and_then(|v| v.as_table())
            .and_then(|t| t.get(field))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let secret_vars: Vec<String> =
        [named("vault", "kek_env"), named("vault", "passphrase_env"), named("migration", "secret_env")]
            .into_iter()
            .flatten()
            .chain([storage::url_env_name(named("storage", "url_env").as_deref())])
            .chain([DEFAULT_KEK_ENV, DEFAULT_PASSPHRASE_ENV, DEFAULT_HS256_SECRET_ENV].map(str::to_owned))
            .collect();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("KMSD_") else { continue };
        if RESERVED_ENV.contains(&name.as_str()) || secret_vars.contains(name) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            problems.add(name.clone(), "malformed override name");
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        if !set_path(table, &path, parsed) {
            problems.add(name.clone(), "overrides a value that is not a section");
        }
    }
}

/// Sets `path` (section names, then a field) in `table`, creating sections.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [field] => {
            table.insert(field.clone(), value);
            true
        }
        [section, rest @ ..] => {
            match table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut()
            {
                Some(t) => set_path(t, rest, value),
                None => false,
            }
        }
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
    let listen_public = addr("listen.public", raw.listen.public, "127.0.0.1:8787", problems);
    let listen_admin = addr("listen.admin", raw.listen.admin, "127.0.0.1:8788", problems);
    let issuer = raw.issuer.unwrap_or_else(|| "https://relayauth.dev".into());
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        problems.add("issuer", format!("{issuer:?} is not an http(s) URL"));
    }
    let public_base_url = raw.public_base_url.unwrap_or_else(|| {
        format!("http://{}", listen_public.map_or_else(|| "127.0.0.1:8787".into(), |a| a.to_string()))
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
    let storage_engine = storage::storage_engine(raw.storage, problems);
    let aws_kms = aws_kms::aws_kms_config(raw.aws_kms, problems);
    let kek = kek_source(&raw.vault, &data_dir, &aws_kms, problems);
    if let Some(kek) = &kek {
        check_kek(kek, &data_dir, problems);
    }
    let auth = auth_config(raw.auth, problems);
    let migration = migration_settings(raw.migration, problems);
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
        store_cache_bytes: usize::try_from(cache_mib << 20).ok()?,
        storage_engine: storage_engine?,
        kek: kek?,
        keysets,
        policy: policy?,
        auth,
        aws_kms,
        migration,
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

/// A keyset named for tokens must sign with the algorithm it is named for. A
/// keyset that is not declared just leaves that kind of token unavailable.
fn check_token_keysets(policy: &Policy, keysets: &[Keyset], problems: &mut Problems) {
    let wanted = [
        ("RS256", Some(crate::keys::Algorithm::Rs256)),
        ("EdDSA", Some(crate::keys::Algorithm::EdDsa)),
        ("refresh", None),
    ];
    for ((field, alg), name) in wanted.iter().zip(&policy.tokens.keysets) {
        let Some(ks) = keysets.iter().find(|k| k.name.as_str() == name) else { continue };
        if ks.usage == KeyUse::Sign {
            problems.add(
                format!("tokens.keysets.{field}"),
                format!("keyset {name} is declared use = \"sign\" (raw signing), so it cannot sign tokens"),
            );
        }
        if alg.is_some_and(|a| ks.spec.algorithm() != a) {
            problems.add(
                format!("tokens.keysets.{field}"),
                format!("keyset {name} signs {}, not {field}", ks.spec.algorithm().as_str()),
            );
        }
    }
}

fn kek_source(
    v: &file::VaultSection,
    data_dir: &Path,
    aws_kms: &AwsKmsConfig,
    problems: &mut Problems,
) -> Option<KekSource> {
    let kek = v.kek.as_deref().unwrap_or("file");
    if kek != "aws-kms" && v.kms_key_id.is_some() {
        problems.add("vault.kms_key_id", format!("only applies to kek = \"aws-kms\", not {kek:?}"));
    }
    match kek {
        "file" => Some(KekSource::File(v.kek_file.as_ref().map_or_else(|| data_dir.join("vault.kek"), PathBuf::from))),
        "env" => Some(KekSource::Env(v.kek_env.clone().unwrap_or_else(|| DEFAULT_KEK_ENV.into()))),
        "passphrase" => {
            Some(KekSource::Passphrase(v.passphrase_env.clone().unwrap_or_else(|| DEFAULT_PASSPHRASE_ENV.into())))
        }
        "aws-kms" => match v.kms_key_id.as_deref().map(|id| (id, crate::kms::envelope::check_key_id(id))) {
            Some((id, Ok(()))) => Some(KekSource::AwsKms(KmsKek { key_id: id.to_owned(), settings: aws_kms.clone() })),
            Some((_, Err(e))) => {
                problems.add("vault.kms_key_id", e);
                None
            }
            None => {
                problems
                    .add("vault.kms_key_id", "missing: kek = \"aws-kms\" needs the KMS key that wraps the data key");
                None
            }
        },
        other => {
            problems.add(
                "vault.kek",
                format!("{other:?} is not a KEK source (use \"file\", \"env\", \"passphrase\" or \"aws-kms\")"),
            );
            None
        }
    }
}

/// The KEK must be usable whenever it will be needed: always for an existing
/// store; for a new one, a key file may be missing (init creates it).
fn check_kek(kek: &KekSource, data_dir: &Path, problems: &mut Problems) {
    let store_exists = data_dir.join(STORE_FILE).exists();
    let file_missing = matches!(kek, KekSource::File(p) if !p.exists());
    if file_missing && !store_exists {
        return;
    }
    if let Err(e) = kek.check() {
        let field = match kek {
            KekSource::File(_) => "vault.kek_file",
            KekSource::Env(_) => "vault.kek_env",
            KekSource::Passphrase(_) => "vault.passphrase_env",
            KekSource::AwsKms(_) => "vault.kms_key_id",
        };
        problems.add(field, e.to_string());
    }
}

fn load_keysets(dir: Option<&str>, problems: &mut Problems) -> Vec<Keyset> {
    let files: Vec<(String, String)> = match dir {
        None => DEFAULT_KEYSETS.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect(),
        Some(dir) => read_toml_dir(dir, "keys_dir", problems),
    };
    let mut out: Vec<Keyset> = Vec::new();
    for (origin, text) in files {
        let table = parse_toml(&text, &origin, problems);
        let Some(raw) = deserialize::<KeysetFile>(table, &origin, problems) else { continue };
        if let Some(ks) = keyset(raw, &origin, problems) {
            if out.iter().any(|k| k.name == ks.name) {
                problems.add(join(&origin, "name"), format!("keyset {} is declared twice", ks.name));
            } else {
                out.push(ks);
            }
        }
    }
    if out.is_empty() && problems.0.is_empty() {
        problems.add("keys_dir", "declares no keysets");
    }
    out
}

fn read_toml_dir(dir: &str, field: &str, problems: &mut Problems) -> Vec<(String, String)> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect()
        }
        Err(e) => {
            problems.add(field, format!("cannot read directory {dir}: {e}"));
            return Vec::new();
        }
    };
    entries.sort();
    entries
        .into_iter()
        .filter_map(|p| match std::fs::read_to_string(&p) {
            Ok(t) => Some((p.display().to_string(), t)),
            Err(e) => {
                problems.add(p.display().to_string(), format!("cannot read: {e}"));
                None
            }
        })
        .collect()
}

fn keyset(raw: KeysetFile, origin: &str, problems: &mut Problems) -> Option<Keyset> {
    let name = match raw.name.as_deref().map(KeysetName::parse) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            problems.add(join(origin, "name"), e.to_string());
            None
        }
        None => {
            problems.add(join(origin, "name"), "missing");
            None
        }
    };
    let spec = match (raw.algorithm.as_deref(), raw.rsa_bits) {
        (Some("RS256"), bits) => match bits.unwrap_or(3072) {
            2048 => Some(KeySpec::Rsa2048),
            3072 => Some(KeySpec::Rsa3072),
            4096 => Some(KeySpec::Rsa4096),
            other => {
                problems
                    .add(join(origin, "rsa_bits"), format!("RSA-{other} is not supported (use 2048, 3072 or 4096)"));
                None
            }
        },
        (Some(alg @ ("EdDSA" | "ES256")), bits) => {
            if bits.is_some() {
                problems.add(join(origin, "rsa_bits"), format!("only applies to RS256, not {alg}"));
            }
            Some(if alg == "EdDSA" { KeySpec::Ed25519 } else { KeySpec::P256 })
        }
        (Some(other), _) => {
            problems.add(
                join(origin, "algorithm"),
                format!("{other:?} is not supported (use \"RS256\", \"EdDSA\" or \"ES256\")"),
            );
            None
        }
        (None, _) => {
            problems.add(join(origin, "algorithm"), "missing");
            None
        }
    };
    let backend = match raw.backend.as_deref().unwrap_or("vault") {
        "vault" => Some(BackendKind::Vault),
        "aws-kms" => Some(BackendKind::AwsKms),
        other => {
            problems.add(
                join(origin, "backend"),
                format!("{other:?} is not an available backend (use \"vault\" or \"aws-kms\")"),
            );
            None
        }
    };
    if let Some(Err(e)) = raw.schedule.as_deref().map(crate::rotation::CronSchedule::parse) {
        problems.add(join(origin, "schedule"), e);
    }
    let usage = match raw.usage.as_deref().unwrap_or("tokens") {
        "tokens" => Some(KeyUse::Tokens),
        "sign" => Some(KeyUse::Sign),
        other => {
            problems.add(join(origin, "use"), format!("{other:?} is not a key use (use \"tokens\" or \"sign\")"));
            None
        }
    };
    Some(Keyset { name: name?, spec: spec?, backend: backend?, schedule: raw.schedule, usage: usage? })
}

fn load_policy(path: Option<&str>, problems: &mut Problems) -> Option<Policy> {
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
            keysets: [
                t.keysets.rs256.unwrap_or_else(|| "access".into()),
                t.keysets.eddsa.unwrap_or_else(|| "edge".into()),
                t.keysets.refresh.unwrap_or_else(|| "refresh".into()),
            ],
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
mod tests;
