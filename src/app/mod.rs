//! The composition root: the one place that opens the store, unlocks the
//! vault, builds the backends, the key ring and the routers, and runs the
//! listeners. `main` and the tests both go through [`App`].
//!
//! It wires and decides nothing: each background loop (rotation, token GC,
//! the HS256 sunset timer, auth-failure reports, the KMS orphan search) lives
//! with the module that owns its work and takes the shared shutdown signal;
//! the leader's loops run through `ha::leader_only`, and on PostgreSQL the
//! change feed keeps the caches current (`ha::follow`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api_keys::{ApiKeySecret, ApiKeys, TouchWriter};
use crate::auth_limit::{report_failures, AuthLimiter};
use crate::clock::Clock;
use crate::config::{Config, StorageEngine};
use crate::ha::{self, Leadership};
use crate::http::{self, AppState, Services};
use crate::identities::Identities;
use crate::keyring::RingError;
use crate::keys::Kid;
use crate::kms::OrphanSearch;
use crate::listener::{self, Listener};
use crate::metrics::Metrics;
use crate::migration::{Migration, MigrationConfig};
use crate::rotation::Rotation;
use crate::storage::{StorageError, Store};
use crate::tokens::TokenService;
use crate::vault::{self, KekSource, VaultError};
use zeroize::Zeroizing;

mod assemble;
pub mod copy;
mod postgres;
pub mod restore;
mod staging;
#[cfg(test)]
pub(crate) mod testing;
use assemble::{bootstrap, build_ring, open_store, token_keysets};
use staging::Staging;

