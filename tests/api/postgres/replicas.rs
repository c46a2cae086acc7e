//! Three replicas on one PostgreSQL, real processes on 127.0.0.1: one
//! leader (health and metrics agree), tokens issued on any replica work on
//! every replica, PyJWT and jose verify them against every replica's JWKS
//! (identical), an API key made on one works on another, and every kind of
//! revocation made on one replica is refused by the other two within a
//! second: introspection, validation and bearer auth, and for an emergency
//! key revoke the JWKS drops the kid. Then the leader is killed (-9) and
//! another leads within `ha.failover`. And a revocation whose notification
//! a replica missed (its feed session ended) reaches it by the resync that
//! follows the reconnect.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{harness, url_text};
use crate::daemon::{bootstrap_key, client, run, text, Daemon};
use crate::support::{call, identity, introspect, issue, jwks_kids};
use crate::tokens::{part, ISSUER};

/// What a revocation must reach every other replica within.
const PROPAGATION: Duration = Duration::from_secs(1);

/// A database, the KEK every replica shares, and the replicas' settings.
pub struct Cluster {
    pub db: harness::TestDb,
    url: String,
    kek: PathBuf,
    extra: Vec<(String, String)>,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    pub async fn new(extra: &[(&str, &str)]) -> Cluster {
        let db = harness::fresh_db().await;
        let url = url_text(&db.url);
        let kek_dir = tempfile::tempdir().unwrap();
        let made = run(kek_dir.path(), &["init"], &[]);
        assert!(made.status.success(), "{}", text(&made));
        let kek = kek_dir.path().join("kmsd-data").join("vault.kek");
        let extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Cluster { db, url, kek, extra, dirs: vec![kek_dir] }
    }

    /// Starts replica `name` (its own data dir, the shared database).
    pub fn start(&mut self, name: &str) -> Daemon {
        let url = self.url.clone();
        self.start_via(name, &url)
    }

    /// Starts replica `name` reaching the database at `url` (a fault proxy).
    pub fn start_via(&mut self, name: &str, url: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let env = self.env(name, url);
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let d = Daemon::start(dir.path(), &refs);
        self.dirs.push(dir);
        d
    }

    /// The environment of replica `name` on the database at `url`.
    pub fn env(&self, name: &str, url: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("KMSD_STORAGE__ENGINE".into(), "postgres".into()),
            ("KMSD_STORAGE_URL".into(), url.into()),
            ("KMSD_VAULT__KEK_FILE".into(), self.kek.display().to_string()),
            ("KMSD_HA__REPLICA".into(), name.into()),
        ];
        env.extend(self.extra.iter().cloned());
        env
    }

    /// The database's URL, password included.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `services.ha` of a replica's `/v1/health`.
pub async fn ha(d: &Daemon) -> Value {
    let v: Value = client().get(format!("{}/v1/health", d.public)).send().await.unwrap().json().await.unwrap();
    v["services"]["ha"].clone()
}

