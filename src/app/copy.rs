//! `kmsd storage copy`: the configured store, stopped, copied into an empty
//! target of the other engine (or a new one of the same). The copy and its
//! verification are [`Store::copy_to`]; here the source is refused while a
//! kmsd runs on it (redb's file lock, PostgreSQL's leader lease) and opened
//! as [`App::open`](super::App::open) opens it (the KEK unwraps its data key,
//! every record MAC checks), an existing redb target is refused before
//! anything is read, and a redb copy is built as `<file>.copy` and put in
//! place only once it verified (removed on any failure, like `kmsd init`'s
//! staged files). A PostgreSQL target is written in one transaction, so a
//! failure commits nothing.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::staging::Staged;
use super::{open_store, postgres, AppError};
use crate::clock::Timestamp;
use crate::config::{Config, StorageEngine};
use crate::storage::postgres::lease::{self, LEADER_LEASE};
use crate::storage::postgres::pool::{Pool, PoolConfig};
use crate::storage::postgres::PgUrl;
use crate::storage::{Copied, CopyTarget, StorageError, Store};
use crate::vault::VaultError;

/// The limit on one statement of the copy (a table of a large store is
/// read, and written 1000 rows a statement, in one transaction).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where `kmsd storage copy` writes.
pub enum Target {
    /// An empty PostgreSQL database.
    Postgres(Box<PgUrl>),
    /// A redb file that does not exist yet.
    Redb(PathBuf),
}

impl std::fmt::Display for Target {
    /// The redacted URL, or the path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Postgres(url) => write!(f, "PostgreSQL {}", url.redacted()),
            Target::Redb(path) => write!(f, "redb {}", path.display()),
        }
    }
}

/// What a copy did, for the summary.
#[derive(Debug)]
pub struct Report {
    /// The source, as `Target` shows one.
    pub source: String,
    pub copied: Copied,
}

/// Copies the configured store into `target` (see the module comment);
/// `now` dates the upgrade of a redb source written before record MACs.
pub async fn copy(config: &Config, target: &Target, now: Timestamp) -> anyhow::Result<Report> {
    if let Target::Redb(path) = target {
        if path.symlink_metadata().is_ok() {
            bail!("target {} exists: storage copy refuses a non-empty target (it makes a new file)", path.display());
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            bail!("target directory {} does not exist", dir.display());
        }
    }
    let source = refuse_running(config).await?;
    let (store, _data_key) = open_store(config, now).await.map_err(|e| {
        if in_use(&e) {
            anyhow::anyhow!("{source} {STOP_DAEMON}")
        } else {
            anyhow::Error::from(e).context(format!("source {source}"))
        }
    })?;
    let copied = match target {
        Target::Postgres(url) => {
            let settings = PoolConfig {
                size: 1,
                statement_timeout: STATEMENT_TIMEOUT,
                application_name: "kmsd-storage-copy".into(),
                ..PoolConfig::default()
            };
            let pool = Pool::new(PgUrl::clone(url), settings);
            store
                .copy_to(CopyTarget::Postgres(pool))
                .await
                .with_context(|| format!("copy to {target} (nothing was committed)"))?
        }
        Target::Redb(path) => {
            let staged = Staged::new(path.clone(), ".copy", "kmsd storage copy");
            staged.remove(true).with_context(|| format!("cannot remove {}", staged.staged.display()))?;
            let done = store.copy_to(CopyTarget::Redb(staged.staged.clone())).await;
            drop(store);
            let done = match done {
                Ok(copied) => staged.put_in_place().map(|()| copied).map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            if done.is_err() {
                let _ = staged.remove(false);
            }
            done.with_context(|| format!("copy to {target} (no file was left behind)"))?
        }
    };
    Ok(Report { source, copied })
}

const STOP_DAEMON: &str =
    "is open in a running kmsd: stop the daemon before copying (storage copy reads a stopped store)";

/// Refuses a source that a running kmsd holds; returns how to name it.
async fn refuse_running(config: &Config) -> anyhow::Result<String> {
    match &config.storage_engine {
        StorageEngine::Redb => {
            let source = format!("redb store {}", config.store_path().display());
            if Store::in_use(&config.store_path()) {
                bail!("{source} {STOP_DAEMON}");
            }
            Ok(source)
        }
        StorageEngine::Postgres(settings) => {
            let pool = postgres::pool(settings)?;
            let source = format!("PostgreSQL store {}", pool.url().redacted());
            let client = pool.get().await.with_context(|| format!("source {source}"))?;
            let holder = lease::holder(&*client, LEADER_LEASE).await.with_context(|| format!("source {source}"))?;
            if let Some((holder, _)) = holder {
                bail!(
                    "{source}: replica {holder:?} holds the leader lease, so a kmsd replica is running: stop every \
                     replica before copying (storage copy reads a stopped store)"
                );
            }
            Ok(source)
        }
    }
}

/// Whether opening failed because another process holds the redb file.
fn in_use(e: &AppError) -> bool {
    match e {
        AppError::Storage(e) | AppError::Vault(VaultError::Storage(e)) => StorageError::is_in_use(e),
        _ => false,
    }
}
