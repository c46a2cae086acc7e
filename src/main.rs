//! The `kmsd` binary: parse the command line, start the async runtime, turn the process's signals into [`kmsd::cli::Signals`], and call
//! [`kmsd::cli::run`], which does the rest. Exit codes: 0 success, 1 runtime
//! failure, 2 bad configuration or usage.

use std::process::ExitCode;

use clap::Parser;
use kmsd::cli::{Cli, Signals};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kmsd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(kmsd::cli::run(cli, &env, signals))
}

/// SIGTERM or Ctrl-C stops the daemon; each SIGHUP asks for a reload. The
/// handlers are installed here, before `serve` says it is listening, so a
/// signal sent as soon as it does is never the default action (termination).
fn signals() -> Signals {
    let (tx, reload) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        tracing::info!("SIGHUP received; reloading");
                        // A reload already queued covers this one too.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload on file change only"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    #[cfg(unix)]
    let shutdown = shutdown_signal(term);
    #[cfg(not(unix))]
    let shutdown = shutdown_signal();
    Signals { shutdown: Box::pin(shutdown), reload }
}

#[cfg(unix)]
async fn shutdown_signal(term: std::io::Result<tokio::signal::unix::Signal>) {
    match term {
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
    tracing::info!("shutdown signal received; draining in-flight requests");
}

#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown signal received; draining in-flight requests");
}
