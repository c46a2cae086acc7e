//! The real daemon with AWS KMS keysets beside a vault keyset, pointed at the
//! emulator (or a fault proxy in front of it) through the standard AWS
//! environment variables, and KMS looked at from outside through the SDK.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec as AwsKeySpec, KeyState, KeyUsageType, Tag};
use serde_json::Value;

use super::emulator::{client, daemon_env, sdk_config, Emulator};
use super::key_state;
use crate::daemon::{add_to_keysets, bootstrap_key, keys_dir, Daemon};
use crate::support::{call, kid_list};
use crate::tokens::{start, Env};

/// `sets` declared in `parent/keys`, those named in `kms` with `backend = "aws-kms"`.
fn keys_in(parent: &Path, sets: &[(&str, &str, Option<u32>)], kms: &[&str]) -> std::path::PathBuf {
    let dir = keys_dir(parent, sets);
    add_to_keysets(&dir, kms, "backend = \"aws-kms\"");
    dir
}

/// A daemon whose `access` (RS256-2048) and `edge` (EdDSA) keysets live in
/// AWS KMS and whose `refresh` keyset (EdDSA) lives in the vault.
pub struct Deployment {
    pub e: Env,
    /// An SDK client straight on the emulator, to look at KMS from outside.
    pub kms: aws_sdk_kms::Client,
    _files: tempfile::TempDir,
}

impl Deployment {
    /// kmsd talks to `daemon_kms` (the emulator or a proxy in front of it,
    /// `emulator`), with `policy` (TOML) and `extra` environment if given.
    pub async fn start(daemon_kms: &str, emulator: &str, policy: Option<&str>, extra: &[(&str, &str)]) -> Self {
        let files = tempfile::tempdir().unwrap();
        let sets = [("access", "RS256", Some(2048)), ("edge", "EdDSA", None), ("refresh", "EdDSA", None)];
        let keys = keys_in(files.path(), &sets, &["access", "edge"]).display().to_string();
        let policy_file = files.path().join("policy.toml");
        std::fs::write(&policy_file, policy.unwrap_or_default()).unwrap();
        let policy_file = policy_file.display().to_string();
        let aws = daemon_env(daemon_kms);
        let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend([("KMSD_KEYS_DIR", keys.as_str()), ("KMSD_POLICY_FILE", policy_file.as_str())]);
        env.extend_from_slice(extra);
        let e = start(&env);
        Deployment { e, kms: client(&sdk_config().await, emulator), _files: files }
    }

    /// The admin listing of keys.
    pub async fn keys(&self) -> Vec<Value> {
        let (status, v) = call(&self.e.d.admin, &self.e.admin, "GET", "/v1/admin/keys", None).await;
        assert_eq!(status, 200, "{v}");
        v["keys"].as_array().unwrap().clone()
    }

    /// The kids in the live JWKS, sorted.
    pub async fn jwks_kids(&self) -> Vec<String> {
        crate::support::jwks_kids(&self.e.d.public).await
    }

    /// The KMS key that carries `kid` (its `kmsd:kid` tag).
    pub async fn kms_key_of(&self, kid: &str) -> String {
        for key in self.kms.list_keys().limit(1000).send().await.unwrap().keys() {
            let id = key.key_id().unwrap();
            let tags = self.kms.list_resource_tags().key_id(id).send().await.unwrap();
            if tags.tags().iter().any(|t| t.tag_key() == "kmsd:kid" && t.tag_value() == kid) {
                return id.to_owned();
            }
        }
        panic!("no KMS key is tagged with kid {kid}");
    }

    pub async fn state_of(&self, kid: &str) -> KeyState {
        key_state(&self.kms, &self.kms_key_of(kid).await).await
    }

