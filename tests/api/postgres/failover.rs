//! Losing the leader, two ways, with real replica processes on one
//! PostgreSQL:
//!
//! - **kill -9 under rotation**: keysets rotating every 3 s; the leader is
//!   killed at a random point ten times (and a replacement started). After
//!   each kill another replica leads within `ha.failover`; at every sample,
//!   every live replica shows exactly one active key per keyset and
//!   publishes the kid of every token still live; at the end the audit
//!   chain verifies and no scheduled rotation was applied twice.
//! - **split brain**: the leader's connection to the database is cut (a
//!   loopback fault proxy swallows every byte): it stops leading and
//!   stops issuing (503 + Retry-After), keeps serving JWKS and
//!   introspection from memory, and rejoins without a restart; no sample
//!   of the three replicas ever shows two leaders.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::degraded::issue;
use super::replicas::{metric_leader, one_leader, pair, refused_within, refuses, revoke_access_token, Cluster};
use super::url_text_via;
use crate::daemon::{bootstrap_key, Daemon};
use crate::kms::proxy::FaultProxy;
use crate::support::{admin_keys, call, identity, introspect, jwks_kids};
use crate::tokens::part;

const FAILOVER: Duration = Duration::from_secs(3);
/// What observing a new leader may take beyond the failover itself: the
/// health calls of the poll.
const OBSERVE: Duration = Duration::from_millis(500);

/// A small deterministic generator for the kill points (seed printed).
struct Points(u64);

