//! The `[listen]` TLS fields, checked: which listener serves TLS from which
//! certificate and key files, whether the admin listener requires client
//! certificates (mTLS), and how often the files are polled for a change.
//!
//! Invariant: an admin listener on a non-loopback address has TLS, unless
//! `listen.admin_insecure = true` says the operator means it. The files are
//! only checked to be readable here; parsing them is the listener's (at start
//! and on every reload), so that `config` does not depend on rustls.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::listener::{ListenTls, TlsFiles};

use super::file::ListenSection;
use super::{duration_or, Problems};

/// Reads the TLS fields of `[listen]`; `admin` is the admin address, if it parsed.
pub(super) fn listen_tls(listen: &ListenSection, admin: Option<SocketAddr>, problems: &mut Problems) -> ListenTls {
    let public = pair(problems, "public", &listen.public_tls_cert, &listen.public_tls_key, None);
    let client_ca = listen.admin_client_ca.as_ref().map(PathBuf::from);
    let admin_tls = pair(problems, "admin", &listen.admin_tls_cert, &listen.admin_tls_key, client_ca.clone());
    if let Some(ca) = &client_ca {
        readable(problems, "listen.admin_client_ca", ca);
        if admin_tls.is_none() {
            problems.add(
                "listen.admin_client_ca",
                "client certificates need TLS: set listen.admin_tls_cert and listen.admin_tls_key",
            );
        }
    }
    let insecure = listen.admin_insecure.unwrap_or(false);
    if let Some(addr) = admin.filter(|a| !a.ip().is_loopback()) {
        if admin_tls.is_none() && !insecure {
            problems.add(
                "listen.admin",
                format!(
                    "{addr} is not a loopback address and the admin listener has no TLS: set listen.admin_tls_cert and \
                     listen.admin_tls_key (and listen.admin_client_ca for client certificates), or set \
                     listen.admin_insecure = true to serve admin keys in clear text on purpose"
                ),
            );
        }
    }
    let default = ListenTls::default().reload_interval.as_secs();
    let reload_interval =
        duration_or(problems, "listen.tls_reload_interval", listen.tls_reload_interval.clone(), default);
    if !(1..=3600).contains(&reload_interval.as_secs()) {
        problems.add("listen.tls_reload_interval", "must be within 1s..=3600s");
    }
    ListenTls { public, admin: admin_tls, reload_interval }
}

/// A listener's cert and key: both or neither.
fn pair(
    problems: &mut Problems,
    listener: &str,
    cert: &Option<String>,
    key: &Option<String>,
    client_ca: Option<PathBuf>,
) -> Option<TlsFiles> {
    let (cert_field, key_field) = (format!("listen.{listener}_tls_cert"), format!("listen.{listener}_tls_key"));
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles { cert: cert.into(), key: key.into(), client_ca };
            readable(problems, &cert_field, &files.cert);
            readable(problems, &key_field, &files.key);
            Some(files)
        }
        (Some(_), None) => {
            problems.add(key_field, format!("missing: {cert_field} needs its private key"));
            None
        }
        (None, Some(_)) => {
            problems.add(cert_field, format!("missing: {key_field} needs its certificate"));
            None
        }
        (None, None) => None,
    }
}

fn readable(problems: &mut Problems, field: &str, path: &Path) {
    if let Err(e) = std::fs::File::open(path) {
        problems.add(field, format!("cannot read {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::connections::tests::load;
    use crate::config::ConfigErrors;

    fn paths(e: &ConfigErrors) -> Vec<&str> {
        e.0.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_non_loopback_admin_listener_needs_tls_or_an_explicit_insecure_flag() {
        let e = load(&[("KMSD_LISTEN__ADMIN", "0.0.0.0:8788")]).unwrap_err();
        assert_eq!(paths(&e), ["listen.admin"], "{e}");
        assert!(e.to_string().contains("not a loopback address and the admin listener has no TLS"), "{e}");
        let c = load(&[("KMSD_LISTEN__ADMIN", "[::]:8788"), ("KMSD_LISTEN__ADMIN_INSECURE", "true")]);
        assert!(c.unwrap().tls.admin.is_none());
        let c = load(&[("KMSD_LISTEN__ADMIN", "[::1]:8788")]).unwrap();
        assert_eq!(c.tls, super::ListenTls::default());
    }

    #[test]
    fn tls_files_come_in_pairs_must_be_readable_and_client_cas_need_tls() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let cert = cert.to_str().unwrap();
        let e = load(&[
            ("KMSD_LISTEN__PUBLIC_TLS_CERT", cert),
            ("KMSD_LISTEN__ADMIN_TLS_KEY", cert),
            ("KMSD_LISTEN__ADMIN_CLIENT_CA", "/nonexistent/ca.pem"),
            ("KMSD_LISTEN__TLS_RELOAD_INTERVAL", "0s"),
        ])
        .unwrap_err();
        assert_eq!(
            paths(&e),
            [
                "listen.public_tls_key",
                "listen.admin_tls_cert",
                "listen.admin_client_ca",
                "listen.admin_client_ca",
                "listen.tls_reload_interval"
            ],
            "{e}"
        );
        let c = load(&[
            ("KMSD_LISTEN__ADMIN_TLS_CERT", cert),
            ("KMSD_LISTEN__ADMIN_TLS_KEY", cert),
            ("KMSD_LISTEN__ADMIN_CLIENT_CA", cert),
            ("KMSD_LISTEN__ADMIN", "0.0.0.0:1"),
            ("KMSD_LISTEN__TLS_RELOAD_INTERVAL", "2s"),
        ])
        .unwrap();
        let admin = c.tls.admin.unwrap();
        assert_eq!(admin.client_ca.as_deref(), Some(std::path::Path::new(cert)));
        assert_eq!(admin.paths().count(), 3);
        assert_eq!(c.tls.reload_interval, std::time::Duration::from_secs(2));
    }

    #[test]
    fn public_tls_makes_the_default_base_url_https() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let cert = cert.to_str().unwrap();
        let c = load(&[("KMSD_LISTEN__PUBLIC_TLS_CERT", cert), ("KMSD_LISTEN__PUBLIC_TLS_KEY", cert)]);
        assert_eq!(c.unwrap().public_base_url, "https://127.0.0.1:8787");
    }
}
