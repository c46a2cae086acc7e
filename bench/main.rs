//! `kmsd-bench`: kmsd's benchmark harness (issue 7). A developer tool, not
//! part of `cargo test`; built only with `--features bench` (see
//! `scripts/bench`). In one run, on this machine, it measures:
//!
//! 1. the raw sign rate of the key types kmsd uses, on one core and on all
//!    cores (the signing reference);
//! 2. a bare axum JSON echo of a token-sized body (the HTTP reference);
//! 3. the release daemon on a fresh data dir, over loopback, with a
//!    closed-loop load generator: token issuance (RS256-3072, RS256-2048,
//!    EdDSA, and AWS KMS when an emulator endpoint is given), JWKS,
//!    introspection;
//! 4. issuance on PostgreSQL (bench/postgres.rs): one replica, compared with
//!    the same workload on redb, and two replicas on one database, compared
//!    with one;
//!
//! and reports rate, latency percentiles, errors, server CPU per request, RSS
//! and the ratio to the reference, as JSON and Markdown. It exits 1 if any
//! request failed, so a rate is never built on failures.

mod daemon;
mod load;
/// The tests' throwaway PostgreSQL (bench/postgres.rs starts its server
/// with it). Test code: it panics on failure, which the bench catches.
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../tests/api/postgres/harness.rs"]
mod pg_harness;
mod postgres;
mod process;
mod reference;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use daemon::{Daemon, DaemonSpec};
use load::{LoadConfig, Target};
use process::{field, ProcSnap, Server};
use report::{Reference, Report, Row};

