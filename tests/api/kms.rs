//! The AWS KMS backend against the moto emulator (`tests/kms/`): the shared
//! backend contract, what the emulator's corrections buy (stock moto's faults
//! are caught), key state, kmsd's sign budget, outages and timeouts, orphans;
//! and the daemon with AWS KMS keysets: tokens, rotation, revoke, destroy,
//! startup orphan cleanup, a partition and the sign budget over HTTP; and the
//! vault's data key wrapped by a KMS key (envelope).

mod deployment;
mod emulator;
mod faults;
mod lifecycle;
pub mod proxy;
mod readiness;
mod vault_kek;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kms::types::{KeySpec as AwsKeySpec, KeyState, KeyUsageType, Tag};
use kmsd::backend::{BackendError, Guarded, KeyBackend};
use kmsd::clock::Timestamp;
use kmsd::keys::{KeyHandle, KeySpec, KeysetName, Kid};
use kmsd::kms::{AwsKmsBackend, AwsKmsConfig, Budget};

use crate::backend_contract::contract;
use emulator::{backend, client, sdk_config, settings, Emulator};

const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudF8xIn0";

fn keyset() -> KeysetName {
    KeysetName::parse("contract").unwrap()
}

async fn key_state(kms: &aws_sdk_kms::Client, key_id: &str) -> KeyState {
    let out = kms.describe_key().key_id(key_id).send().await.unwrap();
    out.key_metadata().unwrap().key_state().unwrap().clone()
}

fn key_id(handle: &KeyHandle) -> String {
    match handle {
        KeyHandle::AwsKms { key_id } => key_id.clone(),
        other => panic!("not a KMS handle: {other:?}"),
    }
}

#[tokio::test]
async fn aws_kms_passes_the_backend_contract_on_the_emulator() {
    let kms = Emulator::start();
    let sdk = sdk_config().await;
    let url = kms.url();
    contract(move || Arc::new(backend(&sdk, &url)) as Arc<dyn KeyBackend>).await;
}

/// Stock moto signs SHA-256(digest) for MessageType=DIGEST and has no
/// Ed25519: kmsd notices the first (the signature does not verify locally) and
/// reports the second, and both work on the corrected emulator.
#[tokio::test]
async fn stock_moto_faults_are_caught_and_the_corrected_emulator_passes() {
    let sdk = sdk_config().await;
    let (stock, fixed) = (Emulator::stock(), Emulator::start());
    for (emulator, corrected) in [(&stock, false), (&fixed, true)] {
        let kms = Guarded::new(Arc::new(backend(&sdk, &emulator.url())));
        for spec in [KeySpec::Rsa2048, KeySpec::P256] {
            let key = kms.create(&keyset(), spec).await.unwrap();
            let signed = kms.sign(&key.kid, &key.public, MESSAGE).await;
            if corrected {
                assert!(key.public.verify(MESSAGE, &signed.unwrap()), "{spec:?}");
            } else {
                let err = signed.unwrap_err();
                assert!(matches!(err, BackendError::Corrupt { .. }), "{spec:?} on stock moto: {err}");
                assert!(err.to_string().contains("does not verify"), "{err}");
            }
        }
        let ed = kms.create(&keyset(), KeySpec::Ed25519).await;
        if corrected {
            let key = ed.unwrap();
            assert!(key.public.verify(MESSAGE, &kms.sign(&key.kid, &key.public, MESSAGE).await.unwrap()));
        } else {
            let err = ed.unwrap_err();
            assert!(matches!(err, BackendError::Rejected { .. }), "Ed25519 on stock moto: {err}");
            assert!(err.to_string().contains("CreateKey"), "{err}");
        }
    }
}

