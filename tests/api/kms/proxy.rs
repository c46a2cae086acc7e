//! A loopback fault proxy between kmsd and the emulator, for what the
//! emulator cannot do itself: a network partition that kmsd must survive while
//! the emulator (and the keys it holds, which moto does not persist across a
//! restart) lives on, and an honest count of the Sign requests that reached it.
//! The same proxy stands in front of PostgreSQL for a replica cut from its
//! database (`postgres::degraded`).
//!
//! Plain threads and blocking sockets, so it runs beside any test runtime.
//! While cut, connections are still accepted but every byte is swallowed in
//! both directions, so a call hangs until kmsd's own timeout ends it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The header line of a KMS Sign request (AWS JSON 1.1 protocol).
const SIGN_TARGET: &[u8] = b"TrentService.Sign\r\n";

struct Shared {
    upstream: SocketAddr,
    up: AtomicBool,
    stop: AtomicBool,
    signs: AtomicU64,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Forwards 127.0.0.1:<ephemeral> to the emulator on `upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            up: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            signs: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => connect(conn, s.clone()),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A partition: from now on nothing passes, in either direction.
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Sign requests forwarded to the emulator so far.
    pub fn sign_requests(&self) -> u64 {
        self.shared.signs.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn connect(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream) else { return };
    let (Ok(client_out), Ok(upstream_in)) = (client.try_clone(), upstream.try_clone()) else { return };
    for s in [&client, &upstream] {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    let s = shared.clone();
    std::thread::spawn(move || pump(client, upstream, &s, true));
    std::thread::spawn(move || pump(upstream_in, client_out, &shared, false));
}

/// Copies `from` to `to` until either side closes; counts Sign requests on
/// the way to the emulator (`requests`), and swallows everything while cut.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, requests: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the previous chunk, so a header split across reads is seen.
    let mut seen: Vec<u8> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        if !shared.up.load(Ordering::SeqCst) {
            continue;
        }
        if requests {
            let carried = seen.len();
            seen.extend_from_slice(&buf[..n]);
            let found = seen
                .windows(SIGN_TARGET.len())
                .enumerate()
                .filter(|(i, w)| *w == SIGN_TARGET && i + SIGN_TARGET.len() > carried);
            shared.signs.fetch_add(found.count() as u64, Ordering::SeqCst);
            let keep = seen.len().saturating_sub(SIGN_TARGET.len());
            seen.drain(..keep);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