/// Waits (bounded) until exactly one of `replicas` leads and every one names
/// it; returns its index.
pub async fn one_leader(replicas: &[&Daemon], limit: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        let mut views = Vec::new();
        for d in replicas {
            views.push(ha(d).await);
        }
        let leading: Vec<usize> = (0..views.len()).filter(|&i| views[i]["leading"] == true).collect();
        if let [i] = leading[..] {
            if views.iter().all(|v| v["leader"] == views[i]["replica"]) {
                return i;
            }
        }
        assert!(t0.elapsed() < limit, "no single leader within {limit:?}: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kmsd_leader` of a replica (memory only: answered while it is cut off).
pub async fn metric_leader(d: &Daemon) -> f64 {
    let text = client().get(format!("{}/metrics", d.admin)).send().await.unwrap().text().await.unwrap();
    let line =
        text.lines().find(|l| l.starts_with("kmsd_leader{")).unwrap_or_else(|| panic!("no kmsd_leader:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Whether `replica` refuses `access` by introspection, validation and
/// bearer auth (all three).
pub async fn refuses(d: &Daemon, key: &str, access: &str) -> [bool; 3] {
    let introspected = introspect(&d.public, key, access).await == Value::Null;
    let (status, v) = call(&d.public, key, "POST", "/v1/tokens/validate", Some(json!({ "token": access }))).await;
    assert_eq!(status, 200, "{v}");
    let validated = v["valid"] == false;
    let bearer = client()
        .get(format!("{}/v1/tokens/introspect?token={access}", d.public))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    [introspected, validated, bearer == 401]
}

/// Waits until every one of `others` refuses `access` every way; returns
/// how long it took. Fails after `limit`.
pub async fn refused_within(others: &[&Daemon], key: &str, access: &str, limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    for d in others {
        loop {
            let r = refuses(d, key, access).await;
            if r == [true; 3] {
                break;
            }
            assert!(
                t0.elapsed() < limit,
                "{what}: {} still accepts it (introspect, validate, bearer refused: {r:?})",
                d.public
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    t0.elapsed()
}

/// Revokes, on `d`, the access token of the pair `reply`.
pub async fn revoke_access_token(d: &Daemon, key: &str, reply: &Value) {
    let jti = part(reply["accessToken"].as_str().unwrap(), 1)["jti"].clone();
    let (status, v) = call(&d.public, key, "POST", "/v1/tokens/revoke", Some(json!({ "tokenId": jti }))).await;
    assert!(status == 200 || status == 204, "{v}");
}

/// A fresh identity's token pair, issued on `d`: (identity, access, reply).
pub async fn pair(d: &Daemon, key: &str, name: &str, algorithm: &str) -> (String, String, Value) {
    let id = identity(&d.public, key, name, &["relayfile:fs:read:/a/*"]).await;
    let body = json!({ "identityId": id, "audience": ["svc"], "algorithm": algorithm });
    let (status, p) = call(&d.public, key, "POST", "/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{p}");
    (id, p["accessToken"].as_str().unwrap().to_owned(), p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_tokens_keys_and_revocations_and_one_leads() {
    let mut cluster = Cluster::new(&[("KMSD_HA__FAILOVER", "3")]).await;
    let a = cluster.start("replica-a");
    let key = bootstrap_key(&a.output());
    let b = cluster.start("replica-b");
    let c = cluster.start("replica-c");
    let all = [&a, &b, &c];

    let leader = one_leader(&all, Duration::from_secs(10)).await;
    let mut leads = 0.0;
    for d in all {
        leads += metric_leader(d).await;
    }
    assert_eq!(leads, 1.0, "kmsd_leader is 1 on the leader only");
    eprintln!("leader: replica {leader}");

    // One key set, served the same by every replica.
    let kids = jwks_kids(&a.public).await;
    for d in all {
        assert_eq!(jwks_kids(&d.public).await, kids);
    }

    // Issued anywhere, accepted everywhere; PyJWT and jose verify against
    // every replica's JWKS.
    let id = identity(&a.public, &key, "shared", &["relayfile:fs:read:/a/*"]).await;
    let issued = issue(&b.public, &key, &id).await;
    let access = issued["accessToken"].as_str().unwrap().to_owned();
    for d in all {
        assert_eq!(refuses(d, &key, &access).await, [false; 3], "{}", d.public);
        let url = format!("{}/.well-known/jwks.json", d.public);
        for mut v in [crate::fleet::pyjwt("pyjwk", 1, &url, ISSUER, "svc"), crate::fleet::jose(&url, ISSUER, "svc")] {
            let result = tokio::task::block_in_place(|| v.check(&access));
            assert_eq!(result["ok"], true, "{} against {url}: {result}", v.name);
        }
    }

    // An API key made on A works on B; revoked on A, refused on B and C.
    let (status, made) =
        call(&a.public, &key, "POST", "/v1/api-keys", Some(json!({ "name": "ops", "scopes": ["*:*:*:*"] }))).await;
    assert_eq!(status, 201, "{made}");
    let ops = made["key"].as_str().unwrap().to_owned();
    for d in [&b, &c] {
        let (status, v) = call(&d.admin, &ops, "GET", "/v1/admin/keys", None).await;
        assert_eq!(status, 200, "{v}");
    }
    let path = format!("/v1/api-keys/{}/revoke", made["apiKey"]["id"].as_str().unwrap());
    let (status, v) = call(&a.public, &key, "POST", &path, None).await;
    assert_eq!(status, 200, "{v}");
    let t0 = Instant::now();
    for d in [&b, &c] {
        while call(&d.admin, &ops, "GET", "/v1/admin/keys", None).await.0 != 401 {
            assert!(t0.elapsed() < PROPAGATION, "the revoked API key still works on {}", d.public);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("api key revoke reached B and C in {:?}", t0.elapsed());

    // Every revocation, made on A, refused on B and C within a second. Each
    // token is used on B and C first, so their caches hold it.
    type Revoke = fn(&str, &Value) -> (String, Value);
    let cases: [(&str, Revoke); 5] = [
        ("token", |_, p| {
            ("/v1/tokens/revoke".into(), json!({ "tokenId": part(p["accessToken"].as_str().unwrap(), 1)["jti"] }))
        }),
        ("session", |_, p| {
            ("/v1/tokens/revoke".into(), json!({ "sessionId": part(p["accessToken"].as_str().unwrap(), 1)["sid"] }))
        }),
        ("identity tokens", |id, _| ("/v1/tokens/revoke".into(), json!({ "identityId": id }))),
        ("identity suspended", |id, _| (format!("/v1/identities/{id}/suspend"), json!({ "reason": "test" }))),
        ("identity retired", |id, _| (format!("/v1/identities/{id}/retire"), json!({}))),
    ];
    for (what, revoke) in cases {
        let (id, access, p) = pair(&c, &key, &format!("case-{}", what.replace(' ', "-")), "EdDSA").await;
        for d in [&b, &c] {
            assert_eq!(refuses(d, &key, &access).await, [false; 3], "{what}: live on {}", d.public);
        }
        let (path, body) = revoke(&id, &p);
        let (status, v) = call(&a.public, &key, "POST", &path, Some(body)).await;
        assert!(status == 200 || status == 204, "{what}: {status} {v}");
        let took = refused_within(&[&b, &c], &key, &access, PROPAGATION, what).await;
        eprintln!("{what} revoke reached B and C in {took:?}");
    }

    // Emergency key revoke on A: B's and C's JWKS drop the kid, and its
    // tokens are refused there, within a second.
    let (_, access, _) = pair(&b, &key, "case-key", "RS256").await;
    let kid = part(&access, 0)["kid"].as_str().unwrap().to_owned();
    for d in [&b, &c] {
        assert_eq!(refuses(d, &key, &access).await, [false; 3]);
    }
    let (status, v) = call(&a.admin, &key, "POST", &format!("/v1/admin/keys/{kid}/revoke"), None).await;
    assert_eq!(status, 200, "{v}");
    let t0 = Instant::now();
    for d in [&b, &c] {
        while jwks_kids(&d.public).await.contains(&kid) {
            assert!(t0.elapsed() < PROPAGATION, "{} still publishes the revoked kid", d.public);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let took = refused_within(&[&b, &c], &key, &access, PROPAGATION, "key revoke").await;
    eprintln!("key revoke reached B's and C's JWKS and verification in {took:?}");
    let kids = jwks_kids(&a.public).await;
    for d in all {
        assert_eq!(jwks_kids(&d.public).await, kids, "one key set again");
    }

    // The leader dies: another leads within the failover (3 s), and the
    // survivors agree on it.
    let mut replicas = vec![Some(a), Some(b), Some(c)];
    replicas[leader].take().unwrap().crash();
    let t0 = Instant::now();
    let survivors: Vec<&Daemon> = replicas.iter().flatten().collect();
    one_leader(&survivors, Duration::from_secs(3) + Duration::from_millis(500)).await;
    eprintln!("a survivor leads {:?} after the leader was killed", t0.elapsed());
    for d in replicas.into_iter().flatten() {
        d.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_whose_notification_a_replica_missed_reaches_it_by_the_resync_after_its_feed_reconnects() {
    let mut cluster = Cluster::new(&[]).await;
    let a = cluster.start("miss-a");
    let key = bootstrap_key(&a.output());
    let b = cluster.start("miss-b");
    let (_, access, p) = pair(&a, &key, "missed", "EdDSA").await;
    assert_eq!(refuses(&b, &key, &access).await, [false; 3]);

    // B's listening session ends (as a network blip would end it) just
    // before the revocation commits: its notification never reaches B.
    assert_eq!(super::terminate(&cluster.db, "kmsd-feed-miss-b").await, 1);
    revoke_access_token(&a, &key, &p).await;
    // The feed reconnects after 1 s and resyncs everything.
    let took = refused_within(&[&b], &key, &access, Duration::from_secs(5), "the revocation B was not told of").await;
    eprintln!("the missed revocation reached B {took:?} after it committed");
    a.stop();
    b.stop();
}
