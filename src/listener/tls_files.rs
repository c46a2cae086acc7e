//! What the listeners serve TLS from: certificate and key files per
//! listener, the admin listener's client CA (mTLS), and how often the files
//! are polled. `config` builds these from `[listen]`; [`super::tls`] loads
//! them (at start and on every reload).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One listener's certificate chain and key (PEM), and for the admin
/// listener the CA bundle client certificates must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `Some`: a client certificate issued under this CA is required.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file this listener reads, for the change poll.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path()), self.client_ca.as_deref()].into_iter().flatten()
    }
}

/// TLS of both listeners. `None`: that listener speaks plain HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenTls {
    pub public: Option<TlsFiles>,
    pub admin: Option<TlsFiles>,
    /// The certificate files are checked for a change this often.
    pub reload_interval: Duration,
}

impl Default for ListenTls {
    fn default() -> Self {
        ListenTls { public: None, admin: None, reload_interval: Duration::from_secs(10) }
    }
}
