//! The `kmsd` binary: parse the command line, load config, start logging, and
//! call into the library. Exit codes: 0 success, 1 runtime failure, 2 bad
//! configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kmsd::app::App;
use kmsd::clock::SystemClock;
use kmsd::config::Config;
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
    /// Create the data dir, vault, first keys and the bootstrap admin API key.
    Init,
    /// Validate the configuration and report every problem.
    CheckConfig,
    /// Vault maintenance.
    #[command(subcommand)]
    Vault(VaultCommand),
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Re-wrap the vault data key under a new key-encryption key, atomically.
    /// The daemon must be stopped. Afterwards, point the config at the new KEK.
    Rekey {
        /// The new KEK: `file:PATH` (created 0600 if missing), `env:VAR` or `passphrase:VAR`.
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprint!("kmsd: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kmsd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
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
        Command::Init => {
            init(&config, clock).await?;
            Ok(())
        }
        Command::Serve => {
            if !App::is_initialized(&config) {
                init(&config, clock.clone()).await?;
            }
            let public = tokio::net::TcpListener::bind(config.listen_public).await?;
            let admin = tokio::net::TcpListener::bind(config.listen_admin).await?;
            let app = App::open(config, clock).await?;
            tracing::info!(public = %public.local_addr()?, admin = %admin.local_addr()?, "kmsd listening");
            app.serve(public, admin, shutdown_signal()).await?;
            tracing::info!("kmsd stopped");
            Ok(())
        }
        Command::Vault(VaultCommand::Rekey { to }) => {
            let new = parse_kek(&to)?;
            kmsd::vault::rekey_store(&config.store_path(), &config.kek, &new, clock.as_ref())?;
            println!("vault data key re-wrapped under the new KEK ({to}); update [vault] in the config before the next start");
            Ok(())
        }
    }
}

async fn init(config: &Config, clock: Arc<SystemClock>) -> anyhow::Result<()> {
    let bootstrap = std::env::var("KMSD_BOOTSTRAP_API_KEY").ok();
    let report = App::init(config, clock, bootstrap.as_deref()).await?;
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

fn parse_kek(text: &str) -> anyhow::Result<KekSource> {
    match text.split_once(':') {
        Some(("file", path)) if !path.is_empty() => Ok(KekSource::File(path.into())),
        Some(("env", var)) if !var.is_empty() => Ok(KekSource::Env(var.into())),
        Some(("passphrase", var)) if !var.is_empty() => Ok(KekSource::Passphrase(var.into())),
        _ => anyhow::bail!("--to must be file:PATH, env:VAR or passphrase:VAR"),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
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
