//! The leader lease: one leader, step-down at once on a lost session,
//! takeover within the lease time, fenced writes refused for a stale leader.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsd::storage::postgres::lease::{acquire, fenced_execute, release, renew, Elector, ElectorConfig, Fence};
use kmsd::storage::postgres::PgError;
use tokio::sync::watch;

use super::{client, migrated_db, terminate, within};

const TTL: Duration = Duration::from_secs(2);

fn elector(db: &super::harness::TestDb, holder: &str) -> Elector {
    Elector::spawn(
        db.url.clone(),
        ElectorConfig {
            lease: "scheduler".into(),
            holder: holder.into(),
            ttl: TTL,
            renew_every: Duration::from_millis(200),
        },
    )
}

/// Samples every 5 ms until stopped; counts samples that saw two leaders.
fn watch_for_two_leaders(views: Vec<watch::Receiver<Option<Fence>>>) -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
    let (stop, both) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (s, b) = (stop.clone(), both.clone());
    tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            if views.iter().filter(|v| v.borrow().is_some()).count() > 1 {
                b.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (stop, both)
}

fn leaders(views: &[watch::Receiver<Option<Fence>>]) -> Vec<usize> {
    views.iter().enumerate().filter(|(_, v)| v.borrow().is_some()).map(|(i, _)| i).collect()
}

#[tokio::test]
async fn of_three_contenders_started_at_once_exactly_one_leads() {
    let db = migrated_db().await;
    let electors: Vec<Elector> = ["a", "b", "c"].iter().map(|h| elector(&db, h)).collect();
    let views: Vec<_> = electors.iter().map(Elector::leadership).collect();
    let (stop, both) = watch_for_two_leaders(views.clone());
    within(Duration::from_secs(5), "a leader", || leaders(&views).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let now = leaders(&views);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(both.load(Ordering::Relaxed), 0, "two leaders were seen at once");
    let fence = views[now[0]].borrow().clone().unwrap();
    let c = client(&db.url).await;
    let row = c.query_one("SELECT holder, epoch FROM leases WHERE name = 'scheduler'", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), (fence.holder.clone(), fence.epoch));
    assert_eq!(fence.epoch, 1, "renewals keep the epoch");

    // A leader that stops releases at once: another takes over well before the TTL.
    let leader = now[0];
    let mut electors = electors;
    let t0 = Instant::now();
    electors.remove(leader).stop().await;
    let views: Vec<_> = electors.iter().map(Elector::leadership).collect();
    within(Duration::from_secs(1), "takeover after release", || leaders(&views).len() == 1).await;
    assert!(t0.elapsed() < TTL, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn a_leader_whose_session_is_killed_steps_down_at_once_and_another_takes_over_within_the_lease() {
    let db = migrated_db().await;
    let electors = [elector(&db, "a"), elector(&db, "b")];
    let views: Vec<_> = electors.iter().map(Elector::leadership).collect();
    within(Duration::from_secs(5), "a leader", || leaders(&views).len() == 1).await;
    let (stop, both) = watch_for_two_leaders(views.clone());
    let old = leaders(&views)[0];
    let old_fence = views[old].borrow().clone().unwrap();

    let t0 = Instant::now();
    assert_eq!(terminate(&db, &format!("kmsd-lease-{}", old_fence.holder)).await, 1);
    let stepped_down =
        within(Duration::from_millis(500), "old leader steps down", || views[old].borrow().is_none()).await;
    let new = 1 - old;
    within(TTL + Duration::from_secs(1), "the other takes over", || views[new].borrow().is_some()).await;
    let took_over = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let new_fence = views[new].borrow().clone().unwrap();
    assert!(new_fence.epoch > old_fence.epoch, "{new_fence:?} after {old_fence:?}");
    assert_eq!(both.load(Ordering::Relaxed), 0, "two leaders were seen at once");
    eprintln!("stepped down after {stepped_down:?}, taken over after {took_over:?} (ttl {TTL:?})");
    // The killed replica reconnects and follows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(views[old].borrow().is_none() && views[new].borrow().is_some());
}

#[tokio::test]
async fn a_stale_leaders_fenced_write_is_refused_and_the_current_ones_applies() {
    let db = migrated_db().await;
    let (mut a, mut b) = (client(&db.url).await, client(&db.url).await);
    a.batch_execute("CREATE TABLE plan (id serial PRIMARY KEY, by text NOT NULL)").await.unwrap();
    let write = "INSERT INTO plan (by) VALUES ($1)";
    let short = Duration::from_millis(300);

    let fa = acquire(&a, "rotation", "a", short).await.unwrap().unwrap();
    assert!(acquire(&b, "rotation", "b", short).await.unwrap().is_none(), "held by a");
    assert_eq!(fenced_execute(&mut a, &fa, write, &[&"a"]).await.unwrap(), 1);

    // a pauses past its lease; b takes over.
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let refused = fenced_execute(&mut a, &fa, write, &[&"a-expired"]).await.unwrap_err();
    assert!(matches!(refused, PgError::Fenced { epoch, .. } if epoch == fa.epoch), "{refused}");
    let fb = acquire(&b, "rotation", "b", TTL).await.unwrap().unwrap();
    assert_eq!(fb.epoch, fa.epoch + 1);

    // a wakes up: its renewal and its writes are refused; b's apply.
    assert!(!renew(&a, &fa, TTL).await.unwrap());
    let refused = fenced_execute(&mut a, &fa, write, &[&"a-stale"]).await.unwrap_err();
    assert!(refused.to_string().contains("fenced write refused"), "{refused}");
    assert_eq!(fenced_execute(&mut b, &fb, write, &[&"b"]).await.unwrap(), 1);
    release(&a, &fa).await.unwrap(); // a stale release changes nothing
    assert_eq!(fenced_execute(&mut b, &fb, write, &[&"b-after-stale-release"]).await.unwrap(), 1);

    let by: Vec<String> =
        a.query("SELECT by FROM plan ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(by, ["a", "b", "b-after-stale-release"]);
}

#[tokio::test]
async fn a_takeover_waits_for_the_fenced_transaction_in_flight() {
    let db = migrated_db().await;
    let (mut a, b) = (client(&db.url).await, client(&db.url).await);
    let short = Duration::from_millis(300);
    let fa = acquire(&a, "rotation", "a", short).await.unwrap().unwrap();
    let txn = a.transaction().await.unwrap();
    fa.check(&txn).await.unwrap();
    // The lease expires while a's fenced transaction is still open.
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let takeover = tokio::spawn(async move {
        let t0 = Instant::now();
        let f = acquire(&b, "rotation", "b", TTL).await.unwrap();
        (f, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!takeover.is_finished(), "the takeover must wait for the fenced transaction");
    txn.commit().await.unwrap();
    let (fb, waited) = tokio::time::timeout(Duration::from_secs(5), takeover).await.unwrap().unwrap();
    assert_eq!(fb.map(|f| f.epoch), Some(fa.epoch + 1));
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}
