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

#[test]
fn plan_prints_the_timeline_the_config_implies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["plan", "--rotations", "2"], &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("policy: publish_lead 1h | overlap 25h | destroy_delay 31d"), "{t}");
    assert!(t.contains("keyset access (RSA_3072, vault):"), "{t}");
    assert_eq!(t.matches("rotation 2: publish").count(), 4, "every scheduled keyset, sign included: {t}");
    assert!(t.contains("T03:00:00.000Z -> signs") && t.contains("T04:00:00.000Z"), "an hour of publish lead: {t}");
}

#[tokio::test]
async fn the_keys_cli_rotates_lists_and_rolls_back_through_the_admin_api() {
    let tmp = tempfile::tempdir().unwrap();
    let d = crate::daemon::Daemon::start(tmp.path(), &[]);
    let admin = crate::daemon::bootstrap_key(&d.output());
    let env = [("KMSD_ADMIN_API_KEY", admin.as_str())];
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--admin-url", d.admin.as_str()]);
        let out = run(tmp.path(), &all, &env);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let rotated = cli(&["keys", "rotate", "--keyset", "edge", "--immediate"]);
    assert_eq!(rotated["immediate"], true);
    let listed = cli(&["keys", "list"]);
    let edge: Vec<_> = listed["keys"].as_array().unwrap().iter().filter(|k| k["keyset"] == "edge").collect();
    assert_eq!(edge.len(), 2);
    let back = cli(&["keys", "rollback", "--keyset", "edge"]);
    assert_eq!(back["keyId"], rotated["oldKeyId"]);
    assert_eq!(cli(&["keys", "pause"])["paused"], true);
    assert_eq!(cli(&["keys", "plan"])["paused"], true);
    let out = run(tmp.path(), &["keys", "revoke", "nope", "--admin-url", &d.admin], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("key_not_found"), "{}", text(&out));
    let out = run(tmp.path(), &["migration", "status", "--admin-url", &d.admin], &env);
    assert!(text(&out).contains("migration_disabled"), "{}", text(&out));
}
