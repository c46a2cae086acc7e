//! The AWS KMS backend: private keys are created in KMS and never leave it;
//! kmsd keeps only the KMS key id and the public key, read once.
//!
//! - Keys are `SIGN_VERIFY` keys of the [`KeySpec`] of their keyset, tagged
//!   `kmsd:managed=true`, `kmsd:keyset=<keyset>` and, once the public key is
//!   known, `kmsd:kid=<kid>` (plus `kmsd:instance=<instance>` if configured).
//!   The alias `alias/kmsd-[<instance>-]<keyset>` follows the newest key.
//! - RS256 and ES256 sign a SHA-256 digest (`MessageType=DIGEST`); EdDSA signs
//!   the raw message (at most 4096 bytes, a KMS limit). ECDSA signatures come
//!   back DER-encoded and leave as JOSE `r || s`. Every signature is verified
//!   here against the public key before it is returned.
//! - Every call has a per-attempt timeout and a total cap; only transient
//!   failures are retried (by the SDK, standard mode).
//! - Signing spends from kmsd's own budget per quota class (RSA, ECC), so a
//!   spent budget is [`BackendError::Throttled`] and KMS is not called.
//!
//! - [`KmsKek`] is the other use of KMS: a symmetric key that wraps the
//!   vault's data key (envelope encryption, see [`envelope`]).
//!
//! - [`OrphanSearch`] runs [`AwsKmsBackend::clean_orphans`] once at startup
//!   (`serve` starts it), with the store's records and a grace, and audits it.
//!
//! Not here: deciding when keys rotate or are destroyed (rotation and the key
//! ring).

mod budget;
mod der;
pub mod envelope;
mod error;
mod inventory;
mod keys;
mod orphans;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::Region;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::Client;

pub use budget::{Budget, TokenBucket};
pub use der::DerError;
pub use envelope::{KmsEnvelope, KmsKek};
pub use error::{Class, KmsFailure};
pub use inventory::{known_key_ids, OrphanKey};
pub use orphans::OrphanSearch;

use crate::backend::LoadedKeys;
use crate::keys::{KeySpec, KeysetName, PublicKey};

const NAME: &str = "aws-kms";
/// KMS refuses a RAW message longer than this (Sign API, `Message`).
pub const MAX_RAW_MESSAGE: usize = 4096;

pub const TAG_MANAGED: &str = "kmsd:managed";
pub const TAG_KEYSET: &str = "kmsd:keyset";
pub const TAG_KID: &str = "kmsd:kid";
pub const TAG_INSTANCE: &str = "kmsd:instance";

/// The trusted `[aws_kms]` settings, for the backend and for a vault KEK in KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// Overrides the region of the credential chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Overrides the endpoint (`AWS_ENDPOINT_URL_KMS`, else AWS's).
    pub endpoint_url: Option<String>,
    /// Per attempt; the whole call is capped at `attempts * timeout` plus backoff.
    pub timeout: Duration,
    /// Attempts per call, transient failures only. `None`: the SDK's setting
    /// (`AWS_MAX_ATTEMPTS`, the profile), else 3.
    pub max_attempts: Option<u32>,
    pub rsa_budget: Budget,
    pub ecc_budget: Budget,
    /// ScheduleKeyDeletion's pending window, 7..=30.
    pub deletion_window_days: i32,
    /// Separates deployments that share an account and region: tags, alias
    /// and orphan search are scoped to it.
    pub instance: Option<String>,
    /// Whether `kmsd serve` schedules the deletion of orphaned keys at startup.
    pub orphan_cleanup: bool,
    /// Only keys created at least this long before startup can be orphans: a
    /// key another replica sharing the store has just created may not be
    /// recorded yet.
    pub orphan_grace: Duration,
}

impl Default for AwsKmsConfig {
    /// AWS's default quotas are 500 RSA and 300 ECC signatures per second per
    /// account and region, shared with every other caller: kmsd takes half.
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            timeout: Duration::from_secs(2),
            max_attempts: None,
            rsa_budget: Budget { rate: 250, burst: 50 },
            ecc_budget: Budget { rate: 150, burst: 50 },
            deletion_window_days: 30,
            instance: None,
            orphan_cleanup: true,
            orphan_grace: Duration::from_secs(600),
        }
    }
}

