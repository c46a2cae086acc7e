//! A throwaway PostgreSQL for the tests: one cluster per test process,
//! started on first use, and a fresh database per test.
//!
//! `initdb` into a temp dir as the `postgres` user when the tests run as root
//! (initdb refuses root; CI runs as root) or as the current user otherwise,
//! with SCRAM password authentication, then `pg_ctl start` listening on a
//! free 127.0.0.1 port only, its unix socket inside the temp dir. It takes
//! TLS too, with a certificate from a throwaway CA ([`ca_file`]). The
//! cluster is stopped and its dir removed when the test process exits (an
//! `atexit` hook), and by a watchdog if the process is killed.
//!
//! `KMSD_TEST_PG_URL` (a superuser URL) uses an existing server instead.
//! Missing binaries fail the test with the package to install; nothing skips.
//!
//! `scripts/bench` (bench/main.rs) starts its PostgreSQL with this file too;
//! it sets `KMSD_TEST_PG_URL` from its own `KMSD_BENCH_PG_URL`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kmsd::storage::postgres::PgUrl;

/// The shared server: an admin URL (database `postgres`) and, if we
/// started it, the cluster to stop.
struct Server {
    admin: PgUrl,
    started_in: Option<Duration>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
/// The cluster this process started, stopped at exit.
static CLUSTER: Mutex<Option<Cluster>> = Mutex::new(None);

/// A database of its own for one test. Dropped databases are left to the
/// cluster's removal at exit (dropping one needs every session closed).
pub struct TestDb {
    pub url: PgUrl,
    pub name: String,
}

/// A fresh, empty database on the shared server.
pub async fn fresh_db() -> TestDb {
    let server = SERVER.get_or_init(start_server);
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("t{}_{n}", std::process::id());
    let admin = kmsd::storage::postgres::connect(&server.admin, "kmsd-test-admin", Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    // CREATE DATABASE copies template1; run them one at a time.
    static CREATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = CREATE.lock().await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    TestDb { url: server.admin.with_database(&name), name }
}

/// `url` as text, password included, for a daemon's `KMSD_STORAGE_URL`.
pub fn url_text(url: &PgUrl) -> String {
    let c = url.config();
    let host = match &c.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let password = String::from_utf8(c.get_password().unwrap_or_default().to_vec()).unwrap();
    format!(
        "postgres://{}:{password}@{host}:{}/{}?connect_timeout=5",
        c.get_user().unwrap_or("postgres"),
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_dbname().unwrap_or("postgres")
    )
}

/// How long the shared cluster took to start (`None`: `KMSD_TEST_PG_URL`).
pub fn start_time() -> Option<Duration> {
    SERVER.get_or_init(start_server).started_in
}

static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the shared server, when this process starts it, keep PostgreSQL's
/// durable defaults (fsync, synchronous commit, full page writes) rather
/// than the tests' fast settings. Call before its first use (the benchmark).
#[allow(dead_code)] // used by bench/, which includes this file
pub fn durable() {
    DURABLE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The CA that signed the shared server's certificate (for 127.0.0.1 and
/// localhost): it also takes TLS connections. `None` with `KMSD_TEST_PG_URL`.
pub fn ca_file() -> Option<PathBuf> {
    SERVER.get_or_init(start_server);
    CLUSTER.lock().unwrap().as_ref().map(|c| c.dir.join("ca.pem"))
}

/// A throwaway CA and a server certificate it signed, in `dir`, with the
/// openssl CLI (P-256, two days).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install the openssl CLI (Debian: apt-get install openssl)")
        });
        assert!(out.status.success(), "openssl {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kmsd test PostgreSQL CA"],
        ]
        .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The admin URL of the shared server (superuser, database `postgres`).
pub fn admin_url() -> PgUrl {
    SERVER.get_or_init(start_server).admin.clone()
}

fn start_server() -> Server {
    if let Ok(url) = std::env::var("KMSD_TEST_PG_URL") {
        let admin = PgUrl::parse(&url).unwrap_or_else(|e| panic!("KMSD_TEST_PG_URL: {e}"));
        return Server { admin, started_in: None };
    }
    let t0 = Instant::now();
    let cluster = Cluster::start();
    let admin = PgUrl::parse(&format!(
        "postgres://postgres:{}@127.0.0.1:{}/postgres?connect_timeout=5",
        cluster.password, cluster.port
    ))
    .unwrap();
    *CLUSTER.lock().unwrap() = Some(cluster);
    extern "C" fn stop_at_exit() {
        if let Ok(mut c) = CLUSTER.lock() {
            c.take();
        }
    }
    // SAFETY: registers a plain function with no preconditions.
    unsafe { libc::atexit(stop_at_exit) };
    let started_in = t0.elapsed();
    eprintln!("test PostgreSQL started in {started_in:?}");
    Server { admin, started_in: Some(started_in) }
}

struct Cluster {
    dir: PathBuf,
    port: u16,
    password: String,
    bin: PathBuf,
    as_postgres: bool,
}

impl Cluster {
    fn start() -> Self {
        let bin = find_bin();
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("kmsd-pg-{}-{}", std::process::id(), random_hex()));
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        let password = random_hex();
        std::fs::write(dir.join("pwfile"), &password).unwrap();
        make_certificates(&dir);
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
        }
        let data = dir.join("data");
        run(cmd(as_postgres, &bin.join("initdb"))
            .args(["--auth=scram-sha-256", "--username=postgres", "--encoding=UTF8", "--no-sync", "--pwfile"])
            .arg(dir.join("pwfile"))
            .arg("-D")
            .arg(&data));
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            // Tests trade durability for speed; the benchmark compares with
            // redb's synced commits, so it asks for PostgreSQL's defaults.
            let speed = if DURABLE.load(std::sync::atomic::Ordering::SeqCst) {
                ""
            } else {
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            };
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} {speed} -c max_connections=200 -c ssl=on \
                 -c ssl_cert_file={} -c ssl_key_file={}",
                dir.join("sock").display(),
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            );
            let out = cmd(as_postgres, &bin.join("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-o", &opts])
                .output()
                .unwrap();
            if out.status.success() {
                let cluster = Self { dir, port, password, bin, as_postgres };
                cluster.spawn_watchdog();
                return cluster;
            }
            last = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        }
        panic!("pg_ctl start failed 5 times; last log:\n{last}");
    }

    /// Stops the cluster and removes its dir if this process dies without
    /// running its exit hook (SIGKILL).
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = self.stop_command(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    fn stop_command(&self) -> String {
        let pg_ctl = format!(
            "'{}' stop -m immediate -D '{}'",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display()
        );
        if self.as_postgres {
            format!("runuser -u postgres -- {pg_ctl} >/dev/null 2>&1")
        } else {
            format!("{pg_ctl} >/dev/null 2>&1")
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("sh").args(["-c", &self.stop_command()]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `initdb` and `pg_ctl`: on the PATH, or in Debian's versioned dir.
fn find_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain(debian).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file()).unwrap_or_else(
        || {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin: \
                 install the Debian package postgresql-15 (apt-get install postgresql-15), or set KMSD_TEST_PG_URL \
                 (scripts/bench: KMSD_BENCH_PG_URL) to a superuser URL of a running server"
            )
        },
    )
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `program` run as the `postgres` user when we are root.
fn cmd(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn random_hex() -> String {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}
