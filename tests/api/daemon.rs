//! Runs the real `kmsd` binary: one-shot commands and a served daemon whose
//! output is captured (for the secrets-in-logs checks) and whose listening
//! addresses are read from its log.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kmsd");

/// A command for `kmsd` in `cwd`, with no inherited `KMSD_*` variables,
/// listening on ephemeral loopback ports, plus `env`.
pub fn command(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KMSD_")) {
        cmd.env_remove(k);
    }
    cmd.env("KMSD_LISTEN__PUBLIC", "127.0.0.1:0").env("KMSD_LISTEN__ADMIN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(cwd, env).args(args).stdin(Stdio::null()).output().expect("run kmsd")
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub struct Daemon {
    child: Child,
    output: Arc<Mutex<String>>,
    pub public: String,
    pub admin: String,
}

impl Daemon {
    /// `kmsd serve` in `dir`; panics with the daemon's output if it does not
    /// come up within a minute.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        match Self::try_start(dir, env) {
            Ok(d) => d,
            Err((status, out)) => panic!("kmsd did not start ({status:?}):\n{out}"),
        }
    }

    /// Starts `kmsd serve`; on failure returns its exit status and output.
    pub fn try_start(dir: &Path, env: &[(&str, &str)]) -> Result<Daemon, (Option<ExitStatus>, String)> {
        Self::try_start_with(dir, env, |_| {})
    }

    /// Like [`Daemon::start`], with `configure` applied to the command first.
    pub fn start_with(dir: &Path, env: &[(&str, &str)], configure: impl FnOnce(&mut Command)) -> Daemon {
        Self::try_start_with(dir, env, configure)
            .unwrap_or_else(|(status, out)| panic!("kmsd did not start ({status:?}):\n{out}"))
    }

    fn try_start_with(
        dir: &Path,
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Result<Daemon, (Option<ExitStatus>, String)> {
        let mut cmd = command(dir, env);
        configure(&mut cmd);
        // One pipe for stdout and stderr: the lines arrive in the order kmsd
        // wrote them, so the bootstrap key (stdout) is captured before the
        // `kmsd listening` log line (stderr) that ends the wait below. With a
        // pipe each, a loaded machine let the stderr reader win.
        let (reader, writer) = std::io::pipe().expect("pipe");
        let mut child = cmd
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("pipe"))
            .stderr(writer)
            .spawn()
            .expect("spawn kmsd");
        // The parent's copies of the write end go with `cmd`, so the reader
        // sees end-of-file when kmsd exits.
        drop(cmd);
        let output = Arc::new(Mutex::new(String::new()));
        let readers = [pump(reader, output.clone())];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = output.lock().unwrap().lines().find(|l| l.contains("kmsd listening")).map(str::to_owned);
            if let Some(line) = ready {
                // `public=ADDR` in text logs, `"public":"ADDR"` in JSON ones.
                let field = |name: &str| {
                    let (start, end) = match line.find(&format!("{name}=")) {
                        Some(i) => (i + name.len() + 1, ' '),
                        None => (line.find(&format!("\"{name}\":\"")).unwrap() + name.len() + 4, '"'),
                    };
                    let rest = &line[start..];
                    format!("http://{}", rest.split(end).next().unwrap().trim())
                };
                return Ok(Daemon { public: field("public"), admin: field("admin"), child, output });
            }
            if let Some(status) = child.try_wait().unwrap() {
                for r in readers {
                    let _ = r.join();
                }
                return Err((Some(status), output.lock().unwrap().clone()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err((None, output.lock().unwrap().clone()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon has printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends `signal` (a `kill` name such as `HUP`).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").args([format!("-{signal}"), self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{signal} failed");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no draining, no clean shutdown (a crash).
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits; returns the exit status and all output.
    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_within(Duration::from_secs(30))
            .unwrap_or_else(|out| panic!("kmsd did not stop within 30 s of SIGTERM:\n{out}"))
    }

    /// SIGTERM, then waits up to `limit`; on timeout kills kmsd and returns
    /// its output as the error.
    pub fn stop_within(mut self, limit: Duration) -> Result<(ExitStatus, String), String> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(50));
        Ok((status, self.output()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(stream: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    })
}

/// The bootstrap admin key printed by init, if any.
pub fn bootstrap_key(output: &str) -> String {
    let start = output.find("rak_").expect("bootstrap key printed");
    output[start..].split_whitespace().next().unwrap().to_owned()
}

/// A directory of keyset declarations (`name = (algorithm, rsa_bits)`).
pub fn keys_dir(parent: &Path, sets: &[(&str, &str, Option<u32>)]) -> PathBuf {
    let dir = parent.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, alg, bits) in sets {
        let bits = bits.map(|b| format!("rsa_bits = {b}\n")).unwrap_or_default();
        std::fs::write(dir.join(format!("{name}.toml")), format!("name = \"{name}\"\nalgorithm = \"{alg}\"\n{bits}"))
            .unwrap();
    }
    dir
}

/// Appends `line` to the declarations of the keysets `names` in `keys`.
pub fn add_to_keysets(keys: &Path, names: &[&str], line: &str) {
    for name in names {
        let path = keys.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{line}\n")).unwrap();
    }
}

pub fn sha256_file(path: &Path) -> String {
    kmsd::encoding::sha256_hex(&std::fs::read(path).unwrap())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
