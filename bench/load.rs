//! The closed-loop load generator: `connections` HTTP/1.1 keep-alive
//! connections, each sending its next request as soon as the previous reply
//! has been read in full. A warm-up runs first and is not recorded; the
//! measured window then runs for `duration` or until `max_requests`
//! completions, whichever comes first. Every reply is checked (status, and a
//! body check per workload); anything else is an error, in the warm-up too.
//! A target on several servers (replicas) gets each connection's requests
//! in turn: every connection keeps one keep-alive connection per server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One kind of request, sent over and over.
pub struct Target {
    pub addr: SocketAddr,
    /// Further servers: when given, each connection sends its requests to
    /// `addr` and these in turn (round robin).
    pub more_addrs: Vec<SocketAddr>,
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Further paths: when given, requests take `path` and these in turn.
    pub more_paths: Vec<String>,
    pub turn: AtomicUsize,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub expect: StatusCode,
    /// The reply body must contain this (empty: no check).
    pub body_contains: &'static str,
}

impl Target {
    /// A request to `path` answered with `expect`: no headers, no body, no body check.
    pub fn new(addr: SocketAddr, method: Method, path: String, expect: StatusCode) -> Target {
        Target {
            addr,
            more_addrs: Vec::new(),
            method,
            path,
            more_paths: Vec::new(),
            turn: AtomicUsize::new(0),
            headers: Vec::new(),
            body: Bytes::new(),
            expect,
            body_contains: "",
        }
    }

    /// Every server the requests go to, `addr` first.
    fn addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.addr).chain(self.more_addrs.iter().copied()).collect()
    }

    fn request(&self, addr: SocketAddr) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let n = self.turn.fetch_add(1, Ordering::Relaxed) % (self.more_paths.len() + 1);
        let path = if n == 0 { &self.path } else { &self.more_paths[n - 1] };
        let mut req = Request::builder().method(self.method.clone()).uri(path.as_str());
        req = req.header(hyper::header::HOST, addr.to_string());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req.body(Full::new(self.body.clone()))
    }

    fn check(&self, status: StatusCode, body: &[u8]) -> Result<(), String> {
        if status != self.expect {
            return Err(format!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
        }
        let needle = self.body_contains.as_bytes();
        if !needle.is_empty() && !body.windows(needle.len()).any(|w| w == needle) {
            return Err(format!("reply lacks {:?}: {}", self.body_contains, String::from_utf8_lossy(body)));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: u64,
}

/// What one workload measured.
#[derive(Debug, Default)]
pub struct Sample {
    /// Replies completed (and checked good) inside the window.
    pub requests: u64,
    /// Failed requests, warm-up included.
    pub errors: u64,
    /// Every good reply, warm-up and the tail after the window included.
    pub completed_all: u64,
    pub elapsed: Duration,
    /// Latency of every request counted in `requests`, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// The first few error messages.
    pub first_errors: Vec<String>,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile in milliseconds (`q` in 0..=1).
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(self.latencies_us[rank - 1]) / 1000.0
    }
}

const WARMUP: u8 = 0;
const RECORDING: u8 = 1;
const STOPPED: u8 = 2;

struct Shared {
    target: Target,
    phase: AtomicU8,
    recorded: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_errors.lock() {
            if first.len() < 5 {
                first.push(message);
            }
        }
    }
}

/// Runs one workload. `snapshot` is called at the start and at the end of the
/// measured window (server CPU and RSS); both values are returned.
pub async fn run<S>(target: Target, cfg: LoadConfig, snapshot: impl Fn() -> S) -> (Sample, S, S) {
    let shared = Arc::new(Shared {
        target,
        phase: AtomicU8::new(WARMUP),
        recorded: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
    });
    let workers: Vec<_> = (0..cfg.connections.max(1)).map(|_| tokio::spawn(worker(shared.clone()))).collect();
    tokio::time::sleep(cfg.warmup).await;
    let before = snapshot();
    let started = Instant::now();
    shared.phase.store(RECORDING, Ordering::SeqCst);
    while started.elapsed() < cfg.duration && shared.recorded.load(Ordering::Relaxed) < cfg.max_requests {
        tokio::time::sleep(Duration::from_millis(20).min(cfg.duration)).await;
    }
    shared.phase.store(STOPPED, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let after = snapshot();
    let mut latencies = Vec::new();
    for w in workers {
        // A request in flight gets 30 s to finish; one that hangs longer is an error.
        match tokio::time::timeout(Duration::from_secs(30), w).await {
            Ok(Ok(mut l)) => latencies.append(&mut l),
            Ok(Err(e)) => shared.error(format!("load worker failed: {e}")),
            Err(_) => shared.error("a request did not finish within 30 s of the end of the run".into()),
        }
    }
    latencies.sort_unstable();
    let first_errors = shared.first_errors.lock().map(|f| f.clone()).unwrap_or_default();
    let sample = Sample {
        requests: latencies.len() as u64,
        errors: shared.errors.load(Ordering::Relaxed),
        completed_all: shared.completed.load(Ordering::Relaxed),
        elapsed,
        latencies_us: latencies,
        first_errors,
    };
    (sample, before, after)
}

/// A keep-alive connection: its request sender and its driver task.
type Conn = (hyper::client::conn::http1::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<hyper::Result<()>>);

/// One connection's loop (one connection per server, taken in turn);
/// reconnects after a connection-level failure.
async fn worker(shared: Arc<Shared>) -> Vec<u32> {
    let mut latencies = Vec::new();
    let addrs = shared.target.addrs();
    let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
    for turn in 0.. {
        if shared.phase.load(Ordering::Relaxed) == STOPPED {
            break;
        }
        let at = turn % addrs.len();
        let (sender, _) = match &mut conns[at] {
            Some(conn) => conn,
            None => match connect(addrs[at]).await {
                Ok(conn) => conns[at].insert(conn),
                Err(e) => {
                    shared.error(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = sender.ready().await {
            shared.error(format!("connection closed: {e}"));
            drop_conn(&mut conns[at]);
            continue;
        }
        let request = match shared.target.request(addrs[at]) {
            Ok(r) => r,
            Err(e) => {
                shared.error(format!("building the request: {e}"));
                break;
            }
        };
        let started = Instant::now();
        let reply = match sender.send_request(request).await {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_body().collect().await {
                    Ok(body) => Ok((status, body.to_bytes())),
                    Err(e) => Err(format!("reading the reply: {e}")),
                }
            }
            Err(e) => Err(format!("request: {e}")),
        };
        let took = started.elapsed();
        let (status, body) = match reply {
            Ok(r) => r,
            Err(e) => {
                // The connection is in an unknown state: start a new one.
                shared.error(e);
                drop_conn(&mut conns[at]);
                continue;
            }
        };
        let checked = shared.target.check(status, &body);
        if checked.is_ok() {
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
        match checked {
            Ok(()) if shared.phase.load(Ordering::Relaxed) == RECORDING => {
                latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                shared.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(e) => shared.error(e),
        }
    }
    conns.iter_mut().for_each(drop_conn);
    latencies
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    Ok((sender, tokio::spawn(conn)))
}

fn drop_conn(conn: &mut Option<Conn>) {
    if let Some((_, driver)) = conn.take() {
        driver.abort();
    }
}

/// One request outside the measured loop (setup); returns status and body.
pub async fn once(target: &Target) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(target.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(target.request(target.addr)?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}
