//! Identity, session and token tables.

use redb::ReadableTable;

use tokio_postgres::types::ToSql;

use super::postgres::feed::{self, ChangeKind};
use super::txn::Txn;
use super::writer::{RecordRow, Rows};
use super::{table, Reader, Record, Sealed, StorageError, Writer, ISSUED, REVOKED, SESSIONS};
use crate::clock::Timestamp;
use crate::identities::IdentityRecord;
use crate::tokens::{IssuedToken, SessionRecord};

impl Sealed for IdentityRecord {
    const VERSION: u32 = 2;
}

impl Record for SessionRecord {
    const VERSION: u32 = 1;
}

impl Record for IssuedToken {
    const VERSION: u32 = 1;
}

/// Ids with the unix time after which they no longer matter.
pub type Expiring = Vec<(String, i64)>;

/// What one garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub sessions: usize,
    pub issued: usize,
    pub revoked: usize,
    /// The per-table bound the collection ran under (`None`: everything).
    pub limit: Option<usize>,
}

impl Collected {
    /// Whether some table gave as many rows as the bound allowed: there
    /// may be more to collect.
    pub fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.sessions >= l || self.issued >= l || self.revoked >= l)
    }

    /// `self` and `other` together (the bound is `other`'s).
    pub fn and(self, other: Collected) -> Collected {
        Collected {
            sessions: self.sessions + other.sessions,
            issued: self.issued + other.issued,
            revoked: self.revoked + other.revoked,
            limit: other.limit,
        }
    }
}

fn decode_sessions(rows: Vec<(String, Vec<u8>)>) -> Result<Vec<SessionRecord>, StorageError> {
    rows.iter().map(|(k, v)| SessionRecord::decode("sessions", k, v)).collect()
}

/// How long the change feed's record of changes is kept on PostgreSQL.
const CHANGES_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

impl Reader {
    /// When the revocation of `jti` stops mattering (its token's `exp`),
    /// if it is revoked.
    pub fn revoked_until(&self, jti: &str) -> Result<Option<i64>, StorageError> {
        match &self.txn {
            Txn::Pg(p) => {
                let rows = p.query("SELECT exp FROM revoked_tokens WHERE jti = $1", &[&jti])?;
                Ok(rows.first().map(|r| r.get(0)))
            }
            Txn::Read(x) => Ok(x.open_table(REVOKED)?.get(jti)?.map(|v| v.value())),
            Txn::Write(x) => Ok(x.open_table(REVOKED)?.get(jti)?.map(|v| v.value())),
        }
    }

    pub fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StorageError> {
        let row = self.txn.get(&table::SESSIONS, sid)?;
        row.map(|v| SessionRecord::decode("sessions", sid, &v)).transpose()
    }

    pub fn identities(&self) -> Result<Vec<IdentityRecord>, StorageError> {
        let rows = self.txn.scan(&table::IDENTITIES)?;
        rows.iter().map(|(k, v)| IdentityRecord::decode(&self.mac, "identities", k, v)).collect()
    }

    pub fn identity(&self, id: &str) -> Result<Option<IdentityRecord>, StorageError> {
        let row = self.txn.get(&table::IDENTITIES, id)?;
        row.map(|v| IdentityRecord::decode(&self.mac, "identities", id, &v)).transpose()
    }

    /// The issued-token row of `jti` (one indexed lookup).
    pub fn issued(&self, jti: &str) -> Result<Option<IssuedToken>, StorageError> {
        let row = self.txn.get(&table::ISSUED, jti)?;
        row.map(|v| IssuedToken::decode("issued_tokens", jti, &v)).transpose()
    }

    /// Revoked jtis and revoked session ids, each with when it stops mattering.
    pub fn revocations(&self) -> Result<(Expiring, Expiring), StorageError> {
        let sessions = match &self.txn {
            Txn::Pg(p) => p.records("SELECT sid, record FROM sessions WHERE revoked", &[])?,
            _ => self.txn.scan(&table::SESSIONS)?,
        };
        let revoked = decode_sessions(sessions)?.into_iter().filter(|s| s.revoked_at.is_some());
        Ok((self.revoked_jtis()?, revoked.map(|s| (s.sid.into(), s.expires_at.unix())).collect()))
    }

