//! `[storage] engine = "postgres"` is parsed but refused by `init` and
//! `serve` until the store seam lands, without showing the URL's password.

use crate::daemon::{run, text};

#[test]
fn the_postgres_engine_is_refused_by_init_and_serve_without_showing_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "pw-from-the-env-Secret";
    let url = format!("postgres://kmsd:{secret}@127.0.0.1:1/kmsd");
    let env = [("KMSD_STORAGE__ENGINE", "postgres"), ("KMSD_STORAGE_URL", url.as_str())];
    let out = run(tmp.path(), &["check-config"], &env);
    assert!(out.status.success(), "the config itself is valid: {}", text(&out));
    for command in ["init", "serve"] {
        let out = run(tmp.path(), &[command], &env);
        let msg = text(&out);
        assert!(!out.status.success(), "{command}: {msg}");
        assert!(msg.contains("storage.engine = \"postgres\" is not yet supported"), "{command}: {msg}");
        assert!(!msg.contains(secret), "{command}: {msg}");
    }
    assert!(!tmp.path().join("kmsd-data").join("kmsd.redb").exists(), "no redb store was made instead");
}