impl Points {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Live tokens' kids and expiries, and the checks made at every sample.
struct Samples {
    tokens: Vec<(String, i64)>,
    taken: usize,
}

impl Samples {
    /// Issues one token on `issuer`, then checks every live replica: one
    /// active key per keyset, and every live token's kid published.
    async fn take(&mut self, live: &[&Daemon], issuer: &Daemon, key: &str, id: &str) {
        let body = json!({ "identityId": id, "audience": ["svc"] });
        let (status, p) = call(&issuer.public, key, "POST", "/v1/tokens", Some(body)).await;
        assert_eq!(status, 201, "issuance on {}: {p}", issuer.public);
        let access = p["accessToken"].as_str().unwrap();
        let claims = part(access, 1);
        self.tokens.push((part(access, 0)["kid"].as_str().unwrap().to_owned(), claims["exp"].as_i64().unwrap()));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        // Live with a second to spare (the kid leaves the JWKS only after
        // the token's expiry plus the overlap, so this never races).
        let live_kids: HashSet<&str> =
            self.tokens.iter().filter(|(_, exp)| *exp > now + 1).map(|(kid, _)| kid.as_str()).collect();
        for d in live {
            let mut active: BTreeMap<String, usize> = BTreeMap::new();
            for k in admin_keys(&d.admin, key).await {
                let entry = active.entry(k["keyset"].as_str().unwrap().to_owned()).or_default();
                *entry += usize::from(k["state"] == "active");
            }
            assert!(active.values().all(|&n| n == 1), "{}: active keys per keyset {active:?}", d.public);
            let published = jwks_kids(&d.public).await;
            for kid in &live_kids {
                assert!(published.iter().any(|p| p == kid), "{}: kid {kid} of a live token is not published", d.public);
            }
        }
        self.taken += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_ten_times_under_rotation_keeps_one_active_key_and_applies_no_rotation_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let mut extra = crate::rotation::fast_config(tmp.path(), 3, "");
    extra.push(("KMSD_HA__FAILOVER".into(), "3".into()));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut cluster = Cluster::new(&extra).await;
    let first = cluster.start("r0");
    let key = bootstrap_key(&first.output());
    let mut replicas: Vec<Option<Daemon>> = vec![Some(first), Some(cluster.start("r1")), Some(cluster.start("r2"))];
    let id = identity(&replicas[0].as_ref().unwrap().public, &key, "fleet", &["relayfile:fs:read:/a/*"]).await;

    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill points seed {seed}");
    let mut points = Points(seed);
    let mut samples = Samples { tokens: Vec::new(), taken: 0 };
    let mut took = Vec::new();
    for round in 0..10 {
        // A random point in the rotation cycle (3 s) and then some.
        let until = Instant::now() + Duration::from_millis(300 + points.next_ms(3000));
        let mut n = 0;
        while Instant::now() < until {
            let live: Vec<&Daemon> = replicas.iter().flatten().collect();
            samples.take(&live, live[n % live.len()], &key, &id).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let live: Vec<&Daemon> = replicas.iter().flatten().collect();
        let leader = one_leader(&live, FAILOVER + OBSERVE).await;
        let index = (0..replicas.len()).filter(|&i| replicas[i].is_some()).nth(leader).unwrap();
        replicas[index].take().unwrap().crash();
        let t0 = Instant::now();
        let survivors: Vec<&Daemon> = replicas.iter().flatten().collect();
        one_leader(&survivors, FAILOVER + OBSERVE).await;
        took.push(t0.elapsed());
        replicas[index] = Some(cluster.start(&format!("r{index}-{round}")));
    }
    eprintln!("new leader after each kill: {took:?}; {} samples", samples.taken);
    assert!(samples.taken >= 20, "sampled throughout");

    let d = replicas.iter().flatten().next().unwrap();
    let (status, verified) = call(&d.admin, &key, "GET", "/v1/admin/audit/verify", None).await;
    assert_eq!((status, verified["intact"].as_bool()), (200, Some(true)), "{verified}");
    // No scheduled rotation applied twice: no two keys of a keyset activate
    // at the same instant.
    let keys = admin_keys(&d.admin, &key).await;
    let mut slots = HashSet::new();
    for k in &keys {
        let slot = (k["keyset"].as_str().unwrap(), k["activatedAt"].as_str().unwrap());
        assert!(slots.insert(slot), "two keys of {} activate at {}: {keys:?}", slot.0, slot.1);
    }
    let rotations = keys.iter().filter(|k| k["keyset"] == "access").count();
    assert!(rotations >= 5, "the access keyset rotated throughout ({rotations} keys)");
    for d in replicas.into_iter().flatten() {
        d.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_the_database_stops_leading_and_issuing_serves_from_memory_and_rejoins() {
    let mut cluster = Cluster::new(&[("KMSD_HA__FAILOVER", "3"), ("KMSD_STORAGE__STATEMENT_TIMEOUT", "1s")]).await;
    let proxy = FaultProxy::start(cluster.db.url.config().get_ports()[0]);
    let via = url_text_via(&cluster.db.url, proxy.port);
    // A starts first, on the empty database: it makes the store and leads.
    let a = cluster.start_via("replica-a", &via);
    let key = bootstrap_key(&a.output());
    one_leader(&[&a], FAILOVER + OBSERVE).await;
    let (b, c) = (cluster.start("replica-b"), cluster.start("replica-c"));
    let a = Arc::new(a);
    let (b, c) = (Arc::new(b), Arc::new(c));
    assert_eq!(one_leader(&[&*a, &*b, &*c], FAILOVER + OBSERVE).await, 0, "A leads");

    // What A must go on serving from memory.
    let (id, access, _) = pair(&a, &key, "warm", "EdDSA").await;
    assert_eq!(refuses(&a, &key, &access).await, [false; 3]);
    let kids = jwks_kids(&a.public).await;

    // Leadership as every replica reports it (memory only, so a cut replica
    // answers), every 50 ms until told to stop.
    let (stop, most, taken) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = tokio::spawn({
        let (stop, most, taken) = (stop.clone(), most.clone(), taken.clone());
        let all = [a.clone(), b.clone(), c.clone()];
        async move {
            let t0 = Instant::now();
            while !stop.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
                let mut leading = 0;
                for d in &all {
                    leading += metric_leader(d).await as usize;
                }
                most.fetch_max(leading, Ordering::SeqCst);
                taken.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    proxy.cut();
    let t0 = Instant::now();
    while metric_leader(&a).await != 0.0 {
        assert!(t0.elapsed() < FAILOVER, "A still leads {:?} after its database was cut", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stepped_down = t0.elapsed();
    one_leader(&[&*b, &*c], FAILOVER + OBSERVE).await;
    eprintln!("A stepped down {stepped_down:?} after the cut; another replica led {:?} after it", t0.elapsed());

    let (status, retry, body) = issue(&a.public, &key, &id).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("service_unavailable")), "{body}");
    assert!(retry.is_some(), "a 503 says when to retry");
    assert_eq!(jwks_kids(&a.public).await, kids, "JWKS from memory");
    assert_ne!(introspect(&a.public, &key, &access).await, Value::Null, "introspection from memory");

    proxy.restore();
    let t0 = Instant::now();
    while issue(&a.public, &key, &id).await.0 != 201 {
        assert!(t0.elapsed() < Duration::from_secs(30), "A issues again within 30 s of the network's return");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("A issues again {:?} after the network came back", t0.elapsed());
    // Its change feed is back too: a revocation on B reaches A.
    let (_, later, p) = pair(&b, &key, "after", "EdDSA").await;
    assert_eq!(refuses(&a, &key, &later).await, [false; 3]);
    revoke_access_token(&b, &key, &p).await;
    // The feed may still be reconnecting (a ping every 2 s, a retry every
    // 1 s), and its reconnection resyncs.
    refused_within(&[&*a], &key, &later, Duration::from_secs(5), "a revocation on B, on the rejoined A").await;
    assert_ne!(one_leader(&[&*a, &*b, &*c], FAILOVER + OBSERVE).await, 0, "A rejoined as a follower");

    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let (most, taken) = (most.load(Ordering::SeqCst), taken.load(Ordering::SeqCst));
    eprintln!("{taken} leadership samples, at most {most} leader at once");
    assert!(taken >= 20, "sampled throughout");
    assert_eq!(most, 1, "never two leaders");
    for d in [a, b, c] {
        Arc::into_inner(d).unwrap().stop();
    }
}
