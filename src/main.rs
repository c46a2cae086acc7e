//! The `kmsd` binary: parse the command line, load config, start logging, and
//! call into the library. Exit codes: 0 success, 1 runtime failure, 2 bad
//! configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kmsd::admin_client::AdminClient;
use kmsd::app::App;
use kmsd::clock::{Clock, SystemClock};
use kmsd::config::Config;
use kmsd::kms::KmsKek;
use kmsd::vault::KekSource;

#[derive(Parser)]
#[command(name = "kmsd", version, about = "Key-management daemon: a JWT signing authority")]
struct Cli {
    /// Config file (TOML). Without one, built-in defaults apply; KMSD_* variables override either.
    #[arg(long, short, global = true, env = "KMSD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (initializes the data dir on first start).
    Serve,
    /// Create the data dir, vault, first keys and the bootstrap admin API key
    /// (all or nothing: a failure leaves no file behind).
    Init {
        /// Make a new, empty store although the KEK file exists (its store was
        /// deleted or moved); the new store is wrapped under that KEK.
        #[arg(long)]
        force_new_store: bool,
    },
    /// Validate the configuration and report every problem.
    CheckConfig,
    /// Vault maintenance.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Manage API keys through the admin listener (key in KMSD_ADMIN_API_KEY).
    #[command(subcommand)]
    ApiKeys(ApiKeysCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Signing keys: list, rotate, emergency revoke, rollback, pause/resume rotation (admin API).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The HS256 cut-over: status, advance, rollback, sunset (admin API).
    #[command(subcommand)]
    Migration(MigrationCommand),
    /// Print the rotation timeline the configuration implies, from now (offline).
    Plan {
        /// How many rotations to show per keyset.
        #[arg(long, default_value_t = 3)]
        rotations: usize,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Publish a new key now; it signs after the publish lead (or at once with --immediate).
    Rotate {
        #[arg(long, default_value = "access")]
        keyset: String,
        #[arg(long)]
        immediate: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Emergency: out of JWKS now, its tokens refused, a replacement signs.
    Revoke {
        kid: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The previous, still-published key signs again.
    Rollback {
        #[arg(long, default_value = "access")]
        keyset: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Freeze scheduled rotation.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Unfreeze scheduled rotation.
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The next scheduled events, from the running daemon.
    Plan {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum MigrationCommand {
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// hs256 -> asymmetric (once the asymmetric key has been published for the publish lead).
    Advance {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// asymmetric -> hs256, until sunset.
    Rollback {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Sunset now (compromised secret): HS256 refused everywhere from now on.
    Sunset {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum ApiKeysCommand {
    /// Create a key; prints it once.
    Create {
        #[arg(long)]
        name: String,
        /// A scope to grant (repeat for several). Must be covered by the calling key's scopes.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Expiry, ISO-8601 UTC (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List keys (never the secrets).
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key by id (idempotent).
    Revoke {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Admin listener URL. Default: http://<listen.admin> from the config.
    #[arg(long)]
    admin_url: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the audit log. Reads the store directly when
    /// no daemon holds it; otherwise asks the running daemon (KMSD_ADMIN_API_KEY).
    Verify {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Re-wrap the vault data key under a new key-encryption key, atomically.
    /// The daemon must be stopped. Afterwards, point the config at the new KEK.
    Rekey {
        /// The new KEK: `file:PATH` (created 0600 if missing), `env:VAR`, `passphrase:VAR`
        /// or `aws-kms:KEY` (a KMS key id, ARN or alias; `[aws_kms]` settings apply).
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprint!("kmsd: {e}");
            return ExitCode::from(2);
        }
    };
    let json_logs = config.log.format == kmsd::config::LogFormat::Json;
    let log = kmsd::telemetry::init(&config.log);
    let startup = Startup { config_path: cli.config.clone(), env, log };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kmsd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, config, startup));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_logs => {
            tracing::error!(error = %format!("{e:#}"), "kmsd: error");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kmsd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `serve` needs to reload its configuration on SIGHUP.
struct Startup {
    config_path: Option<PathBuf>,
    env: Vec<(String, String)>,
    log: kmsd::telemetry::LogHandle,
}

async fn run(command: Command, config: Config, startup: Startup) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock);
    match command {
        Command::CheckConfig => {
            println!(
                "configuration ok: data dir {}, {} keyset(s): {}",
                config.data_dir.display(),
                config.keysets.len(),
                config
                    .keysets
                    .iter()
                    .map(|k| format!("{} ({})", k.name, k.spec.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Init { force_new_store } => {
            init(&config, clock, force_new_store).await?;
            Ok(())
        }
        Command::Serve => {
            // From here on SIGHUP reloads; it never ends the process.
            let hangup = kmsd::reload::Hangup::install()?;
            if !App::is_initialized(&config) {
                init(&config, clock.clone(), false).await?;
            }
            let public = kmsd::listener::bind(config.listen_public)?;
            let admin = kmsd::listener::bind(config.listen_admin)?;
            let app = App::open(config, clock).await?;
            let Startup { config_path, env, log } = startup;
            hangup.serve(kmsd::reload::Reloader { config_path, env, log, metrics: app.state().metrics.clone() });
            tracing::info!(public = %public.local_addr()?, admin = %admin.local_addr()?, "kmsd listening");
            app.serve(public, admin, shutdown_signal()).await?;
            tracing::info!("kmsd stopped");
            Ok(())
        }
        Command::ApiKeys(cmd) => api_keys(cmd, &config).await,
        Command::Keys(cmd) => keys(cmd, &config).await,
        Command::Migration(cmd) => migration(cmd, &config).await,
        Command::Plan { rotations } => {
            print!("{}", kmsd::rotation::offline_plan(&config, clock.now(), rotations));
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { admin }) => audit_verify(&config, admin).await,
        Command::Vault(VaultCommand::Rekey { to }) => {
            let new = parse_kek(&to, &config)?;
            kmsd::vault::rekey_store(&config.store_path(), &config.kek, &new, clock.as_ref()).await?;
            println!("vault data key re-wrapped under the new KEK ({to}); update [vault] in the config before the next start");
            Ok(())
        }
    }
}

fn admin_client(config: &Config, admin: &AdminArgs, needs: &str) -> anyhow::Result<AdminClient> {
    let key = std::env::var("KMSD_ADMIN_API_KEY")
        .map(zeroize::Zeroizing::new)
        .map_err(|_| anyhow::anyhow!("set KMSD_ADMIN_API_KEY to an API key with {needs}"))?;
    let url = admin.admin_url.clone().unwrap_or_else(|| format!("http://{}", config.listen_admin));
    Ok(AdminClient::new(&url, key)?)
}

/// The audit chain's hashes are keyed by the vault data key, so reading the
/// store directly needs the KEK (from the config) to unlock it.
async fn audit_verify(config: &Config, admin: AdminArgs) -> anyhow::Result<()> {
    use kmsd::storage::{StorageError, Store};
    let path = config.store_path();
    let local = match kmsd::vault::unlock(&path, &config.kek).await {
        Ok(data_key) => Store::inspect(&path, &data_key.record_key(), |r| r.verify_audit()),
        Err(kmsd::vault::VaultError::Storage(e)) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let (intact, entries, broken) = match local {
        Ok(verified) => match verified {
            Ok(n) => (true, n, None),
            Err(kmsd::audit::ChainError::Broken { seq, reason }) => (false, 0, Some((seq, reason))),
        },
        Err(StorageError::Open { source: redb::DatabaseError::DatabaseAlreadyOpen, .. }) => {
            let reply = admin_client(config, &admin, "relayauth:admin:read:*")?
                .call("GET", "/v1/admin/audit/verify", None)
                .await?;
            let broken =
                reply["brokenAt"].as_u64().map(|seq| (seq, reply["reason"].as_str().unwrap_or_default().to_owned()));
            (reply["intact"] == true, reply["entries"].as_u64().unwrap_or(0), broken)
        }
        Err(e) => return Err(e.into()),
    };
    match (intact, broken) {
        (true, _) => {
            println!("audit log intact: {entries} entries verified");
            Ok(())
        }
        (false, Some((seq, reason))) => anyhow::bail!("audit log broken: audit entry {seq}: {reason}"),
        (false, None) => anyhow::bail!("audit log broken"),
    }
}

async fn api_keys(cmd: ApiKeysCommand, config: &Config) -> anyhow::Result<()> {
    let client = |admin: &AdminArgs| admin_client(config, admin, "relayauth:api-key:manage:*");
    let reply = match cmd {
        ApiKeysCommand::Create { name, scopes, expires_at, admin } => {
            let body = serde_json::json!({ "name": name, "scopes": scopes, "expiresAt": expires_at });
            client(&admin)?.call("POST", "/v1/api-keys", Some(&body)).await?
        }
        ApiKeysCommand::List { limit, cursor, admin } => {
            let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            client(&admin)?.call("GET", &format!("/v1/api-keys?limit={limit}{cursor}"), None).await?
        }
        ApiKeysCommand::Revoke { id, admin } => {
            client(&admin)?.call("POST", &format!("/v1/api-keys/{id}/revoke"), None).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

async fn keys(cmd: KeysCommand, config: &Config) -> anyhow::Result<()> {
    const NEEDS: &str = "relayauth:admin:manage:*";
    let (admin, method, path, body) = match cmd {
        KeysCommand::List { admin } => (admin, "GET", "/v1/admin/keys".to_owned(), None),
        KeysCommand::Rotate { keyset, immediate, admin } => (
            admin,
            "POST",
            "/v1/admin/keys/rotate".to_owned(),
            Some(serde_json::json!({ "keyset": keyset, "immediate": immediate })),
        ),
        KeysCommand::Revoke { kid, admin } => (admin, "POST", format!("/v1/admin/keys/{kid}/revoke"), None),
        KeysCommand::Rollback { keyset, admin } => {
            (admin, "POST", "/v1/admin/keys/rollback".to_owned(), Some(serde_json::json!({ "keyset": keyset })))
        }
        KeysCommand::Pause { admin } => (admin, "POST", "/v1/admin/rotation/pause".to_owned(), None),
        KeysCommand::Resume { admin } => (admin, "POST", "/v1/admin/rotation/resume".to_owned(), None),
        KeysCommand::Plan { admin } => (admin, "GET", "/v1/admin/rotation/plan".to_owned(), None),
    };
    let reply = admin_client(config, &admin, NEEDS)?.call(method, &path, body.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

async fn migration(cmd: MigrationCommand, config: &Config) -> anyhow::Result<()> {
    let (admin, action) = match cmd {
        MigrationCommand::Status { admin } => (admin, None),
        MigrationCommand::Advance { admin } => (admin, Some("advance")),
        MigrationCommand::Rollback { admin } => (admin, Some("rollback")),
        MigrationCommand::Sunset { admin } => (admin, Some("sunset")),
    };
    let client = admin_client(config, &admin, "relayauth:admin:manage:*")?;
    let reply = match action {
        None => client.call("GET", "/v1/admin/migration", None).await?,
        Some(a) => client.call("POST", "/v1/admin/migration", Some(&serde_json::json!({ "action": a }))).await?,
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

/// Initializes the data dir; the bootstrap key is printed only once the
/// initialized store is in place (`App::init` is all or nothing).
async fn init(config: &Config, clock: Arc<SystemClock>, force_new_store: bool) -> anyhow::Result<()> {
    let bootstrap = std::env::var("KMSD_BOOTSTRAP_API_KEY").ok();
    let report = App::init(config, clock, bootstrap.as_deref(), force_new_store).await?;
    println!("kmsd: initialized {} ({} signing key(s) created)", config.data_dir.display(), report.kids.len());
    match report.bootstrap_key {
        Some(key) => println!(
            "kmsd: bootstrap admin API key (shown once, only its SHA-256 is stored; keep it safe):\n\n    {}\n",
            key.expose()
        ),
        None => println!("kmsd: bootstrap admin API key taken from KMSD_BOOTSTRAP_API_KEY"),
    }
    Ok(())
}

fn parse_kek(text: &str, config: &Config) -> anyhow::Result<KekSource> {
    match text.split_once(':') {
        Some(("file", path)) if !path.is_empty() => Ok(KekSource::File(path.into())),
        Some(("env", var)) if !var.is_empty() => Ok(KekSource::Env(var.into())),
        Some(("passphrase", var)) if !var.is_empty() => Ok(KekSource::Passphrase(var.into())),
        Some(("aws-kms", key_id)) => {
            kmsd::kms::envelope::check_key_id(key_id).map_err(|e| anyhow::anyhow!("--to aws-kms:{key_id} {e}"))?;
            Ok(KekSource::AwsKms(KmsKek { key_id: key_id.into(), settings: config.aws_kms.clone() }))
        }
        _ => anyhow::bail!("--to must be file:PATH, env:VAR, passphrase:VAR or aws-kms:KEY"),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
