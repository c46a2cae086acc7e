//! The reconcile loop over a real key ring (redb on a temp dir, the vault
//! backend, the AWS KMS backend pointed at a loopback port that never
//! answers), on a clock the test moves.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};

use super::*;
use crate::backend::{Guarded, KeyBackend};
use crate::keyring::Backends;
use crate::keys::{BackendKind, CronSchedule, KeySpec, KeyUse};
use crate::kms::{AwsKmsBackend, AwsKmsConfig};
use crate::vault::{SecretKey, VaultBackend};

/// Whole seconds, set by the test.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix(self.0.load(Ordering::Relaxed))
    }
}

fn keyset(name: &str, backend: BackendKind, schedule: Option<&str>) -> Keyset {
    Keyset {
        name: KeysetName::parse(name).unwrap(),
        spec: KeySpec::Ed25519,
        backend,
        schedule: schedule.map(|s| CronSchedule::parse(s).unwrap()),
        usage: KeyUse::Tokens,
    }
}

/// An AWS KMS backend whose endpoint accepts connections and never answers:
/// every call fails as unavailable after `timeout`.
async fn unreachable_kms(silent: &std::net::TcpListener) -> AwsKmsBackend {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("t", "t", None, None, "kmsd-tests")))
        .load()
        .await;
    let config = AwsKmsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(format!("http://{}", silent.local_addr().unwrap())),
        timeout: Duration::from_millis(300),
        max_attempts: Some(1),
        ..AwsKmsConfig::default()
    };
    AwsKmsBackend::from_sdk_config(&sdk, config)
}

#[tokio::test]
async fn a_failing_backend_in_one_keyset_does_not_stop_another_keysets_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data_key = SecretKey::generate().unwrap();
    let store = Store::create(&dir.path().join("kmsd.redb"), data_key.record_key()).unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let vault: Arc<dyn KeyBackend> = Arc::new(VaultBackend::new(data_key));
    let kms: Arc<dyn KeyBackend> = Arc::new(unreachable_kms(&silent).await);
    let backends = Backends::default().with(Guarded::new(vault)).with(Guarded::new(kms));
    // The failing keyset comes first, so a tick that stops at the first
    // failure never reaches the healthy one.
    let keysets = vec![
        keyset("access", BackendKind::AwsKms, Some("*/10 * * * * *")),
        keyset("edge", BackendKind::Vault, Some("*/10 * * * * *")),
    ];
    let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_001)));
    let ring = Arc::new(
        KeyRing::open(store.clone(), backends, keysets, clock.clone(), Arc::new(crate::metrics::Metrics::new()))
            .await
            .unwrap(),
    );
    let policy = RotationPolicy {
        publish_lead: Duration::from_secs(2),
        overlap: Duration::from_secs(10),
        destroy_delay: Duration::from_secs(100),
        margin: Duration::ZERO,
        unsafe_short_publish_lead: false,
    };
    let jwks = JwksPolicy { max_age_cap: Duration::from_secs(1), verifier_cache: Duration::from_secs(1) };
    let rotation = Rotation::start(ring.clone(), store, clock.clone(), policy, jwks).await.unwrap();
    let (access, edge) = (KeysetName::parse("access").unwrap(), KeysetName::parse("edge").unwrap());

    let tick = rotation.tick().await;
    let first = ring.active(&edge, clock.now()).expect("edge got its first key although access's backend is down");
    assert!(ring.active(&access, clock.now()).is_none());
    let failed: Vec<&str> = tick.failed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(failed, ["access"], "only access failed: {:?}", tick.failed);
    assert_eq!(tick.applied.len(), 1, "{:?}", tick.applied);

    // The next rotation of edge is due at 1_800_000_010, published 2 s before.
    clock.0.store(1_800_000_008, Ordering::Relaxed);
    let tick = rotation.tick().await;
    assert_eq!(tick.failed.len(), 1, "access still fails: {:?}", tick.failed);
    let edge_keys: Vec<_> = ring.records().iter().filter(|r| r.keyset == edge).cloned().collect();
    assert_eq!(edge_keys.len(), 2, "edge published its successor: {edge_keys:?}");
    // Published from the next whole second, it signs a full lead later.
    clock.0.store(1_800_000_011, Ordering::Relaxed);
    let now_signing = ring.active(&edge, clock.now()).unwrap();
    assert_ne!(now_signing.kid, first.kid, "the successor signs after its publish lead");

    // Reported per keyset: health shows which one is failing.
    assert_eq!(rotation.keyset_status(&access), Some(KeysetStatus { failing: true, failed_ticks: 2 }));
    assert_eq!(rotation.keyset_status(&edge), Some(KeysetStatus { failing: false, failed_ticks: 0 }));
    assert_eq!(rotation.failures(), 2, "two ticks had a failing keyset");
}
