//! The PostgreSQL pieces of HA (issue 14) against a real, throwaway
//! PostgreSQL: pool and URL handling, schema migrations, the leader lease
//! and fenced writes, the change feed, and the serialised audit append.
//! Every wait is bounded.

mod audit;
mod degraded;
mod engine;
mod failover;
mod feed;
mod first_start;
pub mod harness;
mod lease;
mod migrate;
mod pool;
pub mod replicas;
mod tls;

use std::time::{Duration, Instant};

pub use harness::url_text;
use kmsd::storage::postgres::{connect, PgUrl};
use tokio_postgres::Client;

/// `url` as text, going to `port` on the same host instead (a fault proxy
/// in front of the server).
pub fn url_text_via(url: &PgUrl, port: u16) -> String {
    let server = url.config().get_ports()[0];
    url_text(url).replace(&format!(":{server}/"), &format!(":{port}/"))
}

/// A connection with no statement timeout, for test set-up and checks.
pub async fn client(url: &PgUrl) -> Client {
    connect(url, "kmsd-test", Duration::ZERO).await.unwrap()
}

/// A migrated fresh database.
pub async fn migrated_db() -> harness::TestDb {
    let db = harness::fresh_db().await;
    let mut c = client(&db.url).await;
    kmsd::storage::postgres::migrate::migrate(&mut c).await.unwrap();
    db
}

/// Ends every session of `db` whose application_name is `name`; returns how many.
pub async fn terminate(db: &harness::TestDb, name: &str) -> i64 {
    let admin = client(&harness::admin_url()).await;
    let row = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
            &[&db.name, &name],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Polls `f` every 10 ms until it holds or `limit` passes; returns the time it took.
pub async fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}
