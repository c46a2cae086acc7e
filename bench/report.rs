//! The results: one row per workload, the references, and their rendering
//! as JSON and as the Markdown table the README quotes.

use std::fmt::Write as _;
use std::path::Path;

use kmsd::keys::KeySpec;
use serde_json::{json, Value};

use crate::load::{LoadConfig, Sample};
use crate::process::ProcSnap;
use crate::reference::{label, SignRate};

/// What a workload's rate is compared with.
#[derive(Debug, Clone, Copy)]
pub enum Reference {
    /// The all-core raw sign rate of this key type.
    Sign(KeySpec),
    /// The bare axum echo rate.
    Echo,
    /// The rate of an earlier row of this run, by name (a PostgreSQL row is
    /// compared with the same workload on redb).
    Row(&'static str),
    None,
}

pub struct Row {
    pub name: String,
    pub sample: Sample,
    server: (ProcSnap, ProcSnap),
    client_cpu: f64,
    /// Store read and write transactions during the workload (warm-up included).
    store: Option<(u64, u64)>,
    reference: Option<(String, f64)>,
    target: Option<f64>,
}

impl Row {
    pub fn new(
        name: &str,
        sample: Sample,
        before: (ProcSnap, ProcSnap),
        after: (ProcSnap, ProcSnap),
        store: Option<(u64, u64)>,
    ) -> Row {
        Row {
            name: name.to_owned(),
            sample,
            server: (before.0, after.0),
            client_cpu: after.1.cpu_seconds - before.1.cpu_seconds,
            store,
            reference: None,
            target: None,
        }
    }

    fn per_request_ms(&self, seconds: f64) -> f64 {
        seconds * 1000.0 / (self.sample.requests.max(1) as f64)
    }

    fn server_cpu_ms(&self) -> f64 {
        self.per_request_ms(self.server.1.cpu_seconds - self.server.0.cpu_seconds)
    }

    /// Store (reads, writes) per request, warm-up included on both sides.
    fn store_per_request(&self) -> Option<(f64, f64)> {
        let n = self.sample.completed_all.max(1) as f64;
        self.store.map(|(r, w)| (r as f64 / n, w as f64 / n))
    }

    fn ratio(&self) -> Option<f64> {
        self.reference.as_ref().map(|(_, rate)| self.sample.rate() / rate)
    }

    pub fn summary(&self) -> String {
        let s = &self.sample;
        let mut line = format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors, server CPU {:.3} ms/req",
            s.rate(),
            s.percentile_ms(0.50),
            s.percentile_ms(0.99),
            s.percentile_ms(0.999),
            s.errors,
            self.server_cpu_ms()
        );
        for e in &s.first_errors {
            let _ = write!(line, "\n  error: {e}");
        }
        line
    }
}

