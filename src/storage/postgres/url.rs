//! [`PgUrl`]: a PostgreSQL connection string the program trusts. It owns the
//! password and never shows it: `Debug` and `Display` print the URL with the
//! password replaced by `***`, and a string that does not parse is reported
//! without echoing it (the parser's message is scrubbed of the input and of
//! anything that looks like its password).

use std::fmt;
use std::str::FromStr;

use super::tls::MakeRustls;

/// A parsed connection string (`postgres://user:password@host:port/db` or
/// `key=value` form), with a redacted `Debug`/`Display`.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    shown: String,
    /// TLS to the server (`storage.tls`): none unless [`with_tls`](Self::with_tls).
    tls: MakeRustls,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PostgreSQL connection URL (postgres://user:password@host:port/database): {reason}")]
pub struct UrlError {
    /// The parser's complaint, scrubbed of the input.
    pub reason: String,
}

impl PgUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        let mut config =
            tokio_postgres::Config::from_str(text).map_err(|e| UrlError { reason: scrub(&e.to_string(), text) })?;
        if config.get_hosts().is_empty() {
            return Err(UrlError { reason: "it names no host".into() });
        }
        // TLS is `storage.tls`, which verifies the server; libpq's modes
        // that encrypt without verifying (or fall back to plain text) are
        // not offered through the URL either.
        if text.contains("sslmode") {
            return Err(UrlError {
                reason: "sslmode is set by storage.tls (and storage.ca_file), not in the URL".into(),
            });
        }
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        Ok(Self { shown: describe(&config), config, tls: MakeRustls::default() })
    }

    /// The same URL with TLS to the server (`verify-full`), or without.
    pub fn with_tls(mut self, tls: MakeRustls) -> Self {
        use tokio_postgres::config::SslMode;
        self.config.ssl_mode(if tls.0.is_some() { SslMode::Require } else { SslMode::Disable });
        self.tls = tls;
        self
    }

    /// The TLS connector for this URL.
    pub fn tls(&self) -> MakeRustls {
        self.tls.clone()
    }

    /// Whether the host is this machine (a loopback address, `localhost`
    /// or a unix socket), where TLS is off by default.
    pub fn is_local(&self) -> bool {
        use tokio_postgres::config::Host;
        self.config.get_hosts().iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        })
    }

    /// The connection settings (password included) for the client.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `postgres://user:***@host:port/db`: safe for logs and errors.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The same URL pointing at database `db` (tests make one per case).
    pub fn with_database(&self, db: &str) -> Self {
        let mut config = self.config.clone();
        config.dbname(db);
        Self { shown: describe(&config), config, tls: self.tls.clone() }
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Rebuilds a URL from the parsed settings, with `***` for a password.
fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let password = if config.get_password().is_some() { ":***" } else { "" };
    let at = if user.is_empty() && password.is_empty() { "" } else { "@" };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().map(|p| format!(":{p}")).unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{password}{at}{host}{port}/{db}")
}

/// `message` without `input` and without what looks like the password in it
/// (`user:PASSWORD@` of a URL, or `password=VALUE`).
fn scrub(message: &str, input: &str) -> String {
    let mut out = message.replace(input, "***");
    for secret in password_like(input) {
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

fn password_like(input: &str) -> Vec<&str> {
    let mut found = Vec::new();
    if let Some((_, rest)) = input.split_once("://") {
        let authority = rest.rsplit_once('@').map_or("", |(a, _)| a);
        if let Some((_, pw)) = authority.split_once(':') {
            found.push(pw);
        }
    }
    for part in input.split_whitespace() {
        if let Some(pw) = part.strip_prefix("password=") {
            found.push(pw.trim_matches('\''));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Pa55";

    #[test]
    fn debug_display_and_redacted_never_show_the_password() {
        let url = PgUrl::parse(&format!("postgres://kmsd:{SECRET}@db.internal:5433/kmsd")).unwrap();
        for shown in [format!("{url:?}"), url.to_string(), url.redacted().to_owned()] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("postgres://kmsd:***@db.internal:5433/kmsd"), "{shown}");
        }
        assert_eq!(url.config().get_password(), Some(SECRET.as_bytes()), "the client still gets it");
        let other = url.with_database("t1");
        assert_eq!(other.redacted(), "postgres://kmsd:***@db.internal:5433/t1");
    }

    #[test]
    fn key_value_form_is_redacted_too() {
        let url = PgUrl::parse(&format!("host=127.0.0.1 port=5432 user=kmsd password={SECRET} dbname=k")).unwrap();
        assert_eq!(format!("{url:?}"), "PgUrl(postgres://kmsd:***@127.0.0.1:5432/k)");
        let bare = PgUrl::parse("postgres://localhost/k").unwrap();
        assert_eq!(bare.redacted(), "postgres://localhost:5432/k");
    }

    #[test]
    fn a_url_that_does_not_parse_is_refused_without_echoing_it() {
        for bad in [
            format!("postgres://kmsd:{SECRET}@db:notaport/kmsd"),
            format!("host=db port=x user=kmsd password={SECRET}"),
            format!("postgresql://kmsd:{SECRET}@db/kmsd?sslmode=bogus"),
            format!("postgresql://kmsd:{SECRET}@db/kmsd?sslmode=prefer"),
        ] {
            let err = PgUrl::parse(&bad).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("not a PostgreSQL connection URL"), "{shown}");
        }
        assert!(PgUrl::parse("user=kmsd dbname=k").is_err(), "no host");
    }

    #[test]
    fn tls_is_off_by_default_on_this_machine_only_and_sslmode_is_not_taken_from_the_url() {
        for local in
            ["postgres://k@127.0.0.1/k", "postgres://k@localhost/k", "postgres://k@[::1]/k", "host=/run/pg dbname=k"]
        {
            assert!(PgUrl::parse(local).unwrap().is_local(), "{local}");
        }
        for remote in ["postgres://k@db.internal/k", "postgres://k@10.0.0.5/k", "host=127.0.0.1,db.internal dbname=k"] {
            assert!(!PgUrl::parse(remote).unwrap().is_local(), "{remote}");
        }
        let err = PgUrl::parse("postgres://k@db/k?sslmode=require").unwrap_err();
        assert!(err.reason.contains("storage.tls"), "{err}");
    }
}
