//! The store contract: one suite, run against both engines (a redb file, and
//! a real throwaway PostgreSQL started by the test harness). Every record
//! kind round trips through the same bytes; a failed write leaves nothing;
//! the audit chain and refresh-token single use hold under concurrent
//! writers (on PostgreSQL, writers on two stores over one database, as two
//! replicas are); garbage collection removes exactly what ended.

use super::records::tests::{api_key_record, identity_record, key_record};
use super::tokens::tests::{issued, session};
use super::*;
use crate::clock::Timestamp;
use crate::identities::IdentityRecord;
use crate::keys::Kid;
use crate::tokens::{IssuedToken, SessionRecord};

use super::pg_harness as harness;

pub(super) fn mac() -> RecordKey {
    RecordKey::derive(&[7; 32])
}

/// One engine under test: stores over one database (redb: one; PostgreSQL:
/// two, as two replicas), kept alive with what they need.
struct Engines {
    stores: Vec<Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn redb() -> Engines {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("kmsd.redb"), mac()).unwrap();
    Engines { stores: vec![store], _dir: Some(dir) }
}

async fn postgres() -> Engines {
    let db = harness::fresh_db().await;
    let pool = |name: &str| {
        let config = postgres::pool::PoolConfig { application_name: name.into(), ..Default::default() };
        postgres::pool::Pool::new(db.url.clone(), config)
    };
    let a = Store::postgres(pool("kmsd-a"), mac()).await.unwrap();
    let b = Store::postgres(pool("kmsd-b"), mac()).await.unwrap();
    Engines { stores: vec![a, b], _dir: None }
}

/// Runs `case` on a fresh store of each engine.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_redb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::redb().await).await }) *
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::postgres().await).await }) *
        }
    };
}

contract!(
    every_record_round_trips_through_the_same_bytes,
    a_failed_write_leaves_nothing_behind,
    concurrent_audit_appends_make_one_chain_without_gap_or_fork,
    a_refresh_token_is_spent_once_under_concurrent_spenders,
    garbage_collection_removes_only_what_ended,
    api_keys_are_listed_per_org_in_id_order_after_a_cursor,
    a_group_commit_batch_of_thousands_of_rows_round_trips,
);

fn event(n: usize) -> AuditEvent {
    AuditEvent::new(Timestamp::from_unix(1000), "test", crate::audit::AuditAction::KeyCreate).target(format!("k{n}"))
}

async fn every_record_round_trips_through_the_same_bytes(e: Engines) {
    let store = &e.stores[0];
    write_every_kind(store).await;
    // Every store over the database reads the same records.
    for s in &e.stores {
        holds_every_kind(s).await;
    }
    // An identity removed is gone from every lookup.
    let identity = identity_record();
    let id = identity.id.clone();
    store.write(move |w| w.delete_identity(id.as_str())).await.unwrap();
    let id = identity.id.clone();
    let gone = store.read(move |r| Ok((r.identity(id.as_str())?, r.identities()?.len()))).await.unwrap();
    assert_eq!(gone, (None, 0));
}

