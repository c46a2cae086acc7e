//! Concurrent first start: three replicas started at the same moment on an
//! empty database. Exactly one initializes it (the bootstrap admin key is
//! printed once, by the replica that made it), the others join; every
//! keyset has exactly one key; the three serve one JWKS (within a second
//! for a replica that joined before the keys were made) and take the one
//! admin key; the audit chain has no gap.

use super::client;
use super::replicas::Cluster;
use crate::daemon::{bootstrap_key, Daemon};
use crate::support::{admin_keys, jwks_kids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_starting_at_once_on_an_empty_database_make_one_store() {
    let cluster = Cluster::new(&[]).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let envs: Vec<_> = (0..3).map(|i| cluster.env(&format!("replica-{i}"), cluster.url())).collect();
    let replicas: Vec<Daemon> = std::thread::scope(|s| {
        let started: Vec<_> = dirs
            .iter()
            .zip(&envs)
            .map(|(d, env)| {
                s.spawn(|| {
                    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    Daemon::start(d.path(), &env)
                })
            })
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let db = &cluster.db;

    let printed: Vec<String> =
        replicas.iter().map(Daemon::output).filter(|o| o.contains("bootstrap admin API key")).collect();
    assert_eq!(printed.len(), 1, "exactly one replica made the store and printed its key");
    let key = bootstrap_key(&printed[0]);

    let c = client(&db.url).await;
    let per_keyset = c.query("SELECT keyset, count(*) FROM keys GROUP BY keyset", &[]).await.unwrap();
    assert_eq!(per_keyset.len(), 4, "every keyset of the default config has a key");
    for row in &per_keyset {
        assert_eq!(row.get::<_, i64>(1), 1, "keyset {} has one key", row.get::<_, String>(0));
    }
    // A replica that joined before the first keys were made learns them
    // from the change feed, within a second.
    let t0 = std::time::Instant::now();
    for r in &replicas {
        while admin_keys(&r.admin, &key).await.len() != 4 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(1), "every replica has the 4 keys within 1 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let kids = jwks_kids(&replicas[0].public).await;
    for r in &replicas {
        assert_eq!(jwks_kids(&r.public).await, kids, "one key set on every replica");
    }
    let audit = c.query_one("SELECT count(*), coalesce(max(seq), 0) FROM audit", &[]).await.unwrap();
    let (rows, last): (i64, i64) = (audit.get(0), audit.get(1));
    assert_eq!(rows, last, "the audit chain has no gap");
    let inits: i64 = c.query_one("SELECT count(*) FROM meta WHERE name = 'vault_data_key'", &[]).await.unwrap().get(0);
    assert_eq!(inits, 1);
    for r in replicas {
        r.stop();
    }
}
