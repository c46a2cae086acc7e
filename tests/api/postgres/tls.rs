//! TLS to PostgreSQL: with `storage.tls = "verify-full"` and the server's
//! CA in `storage.ca_file`, every connection kmsd makes (pool, leader
//! lease, change feed) is encrypted, as the server itself reports; a server
//! whose certificate kmsd cannot verify (its CA not trusted) is refused by
//! `check-config` and by `serve`, with the reason and without the password;
//! on this machine TLS is off unless asked for.

use super::replicas::Cluster;
use super::{client, harness};
use crate::daemon::{bootstrap_key, run, text, Daemon};
use crate::support::{identity, issue};

/// (connections of kmsd to `db` over TLS, all of kmsd's connections to it).
async fn tls_connections(db: &harness::TestDb) -> (i64, i64) {
    let admin = client(&harness::admin_url()).await;
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1
                AND (a.application_name = 'kmsd' OR a.application_name LIKE 'kmsd-lease-%'
                     OR a.application_name LIKE 'kmsd-feed-%')",
            &[&db.name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_encrypts_every_connection_and_a_server_kmsd_cannot_verify_is_refused() {
    let ca = harness::ca_file().expect("the test cluster has a CA (KMSD_TEST_PG_URL set: run without it)");
    let ca = ca.to_str().unwrap();
    let mut cluster = Cluster::new(&[("KMSD_STORAGE__TLS", "verify-full"), ("KMSD_STORAGE__CA_FILE", ca)]).await;
    let d = cluster.start("tls-a");
    let key = bootstrap_key(&d.output());
    let id = identity(&d.public, &key, "over-tls", &["relayfile:fs:read:/a/*"]).await;
    issue(&d.public, &key, &id).await;
    let (encrypted, all) = tls_connections(&cluster.db).await;
    assert!(all >= 3, "the pool, the lease and the feed are connected ({all})");
    assert_eq!(encrypted, all, "every connection of kmsd is over TLS");
    d.stop();
    let t0 = std::time::Instant::now();
    while tls_connections(&cluster.db).await.1 != 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "the stopped replica's sessions end");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The same server, its CA not trusted (the system's roots only).
    let dir = tempfile::tempdir().unwrap();
    let env = cluster.env("tls-b", cluster.url());
    let mut env: Vec<(&str, &str)> =
        env.iter().filter(|(k, _)| k != "KMSD_STORAGE__CA_FILE").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run(dir.path(), &["check-config"], &env);
    let msg = text(&out);
    eprintln!("check-config with an untrusted server certificate:\n{msg}");
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("cannot connect") && msg.to_lowercase().contains("certificate"), "{msg}");
    let password = harness::admin_url().config().get_password().map(|p| String::from_utf8_lossy(p).into_owned());
    assert!(!msg.contains(&password.clone().unwrap()), "{msg}");
    let (status, out) = Daemon::try_start(dir.path(), &env).err().expect("serve refuses an unverified server");
    assert!(status.is_some_and(|s| !s.success()) && out.to_lowercase().contains("certificate"), "{out}");
    assert!(!out.contains(&password.unwrap()), "{out}");

    // Plain text is what a loopback server gets unless TLS is asked for.
    env.retain(|(k, _)| *k != "KMSD_STORAGE__TLS");
    let d = Daemon::start(dir.path(), &env);
    let (encrypted, all) = tls_connections(&cluster.db).await;
    assert_eq!((encrypted, all > 0), (0, true), "TLS is off on this machine by default");
    d.stop();
}