/// Writes one record of every kind (and a meta value raised twice, a
/// revoked session and jti, one audit entry), for [`holds_every_kind`].
pub(super) async fn write_every_kind(store: &Store) {
    let (k, a, i) = (key_record(), api_key_record(), identity_record());
    store
        .write(move |w| {
            w.put_meta(META_DATA_KEY, b"\x00bare bytes")?;
            w.put_meta("hs256_max_exp", b"100")?;
            w.raise_meta_max("hs256_max_exp", 50)?;
            w.raise_meta_max("hs256_max_exp", 300)?;
            w.put_key(&k)?;
            w.put_api_key(&a)?;
            w.put_identity(&i)?;
            w.put_session(&session("sess_1", 900, false))?;
            w.put_session(&session("sess_2", 900, true))?;
            w.put_issued(&issued("tok_1", 900))?;
            w.revoke_jti("tok_1", Timestamp::from_unix(900))?;
            w.audit(event(1))?;
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
}

/// Every lookup finds what [`write_every_kind`] wrote, and only that.
pub(super) async fn holds_every_kind(s: &Store) {
    let (key, api, identity) = (key_record(), api_key_record(), identity_record());
    s.read(move |r| {
        assert_eq!(r.meta(META_DATA_KEY)?.as_deref(), Some(&b"\x00bare bytes"[..]));
        assert_eq!(r.meta("hs256_max_exp")?.as_deref(), Some(&b"300"[..]));
        assert_eq!(r.meta("absent")?, None);
        assert_eq!(r.keys()?, std::slice::from_ref(&key));
        assert_eq!(r.key(&key.kid)?, Some(key));
        assert_eq!(r.key(&Kid::parse(&"A".repeat(43)).unwrap())?, None);
        assert_eq!(r.api_key(api.id.as_str())?, Some(api.clone()));
        assert_eq!(r.api_key_by_hash(&api.key_hash)?, Some(api.clone()));
        assert_eq!(r.api_key_by_hash(&"00".repeat(32))?, None);
        assert_eq!(r.identities()?, std::slice::from_ref(&identity));
        assert_eq!(r.identity(identity.id.as_str())?, Some(identity.clone()));
        assert_eq!(r.identity_named(identity.org_id.as_str(), &identity.name, None)?, Some(identity.id.to_string()));
        assert_eq!(r.identity_named(identity.org_id.as_str(), &identity.name, Some(identity.id.as_str()))?, None);
        assert_eq!(r.identity_named("other_org", &identity.name, None)?, None);
        assert_eq!(r.session("sess_1")?, Some(session("sess_1", 900, false)));
        let live: Vec<String> = r.sessions_of(identity.id.as_str())?.into_iter().map(|s| s.sid.to_string()).collect();
        assert_eq!(live, ["sess_1"]);
        assert_eq!(r.issued("tok_1")?, Some(issued("tok_1", 900)));
        let (jtis, sessions) = r.revocations()?;
        assert_eq!(jtis, [("tok_1".to_owned(), 900)]);
        assert_eq!(sessions, [("sess_2".to_owned(), 900)]);
        let audit = r.audit(0, 10)?;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].event.target.as_deref(), Some("k1"));
        assert_eq!(r.verify_audit()?, Ok(1));
        Ok(())
    })
    .await
    .unwrap();
}

async fn a_failed_write_leaves_nothing_behind(e: Engines) {
    let store = &e.stores[0];
    let failed = store
        .write(|w| {
            w.put_meta("pause", b"1")?;
            w.put_key(&key_record())?;
            w.audit(event(1))?;
            Err::<(), _>(StorageError::Engine("the caller gave up".into()))
        })
        .await;
    assert!(matches!(failed, Err(StorageError::Engine(_))), "{failed:?}");
    let left = store.read(|r| Ok((r.meta("pause")?, r.keys()?.len(), r.audit(0, 10)?.len()))).await.unwrap();
    assert_eq!(left, (None, 0, 0));
    // The store still writes (on PostgreSQL: the connection went back clean).
    for _ in 0..3 {
        store.write(|w| w.put_meta("pause", b"0")).await.unwrap();
    }
    assert_eq!(store.read(|r| r.meta("pause")).await.unwrap().as_deref(), Some(&b"0"[..]));
}

async fn concurrent_audit_appends_make_one_chain_without_gap_or_fork(e: Engines) {
    const WRITERS: usize = 24;
    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let store = e.stores[n % e.stores.len()].clone();
        tasks.push(tokio::spawn(async move { store.write(move |w| w.audit(event(n)).map(|entry| entry.seq)).await }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=WRITERS as u64).collect::<Vec<_>>(), "one number each, no gap");
    for s in &e.stores {
        assert_eq!(s.read(|r| r.verify_audit()).await.unwrap(), Ok(WRITERS as u64));
    }
}

