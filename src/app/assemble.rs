//! The pieces [`App::init`](super::App::init) and [`App::open`](super::App::open)
//! are assembled from: the configured store opened under its KEK, the
//! first writes of a new store, the key ring over the configured backends,
//! and which keysets sign which tokens.

use std::sync::Arc;

use super::staging::check_private;
use super::{postgres, AppError};
use crate::api_keys::{ApiKeyRecord, ApiKeySecret, OrgId};
use crate::audit::{AuditAction, AuditEvent};
use crate::backend::{Guarded, KeyBackend};
use crate::clock::Clock;
use crate::config::{Config, StorageEngine};
use crate::keyring::{Backends, KeyRing};
use crate::keys::{BackendKind, KeysetName};
use crate::kms::AwsKmsBackend;
use crate::metrics::Metrics;
use crate::scopes::UNIVERSAL;
use crate::storage::Store;
use crate::tokens::TokenKeysets;
use crate::vault::{self, DataKey, VaultBackend};

/// The configured store, opened with its data key (unwrapped by the KEK
/// before the store is opened for writing; the open checks every record).
/// `now` dates the upgrade of a redb store written before record MACs.
pub(super) async fn open_store(config: &Config, now: crate::clock::Timestamp) -> Result<(Store, DataKey), AppError> {
    match &config.storage_engine {
        StorageEngine::Redb => {
            let path = config.store_path();
            if !path.exists() {
                return Err(AppError::NotInitialized { path: config.data_dir.clone() });
            }
            check_private(&config.data_dir, "data dir", 0o700)?;
            check_private(&path, "store", 0o600)?;
            let data_key = vault::unlock(&path, &config.kek).await?;
            Ok((Store::open(&path, config.store_cache_bytes, data_key.record_key(), now)?, data_key))
        }
        StorageEngine::Postgres(pg) => postgres::open(config, pg).await,
    }
}

/// The first writes of a new store: the wrapped data key and the bootstrap
/// admin API key `key`, each audited, in one transaction.
pub(super) fn bootstrap(
    key: &ApiKeySecret,
    wrapped: vault::WrappedDataKey,
    now: crate::clock::Timestamp,
) -> impl FnOnce(&mut crate::storage::Writer) -> Result<(), AppError> + Send + 'static {
    let record = ApiKeyRecord::new(key, &OrgId::default_org(), "bootstrap-admin", vec![UNIVERSAL.to_owned()], now);
    move |w| {
        vault::init(w, &wrapped)?;
        w.put_api_key(&record)?;
        w.audit(AuditEvent::new(now, "system", AuditAction::VaultInit).target("vault"))?;
        w.audit(
            AuditEvent::new(now, "system", AuditAction::ApiKeyCreate)
                .target(record.id.as_str())
                .detail(serde_json::json!({ "name": record.name, "scopes": record.scopes })),
        )?;
        Ok(())
    }
}

/// Which declared keysets sign which tokens (a missing one disables that kind).
pub(super) fn token_keysets(config: &Config) -> TokenKeysets<Option<KeysetName>> {
    let pick = |name: &String| {
        let found = config.keysets.iter().find(|k| k.name.as_str() == name);
        if found.is_none() {
            tracing::warn!(keyset = %name, "token keyset is not declared; that kind of token cannot be issued");
        }
        found.map(|k| k.name.clone())
    };
    config.policy.tokens.keysets.map(pick)
}

/// The key ring over the configured backends, and the AWS KMS backend if a
/// keyset uses it.
pub(super) async fn build_ring(
    config: &Config,
    store: Store,
    data_key: DataKey,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Result<(KeyRing, Option<Arc<AwsKmsBackend>>), AppError> {
    let vault: Arc<dyn KeyBackend> = Arc::new(VaultBackend::new(data_key));
    let mut backends = Backends::default().with(Guarded::new(vault));
    let mut kms = None;
    // Only a deployment that declares an AWS KMS keyset needs AWS at all.
    if config.keysets.iter().any(|k| k.backend == BackendKind::AwsKms) {
        let backend = Arc::new(AwsKmsBackend::connect(config.aws_kms.clone()).await);
        backends = backends.with(Guarded::new(backend.clone()));
        kms = Some(backend);
    }
    Ok((KeyRing::open(store, backends, config.keysets.clone(), clock, metrics).await?, kms))
}
