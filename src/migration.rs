//! The HS256 cut-over, as a persisted state machine with a computed sunset:
//!
//! ```text
//! hs256       signs access tokens HS256 (legacy secret + kid); the asymmetric
//!             key is already published in the JWKS
//! asymmetric  signs RS256/EdDSA; still verifies HS256 until sunset_at
//! sunset      secret wiped from memory; HS256 refused everywhere
//! ```
//!
//! `sunset_at = max(latest exp of any HS256 token kmsd issued,
//! cutover_at + legacy_ttl_cap) + skew`. The latest exp is written with each
//! HS256 token's rows (group commit), so it survives a crash. The secret is
//! never published, logged or returned, and `Debug` redacts it. The stored
//! form of the state, with its format version, is in [`state`].

pub mod state;
mod sunset;

pub use sunset::sunset_at;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{AuditAction, AuditEvent};
use crate::clock::{Clock, Timestamp};
use crate::storage::{StorageError, Store};

pub const META_STATE: &str = "hs256_migration";
pub const META_MAX_EXP: &str = "hs256_max_exp";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Hs256,
    Asymmetric,
    Sunset,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "hs256",
            Self::Asymmetric => "asymmetric",
            Self::Sunset => "sunset",
        }
    }
}

/// The persisted state (meta table; its stored form is in [`state`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    pub phase: Phase,
    pub started_at: Timestamp,
    pub cutover_at: Option<Timestamp>,
    pub sunset_at: Option<Timestamp>,
}

/// What the config says about the cut-over.
#[derive(Clone)]
pub struct MigrationConfig {
    pub kid: String,
    pub secret: Option<Zeroizing<Vec<u8>>>,
    pub legacy_ttl_cap: Duration,
    pub skew: Duration,
    pub publish_lead: Duration,
}

impl std::fmt::Debug for MigrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationConfig")
            .field("kid", &self.kid)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("legacy_ttl_cap", &self.legacy_ttl_cap)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("the HS256 secret is not available (set it in the environment variable named by migration.secret_env)")]
    NoSecret,
    #[error("cannot {action} in phase {phase}")]
    Phase { action: &'static str, phase: &'static str },
    #[error("the asymmetric key was published at {published}; advancing is allowed from {allowed} (publish lead)")]
    TooEarly { published: Timestamp, allowed: Timestamp },
    #[error("the keyset that replaces HS256 has no active key")]
    NoAsymmetricKey,
    #[error("stored migration state is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Migration {
    store: Store,
    clock: Arc<dyn Clock>,
    config: MigrationConfig,
    state: Arc<Mutex<MigrationState>>,
    secret: Arc<Mutex<Option<Zeroizing<Vec<u8>>>>>,
    verifications: AtomicU64,
    last_verification: AtomicU64,
}

impl Migration {
    /// Loads (or starts, in phase `hs256`) the cut-over. A sunset that came due
    /// while kmsd was down happens here, before anything is served.
    pub async fn start(store: Store, clock: Arc<dyn Clock>, config: MigrationConfig) -> Result<Self, MigrationError> {
        let stored = store.read(|r| r.meta(META_STATE)).await?;
        let now = clock.now();
        let state = match stored {
            Some(bytes) => state::decode(&bytes)?,
            None => {
                let s = MigrationState { phase: Phase::Hs256, started_at: now, cutover_at: None, sunset_at: None };
                let bytes = state::encode(&s);
                // Looked for again under the write: of replicas starting at
                // once, only the first starts the cut-over.
                let stored = store
                    .write(move |w| {
                        if let Some(stored) = w.meta(META_STATE)? {
                            return Ok::<_, StorageError>(Some(stored));
                        }
                        w.put_meta(META_STATE, &bytes)?;
                        w.audit(AuditEvent::new(now, "system", AuditAction::MigrationStart).target("hs256"))?;
                        Ok(None)
                    })
                    .await?;
                match stored {
                    Some(bytes) => state::decode(&bytes)?,
                    None => s,
                }
            }
        };
        if state.phase != Phase::Sunset && config.secret.is_none() {
            return Err(MigrationError::NoSecret);
        }
        let secret = config.secret.clone().filter(|_| state.phase != Phase::Sunset);
        let m = Self {
            store,
            clock,
            config,
            state: Arc::new(Mutex::new(state)),
            secret: Arc::new(Mutex::new(secret)),
            verifications: AtomicU64::new(0),
            last_verification: AtomicU64::new(0),
        };
        m.sunset_if_due().await?;
        Ok(m)
    }

