//! The listeners: one accept loop per listening socket, serving a router
//! over hyper's HTTP/1 server, that owns every connection's life.
//! - Each listener has its own connection cap ([`Budgets`], sized from the
//!   file-descriptor limit). At the cap it stops accepting: new connections
//!   wait in the kernel's backlog until one closes.
//! - Descriptor exhaustion (EMFILE, ENFILE) makes accept back off for a few
//!   milliseconds; it never spins and never stops the listener.
//! - Per-connection deadlines (header read, idle) are [`connection`]'s.
//! - Shutdown: stop accepting, let connections finish their request for the
//!   drain deadline, then close whatever is left.
//!
//! Not here: routing and the per-request limits (in-flight bound, request
//! deadline, body size), which are `http`'s. TLS ([`tls`]) is at the
//! accepted socket: the handshake runs inside the connection task, under its
//! header-read deadline and its connection slot, so a slow handshake never
//! blocks accepting.

mod budget;
mod connection;
mod limits;
pub mod tls;
mod tls_files;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use budget::{raise_fd_limit, Budgets};
pub use limits::ConnectionLimits;
pub use tls::{TlsEndpoint, TlsError, TlsReload};
pub use tls_files::{ListenTls, TlsFiles};

use connection::{Accepted, Timeouts};

/// How long accept waits after a failure that would repeat at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Connections the kernel holds for a listener at its cap (capped by
/// `net.core.somaxconn`); std and tokio would ask for 128.
const BACKLOG: u32 = 1024;

/// Binds a listening socket (`SO_REUSEADDR`, backlog [`BACKLOG`]).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A bound socket and what it may hold.
pub struct Listener {
    /// `public` or `admin`, for the logs.
    pub name: &'static str,
    pub tcp: TcpListener,
    pub max_connections: usize,
    /// `Some`: connections are TLS, with this listener's current certificate.
    pub tls: Option<Arc<TlsEndpoint>>,
}

/// Serves `router` on `listener` until `stop` turns true, then drains for
/// `limits.drain_timeout` and closes the connections that remain.
pub async fn serve(listener: Listener, router: Router, limits: ConnectionLimits, mut stop: watch::Receiver<bool>) {
    let Listener { name, tcp, max_connections, tls } = listener;
    let slots = Arc::new(Semaphore::new(max_connections));
    let timeouts = Timeouts::from(&limits);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next() => {}
            accepted = accept(&tcp, &slots) => match accepted {
                Ok(accepted) => {
                    connections.spawn(connection::accept(accepted, tls.clone(), router.clone(), timeouts, drain_rx.clone()));
                }
                Err(e) => errors.back_off(name, e).await,
            },
        }
    }
    drop(tcp);
    let _ = drain_tx.send(true);
    drain(name, connections, limits.drain_timeout).await;
}

/// Waits for a free connection slot, then for a connection.
async fn accept(tcp: &TcpListener, slots: &Arc<Semaphore>) -> io::Result<Accepted> {
    let slot = slots.clone().acquire_owned().await.map_err(io::Error::other)?;
    let (stream, remote) = tcp.accept().await?;
    Ok(Accepted { stream, remote, at: Instant::now(), slot })
}

/// Lets open connections finish for `deadline`, then closes the rest.
async fn drain(name: &str, mut connections: JoinSet<()>, deadline: Duration) {
    if connections.is_empty() {
        return;
    }
    tracing::info!(listener = name, open = connections.len(), "draining connections");
    let finished = tokio::time::timeout(deadline, async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            listener = name,
            remaining = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
        connections.shutdown().await;
    }
}

/// Accept failures. Descriptor exhaustion and kernel memory pressure leave
/// the connection in the backlog and would fail again at once, so accept
/// sleeps briefly; a connection its peer already reset is just skipped.
/// Logged at most once a second per listener, with the count in between.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    async fn back_off(&mut self, listener: &str, e: io::Error) {
        if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
            return;
        }
        self.unlogged += 1;
        if self.last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(listener, error = %e, failures = self.unlogged, "accept failed; backing off");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn descriptor_exhaustion_backs_off_and_a_reset_peer_does_not() {
        let mut errors = AcceptErrors::default();
        let started = Instant::now();
        for _ in 0..3 {
            errors.back_off("public", io::Error::from_raw_os_error(libc::EMFILE)).await;
        }
        assert_eq!(started.elapsed(), 3 * ACCEPT_BACKOFF, "each EMFILE waits instead of spinning");
        assert_eq!(errors.unlogged, 2, "logged once, then counted");
        let reset = Instant::now();
        errors.back_off("public", io::ErrorKind::ConnectionReset.into()).await;
        assert_eq!(reset.elapsed(), Duration::ZERO);
    }
}
