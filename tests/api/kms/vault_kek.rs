//! The vault's data key wrapped by a symmetric key in the KMS emulator
//! (`[vault] kek = "aws-kms"`): the daemon starts and restarts with it, the
//! encryption context binds the ciphertext to its vault, a wrong or missing
//! KMS key or an unreachable KMS stops startup and changes nothing, and
//! rekey moves the vault between a key file and KMS.

use std::path::Path;

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use kmsd::storage::{Store, META_DATA_KEY};
use kmsd::vault::{KekKind, WrappedDataKey};

use super::emulator::{client, daemon_env, sdk_config, Emulator};
use crate::daemon::{run, sha256_file, text, Daemon};
use crate::support::jwks_kids;
use crate::vault::store;

/// The emulator, a symmetric KMS key in it, and the environment of a daemon
/// whose vault KEK is that key.
struct KmsVault {
    emulator: Option<Emulator>,
    kms: aws_sdk_kms::Client,
    key_id: String,
    aws: Vec<(&'static str, String)>,
}

impl KmsVault {
    async fn start() -> Self {
        let emulator = Emulator::start();
        let kms = client(&sdk_config().await, &emulator.url());
        let aws = daemon_env(&emulator.url());
        let mut v = KmsVault { emulator: Some(emulator), kms, key_id: String::new(), aws };
        v.key_id = v.symmetric_key().await;
        v
    }

    /// A new ENCRYPT_DECRYPT key (SYMMETRIC_DEFAULT), by id.
    async fn symmetric_key(&self) -> String {
        let out = self.kms.create_key().send().await.unwrap();
        out.key_metadata().unwrap().key_id().to_owned()
    }

    /// The environment with the vault KEK in KMS under `key_id`.
    fn env<'a>(&'a self, key_id: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = self.aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend([("KMSD_VAULT__KEK", "aws-kms"), ("KMSD_VAULT__KMS_KEY_ID", key_id)]);
        env
    }

    async fn arn(&self, key_id: &str) -> String {
        let out = self.kms.describe_key().key_id(key_id).send().await.unwrap();
        out.key_metadata().unwrap().arn().unwrap().to_owned()
    }

    /// Decrypt straight on the emulator, with `vault_id` as the context.
    async fn decrypt(&self, wrapped: &WrappedDataKey, vault_id: &str) -> Result<Vec<u8>, String> {
        let blob = kmsd::encoding::b64url_decode(&wrapped.sealed).unwrap();
        let out = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob))
            .encryption_context("kmsd:vault", vault_id)
            .send()
            .await;
        out.map(|o| o.plaintext().unwrap().as_ref().to_vec())
            .map_err(|e| aws_sdk_kms::error::ProvideErrorMetadata::code(&e).unwrap_or_default().to_owned())
    }
}

fn wrapped(tmp: &Path) -> WrappedDataKey {
    WrappedDataKey::decode(&Store::peek_meta(&store(tmp), META_DATA_KEY).unwrap().unwrap()).unwrap()
}

#[tokio::test]
async fn a_vault_whose_kek_is_in_kms_serves_the_same_kids_after_a_restart() {
    let v = KmsVault::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = v.env(&v.key_id);
    let d = Daemon::start(tmp.path(), &env);
    let before = jwks_kids(&d.public).await;
    assert_eq!(before.len(), 3);
    assert!(d.stop().0.success());
    assert!(!tmp.path().join("kmsd-data").join("vault.kek").exists(), "no key file for a KMS KEK");

    let w = wrapped(tmp.path());
    assert_eq!((w.v, w.kek, w.argon2.as_ref()), (2, KekKind::AwsKms, None));
    assert_eq!(w.kms_key_id, Some(v.arn(&v.key_id).await), "the record names the key that wrapped it");
    assert_eq!(w.vault_id.as_deref().map(str::len), Some(22), "a random vault id (16 bytes, base64url)");

    let debug = [env.as_slice(), &[("KMSD_LOG", "trace")]].concat();
    let d = Daemon::start(tmp.path(), &debug);
    assert_eq!(jwks_kids(&d.public).await, before, "the data key unwrapped by KMS opens the same keys");
    let out = d.stop().1;
    assert!(!out.contains("bootstrap admin API key"), "init runs once");
    assert!(out.contains("Decrypt"), "trace logging was on, so the check saw the SDK's log lines");
    let data_key = v.decrypt(&w, w.vault_id.as_deref().unwrap()).await.unwrap();
    for encoded in [base64::engine::general_purpose::STANDARD.encode(&data_key), kmsd::encoding::b64url(&data_key)] {
        assert!(!out.contains(&encoded[..20]), "the data key is never logged");
    }
}