pub struct Report {
    pub cores: usize,
    pub cpu_model: String,
    client_threads: usize,
    cfg: LoadConfig,
    kmsd: String,
    pub sign: Vec<SignRate>,
    pub echo: Option<f64>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(cores: usize, client_threads: usize, cfg: LoadConfig, kmsd: &Path) -> Report {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_owned();
        Report {
            cores,
            cpu_model,
            client_threads,
            cfg,
            kmsd: kmsd.display().to_string(),
            sign: Vec::new(),
            echo: None,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a workload with its reference and target ratio (0: none).
    pub fn push(&mut self, mut row: Row, reference: Reference, target: f64) {
        row.reference = match reference {
            Reference::Sign(spec) => self
                .sign
                .iter()
                .find(|s| s.spec == spec)
                .map(|s| (format!("{} sign, {} cores", label(spec), self.cores), s.all_cores)),
            Reference::Echo => self.echo.map(|rate| ("axum echo".to_owned(), rate)),
            Reference::Row(name) => {
                self.rows.iter().find(|r| r.name == name).map(|r| (name.to_owned(), r.sample.rate()))
            }
            Reference::None => None,
        };
        row.target = (target > 0.0 && row.reference.is_some()).then_some(target);
        self.rows.push(row);
    }

    pub fn errors(&self) -> u64 {
        self.rows.iter().map(|r| r.sample.errors).sum()
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let s = &r.sample;
                json!({
                    "workload": r.name,
                    "requests": s.requests,
                    "seconds": s.elapsed.as_secs_f64(),
                    "requestsPerSecond": s.rate(),
                    "latencyMs": { "p50": s.percentile_ms(0.5), "p99": s.percentile_ms(0.99), "p999": s.percentile_ms(0.999),
                                   "max": s.percentile_ms(1.0) },
                    "errors": s.errors,
                    "firstErrors": s.first_errors,
                    "serverCpuSecondsPerRequest": r.server_cpu_ms() / 1000.0,
                    "clientCpuSecondsPerRequest": r.per_request_ms(r.client_cpu) / 1000.0,
                    "storeReadsPerRequest": r.store_per_request().map(|s| s.0),
                    "storeWritesPerRequest": r.store_per_request().map(|s| s.1),
                    "serverRssKiB": { "before": r.server.0.rss_kib, "after": r.server.1.rss_kib },
                    "reference": r.reference.as_ref().map(|(name, rate)| json!({ "name": name, "requestsPerSecond": rate })),
                    "ratio": r.ratio(),
                    "targetRatio": r.target,
                    "targetMet": r.target.zip(r.ratio()).map(|(t, x)| x >= t),
                })
            })
            .collect();
        let sign: Vec<Value> = self
            .sign
            .iter()
            .map(|s| {
                json!({ "key": label(s.spec), "signPerSecondOneCore": s.single_core,
                             "signPerSecondAllCores": s.all_cores, "verifyPerSecondOneCore": s.verify_single_core })
            })
            .collect();
        json!({
            "machine": { "nproc": self.cores, "cpu": self.cpu_model },
            "settings": { "connections": self.cfg.connections, "warmupSeconds": self.cfg.warmup.as_secs_f64(),
                          "durationSeconds": self.cfg.duration.as_secs_f64(), "maxRequests": self.cfg.max_requests,
                          "clientThreads": self.client_threads, "kmsd": self.kmsd },
            "reference": { "sign": sign, "echoRequestsPerSecond": self.echo },
            "workloads": rows,
            "notes": self.notes,
        })
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let c = &self.cfg;
        let _ = writeln!(md, "Machine: {} cores, {}.", self.cores, self.cpu_model);
        let _ = writeln!(
            md,
            "Load: closed loop, {} connections, {} client threads, {:.1} s warm-up + {:.1} s measured per workload.\n",
            c.connections,
            self.client_threads,
            c.warmup.as_secs_f64(),
            c.duration.as_secs_f64()
        );
        let _ = writeln!(md, "| Key (aws-lc-rs) | sign/s, 1 core | sign/s, {} cores | verify/s, 1 core |", self.cores);
        let _ = writeln!(md, "|---|---:|---:|---:|");
        for s in &self.sign {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} |",
                label(s.spec),
                s.single_core,
                s.all_cores,
                s.verify_single_core
            );
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "| Workload | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU ms/req | store reads / writes per req | server RSS MiB before → after | reference (req/s) | ratio | target |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|");
        for r in &self.rows {
            let s = &r.sample;
            let mib = |k: u64| k as f64 / 1024.0;
            let reference = r.reference.as_ref().map_or("—".to_owned(), |(n, rate)| format!("{n} ({rate:.0})"));
            let ratio = r.ratio().map_or("—".to_owned(), |x| format!("{x:.2}"));
            let target = match (r.target, r.ratio()) {
                (Some(t), Some(x)) => format!("≥ {t:.2} {}", if x >= t { "met" } else { "**not met**" }),
                _ => "—".to_owned(),
            };
            let store = r.store_per_request().map_or("—".to_owned(), |(r, w)| format!("{r:.2} / {w:.3}"));
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {} | {:.0} → {:.0} | {} | {} | {} |",
                r.name,
                s.rate(),
                s.percentile_ms(0.5),
                s.percentile_ms(0.99),
                s.percentile_ms(0.999),
                s.errors,
                r.server_cpu_ms(),
                store,
                mib(r.server.0.rss_kib),
                mib(r.server.1.rss_kib),
                reference,
                ratio,
                target
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "\nNote: {n}");
        }
        md
    }
}
