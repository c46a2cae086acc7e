//! The in-process app: the library's composition root (`App::init`, then
//! `App::open` and `serve`, exactly as `kmsd serve` runs them) on loopback
//! ports, with a [`ManualClock`] that the test moves instead of sleeping.
//! The app gets a runtime and a thread of its own, as in the process.
//! For behaviour that does not need a process of its own; signals, kill -9,
//! the CLI and log output stay with `crate::daemon`.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use kmsd::app::App;
use kmsd::clock::ManualClock;
use kmsd::config::Config;
use kmsd::http::AppState;

pub struct TestApp {
    /// Base URL of the public listener (`http://127.0.0.1:port`).
    pub public: String,
    /// Base URL of the admin listener.
    pub admin: String,
    /// The bootstrap admin API key.
    pub admin_key: String,
    pub clock: Arc<ManualClock>,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    served: Option<std::thread::JoinHandle<()>>,
}

impl TestApp {
    /// The config `kmsd serve` would load in `dir` (data in `dir/kmsd-data`,
    /// ephemeral loopback ports) with the `KMSD_*` overrides `env`; panics
    /// with every problem if it does not validate.
    pub fn config(dir: &Path, env: &[(&str, &str)]) -> Config {
        let data = dir.join("kmsd-data").display().to_string();
        let mut vars: Vec<(String, String)> = vec![
            ("KMSD_DATA_DIR".into(), data),
            ("KMSD_LISTEN__PUBLIC".into(), "127.0.0.1:0".into()),
            ("KMSD_LISTEN__ADMIN".into(), "127.0.0.1:0".into()),
        ];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Config::load(None, &vars).unwrap_or_else(|e| panic!("test config does not load:\n{e}"))
    }

    /// Initializes a fresh data dir (`kmsd init`) and serves it.
    pub async fn spawn(config: Config, clock: Arc<ManualClock>) -> TestApp {
        let report = App::init(&config, clock.clone(), None, false).await.unwrap();
        let admin_key = report.bootstrap_key.expect("init generates the bootstrap key").expose().to_owned();
        Self::open(config, clock, admin_key).await
    }

    /// Serves an initialized data dir, as a restart does. The app runs on a
    /// runtime of its own (two workers, like the process), on its own thread.
    pub async fn open(config: Config, clock: Arc<ManualClock>, admin_key: String) -> TestApp {
        let (ready, started) = oneshot::channel::<Result<(String, String, AppState), String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let app_clock = clock.clone();
        let served = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let public = kmsd::listener::bind(config.listen_public).unwrap();
                let admin = kmsd::listener::bind(config.listen_admin).unwrap();
                let tls = kmsd::listener::TlsReload::load(&config.tls).unwrap();
                let app = match App::open(config, app_clock).await {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready.send(Ok((base(&public), base(&admin), app.state().clone())));
                app.serve(public, admin, tls, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let (public, admin, state) = match started.await {
            Ok(Ok(up)) => up,
            Ok(Err(e)) => panic!("the app did not open: {e}"),
            Err(_) => panic!("the app thread died while opening: {:?}", served.join().err()),
        };
        TestApp { public, admin, admin_key, clock, state, stop: Some(stop), served: Some(served) }
    }

    /// Moves the manual clock forward by `secs` seconds.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(std::time::Duration::from_secs(secs));
    }

    /// One rotation reconcile tick at the clock's current time, as the
    /// background loop runs it; the actions it applied (a keyset that failed
    /// fails the test).
    pub async fn tick(&self) -> Vec<String> {
        let tick = self.state.rotation.tick().await;
        assert!(tick.failed.is_empty(), "rotation failed: {:?}", tick.failed);
        tick.applied
    }

    /// A call to the admin listener with the admin key.
    pub async fn admin_call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        super::call(&self.admin, &self.admin_key, method, path, body).await
    }

    /// Stops serving (as SIGTERM does: drain, then close) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let joined = tokio::task::spawn_blocking(move || served.join()).await.unwrap();
            if let Err(panic) = joined {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn base(listener: &tokio::net::TcpListener) -> String {
    format!("http://{}", listener.local_addr().unwrap())
}
