//! Tokens whose signature kmsd has already checked. A resource server that
//! introspects asks about the same token on every request it serves; the
//! second time, kmsd skips the signature check (an RSA-3072 or Ed25519
//! verification costs several times a whole HTTP exchange) and the parse.
//!
//! Sound because a kid is the thumbprint of its public key: "these exact bytes
//! carry a good signature by kid K" stays true for ever. Everything that can
//! change — whether K is still trusted, expiry, revocation of the jti, the
//! session or the identity — is checked on every call, hit or miss. Only
//! tokens that passed every check are remembered, so forged or junk tokens
//! cannot enter, and memory is bounded: two generations of at most
//! [`GENERATION`] entries each (a hit in the older one moves it forward).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::claims::Claims;

/// Entries per generation (at most twice this are held; ~1 KiB each).
pub const GENERATION: usize = 4096;

/// What a hit returns: the kid and alg of the header, and the claims.
pub struct Checked {
    pub kid: String,
    pub alg: String,
    pub claims: Arc<Claims>,
}

type Digest = [u8; 32];
type Generation = HashMap<Digest, Arc<Checked>>;

#[derive(Default)]
pub struct Verified {
    /// (current, previous)
    generations: Mutex<(Generation, Generation)>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Verified {
    pub fn get(&self, token: &str) -> Option<Arc<Checked>> {
        let key = digest(token);
        let found = self.generations.lock().ok().and_then(|mut g| {
            let (current, previous) = &mut *g;
            if let Some(hit) = current.get(&key) {
                return Some(hit.clone());
            }
            let hit = previous.remove(&key)?;
            insert(current, previous, key, hit.clone());
            Some(hit)
        });
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, token: &str, checked: Checked) {
        if let Ok(mut g) = self.generations.lock() {
            let (current, previous) = &mut *g;
            insert(current, previous, digest(token), Arc::new(checked));
        }
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.generations.lock().map(|g| g.0.len() + g.1.len()).unwrap_or(0)
    }
}

fn insert(current: &mut Generation, previous: &mut Generation, key: Digest, value: Arc<Checked>) {
    if current.len() >= GENERATION {
        *previous = std::mem::take(current);
    }
    current.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(jti: &str) -> Checked {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": "agent_1", "org": "org_1", "wks": "default", "scopes": ["a:b:c"], "sponsorId": "user_1",
            "sponsorChain": ["user_1"], "token_type": "access", "iss": "https://relayauth.dev", "aud": ["relayauth"],
            "exp": 20, "iat": 10, "jti": jti, "sid": "sess_1"
        }))
        .unwrap();
        Checked { kid: "k".into(), alg: "EdDSA".into(), claims: Arc::new(claims) }
    }

    #[test]
    fn remembers_exact_tokens_only_and_stays_bounded() {
        let v = Verified::default();
        v.insert("a.b.c", checked("tok_1"));
        assert_eq!(v.get("a.b.c").unwrap().claims.jti.as_str(), "tok_1");
        assert!(v.get("a.b.d").is_none(), "one changed byte is another token");
        for i in 0..3 * GENERATION {
            v.insert(&format!("t{i}"), checked("tok_n"));
        }
        assert!(v.len() <= 2 * GENERATION, "{}", v.len());
        assert!(v.get("a.b.c").is_none(), "the oldest entries go first");
        assert!(v.get(&format!("t{}", 3 * GENERATION - 1)).is_some());
        assert_eq!(v.counts(), (2, 2));
    }

    #[test]
    fn a_hit_in_the_older_generation_survives_the_next_turnover() {
        let v = Verified::default();
        v.insert("hot", checked("tok_hot"));
        for i in 0..GENERATION {
            v.insert(&format!("t{i}"), checked("tok_n"));
        }
        assert!(v.get("hot").is_some(), "still in the older generation");
        for i in 0..GENERATION + 10 {
            v.insert(&format!("u{i}"), checked("tok_n"));
        }
        assert!(v.get("hot").is_some(), "moved forward by the hit, so it outlived its generation");
    }
}
