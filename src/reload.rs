//! SIGHUP: reload what can change safely while kmsd runs, and say so in the
//! log: the log level (`log.level`, re-read from the config file and `KMSD_*`
//! overrides) here, and the TLS certificates ([`crate::listener::TlsReload`]);
//! `cli` calls both for each SIGHUP, which `main` catches from the start. Anything else in the file is left as it was started: a changed
//! listener address or keyset needs a restart. A config that does not load
//! is reported and changes nothing. SIGHUP never stops the process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::{Metrics, ReasonLabel};
use crate::telemetry::{LevelChange, LogHandle};

/// Everything a reload needs: where the config came from, and the handles of
/// what it may change.
pub struct Reloader {
    pub config_path: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub log: LogHandle,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Re-reads the configuration and applies what can change in place;
    /// returns what it applied, for the log.
    pub fn reload(&self) -> Result<String, String> {
        let config = Config::load(self.config_path.as_deref(), &self.env).map_err(|e| e.to_string())?;
        match self.log.set_level(&config.log.level)? {
            LevelChange::Applied(level) => Ok(format!("log level {level}")),
            LevelChange::KeptEnv(env) => Ok(format!("log level kept from KMSD_LOG ({env})")),
        }
    }

    /// [`reload`](Self::reload), with the outcome logged and counted.
    pub fn reload_and_log(&self) {
        let result = match self.reload() {
            Ok(applied) => {
                tracing::info!(applied = %applied, "SIGHUP: configuration reloaded");
                "ok"
            }
            Err(e) => {
                tracing::warn!(error = %e.trim_end(), "SIGHUP: configuration not reloaded; keeping the running settings");
                "failed"
            }
        };
        self.metrics.reloads.get_or_create(&ReasonLabel { reason: result }).inc();
    }
}