/// The ciphertext opens only with the vault id it was made for: KMS refuses
/// another context (or none), and a record whose vault id was changed stops
/// startup, naming KMS and the key.
#[tokio::test]
async fn the_encryption_context_binds_the_wrapped_data_key_to_its_vault() {
    let v = KmsVault::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = v.env(&v.key_id);
    let out = run(tmp.path(), &["init"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let w = wrapped(tmp.path());
    let vault_id = w.vault_id.clone().unwrap();

    assert_eq!(v.decrypt(&w, &vault_id).await.map(|k| k.len()), Ok(32), "the recorded context opens it");
    let other = kmsd::vault::new_vault_id().unwrap();
    assert_eq!(v.decrypt(&w, &other).await, Err("InvalidCiphertextException".into()), "another vault's context");
    let no_context = v.kms.decrypt().ciphertext_blob(Blob::new(kmsd::encoding::b64url_decode(&w.sealed).unwrap()));
    assert!(no_context.send().await.is_err(), "no context");

    // The same ciphertext, recorded for another vault.
    let path = store(tmp.path());
    let moved = WrappedDataKey { vault_id: Some(other.clone()), ..w };
    {
        // A bare meta value (its AEAD under the KEK is its integrity), written as an attacker would.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta = redb::TableDefinition::<&str, &[u8]>::new("meta");
        txn.open_table(meta).unwrap().insert(META_DATA_KEY, moved.encode().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let before = sha256_file(&path);
    let (status, out) = Daemon::try_start(tmp.path(), &env).err().expect("a rebound ciphertext is refused");
    assert!(status.is_some_and(|s| !s.success()), "non-zero exit: {status:?}");
    let expected = format!("AWS KMS key {} does not unwrap the vault's data key", v.key_id);
    assert!(out.contains(&expected) && out.contains(&format!("for vault {other}")), "{out}");
    assert!(out.contains("InvalidCiphertextException") && out.contains("nothing was changed"), "{out}");
    assert_eq!(sha256_file(&path), before, "store is byte-for-byte unchanged");
}

#[tokio::test]
async fn a_wrong_or_missing_kms_key_or_an_unreachable_kms_stops_startup_and_changes_nothing() {
    let mut v = KmsVault::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["init"], &v.env(&v.key_id));
    assert!(out.status.success(), "{}", text(&out));
    let path = store(tmp.path());
    let before = sha256_file(&path);

    let other = v.symmetric_key().await;
    let missing = "0b6b4b73-0000-4000-8000-000000000000".to_owned();
    let arn = v.arn(&v.key_id).await;
    for (key_id, says) in [
        (&other, format!("AWS KMS key {other} does not unwrap the vault's data key (wrapped under {arn}")),
        (&missing, format!("AWS KMS key {missing} does not unwrap the vault's data key")),
    ] {
        let (status, out) = Daemon::try_start(tmp.path(), &v.env(key_id)).err().expect("a wrong KMS key is refused");
        assert!(status.is_some_and(|s| !s.success()), "non-zero exit: {status:?}");
        assert!(out.contains(&says) && out.contains("nothing was changed"), "{out}");
        assert!(!out.contains("kmsd listening"), "{out}");
        assert_eq!(sha256_file(&path), before, "store is byte-for-byte unchanged");
    }

    // KMS cannot be reached: a clear, retryable failure, naming KMS and the key.
    v.emulator.take().unwrap().kill();
    let (key_id, env) = (&v.key_id, v.env(&v.key_id));
    let (status, out) = Daemon::try_start(tmp.path(), &env).err().expect("an unreachable KMS is refused");
    assert!(status.is_some_and(|s| !s.success()), "non-zero exit: {status:?}");
    assert!(out.contains(&format!("AWS KMS is unavailable (Decrypt with key {key_id})")), "{out}");
    assert_eq!(sha256_file(&path), before, "store is byte-for-byte unchanged");

    // A KMS that fails at init leaves no store behind.
    let fresh = tempfile::tempdir().unwrap();
    let out = run(fresh.path(), &["init"], &env);
    assert!(!out.status.success());
    assert!(text(&out).contains(&format!("AWS KMS is unavailable (GenerateDataKey with key {key_id})")));
    assert!(!store(fresh.path()).exists(), "no store without a wrapped data key");
}

#[tokio::test]
async fn rekey_moves_the_vault_kek_from_a_key_file_to_kms_and_back() {
    let v = KmsVault::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let aws: Vec<(&str, &str)> = v.aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d = Daemon::start(tmp.path(), &aws);
    let before = jwks_kids(&d.public).await;
    d.stop();
    let vault_id = wrapped(tmp.path()).vault_id;
    assert!(vault_id.is_some());

    let to_kms = format!("aws-kms:{}", v.key_id);
    let out = run(tmp.path(), &["vault", "rekey", "--to", &to_kms], &aws);
    assert!(out.status.success(), "{}", text(&out));
    let w = wrapped(tmp.path());
    assert_eq!((w.kek, &w.vault_id), (KekKind::AwsKms, &vault_id), "the vault keeps its id");
    let (_, out) = Daemon::try_start(tmp.path(), &aws).err().expect("the key file no longer opens the vault");
    assert!(out.contains(r#"wrapped under kek = "aws-kms" but the config names kek = "file""#), "{out}");
    let d = Daemon::start(tmp.path(), &v.env(&v.key_id));
    assert_eq!(jwks_kids(&d.public).await, before);
    d.stop();

    let new = tmp.path().join("new.kek");
    let to_file = format!("file:{}", new.display());
    let out = run(tmp.path(), &["vault", "rekey", "--to", &to_file], &v.env(&v.key_id));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((wrapped(tmp.path()).kek, wrapped(tmp.path()).vault_id), (KekKind::File, vault_id));
    let d = Daemon::start(tmp.path(), &[("KMSD_VAULT__KEK_FILE", new.to_str().unwrap())]);
    assert_eq!(jwks_kids(&d.public).await, before);
}
