//! The harness itself, the pool and the URL's secrecy.

use std::time::{Duration, Instant};

use kmsd::storage::postgres::pool::{Pool, PoolConfig};
use kmsd::storage::postgres::{PgError, PgUrl};
use tokio_postgres::error::SqlState;

use super::{client, harness, terminate};

#[tokio::test]
async fn the_test_cluster_listens_on_loopback_only_and_each_test_gets_its_own_database() {
    let a = harness::fresh_db().await;
    let b = harness::fresh_db().await;
    assert_ne!(a.name, b.name);
    let c = client(&a.url).await;
    let row = c.query_one("SELECT current_setting('listen_addresses'), current_database()", &[]).await.unwrap();
    if harness::start_time().is_some() {
        assert_eq!(row.get::<_, String>(0), "127.0.0.1");
    }
    assert_eq!(row.get::<_, String>(1), a.name);
    eprintln!("shared cluster start: {:?}", harness::start_time());
}

#[tokio::test]
async fn a_statement_over_the_timeout_is_cancelled_by_the_server_and_the_connection_stays_usable() {
    let db = harness::fresh_db().await;
    let pool = Pool::new(
        db.url.clone(),
        PoolConfig { size: 1, statement_timeout: Duration::from_millis(200), ..PoolConfig::default() },
    );
    let c = pool.get().await.unwrap();
    let t0 = Instant::now();
    let err = c.execute("SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test]
async fn the_pool_hands_out_at_most_its_size_and_replaces_connections_the_server_killed() {
    let db = harness::fresh_db().await;
    let name = "kmsd-test-pool-size";
    let pool = Pool::new(
        db.url.clone(),
        PoolConfig {
            size: 2,
            acquire_timeout: Duration::from_millis(300),
            application_name: name.into(),
            ..PoolConfig::default()
        },
    );
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let t0 = Instant::now();
    let err = pool.get().await.err().unwrap();
    assert!(matches!(err, PgError::PoolExhausted { size: 2, .. }), "{err}");
    assert!(t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(2));
    drop(a);
    let c = pool.get().await.unwrap();
    assert_eq!(pool.idle(), 0, "the returned connection was reused");
    drop((b, c));
    assert_eq!(pool.idle(), 2);

    assert_eq!(terminate(&db, name).await, 2);
    // A killed connection fails the statement that finds it dead, and may
    // fail once more if it was returned before its driver saw the end of the
    // session; after that the pool drops it and opens a new one. So: at most
    // two failures per killed connection, then two working ones at once.
    let (mut failures, t0) = (0, Instant::now());
    loop {
        assert!(t0.elapsed() < Duration::from_secs(5), "the pool did not recover");
        let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        let (ra, rb) = (a.query_one("SELECT 1", &[]).await, b.query_one("SELECT 1", &[]).await);
        failures += usize::from(ra.is_err()) + usize::from(rb.is_err());
        if ra.is_ok() && rb.is_ok() {
            break;
        }
    }
    assert!(failures <= 4, "{failures} failures: dead connections kept being handed out");
}

#[tokio::test]
async fn a_wrong_password_is_refused_by_the_server_and_never_shown() {
    let db = harness::fresh_db().await;
    let secret = "wr0ng-Secret-Value";
    let port = db.url.config().get_ports()[0];
    let url = PgUrl::parse(&format!("postgres://postgres:{secret}@127.0.0.1:{port}/{}", db.name)).unwrap();
    let pool = Pool::new(url, PoolConfig::default());
    let err = pool.get().await.err().unwrap();
    let shown = format!("{err} | {err:?} | {pool:?}");
    assert!(matches!(err, PgError::Connect { .. }), "{shown}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("postgres:***@127.0.0.1"), "{shown}");
    assert!(shown.contains("password authentication failed"), "{shown}");
}
