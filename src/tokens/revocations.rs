//! Which tokens are revoked, in memory, so verification (introspect, bearer
//! auth) never reads storage: revoked jtis and revoked sessions, each kept
//! until the tokens it covers have expired. Written through by the token
//! service after the store commits.

use std::collections::HashMap;
use std::sync::RwLock;

use super::records::{SessionId, TokenId};
use crate::clock::Timestamp;

#[derive(Default)]
pub struct Revocations {
    jtis: RwLock<HashMap<TokenId, i64>>,
    sessions: RwLock<HashMap<SessionId, i64>>,
}

impl Revocations {
    /// From the store's lists of revoked jtis and sessions (ids as stored).
    pub fn load(jtis: &[(String, i64)], sessions: &[(String, i64)]) -> Self {
        let loaded = Self::default();
        loaded.merge(jtis, sessions);
        loaded
    }

    /// Adds the store's lists (a resync): nothing is forgotten, so a
    /// revocation applied since the lists were read stays.
    pub fn merge(&self, jtis: &[(String, i64)], sessions: &[(String, i64)]) {
        if let Ok(mut m) = self.jtis.write() {
            m.extend(jtis.iter().map(|(jti, until)| (TokenId::from(jti.clone()), *until)));
        }
        if let Ok(mut m) = self.sessions.write() {
            m.extend(sessions.iter().map(|(sid, until)| (SessionId::from(sid.clone()), *until)));
        }
    }

    pub fn revoke_jti(&self, jti: &TokenId, until: Timestamp) {
        if let Ok(mut m) = self.jtis.write() {
            m.insert(jti.clone(), until.unix());
        }
    }

    pub fn revoke_session(&self, sid: &SessionId, until: Timestamp) {
        if let Ok(mut m) = self.sessions.write() {
            m.insert(sid.clone(), until.unix());
        }
    }

    pub fn is_revoked(&self, jti: &TokenId, sid: &SessionId) -> bool {
        self.is_jti_revoked(jti) || self.sessions.read().map(|m| m.contains_key(sid)).unwrap_or(true)
    }

    pub fn is_jti_revoked(&self, jti: &TokenId) -> bool {
        self.jtis.read().map(|m| m.contains_key(jti)).unwrap_or(true)
    }

    /// Forgets revocations whose tokens all expired before `before`.
    pub fn collect(&self, before: Timestamp) {
        forget_before(&self.jtis, before);
        forget_before(&self.sessions, before);
    }
}

fn forget_before<K>(map: &RwLock<HashMap<K, i64>>, before: Timestamp) {
    if let Ok(mut m) = map.write() {
        m.retain(|_, until| *until >= before.unix());
    }
}