    /// Every revoked jti with the token's `exp`, in jti order.
    pub(super) fn revoked_jtis(&self) -> Result<Expiring, StorageError> {
        match &self.txn {
            Txn::Pg(p) => {
                let rows = p.query("SELECT jti, exp FROM revoked_tokens ORDER BY jti COLLATE \"C\"", &[])?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            }
            Txn::Read(x) => revoked_in(&x.open_table(REVOKED)?),
            Txn::Write(x) => revoked_in(&x.open_table(REVOKED)?),
        }
    }

    /// The id of an identity of `org` named `name`, other than `except`, if
    /// any. Read inside a write transaction, no other write can add the name
    /// before this one commits (redb: the single writer; PostgreSQL: the
    /// writer lock, and the `(org_id, name)` unique index regardless). On
    /// redb a record is decoded (and its MAC checked) only if its bytes hold
    /// the name as JSON encodes it, as every record is written.
    pub fn identity_named(&self, org: &str, name: &str, except: Option<&str>) -> Result<Option<String>, StorageError> {
        let rows = match &self.txn {
            Txn::Pg(p) => p.records(
                "SELECT id, record FROM identities WHERE org_id = $1 AND name = $2 AND id <> $3",
                &[&org, &name, &except.unwrap_or("")],
            )?,
            _ => {
                let needle = serde_json::Value::from(name).to_string().into_bytes();
                let mut rows = self.txn.scan(&table::IDENTITIES)?;
                rows.retain(|(k, v)| Some(k.as_str()) != except && v.windows(needle.len()).any(|w| w == needle));
                rows
            }
        };
        for (k, v) in rows {
            let rec = IdentityRecord::decode(&self.mac, "identities", &k, &v)?;
            if rec.org_id.as_str() == org && rec.name == name {
                return Ok(Some(rec.id.into()));
            }
        }
        Ok(None)
    }

    /// Every live session of `identity_id` (redb: a scan; used by rare admin actions).
    pub fn sessions_of(&self, identity_id: &str) -> Result<Vec<SessionRecord>, StorageError> {
        let rows = match &self.txn {
            Txn::Pg(p) => p.records(
                "SELECT sid, record FROM sessions WHERE identity_id = $1 AND NOT revoked ORDER BY sid COLLATE \"C\"",
                &[&identity_id],
            )?,
            _ => self.txn.scan(&table::SESSIONS)?,
        };
        let mut sessions = decode_sessions(rows)?;
        sessions.retain(|s| s.identity_id.as_str() == identity_id && s.revoked_at.is_none());
        Ok(sessions)
    }
}

/// `recs` with only the last of the records that share a key, as writing
/// them one by one would leave (one statement may not upsert a row twice).
fn last_per_key<'a, T>(recs: &[&'a T], key: impl Fn(&T) -> &str) -> Vec<&'a T> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&T> = recs.iter().rev().filter(|r| seen.insert(key(r))).copied().collect();
    out.reverse();
    out
}

fn revoked_in(table: &impl ReadableTable<&'static str, i64>) -> Result<Expiring, StorageError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_owned(), v.value()));
    }
    Ok(out)
}

impl Writer {
    pub fn put_identity(&mut self, rec: &IdentityRecord) -> Result<(), StorageError> {
        let bytes = rec.encode(&self.mac, "identities", rec.id.as_str());
        let (org, name) = (rec.org_id.as_str(), rec.name.as_str());
        self.put_row(&table::IDENTITIES, rec.id.as_str(), &bytes, &[("org_id", &org), ("name", &name)])?;
        self.changed(ChangeKind::Identity, rec.id.as_str());
        Ok(())
    }

    pub fn delete_identity(&mut self, id: &str) -> Result<(), StorageError> {
        match self.rows()? {
            Rows::Redb(x) => {
                x.open_table(table::IDENTITIES.redb)?.remove(id)?;
            }
            Rows::Pg(p) => {
                p.execute("DELETE FROM identities WHERE id = $1", &[&id])?;
            }
        }
        self.changed(ChangeKind::Identity, id);
        Ok(())
    }