async fn a_refresh_token_is_spent_once_under_concurrent_spenders(e: Engines) {
    const SPENDERS: usize = 16;
    e.stores[0].write(|w| w.put_session(&session("sess_1", 900, false))).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..SPENDERS {
        let store = e.stores[n % e.stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            // What the refresh path does: read the session, and spend the
            // presented token only if it is still the one to use next.
            store
                .write(move |w| {
                    let Some(mut s) = w.session("sess_1")? else { return Ok(false) };
                    if s.refresh_jti.as_str() != "tok_r" {
                        return Ok(false);
                    }
                    s.previous_refresh_jti = Some(s.refresh_jti.clone());
                    s.refresh_jti = format!("tok_r{}", n + 1).into();
                    w.put_session(&s)?;
                    w.audit(event(n))?;
                    Ok::<_, StorageError>(true)
                })
                .await
        }));
    }
    let mut won = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap().unwrap() {
            won.push(n);
        }
    }
    assert_eq!(won.len(), 1, "exactly one spender wins: {won:?}");
    let s = e.stores[0].read(|r| r.session("sess_1")).await.unwrap().unwrap();
    assert_eq!(s.refresh_jti.as_str(), format!("tok_r{}", won[0] + 1));
    assert_eq!(e.stores[0].read(|r| r.verify_audit()).await.unwrap(), Ok(1));
}