    pub fn kid(&self) -> &str {
        &self.config.kid
    }

    pub fn state(&self) -> MigrationState {
        self.state.lock().map(|s| s.clone()).unwrap_or(MigrationState {
            phase: Phase::Sunset,
            started_at: Timestamp::from_unix(0),
            cutover_at: None,
            sunset_at: None,
        })
    }

    /// The HS256 key to sign access tokens with, in phase `hs256` only.
    pub fn signing_secret(&self) -> Option<Zeroizing<Vec<u8>>> {
        if self.state().phase != Phase::Hs256 {
            return None;
        }
        self.secret.lock().ok()?.clone()
    }

    /// Whether HS256 tokens still verify (phase `hs256`, or `asymmetric`
    /// before the sunset), including legacy ones kmsd never issued.
    pub fn accepts_hs256(&self) -> bool {
        let state = self.state();
        match state.phase {
            Phase::Hs256 => true,
            Phase::Asymmetric => state.sunset_at.is_some_and(|s| self.clock.now() < s),
            Phase::Sunset => false,
        }
    }

    /// Verifies an HS256 signature, counting it; false after sunset.
    pub fn verify(&self, kid: &str, signing_input: &[u8], signature: &[u8]) -> bool {
        let now = self.clock.now();
        if !self.accepts_hs256() || kid != self.config.kid {
            return false;
        }
        let Some(secret) = self.secret.lock().ok().and_then(|s| s.clone()) else { return false };
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let ok = aws_lc_rs::hmac::verify(&key, signing_input, signature).is_ok();
        if ok {
            self.verifications.fetch_add(1, Ordering::Relaxed);
            self.last_verification.store(u64::try_from(now.unix()).unwrap_or(0), Ordering::Relaxed);
        }
        ok
    }

    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The status document for the admin API.
    pub async fn status(&self) -> Result<serde_json::Value, MigrationError> {
        let s = self.state();
        let max_exp = self.max_hs256_exp().await?;
        let last = self.last_verification.load(Ordering::Relaxed);
        Ok(serde_json::json!({
            "state": s.phase.as_str(),
            "kid": self.config.kid,
            "startedAt": s.started_at.to_iso(),
            "cutoverAt": s.cutover_at.map(|t| t.to_iso()),
            "sunsetAt": s.sunset_at.map(|t| t.to_iso()),
            "latestHs256TokenExpiresAt": max_exp.map(|t| t.to_iso()),
            "legacyTtlCapSeconds": self.config.legacy_ttl_cap.as_secs(),
            "hs256Verifications": self.verifications(),
            "lastHs256VerificationAt": (last > 0).then(|| Timestamp::from_unix(i64::try_from(last).unwrap_or(0)).to_iso()),
        }))
    }

    async fn max_hs256_exp(&self) -> Result<Option<Timestamp>, MigrationError> {
        Ok(max_exp(self.store.read(|r| r.meta(META_MAX_EXP)).await?))
    }

    /// `hs256 -> asymmetric`, once the replacement key (published at
    /// `asymmetric_published_at`) has been in the JWKS for the publish lead.
    pub async fn advance(
        &self,
        asymmetric_published_at: Option<Timestamp>,
        actor: &str,
    ) -> Result<MigrationState, MigrationError> {
        let (lead, cap, skew) = (self.config.publish_lead, self.config.legacy_ttl_cap, self.config.skew);
        let next = self
            .step(actor, move |current, max_exp, now| {
                if current.phase != Phase::Hs256 {
                    return Err(MigrationError::Phase { action: "advance", phase: current.phase.as_str() });
                }
                let published = asymmetric_published_at.ok_or(MigrationError::NoAsymmetricKey)?;
                let allowed = published.plus(lead);
                if now < allowed {
                    return Err(MigrationError::TooEarly { published, allowed });
                }
                let sunset_at = sunset_at(now, max_exp, cap, skew);
                let detail = serde_json::json!({
                    "sunsetAt": sunset_at.to_iso(),
                    "latestHs256TokenExpiresAt": max_exp.map(|t| t.to_iso()),
                });
                let next = MigrationState {
                    phase: Phase::Asymmetric,
                    cutover_at: Some(now),
                    sunset_at: Some(sunset_at),
                    ..current
                };
                Ok(Some((next, AuditAction::MigrationAdvance, detail)))
            })
            .await?;
        changed(next)
    }

