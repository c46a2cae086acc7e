//! The command line, as a library: the clap tree ([`args`]), what each
//! command does (the daemon and offline commands in [`local`], the admin API
//! commands in [`admin`]), and how answers are printed ([`output`]). `main`
//! parses, starts logging and the runtime, hands over the process signals
//! and calls [`run`]; tests can drive the same tree in-process.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.

mod admin;
mod args;
mod local;
mod output;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use clap::CommandFactory;

pub use args::{AdminArgs, Cli, Command, Output, Shell};

use crate::config::Config;

/// What the process's signals mean to `serve`.
pub struct Signals {
    /// Resolves when the daemon should stop (SIGTERM, Ctrl-C).
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// One message per reload request (SIGHUP): the TLS certificates and the
    /// log level are re-read.
    pub reload: tokio::sync::mpsc::Receiver<()>,
}

/// Runs one command; `signals` is called only by `serve`.
pub async fn run(cli: Cli, env: &[(String, String)], signals: impl FnOnce() -> Signals) -> ExitCode {
    if let Command::Completions { shell } = cli.command {
        print_completions(shell);
        return ExitCode::SUCCESS;
    }
    // The variable `storage copy --to-env` names holds the target's URL, not
    // a config override (it may well start with KMSD_).
    let config_env: Vec<(String, String)> = match &cli.command {
        Command::Storage(args::StorageCommand::Copy(to)) => {
            env.iter().filter(|(k, _)| Some(k) != to.to_env.as_ref()).cloned().collect()
        }
        _ => env.to_vec(),
    };
    let config = match Config::load(cli.config.as_deref(), &config_env) {
        Ok(c) => c,
        Err(e) => {
            eprint!("kmsd: {e}");
            return ExitCode::from(2);
        }
    };
    // Logging starts once the config says how (`[log]`); SIGHUP can change its level.
    let json_logs = config.log.format == crate::config::LogFormat::Json;
    let log = crate::telemetry::init(&config.log);
    let startup = local::Startup { config_path: cli.config.clone(), log };
    let result = match cli.command {
        Command::Keys(cmd) => admin::keys(cmd, &config, env).await,
        Command::ApiKeys(cmd) => admin::api_keys(cmd, &config, env).await,
        Command::Migration(cmd) => admin::migration(cmd, &config, env).await,
        Command::Audit(args::AuditCommand::Verify(a)) => admin::audit_verify(&config, &a, env).await,
        Command::Backup { to, admin } => admin::backup(&to, &config, &admin, env).await,
        other => local::run(other, config, env, startup, signals).await,
    };
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

fn print_completions(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "kmsd", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every subcommand and every flag or argument says what it is for.
    #[test]
    fn every_subcommand_and_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "kmsd", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn admin_flags_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kmsd",
            "keys",
            "revoke",
            "abc",
            "--admin-url",
            "https://127.0.0.1:1",
            "--ca-file",
            "ca.pem",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Keys(args::KeysCommand::Revoke { kid, admin }) = cli.command else { panic!("{cli:?}") };
        assert_eq!(kid, "abc");
        assert_eq!(admin.admin_url.as_deref(), Some("https://127.0.0.1:1"));
        assert_eq!(admin.output, Some(Output::Json));
        let e = Cli::try_parse_from(["kmsd", "keys", "list", "--client-cert", "c.pem"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
    }
}