    pub fn put_session(&mut self, rec: &SessionRecord) -> Result<(), StorageError> {
        self.put_sessions(&[rec])
    }

    /// Stores `recs` (a group commit's sessions, or one): on PostgreSQL in
    /// one statement per [`UPSERT_ROWS`](super::writer::UPSERT_ROWS).
    pub fn put_sessions(&mut self, recs: &[&SessionRecord]) -> Result<(), StorageError> {
        // Replicas cache revoked sessions only.
        for r in recs.iter().filter(|r| r.revoked_at.is_some()) {
            self.changed(ChangeKind::Session, r.sid.as_str());
        }
        let recs = last_per_key(recs, |r| r.sid.as_str());
        let bytes: Vec<Vec<u8>> = recs.iter().map(|r| r.encode()).collect();
        let identities: Vec<&str> = recs.iter().map(|r| r.identity_id.as_str()).collect();
        let cols: Vec<(i64, bool)> = recs.iter().map(|r| (r.expires_at.unix(), r.revoked_at.is_some())).collect();
        let rows: Vec<RecordRow<'_>> = (0..recs.len())
            .map(|i| {
                (
                    recs[i].sid.as_str(),
                    bytes[i].as_slice(),
                    vec![&identities[i] as &(dyn ToSql + Sync), &cols[i].0, &cols[i].1],
                )
            })
            .collect();
        self.put_rows(&table::SESSIONS, &["identity_id", "expires_at", "revoked"], &rows)
    }

    /// Stores `recs` (a group commit's token rows, or one): on PostgreSQL in
    /// one statement per [`UPSERT_ROWS`](super::writer::UPSERT_ROWS).
    pub fn put_issued_all(&mut self, recs: &[&IssuedToken]) -> Result<(), StorageError> {
        let recs = last_per_key(recs, |r| r.jti.as_str());
        let bytes: Vec<Vec<u8>> = recs.iter().map(|r| r.encode()).collect();
        let sids: Vec<&str> = recs.iter().map(|r| r.sid.as_str()).collect();
        let exps: Vec<i64> = recs.iter().map(|r| r.exp.unix()).collect();
        let rows: Vec<RecordRow<'_>> = (0..recs.len())
            .map(|i| (recs[i].jti.as_str(), bytes[i].as_slice(), vec![&sids[i] as &(dyn ToSql + Sync), &exps[i]]))
            .collect();
        self.put_rows(&table::ISSUED, &["sid", "exp"], &rows)
    }

    pub fn put_issued(&mut self, rec: &IssuedToken) -> Result<(), StorageError> {
        self.put_issued_all(&[rec])
    }

    pub fn revoke_jti(&mut self, jti: &str, exp: Timestamp) -> Result<(), StorageError> {
        self.changed(ChangeKind::Token, jti);
        match self.rows()? {
            Rows::Redb(x) => {
                x.open_table(REVOKED)?.insert(jti, exp.unix())?;
            }
            Rows::Pg(p) => {
                p.execute(
                    "INSERT INTO revoked_tokens (jti, exp) VALUES ($1, $2) ON CONFLICT (jti) DO UPDATE SET exp = EXCLUDED.exp",
                    &[&jti, &exp.unix()],
                )?;
            }
        }
        Ok(())
    }

