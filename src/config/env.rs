//! `KMSD_*` environment overrides, applied to the config file's table before
//! it is read: `__` separates sections; variables that carry secrets or
//! select the config file are never overrides.

use super::{Problems, DEFAULT_HS256_SECRET_ENV, DEFAULT_KEK_ENV, DEFAULT_PASSPHRASE_ENV};

/// Environment variables that are not overrides.
/// The `KMSD_ADMIN_*` ones configure the CLI's admin client.
const RESERVED_ENV: &[&str] = &[
    "KMSD_CONFIG",
    "KMSD_LOG",
    "KMSD_BOOTSTRAP_API_KEY",
    "KMSD_ADMIN_API_KEY",
    "KMSD_ADMIN_URL",
    "KMSD_ADMIN_CA_FILE",
    "KMSD_ADMIN_CLIENT_CERT",
    "KMSD_ADMIN_CLIENT_KEY",
];

pub(super) fn apply_env(table: &mut toml::Table, env: &[(String, String)], problems: &mut Problems) {
    let named = |section: &str, field: &str| {
        table
            .get(section)
            .and_then(|v| v.as_table())
            .and_then(|t| t.get(field))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let secret_vars: Vec<String> =
        [named("vault", "kek_env"), named("vault", "passphrase_env"), named("migration", "secret_env")]
            .into_iter()
            .flatten()
            .chain([super::storage::url_env_name(named("storage", "url_env").as_deref())])
            .chain([DEFAULT_KEK_ENV, DEFAULT_PASSPHRASE_ENV, DEFAULT_HS256_SECRET_ENV].map(str::to_owned))
            .collect();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("KMSD_") else { continue };
        if RESERVED_ENV.contains(&name.as_str()) || secret_vars.contains(name) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            problems.add(name.clone(), "malformed override name");
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        if !set_path(table, &path, parsed) {
            problems.add(name.clone(), "overrides a value that is not a section");
        }
    }
}

/// Sets `path` (section names, then a field) in `table`, creating sections.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [field] => {
            table.insert(field.clone(), value);
            true
        }
        [section, rest @ ..] => {
            match table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut()
            {
                Some(t) => set_path(t, rest, value),
                None => false,
            }
        }
    }
}
