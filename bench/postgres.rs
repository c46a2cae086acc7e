//! The PostgreSQL rows (issue 14): token issuance against kmsd on
//! PostgreSQL, one replica (compared with the same workload on redb) and two
//! replicas on one database with the requests sent to them in turn
//! (compared with one replica).
//!
//! The server is the tests' throwaway cluster (tests/api/postgres/harness.rs:
//! initdb and pg_ctl into a temp dir, SCRAM, loopback, stopped at exit), or
//! the one `KMSD_BENCH_PG_URL` (a superuser URL) names. Each workload gets a
//! fresh database, dropped when its replicas have stopped, and replicas that
//! start one at a time: the first initializes the database (and makes the
//! KEK file every replica is given), the others join it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use kmsd::storage::postgres::{connect, PgUrl};

use crate::daemon::{Daemon, DaemonSpec};
use crate::load;
use crate::pg_harness;
use crate::process::Server;
use crate::report::Row;
use crate::Runner;

/// A superuser URL of a running server to use instead of a cluster of our own.
const URL_VAR: &str = "KMSD_BENCH_PG_URL";

/// Points the harness at `KMSD_BENCH_PG_URL` if it is set, else at a cluster
/// of its own (a `KMSD_TEST_PG_URL` meant for the tests is not used). Call
/// before any other thread runs: it sets the process environment.
pub fn configure() -> anyhow::Result<()> {
    match std::env::var(URL_VAR) {
        Ok(url) => {
            PgUrl::parse(&url).with_context(|| URL_VAR.to_owned())?;
            std::env::set_var("KMSD_TEST_PG_URL", url);
        }
        Err(_) => std::env::remove_var("KMSD_TEST_PG_URL"),
    }
    // Compared with redb's synced commits: PostgreSQL's durable defaults.
    pg_harness::durable();
    Ok(())
}

/// One issuance workload on PostgreSQL.
pub struct Workload {
    pub name: &'static str,
    /// The replicas' names (their work dirs); one or more.
    pub replicas: &'static [&'static str],
    /// `None`: the default (RS256-3072).
    pub algorithm: Option<&'static str>,
}

/// The KEK file of every PostgreSQL replica this run starts, in a dir of
/// its own under the work dir, removed when this is dropped (on an error
/// too: it is a secret).
pub struct Keks {
    dir: PathBuf,
}

impl Keks {
    pub fn new(work: &Path) -> anyhow::Result<Keks> {
        let dir = work.join(format!("pg-kek-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Keks { dir })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("vault.kek")
    }
}

impl Drop for Keks {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("kmsd-bench: removing {}: {e}", self.dir.display());
        }
    }
}

/// Starts the workload's replicas on a fresh database, measures issuance
/// sent to them in turn, stops them and drops the database.
pub async fn issuance(runner: &Runner, kmsd: &Path, work: &Path, keks: &Keks, w: &Workload) -> anyhow::Result<Row> {
    let db = tokio::spawn(pg_harness::fresh_db()).await.map_err(harness_failed)?;
    let env = vec![
        ("KMSD_STORAGE__ENGINE".to_owned(), "postgres".to_owned()),
        ("KMSD_STORAGE_URL".to_owned(), pg_harness::url_text(&db.url)),
        ("KMSD_VAULT__KEK_FILE".to_owned(), keks.file().display().to_string()),
    ];
    let spec = |name: &'static str| {
        let mut env = env.clone();
        env.push(("KMSD_HA__REPLICA".to_owned(), name.to_owned()));
        DaemonSpec { name, keysets: None, env }
    };
    let (first, others) = w.replicas.split_first().context("a workload without replicas")?;
    let first = Daemon::start(kmsd, work, &spec(first))?;
    // Made before the other replicas start, so the check below finds it
    // (any replica would within a second: the change feed).
    let identity = first.create_identity().await?;
    let mut target = first.issue(&identity, w.algorithm);
    let mut replicas = vec![first];
    for name in others {
        let mut d = Daemon::start(kmsd, work, &spec(name))?;
        // A replica joining an initialized database ignores its own
        // KMSD_BOOTSTRAP_API_KEY: the admin key is the first replica's.
        d.key.clone_from(&replicas[0].key);
        let check = d.issue(&identity, w.algorithm);
        let (status, body) = load::once(&check).await?;
        anyhow::ensure!(
            status == check.expect,
            "replica {name} does not issue for the identity made on {}: {status}: {}",
            w.replicas[0],
            String::from_utf8_lossy(&body)
        );
        target.more_addrs.push(d.server.public);
        replicas.push(d);
    }
    let servers: Vec<&Server> = replicas.iter().map(|d| &d.server).collect();
    let daemons: Vec<&Daemon> = replicas.iter().collect();
    let row = runner.measure(w.name, target, &servers, &daemons).await?;
    for d in replicas {
        d.stop()?;
    }
    drop_db(&db.name).await?;
    Ok(row)
}

/// What the report says under the PostgreSQL rows.
pub fn note() -> String {
    let server = match pg_harness::start_time() {
        Some(_) => {
            "the bench's own throwaway cluster on this machine (tests/api/postgres/harness.rs) with PostgreSQL's \
             durable defaults (fsync, synchronous_commit, full_page_writes on), as redb syncs its commits"
        }
        None => "the server KMSD_BENCH_PG_URL names",
    };
    format!(
        "PostgreSQL rows: {server}; a fresh database per workload; server CPU and RSS are kmsd's (summed over both \
         replicas in the 2-replica row), not the PostgreSQL server's; store writes per request are commits per token \
         pair (summed over the replicas)"
    )
}

/// Drops a bench database (its replicas have stopped; `FORCE` ends any
/// session the server has not yet closed).
async fn drop_db(name: &str) -> anyhow::Result<()> {
    let admin = connect(&pg_harness::admin_url(), "kmsd-bench", Duration::ZERO).await?;
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.with_context(|| format!("dropping {name}"))
}

/// The harness reports a server it cannot start or reach by panicking (it
/// is test code); the bench turns that into its error.
fn harness_failed(e: tokio::task::JoinError) -> anyhow::Error {
    let message = match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the harness panicked".to_owned()),
        Err(e) => e.to_string(),
    };
    anyhow!("the bench's PostgreSQL: {message}")
}
