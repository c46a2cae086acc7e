//! An application for the library's own tests: a fresh store on a temp
//! dir, two EdDSA token keysets (`edge` signs access tokens, `refresh`
//! refresh tokens), the system clock, and the bootstrap admin key.

use std::path::Path;
use std::sync::Arc;

use super::App;
use crate::api_keys::ApiKeySecret;
use crate::clock::SystemClock;
use crate::config::Config;

/// An initialized and opened app under `dir`, and its bootstrap admin key.
pub async fn app(dir: &Path) -> (App, ApiKeySecret) {
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    for name in ["edge", "refresh"] {
        std::fs::write(keys.join(format!("{name}.toml")), format!("name = \"{name}\"\nalgorithm = \"EdDSA\"\n"))
            .unwrap();
    }
    let env = [("KMSD_DATA_DIR", dir.join("data")), ("KMSD_KEYS_DIR", keys)]
        .map(|(k, v)| (k.to_owned(), v.display().to_string()));
    let config = Config::load(None, &env).unwrap();
    let report = App::init(&config, Arc::new(SystemClock), None, false).await.unwrap();
    let admin = report.bootstrap_key.unwrap();
    (App::open(config, Arc::new(SystemClock)).await.unwrap(), admin)
}
