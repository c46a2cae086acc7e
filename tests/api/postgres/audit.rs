//! The audit append on PostgreSQL: one chain, no fork, no gap, with many
//! writers on separate connections.

use std::time::Duration;

use kmsd::audit::{verify_chain, AuditAction, AuditEvent};
use kmsd::clock::Timestamp;
use kmsd::storage::postgres::audit::{append, rows};
use kmsd::storage::RecordKey;

use super::{client, migrated_db};

const WRITERS: usize = 8;
const EACH: usize = 25;

#[tokio::test]
async fn concurrent_writers_on_separate_connections_make_one_chain_without_fork_or_gap() {
    let db = migrated_db().await;
    let key = RecordKey::derive(&[7; 32]);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, key) = (db.url.clone(), key.clone());
            tokio::spawn(async move {
                let mut c = client(&url).await;
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let txn = c.transaction().await.unwrap();
                    let event = AuditEvent::new(
                        Timestamp::from_unix(1_700_000_000),
                        format!("w{w}"),
                        AuditAction::Other(format!("e{i}")),
                    );
                    seqs.push(append(&txn, event, &key).await.unwrap().seq);
                    txn.commit().await.unwrap();
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap());
    }
    all.sort_unstable();
    let n = (WRITERS * EACH) as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "every number once: no fork, no gap");

    let c = client(&db.url).await;
    let stored = rows(&c, 0, i64::MAX).await.unwrap();
    assert_eq!(verify_chain(stored, Some(1), &key), Ok(n));
    let head: i64 = c.query_one("SELECT seq FROM audit_head", &[]).await.unwrap().get(0);
    assert_eq!(head as u64, n);
}

#[tokio::test]
async fn an_append_rolled_back_with_its_change_leaves_no_gap() {
    let db = migrated_db().await;
    let key = RecordKey::derive(&[9; 32]);
    let mut c = client(&db.url).await;
    let at = Timestamp::from_unix(1_700_000_000);
    let txn = c.transaction().await.unwrap();
    assert_eq!(append(&txn, AuditEvent::new(at, "x", AuditAction::Other("kept".into())), &key).await.unwrap().seq, 1);
    txn.commit().await.unwrap();
    let txn = c.transaction().await.unwrap();
    assert_eq!(
        append(&txn, AuditEvent::new(at, "x", AuditAction::Other("dropped".into())), &key).await.unwrap().seq,
        2
    );
    txn.rollback().await.unwrap();
    let txn = c.transaction().await.unwrap();
    assert_eq!(append(&txn, AuditEvent::new(at, "x", AuditAction::Other("next".into())), &key).await.unwrap().seq, 2);
    txn.commit().await.unwrap();
    let stored = rows(&c, 0, 100).await.unwrap();
    let actions: Vec<String> =
        stored.iter().map(|(_, e)| e.as_ref().unwrap().event.action.as_str().to_owned()).collect();
    assert_eq!(actions, ["kept", "next"]);
    assert_eq!(verify_chain(stored, Some(1), &key), Ok(2));
}
