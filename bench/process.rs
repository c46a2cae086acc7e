//! The processes under test (the kmsd daemon, the echo server) and what
//! `/proc` says about them: CPU time (utime + stime of every thread) and RSS.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// CPU seconds and resident memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSnap {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

impl ProcSnap {
    /// Several processes' snapshots added up (the replicas of one workload).
    pub fn sum(snaps: impl IntoIterator<Item = ProcSnap>) -> ProcSnap {
        snaps.into_iter().fold(ProcSnap::default(), |a, b| ProcSnap {
            cpu_seconds: a.cpu_seconds + b.cpu_seconds,
            rss_kib: a.rss_kib + b.rss_kib,
        })
    }
}

/// Linux reports utime and stime in USER_HZ ticks, which is 100 on every
/// architecture Linux supports (the value `sysconf(_SC_CLK_TCK)` returns).
const USER_HZ: f64 = 100.0;

/// `/proc/<pid>/stat` fields 14 and 15 (utime, stime) and `VmRSS` from
/// `/proc/<pid>/status`. `pid` may be `"self"`.
pub fn snap(pid: &str) -> ProcSnap {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
        // The command name (field 2) is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
    });
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    });
    ProcSnap { cpu_seconds: cpu.unwrap_or(0.0), rss_kib: rss.unwrap_or(0) }
}

/// A child process serving HTTP on loopback, with its output in a log file.
pub struct Server {
    child: Child,
    pub log: PathBuf,
    pub public: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// Starts `cmd` with stdout and stderr going to `log`, and waits (up to
    /// two minutes: the daemon generates RSA keys on first start) for a line
    /// containing `ready`, from which `parse` reads the listening addresses.
    pub fn start(
        mut cmd: Command,
        log: &Path,
        ready: &str,
        parse: impl Fn(&str) -> Option<(SocketAddr, Option<SocketAddr>)>,
    ) -> anyhow::Result<Server> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(ready)) {
                let (public, admin) = parse(line).ok_or_else(|| anyhow!("cannot read addresses from {line:?}"))?;
                return Ok(Server { child, log: log.to_owned(), public, admin });
            }
            if let Some(status) = child.try_wait()? {
                bail!("{:?} exited ({status}) before listening:\n{text}", cmd.get_program());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{:?} did not listen within 120 s:\n{text}", cmd.get_program());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn snap(&self) -> ProcSnap {
        snap(&self.pid())
    }

    /// SIGTERM, then up to 30 s for a clean exit (SIGKILL after that).
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        Command::new("kill").args(["-TERM", &self.pid()]).status().context("running kill")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("process {} did not stop within 30 s of SIGTERM", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leave a server behind (stop() has already reaped it otherwise).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `name=127.0.0.1:1234` from a log line.
pub fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..].split_whitespace().next()?.trim_matches('"').parse().ok()
}