async fn garbage_collection_removes_only_what_ended(e: Engines) {
    let store = &e.stores[0];
    store
        .write(|w| {
            w.put_session(&session("sess_old", 100, true))?;
            w.put_session(&session("sess_live", 300, true))?;
            w.put_issued(&issued("tok_old", 100))?;
            w.put_issued(&issued("tok_live", 300))?;
            w.revoke_jti("tok_old", Timestamp::from_unix(100))?;
            w.revoke_jti("tok_live", Timestamp::from_unix(300))?;
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
    let done = store.write(|w| w.collect_garbage(Timestamp::from_unix(200), 10)).await.unwrap();
    assert_eq!((done.sessions, done.issued, done.revoked, done.full()), (1, 1, 1, false));
    let (jtis, sessions) = store.read(|r| r.revocations()).await.unwrap();
    assert_eq!(jtis, [("tok_live".to_owned(), 300)]);
    assert_eq!(sessions, [("sess_live".to_owned(), 300)]);
    let rows = store
        .read(|r| {
            let sessions = [r.session("sess_old")?.is_some(), r.session("sess_live")?.is_some()];
            Ok([r.issued("tok_old")?.is_some(), r.issued("tok_live")?.is_some(), sessions[0], sessions[1]])
        })
        .await
        .unwrap();
    assert_eq!(rows, [false, true, false, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collects_garbage_in_bounded_batches_until_none_is_full() {
    let e = postgres().await;
    let store = &e.stores[0];
    store
        .write(|w| {
            for n in 0..5 {
                w.put_session(&session(&format!("sess_{n}"), 100 + n, false))?;
                w.put_issued(&issued(&format!("tok_{n}"), 100 + n))?;
                w.revoke_jti(&format!("tok_{n}"), Timestamp::from_unix(100 + n))?;
            }
            w.put_session(&session("sess_live", 300, false))
        })
        .await
        .unwrap();
    let mut batches = Vec::new();
    loop {
        let c = store.write(|w| w.collect_garbage(Timestamp::from_unix(200), 2)).await.unwrap();
        batches.push((c.sessions, c.issued, c.revoked));
        if !c.full() {
            break;
        }
        assert!(batches.len() < 10, "bounded: {batches:?}");
    }
    assert_eq!(batches, [(2, 2, 2), (2, 2, 2), (1, 1, 1)], "at most the limit per table a transaction");
    let live = store.read(|r| Ok([r.session("sess_live")?.is_some(), r.session("sess_4")?.is_some()])).await.unwrap();
    assert_eq!(live, [true, false]);
}

async fn api_keys_are_listed_per_org_in_id_order_after_a_cursor(e: Engines) {
    let base = api_key_record();
    let records: Vec<crate::api_keys::ApiKeyRecord> = (0..5u8)
        .map(|n| {
            let id = crate::api_keys::ApiKeyId::parse(&format!("ak_{:032x}", 0xa0 + u128::from(n))).unwrap();
            let org = if n == 2 { "org_other" } else { "org_default" };
            crate::api_keys::ApiKeyRecord { id, org_id: org.into(), key_hash: format!("{n:064x}"), ..base.clone() }
        })
        .collect();
    let all = records.clone();
    e.stores[0].write(move |w| all.iter().rev().try_for_each(|r| w.put_api_key(r))).await.unwrap();
    let ids =
        |v: Vec<crate::api_keys::ApiKeyRecord>| v.into_iter().map(|r| r.id.as_str().to_owned()).collect::<Vec<_>>();
    let first = e.stores[0].read(|r| r.api_keys_after(None, 2, "org_default")).await.unwrap();
    assert_eq!(ids(first), [records[0].id.as_str(), records[1].id.as_str()]);
    let cursor = records[1].id.as_str().to_owned();
    let next = e.stores[0].read(move |r| r.api_keys_after(Some(&cursor), 10, "org_default")).await.unwrap();
    assert_eq!(ids(next), [records[3].id.as_str(), records[4].id.as_str()]);
    let other = e.stores[0].read(|r| r.api_keys_after(None, 10, "org_other")).await.unwrap();
    assert_eq!(ids(other), [records[2].id.as_str()]);
}

/// Identity records stay unique per org and name on PostgreSQL as on redb
/// (the writer checks the name first; the index refuses regardless).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_second_identity_with_one_name_in_an_org() {
    let e = postgres().await;
    let first: IdentityRecord = identity_record();
    let second = IdentityRecord { id: "agent_2".into(), ..first.clone() };
    e.stores[0].write(move |w| w.put_identity(&first)).await.unwrap();
    let refused = e.stores[1].write(move |w| w.put_identity(&second)).await;
    assert!(matches!(refused, Err(StorageError::Pg(_))), "{refused:?}");
    assert_eq!(e.stores[1].read(|r| r.identities()).await.unwrap().len(), 1);
}

/// A PostgreSQL store opened under another record key refuses the records
/// the first one wrote, as a redb store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_opened_under_another_key_refuses_its_records() {
    let db = harness::fresh_db().await;
    let pool = || postgres::pool::Pool::new(db.url.clone(), Default::default());
    let store = Store::postgres(pool(), mac()).await.unwrap();
    store.write(|w| w.put_key(&key_record())).await.unwrap();
    let wrong = Store::postgres(pool(), RecordKey::derive(&[8; 32])).await;
    // The marker is the first sealed record checked; the key would be next.
    assert!(matches!(wrong, Err(StorageError::Corrupt { table: "meta" | "keys", .. })), "{wrong:?}");
}

async fn a_group_commit_batch_of_thousands_of_rows_round_trips(e: Engines) {
    // More rows than one PostgreSQL statement takes, and a key given twice
    // (the last one is kept, as one write after another would leave).
    let sessions: Vec<SessionRecord> = (0..2500).map(|n| session(&format!("sess_{n}"), 900, false)).collect();
    let mut tokens: Vec<IssuedToken> = (0..2500).map(|n| issued(&format!("tok_{n}"), 900)).collect();
    tokens.push(issued("tok_7", 950));
    let (s, i) = (sessions.clone(), tokens.clone());
    e.stores[0]
        .write(move |w| {
            w.put_sessions(&s.iter().collect::<Vec<_>>())?;
            w.put_issued_all(&i.iter().collect::<Vec<_>>())
        })
        .await
        .unwrap();
    let read = e.stores[1 % e.stores.len()]
        .read(|r| {
            let s: Vec<_> = (0..2500).map(|n| r.session(&format!("sess_{n}"))).collect::<Result<_, _>>()?;
            let i: Vec<_> = (0..2500).map(|n| r.issued(&format!("tok_{n}"))).collect::<Result<_, _>>()?;
            Ok((s, i))
        })
        .await
        .unwrap();
    assert_eq!(read.0, sessions.into_iter().map(Some).collect::<Vec<_>>());
    let mut expected: Vec<Option<IssuedToken>> = tokens[..2500].iter().cloned().map(Some).collect();
    expected[7] = Some(tokens[2500].clone());
    assert_eq!(read.1, expected);
}
