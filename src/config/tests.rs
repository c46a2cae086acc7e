use super::*;
use crate::keys::{BackendKind, KeySpec, KeyUse};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn no_file_means_the_built_in_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Config::load(None, &env(&[("KMSD_DATA_DIR", data.to_str().unwrap())])).unwrap();
    assert_eq!(c.listen_public, "127.0.0.1:8787".parse().unwrap());
    assert_eq!(c.listen_admin, "127.0.0.1:8788".parse().unwrap());
    assert_eq!(c.issuer, "https://relayauth.dev");
    assert_eq!(c.public_base_url, "http://127.0.0.1:8787");
    let names: Vec<_> = c.keysets.iter().map(|k| (k.name.as_str().to_owned(), k.spec)).collect();
    assert_eq!(
        names,
        [
            ("access".to_owned(), KeySpec::Rsa3072),
            ("edge".to_owned(), KeySpec::Ed25519),
            ("refresh".to_owned(), KeySpec::Ed25519),
            ("sign".to_owned(), KeySpec::Ed25519)
        ]
    );
    let uses: Vec<_> = c.keysets.iter().map(|k| k.usage).collect();
    assert_eq!(uses, [KeyUse::Tokens, KeyUse::Tokens, KeyUse::Tokens, KeyUse::Sign]);
    let names = &c.policy.tokens.keysets;
    assert_eq!([&names.rs256, &names.eddsa, &names.refresh], ["access", "edge", "refresh"]);
    assert_eq!(c.kek, KekSource::File(data.join("vault.kek")));
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    write(&keys, "weak.toml", "name = \"weak\"\nalgorithm = \"RS256\"\nrsa_bits = 1024\n");
    let cfg = write(
        dir.path(),
        "kmsd.toml",
        &format!(
            "colour = \"blue\"\nkeys_dir = {:?}\n[listen]\npublic = \"not-an-address\"\nbogus = 1\n[vault]\nkek_file = {:?}\n",
            keys.display().to_string(),
            dir.path().display().to_string(),
        ),
    );
    // An existing store makes the KEK mandatory.
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data").join(STORE_FILE), b"").unwrap();
    let err =
        Config::load(Some(&cfg), &env(&[("KMSD_DATA_DIR", dir.path().join("data").to_str().unwrap())])).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
    let text = err.to_string();
    for expected in ["colour", "listen.bogus", "listen.public", "vault.kek_file"] {
        assert!(paths.contains(&expected), "{expected} missing from:\n{text}");
    }
    assert!(text.contains("RSA-1024 is not supported"), "{text}");
    assert!(text.contains("weak.toml: rsa_bits"), "{text}");
    assert!(text.contains("cannot read KEK file"), "{text}");
    assert_eq!(err.0.len(), 5, "{text}");
}

#[test]
fn environment_overrides_nested_fields_and_skips_secrets() {
    let c = Config::load(
        None,
        &env(&[
            ("KMSD_LISTEN__PUBLIC", "127.0.0.1:9000"),
            ("KMSD_HTTP__BODY_LIMIT_BYTES", "2048"),
            ("KMSD_STORAGE__CACHE_MIB", "16"),
            ("KMSD_VAULT_KEK", "c2VjcmV0"),
            ("KMSD_BOOTSTRAP_API_KEY", "rak_x"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen_public.port(), 9000);
    assert_eq!(c.body_limit, 2048);
    assert_eq!(c.store_cache_bytes, 16 << 20);
    let err = Config::load(None, &env(&[("KMSD_LISTEN__NOPE", "1")])).unwrap_err();
    assert_eq!(err.0[0].path, "listen.nope");
}

#[test]
fn a_policy_that_breaks_an_invariant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.toml", "[rotation]\noverlap = \"30m\"\n");
    let cfg = write(dir.path(), "kmsd.toml", &format!("policy_file = {:?}\n", policy.display().to_string()));
    let err = Config::load(Some(&cfg), &[]).unwrap_err().to_string();
    assert!(err.contains("rotation.overlap: overlap 30m < access_ttl_max 24h + skew 1m"), "{err}");
}

#[test]
fn a_sign_keyset_named_for_tokens_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    write(&keys, "raw.toml", "name = \"raw\"\nalgorithm = \"EdDSA\"\nuse = \"sign\"\n");
    write(&keys, "refresh.toml", "name = \"refresh\"\nalgorithm = \"EdDSA\"\n");
    write(&keys, "odd.toml", "name = \"odd\"\nalgorithm = \"EdDSA\"\nuse = \"both\"\n");
    let policy = write(dir.path(), "p.toml", "[tokens.keysets]\nEdDSA = \"raw\"\n");
    let cfg = write(
        dir.path(),
        "kmsd.toml",
        &format!("keys_dir = {:?}\npolicy_file = {:?}\n", keys.display().to_string(), policy.display().to_string()),
    );
    let err = Config::load(Some(&cfg), &[]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tokens.keysets.EdDSA: keyset raw is declared use = \"sign\""), "{text}");
    assert!(text.contains("odd.toml: use: \"both\" is not a key use"), "{text}");
    assert_eq!(err.0.len(), 2, "{text}");
}

