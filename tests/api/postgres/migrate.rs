//! Schema migrations: applied once, under an advisory lock, newer refused.

use kmsd::storage::postgres::migrate::{migrate, version, Migrated, LATEST, TABLES};
use kmsd::storage::postgres::PgError;

use super::{client, harness};

#[tokio::test]
async fn migrations_apply_once_and_running_them_again_changes_nothing() {
    let db = harness::fresh_db().await;
    let mut c = client(&db.url).await;
    assert_eq!(version(&c).await.unwrap(), 0);
    assert_eq!(migrate(&mut c).await.unwrap(), Migrated { from: 0, applied: (1..=LATEST).collect() });
    for table in TABLES {
        let found: bool = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[table]).await.unwrap().get(0);
        assert!(found, "table {table} missing");
    }
    assert_eq!(migrate(&mut c).await.unwrap(), Migrated { from: LATEST, applied: vec![] });
    assert_eq!(version(&c).await.unwrap(), LATEST);
}

#[tokio::test]
async fn replicas_migrating_at_the_same_moment_take_turns_and_one_applies() {
    let db = harness::fresh_db().await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move {
                let mut c = client(&url).await;
                migrate(&mut c).await.unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        let done = t.await.unwrap();
        if !done.applied.is_empty() {
            applied += 1;
            assert_eq!(done.from, 0);
        }
    }
    assert_eq!(applied, 1, "exactly one migrator applies the schema");
    let c = client(&db.url).await;
    let rows: i64 = c.query_one("SELECT count(*) FROM kmsd_schema", &[]).await.unwrap().get(0);
    assert_eq!(rows, i64::from(LATEST));
}

#[tokio::test]
async fn a_schema_newer_than_this_binary_is_refused_and_left_as_it_is() {
    let db = harness::fresh_db().await;
    let mut c = client(&db.url).await;
    migrate(&mut c).await.unwrap();
    c.execute("INSERT INTO kmsd_schema (version, description) VALUES ($1, 'from the future')", &[&(LATEST + 1)])
        .await
        .unwrap();
    let err = migrate(&mut c).await.unwrap_err();
    assert!(matches!(err, PgError::SchemaTooNew { found, supported } if found == LATEST + 1 && supported == LATEST));
    let msg = err.to_string();
    assert!(msg.contains("newer than this kmsd"), "{msg}");
    assert_eq!(version(&c).await.unwrap(), LATEST + 1, "nothing was rolled back or rewritten");
}

#[tokio::test]
async fn the_schema_itself_refuses_a_duplicate_identity_name_and_api_key_hash() {
    let db = super::migrated_db().await;
    let c = client(&db.url).await;
    let put_identity = "INSERT INTO identities (id, org_id, name, record) VALUES ($1, $2, $3, '\\x7b7d')";
    c.execute(put_identity, &[&"agent_1", &"org_a", &"bot"]).await.unwrap();
    c.execute(put_identity, &[&"agent_2", &"org_b", &"bot"]).await.unwrap();
    let dup = c.execute(put_identity, &[&"agent_3", &"org_a", &"bot"]).await.unwrap_err();
    assert_eq!(dup.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{dup}");
    let put_key = "INSERT INTO api_keys (id, org_id, key_hash, record) VALUES ($1, 'o', $2, '\\x7b7d')";
    c.execute(put_key, &[&"ak_1", &"h1"]).await.unwrap();
    let dup = c.execute(put_key, &[&"ak_2", &"h1"]).await.unwrap_err();
    assert_eq!(dup.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{dup}");
}
