//! TLS to PostgreSQL (`storage.tls = "verify-full"`): tokio-postgres's TLS
//! hooks over tokio-rustls, with kmsd's one crypto provider (aws-lc-rs).
//! The server's certificate is verified against `storage.ca_file` (or the
//! system's roots) and must name the host kmsd connects to, as libpq's
//! `verify-full` does; there is no mode that encrypts without verifying.
//!
//! Channel binding is not offered (SCRAM-SHA-256 without `-PLUS`): the
//! verified certificate already authenticates the server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

/// The connector every PostgreSQL connection of kmsd is made with: TLS when
/// it holds a client configuration, plain otherwise (the URL's `sslmode`
/// is then `disable`, so it is never asked for TLS).
#[derive(Clone, Default)]
pub struct MakeRustls(pub(crate) Option<Arc<rustls::ClientConfig>>);

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "verify-full" } else { "disable" })
    }
}

/// A client configuration trusting `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let config = rustls::ClientConfig::builder_with_provider(crate::listener::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error("TLS to PostgreSQL was asked for without a TLS configuration")]
    NotConfigured,
    #[error("{0:?} is not a host name or address a certificate can name")]
    Name(String),
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = TlsConnectError;

    /// Called for every host, TLS or not (tokio-postgres decides later from
    /// the `sslmode`), so nothing is refused here.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsConnectError> {
        Ok(RustlsConnect { config: self.0.clone(), domain: domain.to_owned() })
    }
}

pub struct RustlsConnect {
    config: Option<Arc<rustls::ClientConfig>>,
    domain: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| io::Error::other(TlsConnectError::NotConfigured))?;
            let name = ServerName::try_from(self.domain.clone())
                .map_err(|_| io::Error::other(TlsConnectError::Name(self.domain)))?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// An established TLS session to the server.
pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
