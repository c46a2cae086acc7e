//! One connection's life: hyper's HTTP/1 server over the socket, with a
//! watchdog beside it so that no connection stays open doing nothing. The
//! rules are those of Go's `ReadHeaderTimeout` and `IdleTimeout`:
//! - a new connection has `header_read_timeout` from accept to a complete
//!   request head;
//! - between requests, a kept-alive connection may stay silent for
//!   `idle_timeout`; from the first byte of its next request, that request's
//!   head has `header_read_timeout`;
//! - while a request is served, its deadline is the request timeout (the
//!   `http` layer's), not the watchdog's; writing a response to a client that
//!   does not read it counts as idle.
//!
//! hyper's own `header_read_timeout` is off: its timer also runs while a
//! kept-alive connection waits for its next request, so it cannot give idle
//! connections a different bound than slow request heads.
//! On a TLS listener the handshake is part of the first request head: it
//! runs inside the same `header_read_timeout` from accept ([`accept`]).
//! When a deadline passes the socket is closed (no response: the client has
//! not sent a request to answer). On drain, hyper finishes the request in
//! progress and closes; the watchdog's deadlines still apply meanwhile.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower::ServiceExt;

use super::tls::TlsEndpoint;
use super::ConnectionLimits;

#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

impl From<&ConnectionLimits> for Timeouts {
    fn from(l: &ConnectionLimits) -> Self {
        Timeouts { header_read: l.header_read_timeout, idle: l.idle_timeout }
    }
}

/// A connection as accepted: its socket, its peer and when it came.
pub(super) struct Accepted {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    pub at: Instant,
    /// The listener's connection permit, given back when the connection ends.
    pub slot: OwnedSemaphorePermit,
}

/// Serves one accepted connection: plain, or after a TLS handshake that must
/// finish within the header-read timeout from accept (a client that never
/// finishes one is closed like one that never sends a request head).
pub(super) async fn accept(
    conn: Accepted,
    tls: Option<Arc<TlsEndpoint>>,
    router: Router,
    timeouts: Timeouts,
    drain: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        return run(conn.stream, conn.remote, conn.at, router, timeouts, drain, conn.slot).await;
    };
    let remote = conn.remote;
    match tokio::time::timeout_at(conn.at + timeouts.header_read, tls.acceptor().accept(conn.stream)).await {
        Ok(Ok(stream)) => run(stream, remote, conn.at, router, timeouts, drain, conn.slot).await,
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake not finished within the header-read timeout; closing"),
    }
}

/// Serves HTTP/1 on `io` until the client leaves, a watchdog deadline
/// passes, or a drain finishes the request in progress. `io` is the plain
/// socket or a TLS stream; `accepted_at` starts the first head's deadline.
/// `_slot` is the listener's connection permit, given back when this returns.
async fn run<I>(
    io: I,
    remote: SocketAddr,
    accepted_at: Instant,
    router: Router,
    timeouts: Timeouts,
    mut drain: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(accepted_at));
    let service = {
        let activity = activity.clone();
        service_fn(move |mut req: Request<Incoming>| {
            // What axum's `into_make_service_with_connect_info` would insert.
            req.extensions_mut().insert(ConnectInfo(remote));
            let serving = Serving::begin(activity.clone());
            let response = router.clone().oneshot(req.map(Body::new));
            async move {
                let response = response.await;
                drop(serving);
                response
            }
        })
    };
    let io = TokioIo::new(Watched { io, activity: activity.clone() });
    let conn = http1::Builder::new().header_read_timeout(None).serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.expired(timeouts) => {
                tracing::debug!(%remote, "connection timed out; closing it");
                return;
            }
            _ = drain.wait_for(|d| *d), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, as its watchdog sees it. HTTP/1 serves one
/// request at a time, so there are two phases.
#[derive(Clone, Copy)]
enum Phase {
    /// Waiting for a request since `since` (the first on the connection, or a
    /// later one), and since `first_byte` for the rest of its head.
    Waiting {
        since: Instant,
        first: bool,
        first_byte: Option<Instant>,
    },
    Serving,
}

struct Activity {
    phase: Mutex<Phase>,
    /// Set while waiting for a request's first byte, so that reads check it
    /// without the lock.
    awaiting_first_byte: AtomicBool,
    /// Wakes the watchdog when a deadline may have moved.
    changed: Notify,
}

impl Activity {
    fn new(accepted_at: Instant) -> Self {
        Activity {
            phase: Mutex::new(Phase::Waiting { since: accepted_at, first: true, first_byte: None }),
            awaiting_first_byte: AtomicBool::new(true),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A read returned bytes.
    fn read_bytes(&self) {
        if self.awaiting_first_byte.swap(false, Ordering::Relaxed) {
            if let Phase::Waiting { first_byte: first_byte @ None, .. } = &mut *self.phase() {
                *first_byte = Some(Instant::now());
            }
            self.changed.notify_one();
        }
    }

    fn deadline(&self, t: Timeouts) -> Option<Instant> {
        match *self.phase() {
            Phase::Serving => None,
            Phase::Waiting { since, first: true, .. } => Some(since + t.header_read),
            Phase::Waiting { first_byte: Some(at), .. } => Some(at + t.header_read),
            Phase::Waiting { since, .. } => Some(since + t.idle),
        }
    }

    /// Resolves once the connection has outlived its current deadline.
    async fn expired(&self, t: Timeouts) {
        loop {
            match self.deadline(t) {
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request being served: from hyper's call of the service until its
/// response head is ready (or the call is dropped).
struct Serving(Arc<Activity>);

impl Serving {
    fn begin(activity: Arc<Activity>) -> Self {
        *activity.phase() = Phase::Serving;
        activity.awaiting_first_byte.store(false, Ordering::Relaxed);
        Serving(activity)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        *self.0.phase() = Phase::Waiting { since: Instant::now(), first: false, first_byte: None };
        self.0.awaiting_first_byte.store(true, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// The connection's byte stream, telling [`Activity`] when bytes arrive.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_bytes();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_from_accept_even_after_its_first_byte() {
        let a = Activity::new(Instant::now());
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(4)).await;
        a.read_bytes();
        assert_eq!(a.deadline(T), Some(start + T.header_read));
        a.expired(T).await;
        assert_eq!(Instant::now(), start + T.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_idle_applies_until_the_next_first_byte_then_the_header_timeout() {
        let a = Arc::new(Activity::new(Instant::now()));
        let serving = Serving::begin(a.clone());
        assert_eq!(a.deadline(T), None, "no watchdog deadline while serving");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(serving);
        let idle_from = Instant::now();
        assert_eq!(a.deadline(T), Some(idle_from + T.idle));
        tokio::time::advance(Duration::from_secs(30)).await;
        a.read_bytes();
        let first_byte = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        a.read_bytes();
        assert_eq!(a.deadline(T), Some(first_byte + T.header_read), "the second read does not move it");
        a.expired(T).await;
        assert_eq!(Instant::now(), first_byte + T.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_wakes_when_a_request_ends_and_waits_for_the_idle_deadline() {
        let a = Arc::new(Activity::new(Instant::now()));
        let serving = Serving::begin(a.clone());
        let watchdog = tokio::spawn({
            let a = a.clone();
            async move { a.expired(T).await }
        });
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(!watchdog.is_finished(), "a request being served never expires");
        drop(serving);
        let idle_from = Instant::now();
        watchdog.await.unwrap();
        assert_eq!(Instant::now(), idle_from + T.idle);
    }
}