    /// Removes sessions, issued-token rows and revocations that ended before
    /// `before`: nothing they describe can still verify. On PostgreSQL at
    /// most `limit` rows of each table (by their expiry index), so that one
    /// transaction stays short however large the backlog (a leader's write
    /// holds its lease row, and every statement has a timeout): call again
    /// while [`Collected::full`] says a table had more. redb takes them all
    /// in one transaction.
    pub fn collect_garbage(&mut self, before: Timestamp, limit: usize) -> Result<Collected, StorageError> {
        let x = match self.rows()? {
            Rows::Redb(x) => x,
            Rows::Pg(p) => {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let gone = |sql: &str| p.execute(sql, &[&before.unix(), &limit]).map(|n| n as usize);
                p.with_client(|c| feed::forget_older_than(c, CHANGES_KEPT))?;
                return Ok(Collected {
                    sessions: gone(
                        "DELETE FROM sessions WHERE sid IN
                           (SELECT sid FROM sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                    )?,
                    issued: gone(
                        "DELETE FROM issued_tokens WHERE jti IN
                           (SELECT jti FROM issued_tokens WHERE exp < $1 ORDER BY exp LIMIT $2)",
                    )?,
                    revoked: gone(
                        "DELETE FROM revoked_tokens WHERE jti IN
                           (SELECT jti FROM revoked_tokens WHERE exp < $1 ORDER BY exp LIMIT $2)",
                    )?,
                    limit: Some(usize::try_from(limit).unwrap_or(usize::MAX)),
                });
            }
        };
        let sessions = remove_where(x, SESSIONS, |k, v| {
            SessionRecord::decode("sessions", k, v).is_ok_and(|s| s.expires_at < before)
        })?;
        let issued =
            remove_where(x, ISSUED, |k, v| IssuedToken::decode("issued_tokens", k, v).is_ok_and(|t| t.exp < before))?;
        let mut t = x.open_table(REVOKED)?;
        let dead: Vec<String> = t
            .iter()?
            .filter_map(Result::ok)
            .filter(|(_, v)| v.value() < before.unix())
            .map(|(k, _)| k.value().to_owned())
            .collect();
        for k in &dead {
            t.remove(k.as_str())?;
        }
        Ok(Collected { sessions, issued, revoked: dead.len(), limit: None })
    }
}

/// Removes the records of `table` for which `dead(key, bytes)` holds
/// (a record that does not decode is kept); returns how many.
fn remove_where(
    x: &redb::WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    dead: impl Fn(&str, &[u8]) -> bool,
) -> Result<usize, StorageError> {
    let mut t = x.open_table(table)?;
    let keys: Vec<String> = t
        .iter()?
        .filter_map(Result::ok)
        .filter(|(k, v)| dead(k.value(), v.value()))
        .map(|(k, _)| k.value().to_owned())
        .collect();
    for k in &keys {
        t.remove(k.as_str())?;
    }
    Ok(keys.len())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::keys::Algorithm;
    use crate::tokens::TokenType;

    pub(in crate::storage) fn session(sid: &str, expires: i64, revoked: bool) -> SessionRecord {
        SessionRecord {
            sid: sid.into(),
            identity_id: "agent_1".into(),
            org_id: "org".into(),
            scopes: vec![],
            audience: vec![],
            algorithm: Algorithm::EdDsa,
            access_ttl: 1,
            refresh_ttl: 1,
            refresh_jti: "tok_r".into(),
            previous_refresh_jti: None,
            rotated_at: None,
            created_at: Timestamp::from_unix(0),
            expires_at: Timestamp::from_unix(expires),
            revoked_at: revoked.then_some(Timestamp::from_unix(1)),
        }
    }

    pub(in crate::storage) fn issued(jti: &str, exp: i64) -> IssuedToken {
        IssuedToken {
            jti: jti.into(),
            sid: "s".into(),
            identity_id: "agent_1".into(),
            org_id: "org".into(),
            kind: TokenType::Access,
            exp: Timestamp::from_unix(exp),
            kid: None,
            iat: None,
            input_sha256: None,
        }
    }

    #[test]
    fn issued_token_golden_bytes_and_rows_from_before_kid_iat_and_digest() {
        let mut row = issued("tok_1", 500);
        let old = r#"{"v":1,"jti":"tok_1","sid":"s","identity_id":"agent_1","org_id":"org","kind":"access","exp":500}"#;
        assert_eq!(IssuedToken::decode("issued_tokens", "tok_1", old.as_bytes()).unwrap(), row, "old rows decode");
        row.kid = Some("kid1".into());
        row.iat = Some(Timestamp::from_unix(400));
        row.input_sha256 = Some("ZGlnZXN0".into());
        let golden = r#"{"v":1,"jti":"tok_1","sid":"s","identity_id":"agent_1","org_id":"org","kind":"access","exp":500,"kid":"kid1","iat":400,"input_sha256":"ZGlnZXN0"}"#;
        assert_eq!(String::from_utf8(row.encode()).unwrap(), golden);
        assert_eq!(IssuedToken::decode("issued_tokens", "tok_1", golden.as_bytes()).unwrap(), row);
    }
}
