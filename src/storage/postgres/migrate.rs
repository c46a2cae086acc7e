//! The PostgreSQL schema, owned by kmsd: numbered SQL scripts compiled into
//! the binary, applied at start.
//!
//! [`migrate`] runs in one transaction under a transaction-scoped advisory
//! lock ([`MIGRATION_LOCK`]): replicas that start at once take turns, the
//! first applies what is missing, the others find it applied (idempotent).
//! DDL is transactional in PostgreSQL, so a script that fails leaves nothing
//! behind. A database whose schema is newer than this binary's is refused
//! ([`PgError::SchemaTooNew`]) before anything is written.
//!
//! Read-modify-write guard: the advisory lock serialises every migrator; the
//! version table's primary key refuses a version recorded twice regardless.

use tokio_postgres::{Client, GenericClient};

use super::PgError;

/// `(version, description, sql)`, in order, each applied once.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "initial", include_str!("schema/0001_initial.sql"))];

/// Every table of the [`LATEST`] schema (besides `kmsd_schema`).
pub const TABLES: &[&str] = &[
    "meta",
    "keysets",
    "keys",
    "api_keys",
    "identities",
    "sessions",
    "issued_tokens",
    "revoked_tokens",
    "audit",
    "audit_head",
    "leases",
    "changes",
];

/// The newest schema this binary knows.
pub const LATEST: i32 = 1;

/// Advisory lock key held while migrating (`kmsd` in ASCII, then `mg`).
pub const MIGRATION_LOCK: i64 = 0x6b6d_7364_6d67;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before.
    pub from: i32,
    /// The versions applied now (empty: already current).
    pub applied: Vec<i32>,
}

/// Brings the database to [`LATEST`], or refuses a newer schema, in a
/// transaction of its own.
pub async fn migrate(client: &mut Client) -> Result<Migrated, PgError> {
    let txn = client.transaction().await?;
    let migrated = apply(&txn).await?;
    txn.commit().await?;
    if !migrated.applied.is_empty() {
        tracing::info!(from = migrated.from, to = LATEST, "PostgreSQL schema migrated");
    }
    Ok(migrated)
}

/// The work of [`migrate`] inside the caller's transaction (`kmsd storage
/// copy` migrates and fills an empty database in one), which commits it.
pub async fn apply(txn: &impl GenericClient) -> Result<Migrated, PgError> {
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS kmsd_schema (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let from: i32 = txn.query_one("SELECT coalesce(max(version), 0) FROM kmsd_schema", &[]).await?.get(0);
    if from > LATEST {
        return Err(PgError::SchemaTooNew { found: from, supported: LATEST });
    }
    let mut applied = Vec::new();
    for &(version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > from) {
        txn.batch_execute(sql).await?;
        txn.execute("INSERT INTO kmsd_schema (version, description) VALUES ($1, $2)", &[&version, &description])
            .await?;
        applied.push(version);
    }
    Ok(Migrated { from, applied })
}

/// The schema version recorded in the database (0: none).
pub async fn version(client: &Client) -> Result<i32, PgError> {
    let exists: bool = client.query_one("SELECT to_regclass('kmsd_schema') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client.query_one("SELECT coalesce(max(version), 0) FROM kmsd_schema", &[]).await?.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps_and_end_at_latest() {
        for (i, (v, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v, i as i32 + 1);
            assert!(!sql.trim().is_empty());
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(LATEST));
    }
}