/// How often expired token state is forgotten.
const GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("{path} is already initialized")]
    AlreadyInitialized { path: PathBuf },
    #[error("{path} is not initialized (run `kmsd init`)")]
    NotInitialized { path: PathBuf },
    #[error("PostgreSQL store {target} is already initialized")]
    AlreadyInitializedDb { target: String },
    #[error("PostgreSQL store {target} is not initialized (run `kmsd init`)")]
    NotInitializedDb { target: String },
    #[error(
        "store {store} does not exist but the KEK file {kek} does: an earlier store was deleted or moved. Restore it \
         from a backup, or to start a new, empty store under this KEK run: kmsd init --force-new-store"
    )]
    EarlierStore { store: PathBuf, kek: PathBuf },
    #[error("{what} {path} is accessible to group or others (mode {mode:o}); run: chmod {fix:o} {path}")]
    Permissions { what: &'static str, path: PathBuf, mode: u32, fix: u32 },
    #[error("bootstrap API key from KMSD_BOOTSTRAP_API_KEY is not a valid rak_ key: {0}")]
    BootstrapKey(crate::api_keys::ApiKeyFormatError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Rotation(#[from] crate::rotation::RotationError),
    #[error("HS256 migration: {0}")]
    Migration(#[from] crate::migration::MigrationError),
    #[error(transparent)]
    StorageEngine(#[from] crate::config::StorageConfigError),
}

/// What `init` created. The bootstrap key is only here when kmsd generated it.
#[derive(Debug)]
pub struct InitReport {
    pub bootstrap_key: Option<ApiKeySecret>,
    pub kids: Vec<Kid>,
}

pub struct App {
    state: AppState,
    touch_writer: TouchWriter,
    orphans: Option<OrphanSearch>,
    /// On PostgreSQL: the leader election and the change feed.
    replicas: Option<postgres::Replica>,
}

impl App {
    /// Whether the configured store exists (redb: its file; PostgreSQL: a
    /// database holding a wrapped data key).
    pub async fn is_initialized(config: &Config) -> Result<bool, AppError> {
        match &config.storage_engine {
            StorageEngine::Redb => Ok(config.store_path().exists()),
            StorageEngine::Postgres(pg) => postgres::is_initialized(pg).await,
        }
    }

    /// Creates the data dir (0700), the KEK file if configured, the store with
    /// the wrapped data key and a bootstrap admin API key, and the first key of
    /// every keyset. `bootstrap` supplies the admin key instead of generating one.
    ///
    /// All or nothing (see [`Staging`]): everything is built under staging
    /// names and put in place only once the first keys exist, so a failure
    /// (say, AWS KMS down at CreateKey) leaves no file behind and the next start
    /// is a first start again; the bootstrap key is returned only then, for the
    /// caller to print once. A KEK file that exists without a store is the sign
    /// of a deleted store: refused unless `force_new_store`, which makes a new
    /// store under that KEK.
    pub async fn init(
        config: &Config,
        clock: Arc<dyn Clock>,
        bootstrap: Option<&str>,
        force_new_store: bool,
    ) -> Result<InitReport, AppError> {
        let supplied = bootstrap.map(ApiKeySecret::parse).transpose().map_err(AppError::BootstrapKey)?;
        if let StorageEngine::Postgres(pg) = &config.storage_engine {
            return postgres::init(config, pg, clock, supplied).await;
        }
        let store_path = config.store_path();
        if store_path.exists() {
            return Err(AppError::AlreadyInitialized { path: config.data_dir.clone() });
        }
        if let KekSource::File(kek) = &config.kek {
            if kek.exists() && !force_new_store {
                return Err(AppError::EarlierStore { store: store_path, kek: kek.clone() });
            }
        }
        let staging = Staging::begin(config)?;
        let done = async {
            let report = Self::init_staged(config, &staging, clock, supplied).await?;
            staging.commit()?;
            Ok(report)
        }
        .await;
        if done.is_err() {
            staging.discard();
        }
        done
    }

    /// The work of [`App::init`], in the staged files. The data key is made
    /// and wrapped (perhaps by AWS KMS) before the store is created.
    async fn init_staged(
        config: &Config,
        staging: &Staging,
        clock: Arc<dyn Clock>,
        supplied: Option<ApiKeySecret>,
    ) -> Result<InitReport, AppError> {
        let (data_key, wrapped) = vault::new_data_key(&staging.kek_source(&config.kek)).await?;
        let store = Store::create(staging.store_path(), data_key.record_key())?;
        let (key, generated) = match supplied {
            Some(k) => (k, false),
            None => (ApiKeySecret::generate().map_err(AppError::BootstrapKey)?, true),
        };
        store.write(bootstrap(&key, wrapped, clock.now())).await?;
        let (ring, _) = build_ring(config, store, data_key, clock, Arc::default()).await?;
        let kids = ring.ensure_signers("system").await?;
        // The ring holds the last handle on the staged store: closed before
        // it is put in place.
        drop(ring);
        Ok(InitReport { bootstrap_key: generated.then_some(key), kids })
    }

    /// Opens an initialized data dir. The KEK is checked against the stored
    /// wrapped data key before the store is opened for writing, so a wrong KEK
    /// (or an AWS KMS that refuses or cannot be reached) changes nothing on disk.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<App, AppError> {
        let started = clock.now();
        let (store, data_key) = open_store(&config, started).await?;
        // The change feed listens from here on, before any cache loads, so
        // every change committed after a cache read its state reaches it.
        let replica = match &config.storage_engine {
            StorageEngine::Redb => None,
            StorageEngine::Postgres(pg) => Some(postgres::replica(pg).await?),
        };
        let metrics = Arc::new(Metrics::new());
        let observed = metrics.clone();
        store.observe_audit(Box::new(move |e| {
            observed.audited(e.action.as_str(), e.detail.get("keyset").and_then(serde_json::Value::as_str));
        }));
        let (ring, kms) = build_ring(&config, store.clone(), data_key, clock.clone(), metrics.clone()).await?;
        let ring = Arc::new(ring);
        // Keys created from now on (by this process) are younger than
        // `started`; the grace covers other replicas sharing the store.
        let orphans = kms
            .filter(|_| config.aws_kms.orphan_cleanup)
            .map(|kms| OrphanSearch { kms, created_before: started.minus(config.aws_kms.orphan_grace) });
        let rotation = Rotation::start(
            ring.clone(),
            store.clone(),
            clock.clone(),
            config.policy.rotation.clone(),
            config.policy.jwks.clone(),
        )
        .await?;
        // Catch up at once: a keyset without a signer gets one, overdue
        // rotations and destructions happen before the first request. If a
        // keyset's backend cannot do it now (AWS KMS unreachable), kmsd starts
        // anyway: `/readyz` says what is missing and the rotation loop retries.
        // Of several replicas, only the leader rotates: its loop catches up
        // as soon as it leads.
        if replica.is_none() {
            let caught_up = rotation.tick().await;
            for done in caught_up.applied {
                tracing::info!(action = %done, "rotation caught up");
            }
            for (keyset, e) in caught_up.failed {
                tracing::error!(keyset = %keyset, error = %e, "rotation could not catch up at start; the rotation loop retries");
            }
        }
        let (api_keys, touch_writer) = ApiKeys::new(store.clone());
        let identities = Identities::load(store.clone()).await?;
        let token_keysets = token_keysets(&config);
        let migration = match &config.migration {
            Some(m) => {
                let settings = MigrationConfig {
                    kid: m.kid.clone(),
                    secret: std::env::var(&m.secret_env)
                        .ok()
                        .filter(|s| !s.is_empty())
                        .map(|s| Zeroizing::new(s.into_bytes())),
                    legacy_ttl_cap: m.legacy_ttl_cap,
                    skew: config.policy.tokens.skew,
                    publish_lead: config.policy.rotation.publish_lead,
                };
                Some(Arc::new(Migration::start(store.clone(), clock.clone(), settings).await?))
            }
            None => None,
        };
        let tokens = TokenService::start(
            ring.clone(),
            identities,
            store.clone(),
            clock.clone(),
            config.policy.tokens.clone(),
            config.issuer.clone(),
            token_keysets,
            migration,
        )
        .await?;
        let leadership = replica.as_ref().map_or(Leadership::Sole, postgres::Replica::leadership);
        let state = AppState::new(Services {
            leadership,
            rotation: Arc::new(rotation),
            tokens: Arc::new(tokens),
            limiter: Arc::new(AuthLimiter::new(config.auth.limit)),
            metrics,
            config: Arc::new(config),
            clock,
            api_keys,
            store,
            ring,
        });
        Ok(App { state, touch_writer, orphans, replicas: replica })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the public and admin routers until `shutdown` resolves, then
    /// stops accepting, drains for `http.drain_timeout` and closes the rest
    /// (see [`listener`]). `tls` is what [`listener::TlsReload::load`] read
    /// from the config; its files are watched for a change while serving.
    pub async fn serve(
        self,
        public: TcpListener,
        admin: TcpListener,
        tls: listener::TlsReload,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let limits = self.state.config.connections.clone();
        let caps = listener::Budgets::for_process(&limits);
        let public = listener::serve(
            Listener { name: "public", tcp: public, max_connections: caps.public, tls: tls.public.clone() },
            http::public_router(self.state.clone()),
            limits.clone(),
            rx.clone(),
        );
        let admin = listener::serve(
            Listener { name: "admin", tcp: admin, max_connections: caps.admin, tls: tls.admin.clone() },
            http::admin_router(self.state.clone()),
            limits,
            rx.clone(),
        );
        // The background work, each piece started by its owner and stopped
        // by the same shutdown signal.
        let st = &self.state;
        let certificates = tokio::spawn(tls.watch(rx.clone()));
        let touches = tokio::spawn(self.touch_writer.run(rx.clone()));
        let every = st.config.auth.report_interval;
        let reports =
            tokio::spawn(report_failures(st.limiter.clone(), st.store.clone(), st.clock.clone(), every, rx.clone()));
        // Leader work: on one replica at a time (see `ha`).
        let led = |name| (st.leadership.clone(), name, rx.clone());
        let (tokens, tick) = (st.tokens.clone(), st.config.policy.tick);
        let gc = spawn_led(led("token gc"), move |stop| tokens.clone().collect_garbage_every(GC_INTERVAL, stop));
        let rotation_loop = st.rotation.clone();
        let rotation = spawn_led(led("rotation"), move |stop| rotation_loop.clone().run(tick, stop));
        let orphans = self.orphans.map(|o| {
            let (store, clock) = (st.store.clone(), st.clock.clone());
            spawn_led(led("kms orphan cleanup"), move |stop| o.clone().run(store.clone(), clock.clone(), stop))
        });
        let sunset = st
            .tokens
            .migration()
            .cloned()
            .map(|m| spawn_led(led("hs256 sunset timer"), move |stop| m.clone().run_sunset_timer(tick, stop)));
        let (feed, elector) = match self.replicas {
            Some(r) => {
                let caches = ha::follow::Caches::new(st.rotation.clone(), st.tokens.clone(), st.api_keys.clone());
                (Some(tokio::spawn(ha::follow::follow(r.feed, caches, rx.clone()))), Some(r.elector))
            }
            None => (None, None),
        };
        // Listening and serving: what systemd's Type=notify waits for.
        crate::notify::notify(crate::notify::READY);
        tokio::spawn(async move {
            shutdown.await;
            crate::notify::notify(crate::notify::STOPPING);
            let _ = tx.send(true);
        });
        tokio::join!(public, admin);
        let _ = tokio::join!(certificates, touches, reports, gc, rotation);
        for task in [orphans, sunset, feed].into_iter().flatten() {
            let _ = task.await;
        }
        // Released, so another replica leads at once rather than after the
        // lease runs out.
        if let Some(elector) = elector {
            elector.stop().await;
        }
        Ok(())
    }
}

/// Spawns the background loop `work` to run while this replica leads
/// (see [`ha::leader_only`]).
fn spawn_led<F, Fut>(
    (leadership, name, shutdown): (Leadership, &'static str, tokio::sync::watch::Receiver<bool>),
    work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(tokio::sync::watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(ha::leader_only(leadership, name, shutdown, work))
}