    /// `asymmetric -> hs256`, allowed until sunset.
    pub async fn rollback(&self, actor: &str) -> Result<MigrationState, MigrationError> {
        let next = self
            .step(actor, |current, _, now| {
                let open = current.phase == Phase::Asymmetric && current.sunset_at.is_some_and(|s| now < s);
                if !open {
                    return Err(MigrationError::Phase { action: "roll back", phase: current.phase.as_str() });
                }
                let next = MigrationState { phase: Phase::Hs256, cutover_at: None, sunset_at: None, ..current };
                Ok(Some((next, AuditAction::MigrationRollback, serde_json::Value::Null)))
            })
            .await?;
        changed(next)
    }

    /// Sunset at once (e.g. the secret leaked): HS256 is refused from now on.
    pub async fn sunset_now(&self, actor: &str) -> Result<MigrationState, MigrationError> {
        let next = self
            .step(actor, |current, _, now| {
                if current.phase == Phase::Sunset {
                    return Err(MigrationError::Phase { action: "sunset", phase: "sunset" });
                }
                let next = MigrationState { phase: Phase::Sunset, sunset_at: Some(now), ..current };
                Ok(Some((next, AuditAction::MigrationSunsetNow, serde_json::Value::Null)))
            })
            .await?;
        changed(next)
    }

    /// One step of the state machine: `decide` gets the stored state (and the
    /// latest HS256 exp) inside a write transaction and returns the next state
    /// with its audit action, or `None` for no change. redb admits one write
    /// transaction at a time, so the state read is current until the step
    /// commits: the write transaction is the lock that keeps two concurrent
    /// steps (an operator's rollback and the sunset timer) from both
    /// succeeding on the same state. Memory follows in the same blocking task.
    async fn step<F>(&self, actor: &str, decide: F) -> Result<Option<MigrationState>, MigrationError>
    where
        F: FnOnce(MigrationState, Option<Timestamp>, Timestamp) -> Result<Option<Step>, MigrationError>
            + Send
            + 'static,
    {
        let now = self.clock.now();
        let actor = actor.to_owned();
        let (state, secret) = (self.state.clone(), self.secret.clone());
        self.store
            .commit_then_apply(
                move |w| {
                    let stored = w.meta(META_STATE)?.ok_or_else(|| MigrationError::Corrupt("state missing".into()))?;
                    let current = state::decode(&stored)?;
                    let Some((next, action, detail)) = decide(current, max_exp(w.meta(META_MAX_EXP)?), now)? else {
                        return Ok(None);
                    };
                    w.put_meta(META_STATE, &state::encode(&next))?;
                    w.audit(AuditEvent::new(now, actor, action).target(next.phase.as_str()).detail(detail))?;
                    Ok(Some(next))
                },
                move |next| {
                    if let Some(next) = next {
                        take(&state, &secret, next.clone());
                    }
                },
            )
            .await
    }

    /// Takes in the stored state: another replica moved the cut-over (the
    /// change feed said so), or a periodic resync.
    pub async fn reload(&self) -> Result<(), MigrationError> {
        let (state, secret) = (self.state.clone(), self.secret.clone());
        self.store
            .read_then_apply(
                |r| r.meta(META_STATE),
                move |stored| match stored.as_deref().map(state::decode) {
                    Some(Ok(next)) => take(&state, &secret, next),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "stored migration state unreadable; kept the one in memory")
                    }
                    None => {}
                },
            )
            .await?;
        Ok(())
    }
}

/// Puts `next` in memory; at the sunset the HS256 secret is wiped.
fn take(state: &Mutex<MigrationState>, secret: &Mutex<Option<Zeroizing<Vec<u8>>>>, next: MigrationState) {
    // A poisoned lock still takes the committed state.
    if next.phase == Phase::Sunset {
        // Zeroizing wipes the bytes on drop.
        *secret.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
    *state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
}

/// A next state, its audit action and detail.
type Step = (MigrationState, AuditAction, serde_json::Value);

/// The state a step that always changes something moved to.
fn changed(next: Option<MigrationState>) -> Result<MigrationState, MigrationError> {
    next.ok_or_else(|| MigrationError::Corrupt("the step changed nothing".into()))
}

fn max_exp(stored: Option<Vec<u8>>) -> Option<Timestamp> {
    stored.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok()).map(Timestamp::from_unix)
}
