//! Logging: one subscriber for the process, writing to stderr in the
//! configured format (`text` or `json`, one object per line), filtered by
//! `KMSD_LOG` if set, else `log.level`. The filter sits behind a reload
//! layer, so [`LogHandle::set_level`] changes it in place (SIGHUP, see
//! [`crate::reload`]). Writing never panics: a failed write to stderr is
//! dropped by the formatter.
//!
//! What is logged is chosen at the call sites; this module only routes it.
//! No secret reaches a log line: request handling logs route templates and
//! ids (see `http::access`), never a query, header, token or key.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// The variable that overrides `log.level` (kept from before `[log]`).
pub const LOG_ENV: &str = "KMSD_LOG";

/// Changes the running filter.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `KMSD_LOG` was set: it wins over `log.level`, then and on reload.
    from_env: Option<String>,
}

/// What [`LogHandle::set_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    Applied(String),
    /// `KMSD_LOG` is set and keeps its filter.
    KeptEnv(String),
}

impl LogHandle {
    /// Applies `level` (a filter directive) unless `KMSD_LOG` overrides it.
    pub fn set_level(&self, level: &str) -> Result<LevelChange, String> {
        if let Some(env) = &self.from_env {
            return Ok(LevelChange::KeptEnv(env.clone()));
        }
        let filter = EnvFilter::builder().parse(level).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())?;
        Ok(LevelChange::Applied(level.to_owned()))
    }
}

/// Installs the process's subscriber. A second call (tests) changes nothing
/// and returns a handle to a filter that is not installed.
pub fn init(config: &LogConfig) -> LogHandle {
    let from_env = std::env::var(LOG_ENV).ok().filter(|v| !v.trim().is_empty());
    let directive = from_env.clone().unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::builder().parse(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let subscriber = tracing_subscriber::registry().with(filter);
    let installed = match config.format {
        LogFormat::Json => subscriber.with(json_layer()).try_init(),
        LogFormat::Text => subscriber.with(text_layer()).try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a log subscriber was already installed");
    }
    LogHandle { filter: handle, from_env }
}

fn text_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false)
}

fn json_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
}
