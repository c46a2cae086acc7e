//! `kmsd check-config` on PostgreSQL: can this kmsd use the configured
//! database? The server is reached, its schema is one this binary can run
//! (or none yet), and the role has what kmsd needs: CREATE on the schema
//! before the first start (the migration makes the tables), and SELECT,
//! INSERT, UPDATE, DELETE on every table after. Nothing is written.

use tokio_postgres::Client;

use super::migrate::{version, LATEST};
use super::{connect, PgError, PgUrl};

/// The tables kmsd reads and writes (schema 1).
const TABLES: &[&str] =
    &["meta", "keys", "api_keys", "identities", "sessions", "issued_tokens", "revoked_tokens", "audit", "audit_head"];

/// What the check found, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub server_version: String,
    /// The schema version found (0: none yet; the first start makes it).
    pub schema: i32,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.schema {
            0 => write!(
                f,
                "PostgreSQL {} reachable, no kmsd schema yet (the first start creates it)",
                self.server_version
            ),
            v => write!(f, "PostgreSQL {} reachable, kmsd schema version {v} (current: {LATEST})", self.server_version),
        }
    }
}

/// Checks the database at `url` (see the module comment).
pub async fn check(url: &PgUrl) -> Result<Checked, PgError> {
    let client = connect(url, "kmsd-check-config", std::time::Duration::from_secs(5)).await?;
    let server_version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let migrated: bool = client.query_one("SELECT to_regclass('kmsd_schema') IS NOT NULL", &[]).await?.get(0);
    if migrated {
        let sql = "SELECT has_table_privilege(current_user, 'kmsd_schema', 'SELECT')";
        require(&client, sql, "SELECT", "table kmsd_schema").await?;
    }
    let schema = version(&client).await?;
    if schema > LATEST {
        return Err(PgError::SchemaTooNew { found: schema, supported: LATEST });
    }
    if schema == 0 {
        let sql = "SELECT has_schema_privilege(current_user, current_schema(), 'CREATE')";
        require(&client, sql, "CREATE", "the current schema").await?;
    } else {
        // One privilege at a time: given a list, PostgreSQL answers whether
        // any of them is held.
        for table in TABLES {
            for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
                let sql = format!("SELECT has_table_privilege(current_user, '{table}', '{privilege}')");
                require(&client, &sql, privilege, &format!("table {table}")).await?;
            }
        }
    }
    Ok(Checked { server_version, schema })
}

async fn require(client: &Client, sql: &str, privilege: &str, on: &str) -> Result<(), PgError> {
    let granted: Option<bool> = client.query_one(sql, &[]).await?.get(0);
    if granted == Some(true) {
        Ok(())
    } else {
        Err(PgError::Privilege { privilege: privilege.into(), on: on.into() })
    }
}
