//! Which tokens are revoked, in memory, so verification (introspect, bearer
//! auth) never reads storage: revoked jtis and revoked sessions, each kept
//! until the tokens it covers have expired. Written through by the token
//! service after the store commits.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::clock::Timestamp;

#[derive(Default)]
pub struct Revocations {
    jtis: RwLock<HashMap<String, i64>>,
    sessions: RwLock<HashMap<String, i64>>,
}

impl Revocations {
    pub fn load(jtis: Vec<(String, i64)>, sessions: Vec<(String, i64)>) -> Self {
        Self { jtis: RwLock::new(jtis.into_iter().collect()), sessions: RwLock::new(sessions.into_iter().collect()) }
    }

    pub fn revoke_jti(&self, jti: &str, until: Timestamp) {
        if let Ok(mut m) = self.jtis.write() {
            m.insert(jti.to_owned(), until.unix());
        }
    }

    pub fn revoke_session(&self, sid: &str, until: Timestamp) {
        if let Ok(mut m) = self.sessions.write() {
            m.insert(sid.to_owned(), until.unix());
        }
    }

    pub fn is_revoked(&self, jti: &str, sid: &str) -> bool {
        self.is_jti_revoked(jti) || self.sessions.read().map(|m| m.contains_key(sid)).unwrap_or(true)
    }

    pub fn is_jti_revoked(&self, jti: &str) -> bool {
        self.jtis.read().map(|m| m.contains_key(jti)).unwrap_or(true)
    }

    /// Forgets revocations whose tokens all expired before `before`.
    pub fn collect(&self, before: Timestamp) {
        for map in [&self.jtis, &self.sessions] {
            if let Ok(mut m) = map.write() {
                m.retain(|_, until| *until >= before.unix());
            }
        }
    }
}
