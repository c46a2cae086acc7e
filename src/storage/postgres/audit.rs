//! The audit chain on PostgreSQL: one chain, no fork, no gap, whatever the
//! number of writers and replicas.
//!
//! Read-modify-write guard: [`append`] locks the chain head row
//! (`SELECT ... FROM audit_head FOR UPDATE`) before it reads the last entry,
//! so appenders take turns in the order they get the lock; each one chains
//! onto the entry its predecessor committed (READ COMMITTED reads the newest
//! committed entry after the lock is granted). The `audit` primary key on
//! `seq` refuses a second entry with one number even if a writer skipped the
//! lock, and the head's `seq` must move to the new entry's (`UPDATE ...
//! WHERE seq = $prev`), so a gap is refused too. The head lock is held until
//! the caller's transaction ends: the entry commits with the change it
//! records, or neither does.

use tokio_postgres::GenericClient;

use super::PgError;
use crate::audit::{AuditEntry, AuditEvent, ChainKey, Link};
use crate::storage::{AuditRows, Record};

/// Appends `event` with a keyed hash, in `txn` (the change's own transaction,
/// on a [`Transaction`](tokio_postgres::Transaction) or a client inside one).
pub async fn append(
    txn: &impl GenericClient,
    event: AuditEvent,
    key: &(dyn ChainKey + Sync),
) -> Result<AuditEntry, PgError> {
    let head: i64 = txn.query_one("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE", &[]).await?.get(0);
    let prev = match head {
        0 => None,
        seq => {
            let row = txn.query_opt("SELECT entry FROM audit WHERE seq = $1", &[&seq]).await?;
            let bytes: Vec<u8> = row
                .ok_or_else(|| PgError::Corrupt {
                    table: "audit",
                    key: seq.to_string(),
                    reason: "the chain head names an entry that is not stored".into(),
                })?
                .get(0);
            Some(decode(seq, &bytes)?)
        }
    };
    let entry = AuditEntry::chain(prev.as_ref(), event, Link::Keyed(key));
    let seq = i64::try_from(entry.seq).map_err(|_| corrupt(head, "sequence overflow"))?;
    txn.execute("INSERT INTO audit (seq, entry) VALUES ($1, $2)", &[&seq, &entry.encode()]).await?;
    let moved = txn.execute("UPDATE audit_head SET seq = $1 WHERE id = 1 AND seq = $2", &[&seq, &head]).await?;
    if moved != 1 {
        return Err(corrupt(head, "the chain head moved while it was locked"));
    }
    Ok(entry)
}

/// Entries with `seq > after`, at most `limit`, one decode result per row
/// (as [`crate::storage::Reader::audit_rows`]), for verification.
pub async fn rows(db: &impl GenericClient, after: u64, limit: i64) -> Result<AuditRows, PgError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = db.query("SELECT seq, entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2", &[&after, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            let bytes: Vec<u8> = r.get(1);
            let seq_u = u64::try_from(seq).unwrap_or_default();
            (seq_u, AuditEntry::decode("audit", &seq.to_string(), &bytes))
        })
        .collect())
}

fn decode(seq: i64, bytes: &[u8]) -> Result<AuditEntry, PgError> {
    AuditEntry::decode("audit", &seq.to_string(), bytes).map_err(|e| corrupt(seq, &e.to_string()))
}

fn corrupt(seq: i64, reason: &str) -> PgError {
    PgError::Corrupt { table: "audit", key: seq.to_string(), reason: reason.into() }
}
