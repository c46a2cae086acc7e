//! What the files say: the config file, keyset declarations and policy, as
//! parsed, before anything is trusted. Every field is optional here so that a
//! missing value falls back to its default and a wrong one is reported with
//! the others; unknown fields are collected (not silently dropped) by
//! [`super::parse_table`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConfigFile {
    /// Config format version; only 1 exists.
    pub version: Option<u32>,
    pub data_dir: Option<String>,
    pub issuer: Option<String>,
    pub public_base_url: Option<String>,
    pub keys_dir: Option<String>,
    pub policy_file: Option<String>,
    pub listen: ListenSection,
    pub http: HttpSection,
    pub storage: StorageSection,
    pub ha: HaSection,
    pub vault: VaultSection,
    pub auth: AuthSection,
    pub aws_kms: AwsKmsSection,
    pub migration: MigrationSection,
    pub log: super::log::LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MigrationSection {
    pub enabled: Option<bool>,
    pub kid: Option<String>,
    pub secret_env: Option<String>,
    pub legacy_ttl_cap: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthSection {
    pub failure_burst: Option<u32>,
    pub failure_refill: Option<DurationText>,
    pub failure_report_interval: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListenSection {
    pub public: Option<String>,
    pub admin: Option<String>,
    /// Default: derived from the file-descriptor limit at start.
    pub public_max_connections: Option<u64>,
    pub admin_max_connections: Option<u64>,
    /// TLS for the public listener: PEM certificate chain and private key.
    pub public_tls_cert: Option<String>,
    pub public_tls_key: Option<String>,
    /// TLS for the admin listener, and the CA whose client certificates it
    /// requires (mTLS) when set.
    pub admin_tls_cert: Option<String>,
    pub admin_tls_key: Option<String>,
    pub admin_client_ca: Option<String>,
    /// Allows a non-loopback admin listener without TLS.
    pub admin_insecure: Option<bool>,
    /// How often the certificate files are checked for a change.
    pub tls_reload_interval: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpSection {
    pub body_limit_bytes: Option<u64>,
    pub header_read_timeout: Option<DurationText>,
    pub idle_timeout: Option<DurationText>,
    pub request_timeout: Option<DurationText>,
    pub drain_timeout: Option<DurationText>,
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StorageSection {
    pub cache_mib: Option<u64>,
    /// `redb` (default) or `postgres`.
    pub engine: Option<String>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub pool_size: Option<u64>,
    pub statement_timeout: Option<DurationText>,
    /// `verify-full` or `disable` (default: `disable` for this machine,
    /// `verify-full` for any other host).
    pub tls: Option<String>,
    pub ca_file: Option<String>,
}

/// `[ha]`: several replicas on one PostgreSQL (engine = "postgres" only).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HaSection {
    /// This replica's name among the replicas (default: host name and pid).
    pub replica: Option<String>,
    /// How soon another replica leads after the leader is lost.
    pub failover: Option<DurationText>,
    /// How often every cache is reloaded from the store in full.
    pub resync: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VaultSection {
    /// `file` (default), `env`, `passphrase` or `aws-kms`.
    pub kek: Option<String>,
    pub kek_file: Option<String>,
    pub kek_env: Option<String>,
    pub passphrase_env: Option<String>,
    /// The KMS key for `kek = "aws-kms"`: key id, key ARN, alias or alias ARN.
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AwsKmsSection {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub timeout: Option<DurationText>,
    pub max_attempts: Option<u32>,
    pub sign_rate_rsa: Option<u32>,
    pub sign_rate_ecc: Option<u32>,
    pub burst: Option<u32>,
    pub deletion_window_days: Option<u32>,
    pub instance: Option<String>,
    pub orphan_cleanup: Option<bool>,
    pub orphan_grace: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeysetFile {
    pub name: Option<String>,
    pub algorithm: Option<String>,
    pub rsa_bits: Option<u32>,
    pub backend: Option<String>,
    pub schedule: Option<String>,
    /// `tokens` (default) or `sign`.
    #[serde(rename = "use")]
    pub usage: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyFile {
    pub tokens: TokensSection,
    pub jwks: JwksSection,
    pub rotation: RotationSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokensSection {
    pub access_ttl_default: Option<DurationText>,
    pub access_ttl_max: Option<DurationText>,
    pub refresh_ttl_default: Option<DurationText>,
    pub refresh_ttl_max: Option<DurationText>,
    pub skew: Option<DurationText>,
    pub refresh_reuse_grace: Option<DurationText>,
    pub keysets: TokenKeysetsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenKeysetsSection {
    #[serde(rename = "RS256")]
    pub rs256: Option<String>,
    #[serde(rename = "EdDSA")]
    pub eddsa: Option<String>,
    pub refresh: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JwksSection {
    pub max_age_cap: Option<DurationText>,
    pub verifier_cache: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RotationSection {
    pub publish_lead: Option<DurationText>,
    pub overlap: Option<DurationText>,
    pub destroy_delay: Option<DurationText>,
    pub margin: Option<DurationText>,
    pub unsafe_allow_short_publish_lead: Option<bool>,
    /// How often the reconcile loop runs.
    pub tick: Option<DurationText>,
}

/// A duration as written: `"90s"`, `"15m"`, `"2h"`, `"31d"` or plain seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(u64),
    Text(String),
}