/// What kmsd knows about a loaded key.
#[derive(Debug)]
struct LoadedKey {
    key_id: String,
    spec: KeySpec,
    public: PublicKey,
}

pub struct AwsKmsBackend {
    client: Client,
    /// Where `client` sends requests, for error messages.
    endpoint: String,
    config: AwsKmsConfig,
    rsa: TokenBucket,
    ecc: TokenBucket,
    loaded: LoadedKeys<LoadedKey>,
    sign_requests: AtomicU64,
}

impl AwsKmsBackend {
    /// Uses the standard AWS credential chain and region resolution, with
    /// `config`'s region and endpoint if set.
    pub async fn connect(config: AwsKmsConfig) -> Self {
        Self::from_sdk_config(&load_sdk_config(&config).await, config)
    }

    /// Uses an SDK configuration built by the caller (its credentials and
    /// region), with `config`'s region, endpoint, timeouts and retries on top.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: AwsKmsConfig) -> Self {
        Self {
            client: client(sdk, &config),
            endpoint: endpoint(sdk, &config),
            rsa: TokenBucket::new(config.rsa_budget),
            ecc: TokenBucket::new(config.ecc_budget),
            config,
            loaded: LoadedKeys::default(),
            sign_requests: AtomicU64::new(0),
        }
    }

    /// How many Sign requests this backend has sent to KMS.
    pub fn sign_requests(&self) -> u64 {
        self.sign_requests.load(Ordering::Relaxed)
    }

    /// The alias that follows the newest key of `keyset`.
    pub fn alias(&self, keyset: &KeysetName) -> String {
        match &self.config.instance {
            Some(instance) => format!("alias/kmsd-{instance}-{keyset}"),
            None => format!("alias/kmsd-{keyset}"),
        }
    }

    /// A failed call of `op`, naming this backend's endpoint.
    fn failure<E>(&self, op: &'static str, err: SdkError<E, HttpResponse>) -> KmsFailure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        KmsFailure::from_sdk(op, err).at(&self.endpoint)
    }
}

/// The standard AWS credential chain and region resolution; a region set in
/// `[aws_kms]` is given to the loader, so its default chain (environment,
/// profile, then IMDS, once for the config and once more for the credential
/// chain) is not asked for one.
async fn load_sdk_config(config: &AwsKmsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    loader.load().await
}

/// Where a client on `sdk` with `config` sends its requests, as the SDK
/// chooses: the `[aws_kms]` endpoint, else `AWS_ENDPOINT_URL_KMS`, else the
/// general endpoint override (`AWS_ENDPOINT_URL`, the profile), else AWS's
/// endpoint for the region.
fn endpoint(sdk: &aws_config::SdkConfig, config: &AwsKmsConfig) -> String {
    let region = config.region.clone().or_else(|| sdk.region().map(ToString::to_string));
    config
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_KMS").ok().filter(|url| !url.is_empty()))
        .or_else(|| sdk.endpoint_url().map(str::to_owned))
        .or_else(|| region.map(|r| format!("https://kms.{r}.amazonaws.com")))
        .unwrap_or_else(|| "AWS KMS (no region configured)".to_owned())
}

/// A KMS client on `sdk` with `config`'s region, endpoint, timeouts and
/// retries: each attempt is capped at `timeout`, the whole call at
/// `attempts * timeout` plus backoff.
fn client(sdk: &aws_config::SdkConfig, config: &AwsKmsConfig) -> Client {
    let attempts =
        config.max_attempts.or_else(|| sdk.retry_config().map(RetryConfig::max_attempts)).unwrap_or(3).max(1);
    let max_backoff = Duration::from_secs(1);
    let total = config.timeout.saturating_mul(attempts) + max_backoff.saturating_mul(attempts - 1);
    let mut builder = aws_sdk_kms::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(attempts).with_max_backoff(max_backoff))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.timeout)
                .operation_attempt_timeout(config.timeout)
                .operation_timeout(total)
                .build(),
        );
    if let Some(region) = &config.region {
        builder = builder.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        builder = builder.endpoint_url(url.clone());
    }
    Client::from_conf(builder.build())
}
