//! Connections under abuse, through the real daemon and raw sockets: slow and
//! idle sockets are closed within the configured timeouts while other clients
//! are served; SIGTERM with a half-sent request exits within the drain
//! deadline; a public listener full of silent sockets under a 1024-descriptor
//! limit leaves the admin listener working; oversized `Expect: 100-continue`
//! bodies get 413 at once; the in-flight bound and the request deadline
//! answer JSON instead of hanging.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, Instant};

use crate::daemon::{bootstrap_key, client, Daemon};
use crate::tokens;

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, which must
/// allow `need` descriptors (root in CI can; so can most developer machines).
fn raise_own_fd_limit(need: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only touch the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(limit.rlim_cur >= need, "this test needs {need} file descriptors; the hard limit is {}", limit.rlim_max);
}

/// Runs the command with soft and hard RLIMIT_NOFILE set to `n`.
fn limit_fds(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec; it only calls
    // setrlimit (async-signal-safe) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
}

/// Reads one response (head, then a Content-Length body) within `within`:
/// its status, head and body.
async fn read_response(s: &mut TcpStream, within: Duration) -> Result<(u16, String, String), String> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status: u16 =
                    head.get(9..12).and_then(|s| s.parse().ok()).ok_or(format!("bad status line: {head}"))?;
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if status < 200 || buf.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                    return Ok((status, head, body));
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) => return Err(format!("connection closed after {:?}", String::from_utf8_lossy(&buf))),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    };
    timeout(within, read).await.unwrap_or_else(|_| Err(format!("no complete response within {within:?}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request line, then one header line a second, never the end.
    Trickle,
    /// Sends one request, reads the response, then stays silent.
    KeptAlive,
}

/// How long a held socket waits for the server to close it.
const GIVE_UP: Duration = Duration::from_secs(9);

struct Held {
    kind: Slow,
    /// From connect (or from the response, when kept alive) to the close.
    after: Option<Duration>,
    closed_at: Instant,
}

/// Opens one slow socket (at most `gate` at a time), reports it ready, and
/// waits for the server to close it.
async fn hold(addr: String, kind: Slow, gate: Arc<Semaphore>, ready: mpsc::Sender<()>) -> Held {
    let permit = gate.acquire_owned().await.unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut since = Instant::now();
    match kind {
        Slow::Silent => {}
        Slow::Trickle => s.write_all(b"GET /health HTTP/1.1\r\nHost: kmsd\r\n").await.unwrap(),
        Slow::KeptAlive => {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: kmsd\r\n\r\n").await.unwrap();
            let (status, head, _) = read_response(&mut s, Duration::from_secs(10)).await.unwrap();
            assert_eq!(status, 200, "{head}");
            since = Instant::now();
        }
    }
    drop(permit);
    ready.send(()).await.unwrap();
    let mut tick = tokio::time::interval_at(since + Duration::from_secs(1), Duration::from_secs(1));
    let mut buf = [0u8; 1024];
    let mut lines = 0;
    let closed = |at: Instant| Held { kind, after: Some(at - since), closed_at: at };
    loop {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => return closed(Instant::now()),
                Ok(_) => {}
            },
            _ = tick.tick(), if kind == Slow::Trickle => {
                lines += 1;
                if s.write_all(format!("X-Slow-{lines}: 1\r\n").as_bytes()).await.is_err() {
                    return closed(Instant::now());
                }
            }
            () = tokio::time::sleep_until(since + GIVE_UP) => return Held { kind, after: None, closed_at: Instant::now() },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_and_idle_sockets_are_closed_in_time_while_other_clients_are_served() {
    const SOCKETS: usize = 2_000;
    raise_own_fd_limit(SOCKETS as u64 + 500);
    let e = tokens::start(&[("KMSD_HTTP__HEADER_READ_TIMEOUT", "3s"), ("KMSD_HTTP__IDLE_TIMEOUT", "5s")]);
    let id = e.identity("slow-sockets", &["relayfile:fs:read:/docs/*"]).await;
    let (status, pair) = e.issue(&e.admin, json!({ "identityId": id, "audience": ["svc"] })).await;
    assert_eq!(status, 201, "{pair}");
    let token = pair["accessToken"].as_str().unwrap().to_owned();

    let gate = Arc::new(Semaphore::new(100));
    let (ready_tx, mut ready_rx) = mpsc::channel(SOCKETS);
    let kinds = [Slow::Silent, Slow::Trickle, Slow::KeptAlive];
    let held: Vec<_> = (0..SOCKETS)
        .map(|i| tokio::spawn(hold(host(&e.d.public).to_owned(), kinds[i % 3], gate.clone(), ready_tx.clone())))
        .collect();
    drop(ready_tx);
    let opening = Instant::now();
    let opened = timeout(Duration::from_secs(20), async {
        let mut n = 0;
        while n < SOCKETS && ready_rx.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await;
    assert_eq!(opened, Ok(SOCKETS), "could not open {SOCKETS} sockets");
    eprintln!("opened {SOCKETS} slow sockets in {:?}", opening.elapsed());

    // While they are open, a normal client is served quickly on both listeners.
    let c = client();
    let mut slowest = [Duration::ZERO; 2];
    for _ in 0..3 {
        let started = Instant::now();
        let jwks = c.get(e.jwks_url()).send().await.unwrap();
        assert_eq!(jwks.status(), 200);
        let keys: Value = jwks.json().await.unwrap();
        let took = started.elapsed();
        assert!(!keys["keys"].as_array().unwrap().is_empty());
        assert!(took < Duration::from_millis(100), "JWKS took {took:?} beside {SOCKETS} slow sockets");
        slowest[0] = slowest[0].max(took);
        let started = Instant::now();
        let claims = c
            .post(format!("{}/v1/tokens/introspect", e.d.public))
            .header("x-api-key", &e.admin)
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(claims["sub"], id.as_str(), "{claims}");
        assert!(took < Duration::from_millis(100), "introspection took {took:?} beside {SOCKETS} slow sockets");
        slowest[1] = slowest[1].max(took);
        let admin = c.get(format!("{}/v1/admin/keys", e.d.admin)).header("x-api-key", &e.admin).send().await.unwrap();
        assert_eq!(admin.status(), 200);
    }
    let served_at = Instant::now();
    eprintln!("slowest JWKS {:?}, slowest introspection {:?}", slowest[0], slowest[1]);

    let mut results = Vec::new();
    for h in held {
        results.push(h.await.unwrap());
    }
    let still_open: Vec<Slow> = results.iter().filter(|h| h.after.is_none()).map(|h| h.kind).collect();
    assert!(
        still_open.is_empty(),
        "{} of {SOCKETS} slow or idle sockets still open {GIVE_UP:?} after they went quiet \
         (silent {}, trickling {}, kept alive {}); header_read_timeout 3s, idle_timeout 5s",
        still_open.len(),
        still_open.iter().filter(|k| **k == Slow::Silent).count(),
        still_open.iter().filter(|k| **k == Slow::Trickle).count(),
        still_open.iter().filter(|k| **k == Slow::KeptAlive).count(),
    );
    for kind in kinds {
        let afters = results.iter().filter(|h| h.kind == kind).filter_map(|h| h.after);
        let (min, max) = afters.fold((GIVE_UP, Duration::ZERO), |(lo, hi), a| (lo.min(a), hi.max(a)));
        eprintln!("{kind:?} sockets closed after {min:?}..={max:?}");
    }
    // Lower bounds a second under each timeout: the client notes `since` when
    // its task resumes, which may be a little after the server's clock started.
    for h in &results {
        let after = h.after.unwrap_or_default();
        let (low, high) = match h.kind {
            Slow::Silent | Slow::Trickle => (Duration::from_secs(2), Duration::from_secs(6)),
            Slow::KeptAlive => (Duration::from_secs(4), Duration::from_secs(8)),
        };
        assert!(
            (low..=high).contains(&after),
            "a {:?} socket was closed after {after:?}, not within {low:?}..={high:?}",
            h.kind
        );
    }
    let first_close = results.iter().map(|h| h.closed_at).min().unwrap();
    assert!(served_at < first_close, "the normal client was not served while every slow socket was open");
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_exits_within_the_drain_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &[("KMSD_HTTP__DRAIN_TIMEOUT", "1s"), ("KMSD_HTTP__HEADER_READ_TIMEOUT", "60s")]);
    let mut half = TcpStream::connect(host(&d.public)).await.unwrap();
    half.write_all(b"POST /v1/tokens HTTP/1.1\r\nHost: kmsd\r\nContent-Type: application/json\r\n").await.unwrap();
    let health = client().get(format!("{}/health", d.public)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let stopped = tokio::task::spawn_blocking(move || d.stop_within(Duration::from_secs(10))).await.unwrap();
    let (status, out) = stopped.unwrap_or_else(|out| {
        panic!("kmsd still running 10 s after SIGTERM with a half-sent request (drain_timeout 1s):\n{out}")
    });
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(took < Duration::from_secs(3), "kmsd exited {took:?} after SIGTERM; drain_timeout is 1s:\n{out}");
    let mut buf = [0u8; 64];
    let read = timeout(Duration::from_secs(1), half.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the half-sent connection is closed: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_listener_full_of_silent_sockets_under_a_1024_fd_limit_leaves_the_admin_listener_working() {
    const SILENT: usize = 1_100;
    raise_own_fd_limit(SILENT as u64 + 200);
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(tmp.path(), &[], |cmd| limit_fds(cmd, 1024));
    let key = bootstrap_key(&d.output());
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(host(&d.public)).await.unwrap());
    }
    // Let the daemon accept what it will.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let c = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let health = c.get(format!("{}/health", d.admin)).send().await.map(|r| r.status().as_u16());
    assert!(
        matches!(health, Ok(200)),
        "admin /health beside {SILENT} silent public sockets: {health:?}\n{}",
        d.output()
    );
    let keys = c.get(format!("{}/v1/admin/keys", d.admin)).header("x-api-key", &key).send().await;
    let keys = keys.map(|r| r.status().as_u16());
    assert!(matches!(keys, Ok(200)), "admin /v1/admin/keys beside {SILENT} silent public sockets: {keys:?}");
    // The public listener is at its cap (not out of descriptors): a new
    // connection waits in the kernel's backlog.
    let queued = c.get(format!("{}/health", d.public)).timeout(Duration::from_millis(500)).send().await;
    assert!(queued.is_err(), "the public listener should be at its connection cap: {queued:?}\n{}", d.output());

    drop(silent);
    let recovered = c.get(format!("{}/health", d.public)).send().await.map(|r| r.status().as_u16());
    assert!(matches!(recovered, Ok(200)), "public /health after the silent sockets closed: {recovered:?}");
}

/// A token request announcing a body of `length` bytes with `Expect: 100-continue`.
fn expect_continue(key: &str, length: usize) -> String {
    format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: kmsd\r\nx-api-key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    )
}

#[tokio::test]
async fn expect_100_continue_with_a_body_over_the_limit_gets_413_at_once() {
    let e = tokens::start(&[]);
    let mut s = TcpStream::connect(host(&e.d.public)).await.unwrap();
    s.write_all(expect_continue(&e.admin, 1_000_000).as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut s, Duration::from_secs(2)).await.unwrap();
    assert_eq!(status, 413, "a 1 MB body announced with Expect: 100-continue got:\n{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert!(body["requestId"].as_str().is_some_and(|id| !id.is_empty()), "{body}");

    // Within the limit the client is told to go on, and is answered.
    let request = json!({ "identityId": "id_missing", "audience": ["svc"] }).to_string();
    let mut s = TcpStream::connect(host(&e.d.public)).await.unwrap();
    s.write_all(expect_continue(&e.admin, request.len()).as_bytes()).await.unwrap();
    let (status, head, _) = read_response(&mut s, Duration::from_secs(2)).await.unwrap();
    assert_eq!(status, 100, "{head}");
    s.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!((400..500).contains(&status), "{head}\n{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["code"].is_string(), "{body}");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_bound_get_503_and_stalled_bodies_get_408_at_the_deadline() {
    let e = tokens::start(&[("KMSD_HTTP__MAX_IN_FLIGHT", "2"), ("KMSD_HTTP__REQUEST_TIMEOUT", "2s")]);
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(host(&e.d.public)).await.unwrap();
        let head =
            format!("POST /v1/tokens HTTP/1.1\r\nHost: kmsd\r\nx-api-key: {}\r\nContent-Length: 64\r\n\r\n", e.admin);
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(br#"{"identityId":"#).await.unwrap();
        stalled.push(s);
    }
    // Both wait in their handler for the rest of the body; the next request
    // is refused at once.
    let c = client();
    let started = Instant::now();
    let refused = loop {
        let r = c.get(e.jwks_url()).send().await.unwrap();
        if r.status() == 503 {
            break r;
        }
        // Until the daemon has read both stalled heads (slow on a loaded
        // machine) a request is simply served; it must be refused before the
        // stalled requests reach their 2 s deadline and free their slots.
        assert!(started.elapsed() < Duration::from_millis(1_800), "never refused: {}", r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "overloaded", "{body}");
    // The admin listener has its own bound.
    let admin = c.get(format!("{}/v1/admin/keys", e.d.admin)).header("x-api-key", &e.admin).send().await.unwrap();
    assert_eq!(admin.status(), 200);

    // At the request deadline each stalled request is answered 408.
    for mut s in stalled {
        let (status, head, body) = read_response(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, 408, "{head}\n{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "request_timeout", "{body}");
    }
    assert!(started.elapsed() >= Duration::from_millis(1_500), "answered before the 2s deadline");
    assert_eq!(c.get(e.jwks_url()).send().await.unwrap().status(), 200);
}
