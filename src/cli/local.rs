//! The commands that run here rather than through the admin API: `serve`,
//! `init`, `check-config`, the offline `plan`, `vault rekey`, `restore` and
//! `storage copy`.

use std::sync::Arc;

use anyhow::Context;

use super::args::{Command, CopyTo, StorageCommand, VaultCommand};
use super::Signals;
use crate::app::copy::Target;
use crate::app::{App, AppError};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::{Config, StorageEngine};
use crate::kms::KmsKek;
use crate::listener::TlsReload;
use crate::storage::postgres::PgUrl;
use crate::vault::KekSource;

/// What `serve` needs to reload its configuration on SIGHUP.
pub(super) struct Startup {
    pub(super) config_path: Option<std::path::PathBuf>,
    pub(super) log: crate::telemetry::LogHandle,
}

pub(super) async fn run(
    command: Command,
    config: Config,
    env: &[(String, String)],
    startup: Startup,
    signals: impl FnOnce() -> Signals,
) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock);
    match command {
        Command::CheckConfig => {
            let keysets: Vec<String> =
                config.keysets.iter().map(|k| format!("{} ({})", k.name, k.spec.as_str())).collect();
            println!(
                "configuration ok: data dir {}, {} keyset(s): {}",
                config.data_dir.display(),
                config.keysets.len(),
                keysets.join(", ")
            );
            if let StorageEngine::Postgres(pg) = &config.storage_engine {
                let url = pg.resolve_url(|var| std::env::var(var).ok())?;
                let checked = crate::storage::postgres::check::check(&url)
                    .await
                    .with_context(|| format!("storage {}", url.redacted()))?;
                println!("storage ok: {} at {}", checked, url.redacted());
            }
            Ok(())
        }
        Command::Init { force_new_store } => init(&config, clock, env, force_new_store).await,
        Command::Serve => serve(config, clock, env, startup, signals()).await,
        Command::Plan { rotations } => {
            print!("{}", crate::config::offline_plan(&config, clock.now(), rotations));
            Ok(())
        }
        Command::Vault(_) | Command::Restore { .. } if !matches!(config.storage_engine, StorageEngine::Redb) => {
            anyhow::bail!(
                "this command works on the redb store file; a PostgreSQL store is restored with the database's own \
                 tools (pg_restore), and its KEK rewrap is not supported yet"
            )
        }
        Command::Vault(VaultCommand::Rekey { to }) => {
            let new = parse_kek(&to, &config)?;
            crate::vault::rekey_store(&config.store_path(), &config.kek, &new, clock.as_ref()).await?;
            println!("vault data key re-wrapped under the new KEK ({to}); update [vault] in the config before the next start");
            Ok(())
        }
        Command::Restore { from, force } => {
            let restored = crate::app::restore::restore(&config, &from, force, clock.now().unix()).await?;
            println!("audit log intact: {} entries verified", restored.audit_entries);
            if let Some(previous) = restored.previous {
                println!("the replaced store is kept at {}", previous.display());
            }
            println!("restored {} from {}", config.store_path().display(), from.display());
            Ok(())
        }
        Command::Storage(StorageCommand::Copy(to)) => storage_copy(&config, &to, env, clock.now()).await,
        Command::Keys(_)
        | Command::Backup { .. }
        | Command::ApiKeys(_)
        | Command::Migration(_)
        | Command::Audit(_)
        | Command::Completions { .. } => {
            anyhow::bail!("not a local command")
        }
    }
}

async fn serve(
    config: Config,
    clock: Arc<SystemClock>,
    env: &[(String, String)],
    startup: Startup,
    signals: Signals,
) -> anyhow::Result<()> {
    if !App::is_initialized(&config).await? {
        match init(&config, clock.clone(), env, false).await {
            // Another replica on the same database initialized it first: join it.
            Err(e) if matches!(e.downcast_ref(), Some(AppError::AlreadyInitializedDb { .. })) => {
                tracing::info!("the PostgreSQL store was initialized by another replica; joining it");
            }
            other => other?,
        }
    }
    let tls = TlsReload::load(&config.tls)?;
    let bind = |addr, name: &str| crate::listener::bind(addr).with_context(|| format!("{name} listener {addr}"));
    let public = bind(config.listen_public, "public")?;
    let admin = bind(config.listen_admin, "admin")?;
    let app = App::open(config, clock).await?;
    let scheme = |t: &Option<_>| if t.is_some() { "https" } else { "http" };
    tracing::info!(
        public = %public.local_addr()?, admin = %admin.local_addr()?,
        public_scheme = scheme(&tls.public), admin_scheme = scheme(&tls.admin),
        admin_mtls = tls.admin.as_ref().is_some_and(|t| t.requires_client_certificates()),
        "kmsd listening"
    );
    let Signals { shutdown, mut reload } = signals;
    let certificates = tls.clone();
    let settings = crate::reload::Reloader {
        config_path: startup.config_path,
        env: env.to_vec(),
        log: startup.log,
        metrics: app.state().metrics.clone(),
    };
    tokio::spawn(async move {
        while reload.recv().await.is_some() {
            certificates.reload();
            settings.reload_and_log();
        }
    });
    app.serve(public, admin, tls, shutdown).await?;
    tracing::info!("kmsd stopped");
    Ok(())
}

