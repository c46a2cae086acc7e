//! The composition root on PostgreSQL (`[storage] engine = "postgres"`): the
//! store is a database that replicas share, so nothing is staged in the data
//! dir. `init` makes the data key and the bootstrap admin key in one
//! transaction, which only the first of several replicas starting at once
//! commits (the others join it); `open` unwraps the stored data key with the
//! KEK before anything is written, so a replica with a wrong KEK refuses to
//! start and changes nothing.

use std::sync::Arc;

use super::{bootstrap, build_ring, AppError, InitReport};
use crate::api_keys::ApiKeySecret;
use crate::clock::Clock;
use crate::config::{Config, PostgresSettings};
use crate::ha::{Leadership, LEADER_LEASE};
use crate::keyring::RingError;
use crate::storage::postgres::feed::{Listener, ListenerConfig};
use crate::storage::postgres::lease::{Elector, ElectorConfig};
use crate::storage::postgres::pool::Pool;
use crate::storage::{StorageError, Store, META_DATA_KEY};
use crate::vault::{self, DataKey};

/// Looks for keysets without a first key, each after another replica made some.
const FIRST_KEY_ATTEMPTS: usize = 4;

/// Wait between attempts to reconnect the change feed.
const FEED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the change feed's session must prove it is alive.
const FEED_PING: std::time::Duration = std::time::Duration::from_secs(2);

/// The pool on the configured database (the URL read from the environment
/// now if it comes from there). No connection is made yet.
pub(super) fn pool(settings: &PostgresSettings) -> Result<Pool, AppError> {
    let url = settings.resolve_url(|var| std::env::var(var).ok())?;
    Ok(Pool::new(url, settings.pool_config()))
}

/// Whether the database holds an initialized store (its wrapped data key).
pub(super) async fn is_initialized(settings: &PostgresSettings) -> Result<bool, AppError> {
    Ok(Store::peek_postgres(&pool(settings)?, META_DATA_KEY).await?.is_some())
}

/// `kmsd init` on PostgreSQL; [`AppError::AlreadyInitializedDb`] if the
/// database was initialized already (perhaps a moment ago, by a replica
/// starting at the same time), with nothing written.
pub(super) async fn init(
    config: &Config,
    settings: &PostgresSettings,
    clock: Arc<dyn Clock>,
    supplied: Option<ApiKeySecret>,
) -> Result<InitReport, AppError> {
    let pool = pool(settings)?;
    let target = pool.url().redacted().to_owned();
    let (data_key, wrapped) = vault::new_data_key(&config.kek).await?;
    let (key, generated) = match supplied {
        Some(k) => (k, false),
        None => (ApiKeySecret::generate().map_err(AppError::BootstrapKey)?, true),
    };
    let writes = bootstrap(&key, wrapped, clock.now());
    let made = Store::postgres_init(pool, data_key.record_key(), writes).await?;
    let Some((store, ())) = made else { return Err(AppError::AlreadyInitializedDb { target }) };
    let (ring, _) = build_ring(config, store, data_key, clock, Arc::default()).await?;
    // A replica that joined a moment ago may have given a keyset its first
    // key already (its start catches up): this write is then refused and the
    // ring reloaded, and the next look finds the keyset done. The store is
    // initialized either way, so the bootstrap key must reach the caller.
    let mut kids = Vec::new();
    for _ in 0..FIRST_KEY_ATTEMPTS {
        match ring.ensure_signers("system").await {
            Ok(made) => {
                kids.extend(made);
                break;
            }
            Err(RingError::Stale { keyset }) => {
                tracing::info!(keyset = %keyset, "another replica made this keyset's first key");
            }
            Err(e) => {
                // Rotation's catch-up at the next start makes what is missing.
                tracing::error!(error = %e, "first keys not all made; the rotation loop makes the rest");
                break;
            }
        }
    }
    Ok(InitReport { bootstrap_key: generated.then_some(key), kids })
}

/// This process as one of the replicas: its part in the leader election,
/// and the change feed it listens to.
pub(super) struct Replica {
    pub(super) elector: Elector,
    pub(super) feed: Listener,
    leadership: Leadership,
}

impl Replica {
    pub(super) fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }
}

/// The store on the configured database and its data key, unwrapped with
/// the KEK before the store is opened (which checks every record).
pub(super) async fn open(config: &Config, settings: &PostgresSettings) -> Result<(Store, DataKey), AppError> {
    let pool = pool(settings)?;
    let target = pool.url().redacted().to_owned();
    let wrapped = Store::peek_postgres(&pool, META_DATA_KEY).await?.ok_or(AppError::NotInitializedDb { target })?;
    let data_key = vault::unwrap_stored(&wrapped, &config.kek).await?;
    let store = Store::postgres(pool, data_key.record_key()).await?;
    Ok((store, data_key))
}

/// This process joining the replicas: the change feed listening (start it
/// before any cache is loaded) and the election begun.
pub(super) async fn replica(settings: &PostgresSettings) -> Result<Replica, AppError> {
    let url = settings.resolve_url(|var| std::env::var(var).ok())?;
    let ha = &settings.ha;
    let feed = Listener::start(
        url.clone(),
        ListenerConfig {
            application_name: format!("kmsd-feed-{}", ha.replica),
            retry_every: FEED_RETRY,
            resync_every: ha.resync,
            ping_every: FEED_PING,
        },
    )
    .await
    .map_err(StorageError::Pg)?;
    let elector = Elector::spawn(
        url,
        ElectorConfig {
            lease: LEADER_LEASE.to_owned(),
            holder: ha.replica.clone(),
            ttl: ha.lease_ttl(),
            renew_every: ha.renew_every(),
        },
    );
    let leadership = Leadership::Elected { replica: ha.replica.clone(), lease: elector.leadership() };
    Ok(Replica { elector, feed, leadership })
}