#[test]
fn syntax_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "kmsd.toml", "data_dir = \n");
    let err = Config::load(Some(&cfg), &[]).unwrap_err();
    assert!(err.0[0].path.ends_with("kmsd.toml"));
    assert!(err.0[0].message.starts_with("not valid TOML"));
}

#[test]
fn aws_kms_keysets_and_settings_are_read_and_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    write(&keys, "edge.toml", "name = \"edge\"\nalgorithm = \"EdDSA\"\nbackend = \"aws-kms\"\n");
    let section = r#"
[aws_kms]
region = "eu-west-1"
timeout = "5s"
max_attempts = 2
sign_rate_rsa = 40
burst = 7
deletion_window_days = 7
instance = "prod"
orphan_cleanup = false
orphan_grace = "30m"
"#;
    let cfg = write(dir.path(), "kmsd.toml", &format!("keys_dir = {:?}\n{section}", keys.display().to_string()));
    let c = Config::load(Some(&cfg), &env(&[("KMSD_AWS_KMS__ENDPOINT_URL", "http://127.0.0.1:4566")])).unwrap();
    assert_eq!(c.keysets[0].backend, BackendKind::AwsKms);
    let k = &c.aws_kms;
    assert_eq!((k.region.as_deref(), k.endpoint_url.as_deref()), (Some("eu-west-1"), Some("http://127.0.0.1:4566")));
    assert_eq!((k.timeout, k.max_attempts, k.deletion_window_days), (Duration::from_secs(5), Some(2), 7));
    assert_eq!((k.rsa_budget.rate, k.rsa_budget.burst, k.ecc_budget.rate, k.ecc_budget.burst), (40, 7, 150, 7));
    assert_eq!(k.instance.as_deref(), Some("prod"));
    assert_eq!((k.orphan_cleanup, k.orphan_grace), (false, Duration::from_secs(1800)));

    let bad = r#"
[aws_kms]
endpoint_url = "kms.local"
timeout = "0s"
max_attempts = 0
sign_rate_ecc = 0
deletion_window_days = 3
instance = "Prod!"
shard = 1
"#;
    let cfg = write(dir.path(), "bad.toml", bad);
    let err = Config::load(Some(&cfg), &[]).unwrap_err();
    let mut paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "aws_kms.deletion_window_days",
            "aws_kms.endpoint_url",
            "aws_kms.instance",
            "aws_kms.max_attempts",
            "aws_kms.shard",
            "aws_kms.sign_rate_ecc",
            "aws_kms.timeout",
        ],
        "{err}"
    );
    write(&keys, "odd.toml", "name = \"odd\"\nalgorithm = \"EdDSA\"\nbackend = \"gcp-kms\"\n");
    let cfg = write(dir.path(), "odd.toml", &format!("keys_dir = {:?}\n", keys.display().to_string()));
    let err = Config::load(Some(&cfg), &[]).unwrap_err().to_string();
    assert!(err.contains("\"gcp-kms\" is not an available backend (use \"vault\" or \"aws-kms\")"), "{err}");
}

#[test]
fn a_kek_in_aws_kms_names_its_key_and_uses_the_aws_kms_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = ("KMSD_DATA_DIR", data.to_str().unwrap());
    let vault = "[vault]\nkek = \"aws-kms\"\nkms_key_id = \"alias/kmsd-vault\"\n[aws_kms]\nregion = \"eu-west-1\"\n";
    let cfg = write(dir.path(), "kms.toml", vault);
    let c = Config::load(Some(&cfg), &env(&[data_dir])).unwrap();
    let KekSource::AwsKms(kms) = &c.kek else { panic!("{:?}", c.kek) };
    assert_eq!(kms.key_id, "alias/kmsd-vault");
    assert_eq!(kms.settings, c.aws_kms);
    assert_eq!(kms.settings.region.as_deref(), Some("eu-west-1"));

    // Every mistake at once: no key, a malformed key, a key for another KEK.
    let problems = |text: &str, extra: &[(&str, &str)]| {
        let cfg = write(dir.path(), "bad.toml", text);
        let err = Config::load(Some(&cfg), &env(&[&[data_dir], extra].concat())).unwrap_err();
        err.0.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>()
    };
    let missing = problems("[vault]\nkek = \"aws-kms\"\n[aws_kms]\ntimeout = \"0s\"\n", &[]);
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].starts_with("aws_kms.timeout"), "{missing:?}");
    assert!(missing[1].starts_with("vault.kms_key_id: missing"), "{missing:?}");
    let malformed = problems(vault, &[("KMSD_VAULT__KMS_KEY_ID", "my key")]);
    assert_eq!(malformed, ["vault.kms_key_id: is not a KMS key id, key ARN, alias name (alias/...) or alias ARN"]);
    let stray = problems("[vault]\nkms_key_id = \"alias/kmsd-vault\"\n", &[]);
    assert_eq!(stray, ["vault.kms_key_id: only applies to kek = \"aws-kms\", not \"file\""]);
}