/// Initializes the data dir; the bootstrap key is printed only once the
/// initialized store is in place (`App::init` is all or nothing).
async fn init(
    config: &Config,
    clock: Arc<SystemClock>,
    env: &[(String, String)],
    force_new_store: bool,
) -> anyhow::Result<()> {
    let bootstrap = env.iter().find(|(k, _)| k == "KMSD_BOOTSTRAP_API_KEY").map(|(_, v)| v.as_str());
    let report = App::init(config, clock, bootstrap, force_new_store).await?;
    let place = match &config.storage_engine {
        StorageEngine::Redb => config.data_dir.display().to_string(),
        StorageEngine::Postgres(_) => "the PostgreSQL store".to_owned(),
    };
    println!("kmsd: initialized {place} ({} signing key(s) created)", report.kids.len());
    match report.bootstrap_key {
        Some(key) => println!(
            "kmsd: bootstrap admin API key (shown once, only its SHA-256 is stored; keep it safe):\n\n    {}\n",
            key.expose()
        ),
        None => println!("kmsd: bootstrap admin API key taken from KMSD_BOOTSTRAP_API_KEY"),
    }
    Ok(())
}

/// `kmsd storage copy`: the summary on stdout, one line per table.
async fn storage_copy(config: &Config, to: &CopyTo, env: &[(String, String)], now: Timestamp) -> anyhow::Result<()> {
    let target = copy_target(to, env)?;
    let report = crate::app::copy::copy(config, &target, now).await?;
    let copied = &report.copied;
    println!("source {}: audit log intact: {} entries verified", report.source, copied.audit_entries);
    println!("{:<16}{:>10}", "table", "rows");
    for (table, rows) in &copied.tables {
        println!("{table:<16}{rows:>10}");
    }
    println!(
        "copy verified: every record MAC checks under the source's data key, audit log intact: {} entries verified, \
         every row as in the source",
        copied.audit_entries
    );
    println!("kmsd: copied {} to {target}", report.source);
    Ok(())
}

/// `--to URL|PATH` or `--to-env VAR` (a URL); clap makes it exactly one.
fn copy_target(to: &CopyTo, env: &[(String, String)]) -> anyhow::Result<Target> {
    let url = |text: &str, from: &str| -> anyhow::Result<Target> {
        let url = PgUrl::parse(text).with_context(|| from.to_owned())?;
        Ok(Target::Postgres(Box::new(url)))
    };
    match (&to.to, &to.to_env) {
        (_, Some(var)) => match env.iter().find(|(k, _)| k == var) {
            Some((_, text)) => url(text, &format!("--to-env {var}")),
            None => anyhow::bail!("--to-env {var}: the variable is not set"),
        },
        (Some(text), None) if text.starts_with("postgres://") || text.starts_with("postgresql://") => url(text, "--to"),
        (Some(path), None) => Ok(Target::Redb(path.into())),
        (None, None) => anyhow::bail!("give --to URL|PATH or --to-env VAR"),
    }
}

fn parse_kek(text: &str, config: &Config) -> anyhow::Result<KekSource> {
    match text.split_once(':') {
        Some(("file", path)) if !path.is_empty() => Ok(KekSource::File(path.into())),
        Some(("env", var)) if !var.is_empty() => Ok(KekSource::Env(var.into())),
        Some(("passphrase", var)) if !var.is_empty() => Ok(KekSource::Passphrase(var.into())),
        Some(("aws-kms", key_id)) => {
            crate::kms::envelope::check_key_id(key_id).map_err(|e| anyhow::anyhow!("--to aws-kms:{key_id} {e}"))?;
            Ok(KekSource::AwsKms(KmsKek { key_id: key_id.into(), settings: config.aws_kms.clone() }))
        }
        _ => anyhow::bail!("--to must be file:PATH, env:VAR, passphrase:VAR or aws-kms:KEY"),
    }
}
