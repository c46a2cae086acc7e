//! `[log]`: how kmsd logs. `format` is `text` (default, one human line per
//! event) or `json` (one JSON object per line); `level` is a filter directive
//! as `KMSD_LOG` takes it (`info`, `debug`, `kmsd=debug,info`...). Both go to
//! stderr. `KMSD_LOG`, when set, wins over `level`. The level can change
//! without a restart (SIGHUP, see `crate::reload`); the format cannot.

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogSection {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

pub(super) fn log_config(section: LogSection, problems: &mut Problems) -> LogConfig {
    let format = match section.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.add("log.format", format!("{other:?} is not a log format (text or json)"));
            LogFormat::Text
        }
    };
    let level = section.level.unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        problems.add("log.level", format!("{level:?} is not a log filter: {e}"));
    }
    LogConfig { format, level }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, super::super::ConfigErrors> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(None, &env)
    }

    #[test]
    fn the_format_and_level_are_checked_and_reported_together() {
        assert_eq!(load(&[]).unwrap().log, LogConfig::default());
        let json = load(&[("KMSD_LOG__FORMAT", "json"), ("KMSD_LOG__LEVEL", "kmsd=debug,info")]).unwrap();
        assert_eq!(json.log, LogConfig { format: LogFormat::Json, level: "kmsd=debug,info".into() });
        let err = load(&[("KMSD_LOG__FORMAT", "yaml"), ("KMSD_LOG__LEVEL", "kmsd=[")]).unwrap_err().to_string();
        assert!(err.contains("log.format: \"yaml\" is not a log format"), "{err}");
        assert!(err.contains("log.level: \"kmsd=[\" is not a log filter"), "{err}");
        let err = load(&[("KMSD_LOG__COLOUR", "yes")]).unwrap_err().to_string();
        assert!(err.contains("colour") && err.contains("unknown field"), "{err}");
    }
}
