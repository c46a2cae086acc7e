//! TLS for the listeners (rustls with the aws-lc-rs provider): each
//! listener's certificate and key, and for the admin listener the CA its
//! clients' certificates must chain to (mTLS; a client without one fails the
//! handshake).
//!
//! Reload: [`TlsReload::reload`] re-reads every listener's files (the SIGHUP
//! entry point), and [`TlsReload::watch`] does it when a file's size, inode
//! or mtime changes, polled at a fixed interval. A set of files that does not
//! load (a half-written rotation, a key that does not match its certificate)
//! is logged and the previous configuration goes on serving; new connections
//! get the new one once it loads, open ones keep theirs.
//!
//! Not here: the handshake's deadline, which is the connection's header-read
//! timeout ([`super::connection::accept`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{ListenTls, TlsFiles};

/// A TLS file or configuration that cannot be used. `context` says whose
/// (`public listener`, `admin listener`, `--ca-file`...). Never carries key
/// material: a malformed key is reported by its path only.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{context}: cannot read {}: {source}", path.display())]
    Read { context: &'static str, path: PathBuf, source: io::Error },
    #[error("{context}: {} holds no PEM {what}", path.display())]
    Empty { context: &'static str, path: PathBuf, what: &'static str },
    #[error("{context}: {}: {reason}", path.display())]
    Pem { context: &'static str, path: PathBuf, reason: String },
    #[error("{context}: {reason}")]
    Config { context: &'static str, reason: String },
}

/// The crypto provider every TLS configuration of kmsd uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What identifies a file's content cheaply: (inode, size, mtime).
type Stamp = Vec<Option<(u64, u64, SystemTime)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let of = |m: std::fs::Metadata| (m.ino(), m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
    files.paths().map(|p| std::fs::metadata(p).ok().map(of)).collect()
}

/// One listener's TLS: the configuration new connections get.
pub struct TlsEndpoint {
    /// `public listener` or `admin listener`, for errors and logs.
    context: &'static str,
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// The stamp of the files last tried, loaded or not: a poll retries only
    /// once they change again.
    tried: RwLock<Stamp>,
}

impl TlsEndpoint {
    pub fn load(context: &'static str, files: TlsFiles) -> Result<Self, TlsError> {
        let tried = stamp(&files);
        let config = server_config(context, &files)?;
        Ok(TlsEndpoint { context, files, current: RwLock::new(config), tried: RwLock::new(tried) })
    }

    /// Whether clients must present a certificate (mTLS).
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Re-reads the files; on failure the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.tried.write().unwrap_or_else(PoisonError::into_inner) = stamp(&self.files);
        let config = server_config(self.context, &self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.tried.read().unwrap_or_else(PoisonError::into_inner) != stamp(&self.files)
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(listener = self.context, why, "TLS certificate reloaded"),
            Err(e) => tracing::warn!(error = %e, why, "TLS reload failed; the previous certificate is still served"),
        }
    }
}

/// Both listeners' TLS, as loaded at start.
#[derive(Clone, Default)]
pub struct TlsReload {
    pub public: Option<Arc<TlsEndpoint>>,
    pub admin: Option<Arc<TlsEndpoint>>,
    interval: Duration,
}

impl TlsReload {
    /// Loads every configured listener's files; a failure stops the start.
    pub fn load(tls: &ListenTls) -> Result<Self, TlsError> {
        let endpoint = |name, files: &Option<TlsFiles>| {
            files.clone().map(|f| TlsEndpoint::load(name, f).map(Arc::new)).transpose()
        };
        Ok(TlsReload {
            public: endpoint("public listener", &tls.public)?,
            admin: endpoint("admin listener", &tls.admin)?,
            interval: tls.reload_interval,
        })
    }

    fn endpoints(&self) -> impl Iterator<Item = &Arc<TlsEndpoint>> {
        self.public.iter().chain(self.admin.iter())
    }

    /// The reload entry point (SIGHUP): re-reads every listener's files.
    pub fn reload(&self) {
        for e in self.endpoints() {
            e.reload_logged("reload requested");
        }
    }

    /// Polls the files every reload interval until `stop`, reloading a
    /// listener whose files changed.
    pub async fn watch(self, mut stop: watch::Receiver<bool>) {
        if self.endpoints().next().is_none() {
            return;
        }
        // The first poll is one interval after the start: an immediate first
        // tick, run late on a loaded runtime, would reload a change made
        // long after the start as if the interval had passed.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for e in self.endpoints().filter(|e| e.changed()) {
                e.reload_logged("certificate files changed");
            }
        }
    }
}

fn server_config(context: &'static str, files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(context, &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_error(context, &files.key, e))?;
    let provider = provider();
    let config_error = |e: rustls::Error| TlsError::Config { context, reason: e.to_string() };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(context, ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem { context, path: ca.clone(), reason: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config { context, reason: format!("client CA {}: {e}", ca.display()) })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config {
        context,
        reason: format!("certificate {} with key {}: {e}", files.cert.display(), files.key.display()),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates a client trusts: those of `ca_file` if given (at least
/// one), else the system's roots.
pub fn trust_roots(context: &'static str, ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            for cert in certificates(context, ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem { context, path: ca.to_owned(), reason: e.to_string() })?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(roots)
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(context: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(context, path, e, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(context, path, e, "certificate"))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { context, path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

/// A key file's error without its parser's detail, which may quote the file.
pub fn key_error(context: &'static str, path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match pem_error(context, path, e, "private key") {
        TlsError::Pem { context, path, .. } => {
            TlsError::Pem { context, path, reason: "not a PEM private key (PKCS#8, PKCS#1 or SEC1)".into() }
        }
        other => other,
    }
}

fn pem_error(context: &'static str, path: &Path, e: rustls::pki_types::pem::Error, what: &'static str) -> TlsError {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(source) => TlsError::Read { context, path: path.to_owned(), source },
        Error::NoItemsFound => TlsError::Empty { context, path: path.to_owned(), what },
        other => TlsError::Pem { context, path: path.to_owned(), reason: other.to_string() },
    }
}