#[derive(Parser)]
#[command(
    name = "kmsd-bench",
    about = "kmsd benchmark: issuance, JWKS and introspection against the machine's own limits"
)]
struct Cli {
    /// Concurrent keep-alive connections of the closed-loop load generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured warm-up seconds before each workload.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds per raw sign-rate measurement (one core, then all cores).
    #[arg(long, default_value_t = 2.0)]
    sign_seconds: f64,
    /// Upper bound on measured requests per workload.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Load-generator threads (default: one per core; it shares the cores with the server).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Workloads to run, comma separated: echo, rs3072, eddsa, jwks, introspect,
    /// introspect-distinct, rs2048, kms, pg-rs3072, pg-eddsa, pg2-eddsa. The pg
    /// ones run kmsd on PostgreSQL (a throwaway cluster, or KMSD_BENCH_PG_URL, a
    /// superuser URL) and are compared with rs3072 / eddsa / pg-eddsa when
    /// those run too.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["echo", "rs3072", "eddsa", "jwks", "introspect", "introspect-distinct", "rs2048", "kms",
                        "pg-rs3072", "pg-eddsa", "pg2-eddsa"],
        default_value = "echo,rs3072,eddsa,jwks,introspect,introspect-distinct,rs2048,kms,pg-rs3072,pg-eddsa,pg2-eddsa"
    )]
    only: Vec<String>,
    /// The kmsd binary (default: `kmsd` next to this one: the release build, or
    /// the profiling build under `scripts/bench --perf`).
    #[arg(long)]
    kmsd: Option<PathBuf>,
    /// Where results (bench.json, bench.md) go (default: target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where daemon data dirs are created and removed (default: target/bench-work).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A running AWS KMS emulator (e.g. tests/kms/emulator.py) for the KMS-backed issuance workload.
    #[arg(long, env = "KMSD_BENCH_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
    /// Profile the server during each workload with `perf record` (cpu-clock
    /// sampling, DWARF call graphs), one `<workload>.perf.data` per workload in
    /// this directory. Rates measured this way include perf's own overhead.
    /// `scripts/bench --perf` builds the `profiling` profile for this (the
    /// release one is stripped).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// A quick check of the harness itself: 1 s runs, 4 connections, short references.
    #[arg(long)]
    smoke: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Serve the bare axum echo reference (used by the harness itself).
    #[command(hide = true)]
    EchoServer,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Sub::EchoServer) = cli.command {
        return match reference::serve_echo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo server: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if cli.smoke {
        (cli.duration, cli.warmup, cli.sign_seconds, cli.connections) = (1.0, 0.3, 0.2, 4);
    }
    match run(&cli) {
        Ok(report) if report.errors() == 0 => ExitCode::SUCCESS,
        Ok(report) => {
            eprintln!("kmsd-bench: {} request(s) failed; the rates above are not valid", report.errors());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kmsd-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<Report> {
    postgres::configure()?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("executable has no directory")?.to_owned();
    let target_dir = bin_dir.parent().map(Path::to_owned).unwrap_or_else(|| bin_dir.clone());
    let kmsd = cli.kmsd.clone().unwrap_or_else(|| bin_dir.join("kmsd"));
    anyhow::ensure!(kmsd.exists(), "{} not found: build it first (cargo build --release)", kmsd.display());
    let out = cli.out.clone().unwrap_or_else(|| target_dir.join("bench"));
    let work = cli.work_dir.clone().unwrap_or_else(|| target_dir.join("bench-work"));
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(&work)?;
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let client_threads = cli.client_threads.unwrap_or(cores).max(1);
    let wants = |w: &str| cli.only.iter().any(|o| o == w);
    let cfg = LoadConfig {
        connections: cli.connections,
        warmup: Duration::from_secs_f64(cli.warmup),
        duration: Duration::from_secs_f64(cli.duration),
        max_requests: cli.max_requests,
    };
    let runner = Runner { cfg, perf: cli.perf.clone() };
    if let Some(dir) = &runner.perf {
        std::fs::create_dir_all(dir)?;
    }
    let mut report = Report::new(cores, client_threads, cfg, &kmsd);
    eprintln!("machine: {} x {}", report.cores, report.cpu_model);

    eprintln!("raw sign rate ({cores} cores, {} s per measurement):", cli.sign_seconds);
    report.sign = reference::sign_rates(cores, Duration::from_secs_f64(cli.sign_seconds))?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?;
    runtime.block_on(async {
        if wants("echo") {
            let mut cmd = Command::new(&exe);
            cmd.arg("echo-server");
            let echo =
                Server::start(cmd, &work.join("echo.log"), "echo listening", |l| Some((field(l, "public")?, None)))?;
            let target = daemon::echo_target(echo.public, reference::token_sized_body());
            let row = runner.measure("POST /echo (bare axum JSON echo)", target, &[&echo], &[]).await?;
            report.echo = Some(row.sample.rate());
            report.rows.push(row);
            echo.stop()?;
        }
        let issue_workloads = ["rs3072", "eddsa", "jwks", "introspect", "introspect-distinct"];
        if issue_workloads.iter().any(|w| wants(w)) {
            let spec = DaemonSpec { name: "default", keysets: None, env: Vec::new() };
            let d = Daemon::start(&kmsd, &work, &spec)?;
            let identity = d.create_identity().await?;
            if wants("rs3072") {
                let row = runner.on_daemon(RS3072, d.issue(&identity, None), &d).await?;
                report.push(row, Reference::Sign(kmsd::keys::KeySpec::Rsa3072), 0.85);
            }
            if wants("eddsa") {
                let target = d.issue(&identity, Some("EdDSA"));
                let row = runner.on_daemon(EDDSA, target, &d).await?;
                report.push(row, Reference::Echo, 0.60);
            }
            if wants("jwks") {
                let row = runner.on_daemon("GET /.well-known/jwks.json", d.jwks(), &d).await?;
                report.push(row, Reference::Echo, 0.90);
            }
            if wants("introspect") {
                let target = d.introspect(&identity).await?;
                let name = "GET /v1/tokens/introspect (RS256-3072, one token)";
                let row = runner.on_daemon(name, target, &d).await?;
                report.push(row, Reference::Echo, 0.50);
            }
            if wants("introspect-distinct") {
                let count = if cli.smoke { 64 } else { DISTINCT_TOKENS };
                eprintln!("issuing {count} tokens to introspect");
                let target = d.introspect_distinct(&identity, count).await?;
                let name = format!("GET /v1/tokens/introspect (RS256-3072, {count} tokens in turn)");
                let row = runner.on_daemon(&name, target, &d).await?;
                report.push(row, Reference::Echo, 0.50);
            }
            d.stop()?;
        }
        if wants("rs2048") {
            let spec = DaemonSpec { name: "rsa2048", keysets: Some(keysets("vault")), env: Vec::new() };
            let d = Daemon::start(&kmsd, &work, &spec)?;
            let identity = d.create_identity().await?;
            let row = runner.on_daemon("POST /v1/tokens RS256-2048", d.issue(&identity, None), &d).await?;
            report.push(row, Reference::Sign(kmsd::keys::KeySpec::Rsa2048), 0.85);
            d.stop()?;
        }
        if wants("kms") {
            match &cli.kms_endpoint {
                Some(endpoint) => {
                    let d = Daemon::start(&kmsd, &work, &kms_spec(endpoint))?;
                    let identity = d.create_identity().await?;
                    let target = d.issue(&identity, None);
                    let name = "POST /v1/tokens RS256-2048 (AWS KMS emulator)";
                    let row = runner.on_daemon(name, target, &d).await?;
                    report.push(row, Reference::None, 0.0);
                    d.stop()?;
                }
                None => {
                    let note =
                        "KMS-backed issuance skipped: no emulator (set KMSD_BENCH_KMS_ENDPOINT or --kms-endpoint)";
                    eprintln!("note: {note}");
                    report.notes.push(note.to_owned());
                }
            }
        }
        let pg: Vec<_> = PG_WORKLOADS.iter().filter(|(w, ..)| wants(w)).collect();
        if !pg.is_empty() {
            let keks = postgres::Keks::new(&work)?;
            for (_, workload, reference, goal) in pg {
                let row = postgres::issuance(&runner, &kmsd, &work, &keks, workload).await?;
                report.push(row, *reference, *goal);
            }
            report.notes.push(postgres::note());
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let (json, md) = (out.join("bench.json"), out.join("bench.md"));
    std::fs::write(&json, serde_json::to_string_pretty(&report.to_json())?)?;
    std::fs::write(&md, report.markdown())?;
    println!("{}", report.markdown());
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(report)
}

const RS3072: &str = "POST /v1/tokens RS256-3072";
const EDDSA: &str = "POST /v1/tokens EdDSA";
const PG_EDDSA: &str = "POST /v1/tokens EdDSA, PostgreSQL";

/// The PostgreSQL workloads, in the order they run: `--only` name, what
/// runs, the row compared with, the goal for the ratio.
const PG_WORKLOADS: [(&str, postgres::Workload, Reference, f64); 3] = [
    (
        "pg-rs3072",
        postgres::Workload {
            name: "POST /v1/tokens RS256-3072, PostgreSQL",
            replicas: &["pg-rs3072"],
            algorithm: None,
        },
        Reference::Row(RS3072),
        0.8,
    ),
    (
        "pg-eddsa",
        postgres::Workload { name: PG_EDDSA, replicas: &["pg-eddsa"], algorithm: Some("EdDSA") },
        Reference::Row(EDDSA),
        0.5,
    ),
    (
        "pg2-eddsa",
        postgres::Workload {
            name: "POST /v1/tokens EdDSA, PostgreSQL, 2 replicas",
            replicas: &["pg2-a", "pg2-b"],
            algorithm: Some("EdDSA"),
        },
        Reference::Row(PG_EDDSA),
        0.0,
    ),
];

/// The 2048-bit deployment: `access` is RS256-2048 on `backend`; edge and
/// refresh as built in. The policy's `[tokens.keysets]` already maps RS256 to `access`.
fn keysets(backend: &'static str) -> Vec<daemon::KeysetDecl> {
    vec![
        ("access", "RS256", Some(2048), backend),
        ("edge", "EdDSA", None, "vault"),
        ("refresh", "EdDSA", None, "vault"),
    ]
}

/// `access` in AWS KMS (the emulator has no quota, so kmsd's own sign budget
/// is lifted: the workload measures kmsd plus the emulator, not the budget).
fn kms_spec(endpoint: &str) -> DaemonSpec {
    let mut env = vec![
        ("KMSD_AWS_KMS__ENDPOINT_URL".to_owned(), endpoint.to_owned()),
        ("KMSD_AWS_KMS__REGION".to_owned(), "us-east-1".to_owned()),
        ("KMSD_AWS_KMS__SIGN_RATE_RSA".to_owned(), "100000".to_owned()),
        ("KMSD_AWS_KMS__BURST".to_owned(), "100000".to_owned()),
    ];
    for (k, v) in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")] {
        if std::env::var_os(k).is_none() {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    DaemonSpec { name: "kms", keysets: Some(keysets("aws-kms")), env }
}

/// Distinct tokens for `introspect-distinct`: more than kmsd keeps as
/// already checked (two generations of 4096), so none is remembered.
const DISTINCT_TOKENS: usize = 10_000;

struct Runner {
    cfg: LoadConfig,
    perf: Option<PathBuf>,
}

impl Runner {
    /// [`measure`](Self::measure) against one daemon.
    async fn on_daemon(&self, name: &str, target: Target, daemon: &Daemon) -> anyhow::Result<Row> {
        self.measure(name, target, &[&daemon.server], &[daemon]).await
    }

    /// Runs one workload against `servers`, with CPU/RSS snapshots of the
    /// servers (added up) and of this process, and the daemons' store
    /// counters (added up) around it.
    async fn measure(
        &self,
        name: &str,
        target: Target,
        servers: &[&Server],
        daemons: &[&Daemon],
    ) -> anyhow::Result<Row> {
        let cfg = self.cfg;
        eprintln!("{name}: {} connections, {:?} warm-up, {:?} measured", cfg.connections, cfg.warmup, cfg.duration);
        let profiler = self.perf.as_deref().map(|dir| profile(dir, name, servers, cfg)).transpose()?;
        let store_before = store_counters(daemons).await?;
        let snap = || (ProcSnap::sum(servers.iter().map(|s| s.snap())), process::snap("self"));
        let (sample, before, after) = load::run(target, cfg, snap).await;
        let store_after = store_counters(daemons).await?;
        if let Some(mut p) = profiler {
            p.wait()?;
        }
        let store = store_before.zip(store_after).map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)));
        let row = Row::new(name, sample, before, after, store);
        eprintln!("  {}", row.summary());
        Ok(row)
    }
}

/// `perf record` of `servers` for the warm-up and the measured window.
fn profile(dir: &Path, name: &str, servers: &[&Server], cfg: LoadConfig) -> anyhow::Result<std::process::Child> {
    let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let seconds = (cfg.warmup + cfg.duration).as_secs_f64();
    let pids: Vec<String> = servers.iter().map(|s| s.pid()).collect();
    Command::new("perf")
        .args(["record", "-q", "-F", "499", "--call-graph", "dwarf,16384", "-p", &pids.join(","), "-o"])
        .arg(dir.join(format!("{slug}.perf.data")))
        .args(["--", "sleep", &format!("{seconds:.1}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting perf record")
}

/// The daemons' store read and write transaction counters, added up
/// (`None` without daemons).
async fn store_counters(daemons: &[&Daemon]) -> anyhow::Result<Option<(u64, u64)>> {
    if daemons.is_empty() {
        return Ok(None);
    }
    let (mut reads, mut writes) = (0, 0);
    for d in daemons {
        reads += d.metric("kmsd_store_reads_total").await?;
        writes += d.metric("kmsd_store_writes_total").await?;
    }
    Ok(Some((reads, writes)))
}
