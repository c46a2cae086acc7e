//! The command line: config validation and its exit codes.

use crate::daemon::{keys_dir, run, text};

#[test]
fn bad_config_lists_every_problem_at_once_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys_dir(tmp.path(), &[("weak", "RS256", Some(1024))]);
    // A KEK "file" that cannot be read as one.
    let kek_dir = tmp.path().join("kek-is-a-directory");
    std::fs::create_dir(&kek_dir).unwrap();
    let cfg = tmp.path().join("kmsd.toml");
    std::fs::write(
        &cfg,
        format!(
            "colour = \"blue\"\nkeys_dir = {:?}\n[listen]\npublic = \"localhost-ish:99999\"\n[vault]\nkek_file = {:?}\n",
            keys.display().to_string(),
            kek_dir.display().to_string()
        ),
    )
    .unwrap();
    for command in ["check-config", "serve"] {
        let out = crate::daemon::command(tmp.path(), &[])
            .env_remove("KMSD_LISTEN__PUBLIC")
            .args(["--config", cfg.to_str().unwrap(), command])
            .output()
            .unwrap();
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {msg}");
        for needle in [
            "colour: unknown field",
            "rsa_bits: RSA-1024 is not supported",
            "listen.public: \"localhost-ish:99999\" is not a socket address",
            "vault.kek_file: cannot read KEK file",
        ] {
            assert!(msg.contains(needle), "{command}: missing {needle:?} in:\n{msg}");
        }
        assert!(msg.contains("4 problem(s)"), "{msg}");
    }
    assert!(!tmp.path().join("kmsd-data").exists(), "a rejected config creates nothing");
}

#[test]
fn check_config_accepts_the_built_in_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["check-config"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("access (RSA_3072), edge (ECC_NIST_EDWARDS25519)"), "{}", text(&out));
}

#[test]
fn an_unknown_environment_override_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["check-config"], &[("KMSD_LISTEN__PUBLICK", "127.0.0.1:1")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("listen.publick: unknown field"), "{}", text(&out));
}
