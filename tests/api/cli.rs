//! The command line: config validation and its exit codes, the admin
//! commands through a real daemon (revoke as a no-op, table and json output),
//! help and shell completions. Over TLS: see `tls.rs`.

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

#[test]
fn completions_print_a_script_for_bash_zsh_and_fish_without_a_config() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef kmsd"), ("fish", "complete -c kmsd")] {
        // A config that would not load does not matter: completions need none.
        let out = run(tmp.path(), &["completions", shell], &[("KMSD_LISTEN__PUBLIC", "nowhere")]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["api-keys", "rotate", "admin-url", "ca-file"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let out = run(tmp.path(), &["completions", "powershell"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn every_admin_command_explains_its_flags_in_help() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["keys", "revoke", "--help"], &[]);
    let help = text(&out);
    assert!(out.status.success(), "{help}");
    for needle in ["already revoked", "--admin-url", "KMSD_ADMIN_URL", "--ca-file", "--client-cert", "--output"] {
        assert!(help.contains(needle), "missing {needle:?} in:\n{help}");
    }
}

/// A daemon with EdDSA keysets only (a quick first start) and its bootstrap key.
fn quick_daemon(dir: &std::path::Path) -> (crate::daemon::Daemon, String) {
    let keys = keys_dir(dir, &[("edge", "EdDSA", None), ("refresh", "EdDSA", None)]);
    let d = crate::daemon::Daemon::start(dir, &[("KMSD_KEYS_DIR", keys.to_str().unwrap())]);
    let admin = crate::daemon::bootstrap_key(&d.output());
    (d, admin)
}

/// The CLI against a daemon, with `--admin-url`; returns the output.
fn admin_cli(dir: &std::path::Path, d: &crate::daemon::Daemon, key: &str, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--admin-url", d.admin.as_str()]);
    run(dir, &all, &[("KMSD_ADMIN_API_KEY", key)])
}

#[tokio::test]
async fn keys_revoke_of_an_already_revoked_key_succeeds_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, admin) = quick_daemon(tmp.path());
    let out = admin_cli(tmp.path(), &d, &admin, &["keys", "list"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kid = listed["keys"].as_array().unwrap().iter().find(|k| k["keyset"] == "edge").unwrap()["keyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = admin_cli(tmp.path(), &d, &admin, &["keys", "revoke", &kid]);
    assert!(first.status.success(), "{}", text(&first));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["revokedKeyId"], kid.as_str());
    let after_first = admin_cli(tmp.path(), &d, &admin, &["keys", "list"]).stdout;
    let again = admin_cli(tmp.path(), &d, &admin, &["keys", "revoke", &kid]);
    assert!(again.status.success(), "a second revoke is a no-op, not an error: {}", text(&again));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["revokedKeyId"], kid.as_str());
    assert_eq!(again["alreadyRevoked"], true, "{again}");
    assert_eq!(admin_cli(tmp.path(), &d, &admin, &["keys", "list"]).stdout, after_first, "nothing changed");
    let missing = admin_cli(tmp.path(), &d, &admin, &["keys", "revoke", "nope"]);
    assert_eq!(missing.status.code(), Some(1), "an unknown kid is still an error: {}", text(&missing));
}

#[tokio::test]
async fn output_is_a_table_on_request_and_json_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, admin) = quick_daemon(tmp.path());
    let piped = admin_cli(tmp.path(), &d, &admin, &["keys", "list"]);
    let json = admin_cli(tmp.path(), &d, &admin, &["keys", "list", "--output", "json"]);
    assert_eq!(piped.stdout, json.stdout, "json is the default when stdout is not a terminal");
    let listed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let kids: Vec<&str> = listed["keys"].as_array().unwrap().iter().map(|k| k["keyId"].as_str().unwrap()).collect();
    let table = admin_cli(tmp.path(), &d, &admin, &["keys", "list", "--output", "table"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("keyId") && lines[0].contains("keyset") && lines[0].contains("state"), "{table}");
    assert_eq!(lines.len(), 1 + kids.len(), "a header and one row per key: {table}");
    for kid in kids {
        assert!(table.contains(kid), "{table}");
    }
    let table = admin_cli(tmp.path(), &d, &admin, &["api-keys", "list", "--output", "table"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("id ") && table.contains("bootstrap"), "{table}");
    assert!(!table.contains(&admin), "never the secret: {table}");
}