#[tokio::test]
async fn a_disabled_key_is_rejected_and_a_destroyed_key_is_pending_deletion() {
    let emulator = Emulator::start();
    let sdk = sdk_config().await;
    let raw = client(&sdk, &emulator.url());
    let kms = backend(&sdk, &emulator.url());

    let key = kms.create(&keyset(), KeySpec::P256).await.unwrap();
    // An instance that never loaded the key finds it by its kid tag.
    backend(&sdk, &emulator.url()).disable(&key.kid).await.unwrap();
    assert_eq!(key_state(&raw, &key_id(&key.handle)).await, KeyState::Disabled);
    kms.disable(&key.kid).await.unwrap();
    let err = kms.sign(&key.kid, MESSAGE).await.unwrap_err();
    assert!(matches!(err, BackendError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("DisabledException"), "{err}");

    let key = kms.create(&keyset(), KeySpec::Ed25519).await.unwrap();
    kms.destroy(&key.kid).await.unwrap();
    let id = key_id(&key.handle);
    assert_eq!(key_state(&raw, &id).await, KeyState::PendingDeletion);
    let described = raw.describe_key().key_id(&id).send().await.unwrap();
    let deletion = described.key_metadata().unwrap().deletion_date().unwrap().secs();
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let window = deletion - now;
    assert!((30 * 86_400 - 60..=30 * 86_400 + 60).contains(&window), "default pending window is 30 days: {window}s");
    // Again, from this instance and from one that never loaded it.
    kms.destroy(&key.kid).await.unwrap();
    backend(&sdk, &emulator.url()).destroy(&key.kid).await.unwrap();
    assert!(matches!(kms.sign(&key.kid, MESSAGE).await, Err(BackendError::NotFound { .. })));

    // The keyset's alias follows the newest key.
    let alias = raw.describe_key().key_id("alias/kmsd-contract").send().await.unwrap();
    assert_eq!(alias.key_metadata().unwrap().key_id(), id);
}

#[tokio::test]
async fn eddsa_input_over_4096_bytes_is_refused_without_calling_kms() {
    let emulator = Emulator::start();
    let kms = backend(&sdk_config().await, &emulator.url());
    let key = kms.create(&keyset(), KeySpec::Ed25519).await.unwrap();
    let at_limit = vec![b'a'; 4096];
    assert!(key.public.verify(&at_limit, &kms.sign(&key.kid, &at_limit).await.unwrap()));
    let err = kms.sign(&key.kid, &[b'a'; 4097]).await.unwrap_err();
    assert!(matches!(err, BackendError::Rejected { .. }) && err.to_string().contains("4096"), "{err}");
    assert_eq!(kms.sign_requests(), 1);
}

#[tokio::test]
async fn the_sign_budget_refuses_beyond_its_burst_without_calling_kms() {
    const N: u32 = 5;
    let emulator = Emulator::start();
    let budget = Budget { rate: N, burst: N };
    let config = AwsKmsConfig { rsa_budget: budget, ecc_budget: budget, ..settings(&emulator.url()) };
    let kms = Arc::new(AwsKmsBackend::from_sdk_config(&sdk_config().await, config));
    let key = kms.create(&keyset(), KeySpec::Ed25519).await.unwrap();

    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..3 * N {
        let (kms, kid) = (kms.clone(), key.kid.clone());
        burst.spawn(async move { kms.sign(&kid, MESSAGE).await });
    }
    let (mut signed, mut retry_after) = (0, Vec::new());
    while let Some(result) = burst.join_next().await {
        match result.unwrap() {
            Ok(sig) => {
                assert!(key.public.verify(MESSAGE, &sig));
                signed += 1;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                retry_after.push(e.retry_after().unwrap_or_else(|| panic!("not Throttled: {e}")));
            }
        }
    }
    assert_eq!(signed, N, "exactly the burst is signed");
    assert_eq!(retry_after.len(), 2 * N as usize);
    assert_eq!(kms.sign_requests(), u64::from(N), "throttled signs never reached KMS");
    let longest = retry_after.into_iter().max().unwrap();
    assert!(longest <= Duration::from_secs(1) / N, "{longest:?}");
    tokio::time::sleep(longest).await;
    kms.sign(&key.kid, MESSAGE).await.unwrap();
}

#[tokio::test]
async fn an_outage_is_unavailable_within_the_timeout_and_recovery_needs_no_rebuild() {
    let emulator = Emulator::start();
    let port = emulator.port;
    let config = settings(&emulator.url());
    let timeout = config.timeout;
    let kms = AwsKmsBackend::from_sdk_config(&sdk_config().await, config);
    let key = kms.create(&keyset(), KeySpec::Ed25519).await.unwrap();
    kms.sign(&key.kid, MESSAGE).await.unwrap();

    emulator.kill();
    let started = Instant::now();
    let err = kms.sign(&key.kid, MESSAGE).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(started.elapsed() < timeout + Duration::from_secs(1), "{:?}", started.elapsed());
    let health = kms.health().await.unwrap_err();
    assert!(health.is_transient(), "{health}");

    let _back = Emulator::on_port(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while kms.health().await.is_err() {
        assert!(Instant::now() < deadline, "health did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // moto keeps no state across a restart: the old key is gone, a new one works.
    assert!(matches!(kms.sign(&key.kid, MESSAGE).await, Err(BackendError::NotFound { .. })));
    let fresh = kms.create(&keyset(), KeySpec::Ed25519).await.unwrap();
    assert!(fresh.public.verify(MESSAGE, &kms.sign(&fresh.kid, MESSAGE).await.unwrap()));
}

/// A KMS that accepts connections and never answers: every call ends at the
/// configured timeout, as `Unavailable`.
#[tokio::test]
async fn a_kms_that_never_answers_times_out_as_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _holder = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let (mut held, until) = (Vec::new(), Instant::now() + Duration::from_secs(10));
        while Instant::now() < until {
            if let Ok((conn, _)) = listener.accept() {
                held.push(conn);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let timeout = Duration::from_secs(1);
    let kms = AwsKmsBackend::from_sdk_config(&sdk_config().await, AwsKmsConfig { timeout, ..settings(&url) });
    let kid = Kid::parse(&"A".repeat(43)).unwrap();
    let handle = KeyHandle::AwsKms { key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into() };
    for _ in 0..2 {
        let started = Instant::now();
        let err = kms.load(&keyset(), &kid, KeySpec::P256, &handle).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
        assert!(elapsed >= timeout && elapsed < timeout + Duration::from_millis(1500), "{elapsed:?}");
    }
    assert!(kms.health().await.unwrap_err().is_transient());
}

#[tokio::test]
async fn orphans_are_managed_keys_of_this_instance_that_no_record_knows() {
    let emulator = Emulator::start();
    let sdk = sdk_config().await;
    let raw = client(&sdk, &emulator.url());
    let kms = backend(&sdk, &emulator.url());
    let recorded = kms.create(&keyset(), KeySpec::Ed25519).await.unwrap();
    // Another deployment in the same account and region.
    let other = AwsKmsBackend::from_sdk_config(
        &sdk,
        AwsKmsConfig { instance: Some("staging".into()), ..settings(&emulator.url()) },
    );
    other.create(&keyset(), KeySpec::Ed25519).await.unwrap();
    // A key that is not kmsd's, and one kmsd created but never recorded.
    let create = |tags: Vec<Tag>| {
        raw.create_key().key_spec(AwsKeySpec::EccNistP256).key_usage(KeyUsageType::SignVerify).set_tags(Some(tags))
    };
    let tag = |k: &str, v: &str| Tag::builder().tag_key(k).tag_value(v).build().unwrap();
    create(vec![tag("team", "payments")]).send().await.unwrap();
    let orphan = create(vec![tag("kmsd:managed", "true"), tag("kmsd:keyset", "contract")]).send().await.unwrap();
    let orphan_id = orphan.key_metadata().unwrap().key_id().to_owned();

    let known: HashSet<String> = [key_id(&recorded.handle)].into();
    let later = Timestamp::from_unix(i64::MAX / 2);
    let found = kms.find_orphans(&known, later).await.unwrap();
    assert_eq!(found.iter().map(|o| o.key_id.as_str()).collect::<Vec<_>>(), [orphan_id.as_str()]);
    assert_eq!(found[0].keyset.as_deref(), Some("contract"));
    let long_ago = Timestamp::from_unix(0);
    assert!(kms.find_orphans(&known, long_ago).await.unwrap().is_empty(), "young keys are left alone");

    let cleaned = kms.clean_orphans(&known, later).await.unwrap();
    assert_eq!(cleaned, found);
    assert_eq!(key_state(&raw, &orphan_id).await, KeyState::PendingDeletion);
    assert_eq!(key_state(&raw, &key_id(&recorded.handle)).await, KeyState::Enabled);
    assert!(kms.find_orphans(&known, later).await.unwrap().is_empty());
}
