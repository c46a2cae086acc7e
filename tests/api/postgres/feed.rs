//! The change feed: a committed change reaches another connection's
//! listener within a second; a rolled-back one never does; a listener
//! whose session is cut reconnects and asks for a resync.

use std::time::{Duration, Instant};

use kmsd::storage::postgres::feed::{announce, ChangeKind, FeedEvent, Listener, ListenerConfig};

use super::{client, migrated_db, terminate};

fn config(name: &str) -> ListenerConfig {
    ListenerConfig {
        application_name: name.into(),
        retry_every: Duration::from_millis(100),
        resync_every: Duration::from_secs(3600),
        ping_every: Duration::from_secs(3600),
    }
}

async fn next(listener: &mut Listener, limit: Duration) -> FeedEvent {
    tokio::time::timeout(limit, listener.recv()).await.expect("no event in time").expect("listener stopped")
}

#[tokio::test]
async fn a_committed_change_reaches_another_connections_listener_within_a_second_and_a_rolled_back_one_never() {
    let db = migrated_db().await;
    let mut listener = Listener::start(db.url.clone(), config("kmsd-test-feed-a")).await.unwrap();
    let mut writer = client(&db.url).await;

    let txn = writer.transaction().await.unwrap();
    announce(&txn, ChangeKind::Identity, "agent_rolled_back").await.unwrap();
    txn.rollback().await.unwrap();

    let t0 = Instant::now();
    let txn = writer.transaction().await.unwrap();
    announce(&txn, ChangeKind::ApiKey, "ak_0123").await.unwrap();
    txn.commit().await.unwrap();
    let got = next(&mut listener, Duration::from_secs(1)).await;
    assert_eq!(got, FeedEvent::Changed { kind: ChangeKind::ApiKey, id: "ak_0123".into() });
    eprintln!("notification delivered in {:?}", t0.elapsed());

    let rows: Vec<(String, String)> = writer
        .query("SELECT kind, id FROM changes ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [("api_key".to_owned(), "ak_0123".to_owned())], "the rolled-back change left no row");
}

#[tokio::test]
async fn a_listener_whose_session_is_cut_reconnects_asks_for_a_resync_and_keeps_delivering() {
    let db = migrated_db().await;
    let name = "kmsd-test-feed-cut";
    let mut listener = Listener::start(db.url.clone(), config(name)).await.unwrap();
    assert_eq!(terminate(&db, name).await, 1);
    assert_eq!(next(&mut listener, Duration::from_secs(3)).await, FeedEvent::Resync);

    let mut writer = client(&db.url).await;
    let txn = writer.transaction().await.unwrap();
    announce(&txn, ChangeKind::Key, "kid-after-reconnect").await.unwrap();
    txn.commit().await.unwrap();
    let got = next(&mut listener, Duration::from_secs(1)).await;
    assert_eq!(got, FeedEvent::Changed { kind: ChangeKind::Key, id: "kid-after-reconnect".into() });
}

#[tokio::test]
async fn the_listener_asks_for_a_periodic_resync() {
    let db = migrated_db().await;
    let mut listener = Listener::start(
        db.url.clone(),
        ListenerConfig { resync_every: Duration::from_millis(200), ..config("kmsd-test-feed-periodic") },
    )
    .await
    .unwrap();
    for _ in 0..2 {
        assert_eq!(next(&mut listener, Duration::from_secs(2)).await, FeedEvent::Resync);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_behind_a_cut_network_notices_by_its_ping_and_resyncs_once_the_network_is_back() {
    let db = migrated_db().await;
    let port = db.url.config().get_ports()[0];
    let proxy = crate::kms::proxy::FaultProxy::start(port);
    let via = kmsd::storage::postgres::PgUrl::parse(&super::url_text_via(&db.url, proxy.port)).unwrap();
    let config = ListenerConfig { ping_every: Duration::from_millis(200), ..config("kmsd-test-feed-ping") };
    let mut listener = Listener::start(via, config).await.unwrap();

    // Bytes swallowed, no reset: a change made meanwhile never reaches the
    // session, which would otherwise look alive for ever.
    proxy.cut();
    let mut writer = client(&db.url).await;
    let txn = writer.transaction().await.unwrap();
    announce(&txn, ChangeKind::Token, "tok_lost_in_the_cut").await.unwrap();
    txn.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.restore();
    // A reconnection begun while cut may wait out its 5 s start-up bound.
    assert_eq!(
        next(&mut listener, Duration::from_secs(10)).await,
        FeedEvent::Resync,
        "the lost change is covered by a resync"
    );

    let txn = writer.transaction().await.unwrap();
    announce(&txn, ChangeKind::Token, "tok_after").await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(
        next(&mut listener, Duration::from_secs(2)).await,
        FeedEvent::Changed { kind: ChangeKind::Token, id: "tok_after".into() }
    );
}
