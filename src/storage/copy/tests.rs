//! [`Store::copy_to`] on both engines (a redb file and the throwaway
//! PostgreSQL): every record kind through redb -> PostgreSQL -> redb, byte
//! for byte and found by every lookup (so the PostgreSQL index columns were
//! filled from the records); a target with rows refused; a source whose
//! audit chain is broken refused before the target is touched; a copy that
//! fails midway commits nothing, not even the schema.

use super::*;
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::Timestamp;
use crate::storage::contract::{holds_every_kind, mac, write_every_kind};
use crate::storage::pg_harness as harness;
use crate::storage::postgres::pool::PoolConfig;
use crate::storage::records::tests::identity_record;

fn pool(db: &harness::TestDb) -> Pool {
    Pool::new(db.url.clone(), PoolConfig::default())
}

async fn schema_version(db: &harness::TestDb) -> i32 {
    let c = crate::storage::postgres::connect(&db.url, "kmsd-test", std::time::Duration::ZERO).await.unwrap();
    crate::storage::postgres::migrate::version(&c).await.unwrap()
}

async fn rows(store: &Store) -> Snapshot {
    store.read(Snapshot::read).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_goes_from_redb_to_postgres_and_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::create(&dir.path().join("a.redb"), mac()).unwrap();
    write_every_kind(&source).await;
    let db = harness::fresh_db().await;
    let copied = source.copy_to(CopyTarget::Postgres(pool(&db))).await.unwrap();
    let tables = [
        ("meta", 3),
        ("keys", 1),
        ("api_keys", 1),
        ("identities", 1),
        ("sessions", 2),
        ("issued_tokens", 1),
        ("revoked_tokens", 1),
        ("audit", 1),
    ];
    assert_eq!(copied, Copied { tables: tables.to_vec(), audit_entries: 1 });
    let pg = Store::postgres(pool(&db), mac()).await.unwrap();
    holds_every_kind(&pg).await;
    assert_eq!(rows(&pg).await, rows(&source).await);

    let again = source.copy_to(CopyTarget::Postgres(pool(&db))).await.unwrap_err();
    assert!(matches!(again, CopyError::NotEmpty { table: "meta" }), "{again}");
    assert_eq!(rows(&pg).await, rows(&source).await, "the refused copy changed nothing");

    let back = dir.path().join("b.redb");
    assert_eq!(pg.copy_to(CopyTarget::Redb(back.clone())).await.unwrap(), copied);
    let back = Store::open(&back, 1 << 20, mac(), Timestamp::from_unix(1)).unwrap();
    holds_every_kind(&back).await;
    assert_eq!(rows(&back).await, rows(&source).await);
    let exists = pg.copy_to(CopyTarget::Redb(dir.path().join("a.redb"))).await.unwrap_err();
    assert!(exists.to_string().contains("already exists"), "{exists}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_a_broken_audit_chain_is_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.redb");
    let store = Store::create(&path, mac()).unwrap();
    store
        .write(|w| {
            for n in 0..2 {
                w.audit(
                    AuditEvent::new(Timestamp::from_unix(9), "test", AuditAction::KeyCreate).target(format!("k{n}")),
                )?;
            }
            Ok::<_, StorageError>(())
        })
        .await
        .unwrap();
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut audit = txn.open_table(AUDIT).unwrap();
        let edited = String::from_utf8(audit.get(1).unwrap().unwrap().value().to_vec()).unwrap().replace("k0", "k7");
        audit.insert(1, edited.as_bytes()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let store = Store::open(&path, 1 << 20, mac(), Timestamp::from_unix(1)).unwrap();
    let target = harness::fresh_db().await;
    let err = store.copy_to(CopyTarget::Postgres(pool(&target))).await.unwrap_err();
    assert!(matches!(&err, CopyError::Source(StorageError::Corrupt { table: "audit", .. })), "{err}");
    assert_eq!(schema_version(&target).await, 0, "the target was not touched");
    let file = dir.path().join("b.redb");
    assert!(store.copy_to(CopyTarget::Redb(file.clone())).await.is_err());
    assert!(!file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_midway_commits_nothing_not_even_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::create(&dir.path().join("a.redb"), mac()).unwrap();
    // Two identities with one name in one org: redb's store takes them (the
    // identities service checks names), PostgreSQL's unique index does not.
    let (first, mut second) = (identity_record(), identity_record());
    second.id = "agent_2".into();
    source.write(move |w| Ok::<_, StorageError>((w.put_identity(&first)?, w.put_identity(&second)?))).await.unwrap();
    let db = harness::fresh_db().await;
    let err = source.copy_to(CopyTarget::Postgres(pool(&db))).await.unwrap_err();
    assert!(err.to_string().contains("identities_org_id_name_key"), "{err}");
    assert_eq!(schema_version(&db).await, 0, "nothing was committed");
}