    /// Waits up to `limit` for the KMS key `key_id` to reach `state`.
    pub async fn wait_for_state(&self, key_id: &str, state: KeyState, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let now = key_state(&self.kms, key_id).await;
            if now == state {
                return;
            }
            assert!(Instant::now() < deadline, "KMS key {key_id} is {now:?}, not {state:?}, after {limit:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `GET url` (with `x-api-key` if given): its JSON, which must come with 200.
async fn get(url: String, api_key: Option<&str>) -> Value {
    let headers: Vec<(&str, &str)> = api_key.map(|k| ("x-api-key", k)).into_iter().collect();
    let (status, _, body) = crate::support::get(&url, &headers).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_daemon_serves_an_aws_kms_keyset_beside_a_vault_keyset() {
    let emulator = Emulator::start();
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys_in(tmp.path(), &[("edge", "EdDSA", None), ("access", "RS256", Some(2048))], &["edge"]);
    let aws = daemon_env(&emulator.url());
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("KMSD_KEYS_DIR", keys.to_str().unwrap()));

    let d = Daemon::start(tmp.path(), &env);
    let admin = bootstrap_key(&d.output());
    let jwks = get(format!("{}/.well-known/jwks.json", d.public), None).await;
    let listed = get(format!("{}/v1/admin/keys", d.admin), Some(&admin)).await;
    let backend_of = |keyset: &str| {
        let key = listed["keys"].as_array().unwrap().iter().find(|k| k["keyset"] == keyset).unwrap();
        (key["backend"].as_str().unwrap().to_owned(), key["keyId"].as_str().unwrap().to_owned())
    };
    let (edge_backend, edge_kid) = backend_of("edge");
    let (access_backend, _) = backend_of("access");
    assert_eq!((edge_backend.as_str(), access_backend.as_str()), ("aws-kms", "vault"));
    let okp: Vec<&Value> = jwks["keys"].as_array().unwrap().iter().filter(|k| k["kty"] == "OKP").collect();
    assert_eq!(okp.len(), 1, "{jwks}");
    assert_eq!(okp[0]["kid"], edge_kid.as_str());
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // The published key is the KMS key behind the keyset's alias.
    let kms = client(&sdk_config().await, &emulator.url());
    let public = kms.get_public_key().key_id("alias/kmsd-edge").send().await.unwrap();
    let der = public.public_key().unwrap().as_ref();
    assert_eq!(&der[der.len() - 32..], kmsd::encoding::b64url_decode(okp[0]["x"].as_str().unwrap()).unwrap());

    let health = get(format!("{}/v1/health", d.public), None).await;
    assert_eq!(health["services"]["backends"]["aws-kms"]["status"], "ok", "{health}");
    let (status, _) = d.stop();
    assert!(status.success());

    // A restart loads the KMS key again (GetPublicKey) and serves the same set.
    let d = Daemon::start(tmp.path(), &env);
    let again = get(format!("{}/.well-known/jwks.json", d.public), None).await;
    assert_eq!(kid_list(&again), kid_list(&jwks));
}

/// A crash between CreateKey and the store's commit leaves a tagged key that
/// no record knows; the next start schedules its deletion and audits it.
#[tokio::test]
async fn startup_schedules_the_deletion_of_a_kms_key_that_no_record_knows() {
    let emulator = Emulator::start();
    let raw = client(&sdk_config().await, &emulator.url());
    let tag = |k: &str, v: &str| Tag::builder().tag_key(k).tag_value(v).build().unwrap();
    let create = |tags: Vec<Tag>| {
        raw.create_key().key_spec(AwsKeySpec::Rsa2048).key_usage(KeyUsageType::SignVerify).set_tags(Some(tags))
    };
    let orphan = create(vec![tag("kmsd:managed", "true"), tag("kmsd:keyset", "access")]).send().await.unwrap();
    let orphan = orphan.key_metadata().unwrap().key_id().to_owned();
    let foreign = create(vec![tag("team", "payments")]).send().await.unwrap();
    let foreign = foreign.key_metadata().unwrap().key_id().to_owned();
    // KMS creation dates have one-second resolution: let the orphan be
    // strictly older than the daemon's start.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let url = emulator.url();
    let dep = Deployment::start(&url, &url, None, &[("KMSD_AWS_KMS__ORPHAN_GRACE", "0s")]).await;
    dep.wait_for_state(&orphan, KeyState::PendingDeletion, Duration::from_secs(20)).await;
    assert_eq!(key_state(&dep.kms, &foreign).await, KeyState::Enabled, "not kmsd's key");
    let keys = dep.keys().await;
    assert_eq!(keys.len(), 3);
    for key in keys.iter().filter(|k| k["backend"] == "aws-kms") {
        assert_eq!(dep.state_of(key["keyId"].as_str().unwrap()).await, KeyState::Enabled, "recorded: {key}");
    }
    let (_, audit) = call(&dep.e.d.admin, &dep.e.admin, "GET", "/v1/admin/audit?limit=1000", None).await;
    let events = audit["events"].as_array().unwrap();
    let cleanup = events.iter().find(|e| e["action"] == "kms.orphan_cleanup").unwrap_or_else(|| panic!("{audit}"));
    let scheduled = cleanup["detail"]["scheduledForDeletion"].as_array().unwrap();
    assert_eq!(scheduled.len(), 1, "{cleanup}");
    assert_eq!(
        (scheduled[0]["keyId"].as_str(), scheduled[0]["keyset"].as_str()),
        (Some(orphan.as_str()), Some("access"))
    );
}
