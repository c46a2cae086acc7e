//! Throttling of failed authentication, per listener and client address.
//!
//! API keys carry 256 bits of secret, so this does not stop guessing; it
//! bounds what failures cost. Each client has a bucket of failures per
//! listener (default 20, refilled at one every 3 s). While a client's bucket
//! is empty its failures are answered 429 instead of 401, and its store
//! lookups of keys never seen before take turns through the listener's
//! [`lookup_gate`](AuthLimiter::lookup_gate) (a few at a time), so one client
//! cannot occupy the blocking pool with lookups.
//!
//! What is never throttled is a success: a well-formed key with a good
//! checksum is always checked (memory, then one indexed store read; a key that
//! failed before is refused from memory, see `api_keys::cache`), and a valid
//! key authenticates whatever its client's failures. So one credential's
//! failures never lock out another, and the admin listener, which keeps its
//! own buckets, is never locked out by public traffic.
//!
//! Failures are aggregated for the audit log: [`AuthLimiter::drain`] yields one
//! count per client per interval instead of one row per request, and
//! [`report_failures`] writes them, once more at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::audit::{AuditAction, AuditEvent};
use crate::clock::{Clock, Timestamp};
use crate::storage::{StorageError, Store};

/// Store lookups a throttled client's requests may run at once, per listener.
const THROTTLED_LOOKUPS: usize = 2;

/// Which listener a request came in on; each has its own limiter state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    Public,
    Admin,
}

impl Listener {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Admin => "admin",
        }
    }
}

/// A client of one listener.
type Client = (Listener, IpAddr);

#[derive(Debug, Clone, Copy)]
pub struct LimitPolicy {
    pub burst: u32,
    pub refill_every: Duration,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self { burst: 20, refill_every: Duration::from_secs(3) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    updated: Timestamp,
}

#[derive(Default)]
struct State {
    buckets: HashMap<Client, Bucket>,
    unreported: HashMap<Client, u64>,
    limited: HashMap<Client, u64>,
}

pub struct AuthLimiter {
    policy: LimitPolicy,
    state: Mutex<State>,
    public_gate: Semaphore,
    admin_gate: Semaphore,
}

/// Failures of one client since the last drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    pub listener: Listener,
    pub client: IpAddr,
    pub failures: u64,
    pub rejected_while_limited: u64,
}

impl AuthLimiter {
    pub fn new(policy: LimitPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State::default()),
            public_gate: Semaphore::new(THROTTLED_LOOKUPS),
            admin_gate: Semaphore::new(THROTTLED_LOOKUPS),
        }
    }

    /// The permits a throttled client's store lookups on `listener` take turns for.
    pub fn lookup_gate(&self, listener: Listener) -> &Semaphore {
        match listener {
            Listener::Public => &self.public_gate,
            Listener::Admin => &self.admin_gate,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Timestamp) {
        let step = self.policy.refill_every.as_secs().max(1);
        let elapsed = u64::try_from(now.unix() - b.updated.unix()).unwrap_or(0);
        let add = u32::try_from(elapsed / step).unwrap_or(u32::MAX);
        if add > 0 {
            b.tokens = b.tokens.saturating_add(add).min(self.policy.burst);
            b.updated = b.updated.plus(Duration::from_secs(u64::from(add) * step));
        }
        if b.tokens == self.policy.burst {
            b.updated = now;
        }
    }

    /// `Err(retry_after)` if `client` has no failures left on `listener`.
    pub fn check(&self, listener: Listener, client: IpAddr, now: Timestamp) -> Result<(), Duration> {
        let client = (listener, client);
        let Ok(mut st) = self.state.lock() else { return Ok(()) };
        let Some(mut b) = st.buckets.get(&client).copied() else { return Ok(()) };
        self.refill(&mut b, now);
        st.buckets.insert(client, b);
        if b.tokens > 0 {
            return Ok(());
        }
        let next = b.updated.plus(Duration::from_secs(self.policy.refill_every.as_secs().max(1)));
        Err(now.until(next).max(Duration::from_secs(1)))
    }

    /// Records that a request of `client` failed while it was limited.
    pub fn rejected(&self, listener: Listener, client: IpAddr) {
        let client = (listener, client);
        if let Ok(mut st) = self.state.lock() {
            *st.limited.entry(client).or_default() += 1;
        }
    }

    /// Records one failed authentication by `client` on `listener`.
    pub fn failure(&self, listener: Listener, client: IpAddr, now: Timestamp) {
        let client = (listener, client);
        let Ok(mut st) = self.state.lock() else { return };
        let burst = self.policy.burst;
        let mut b = st.buckets.get(&client).copied().unwrap_or(Bucket { tokens: burst, updated: now });
        self.refill(&mut b, now);
        b.tokens = b.tokens.saturating_sub(1);
        st.buckets.insert(client, b);
        *st.unreported.entry(client).or_default() += 1;
        if st.buckets.len() > 100_000 {
            // Forget clients with full buckets; they carry no state worth keeping.
            st.buckets.retain(|_, b| b.tokens < burst);
        }
    }

    /// Takes the per-client counts accumulated since the last call.
    pub fn drain(&self) -> Vec<FailureReport> {
        let Ok(mut st) = self.state.lock() else { return Vec::new() };
        let unreported = std::mem::take(&mut st.unreported);
        let mut limited = std::mem::take(&mut st.limited);
        let mut out: Vec<FailureReport> = unreported
            .into_iter()
            .map(|(key, failures)| FailureReport {
                listener: key.0,
                client: key.1,
                failures,
                rejected_while_limited: limited.remove(&key).unwrap_or(0),
            })
            .collect();
        out.extend(limited.into_iter().map(|((listener, client), n)| FailureReport {
            listener,
            client,
            failures: 0,
            rejected_while_limited: n,
        }));
        out.sort_by_key(|r| (r.listener, r.client));
        out
    }
}

/// Writes the auth-failure counts, one audit event per client per `every`,
/// and a last time when `stop` fires.
pub async fn report_failures(
    limiter: Arc<AuthLimiter>,
    store: Store,
    clock: Arc<dyn Clock>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let reports = limiter.drain();
        if !reports.is_empty() {
            let now = clock.now();
            let written = store
                .write(move |w| {
                    for r in reports {
                        w.audit(
                            AuditEvent::new(now, "system", AuditAction::AuthFailures)
                                .target(r.client.to_string())
                                .detail(serde_json::json!({ "listener": r.listener.as_str(), "failures": r.failures,
                                                "rejectedWhileLimited": r.rejected_while_limited })),
                        )?;
                    }
                    Ok::<_, StorageError>(())
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "could not audit authentication failures");
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_limited_after_its_burst_and_recovers_over_time() {
        let lim = AuthLimiter::new(LimitPolicy { burst: 3, refill_every: Duration::from_secs(10) });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Timestamp::from_unix(1000);
        let public = Listener::Public;
        for _ in 0..3 {
            assert!(lim.check(public, a, t0).is_ok());
            lim.failure(public, a, t0);
        }
        assert_eq!(lim.check(public, a, t0), Err(Duration::from_secs(10)));
        lim.rejected(public, a);
        assert!(lim.check(public, b, t0).is_ok(), "other clients are unaffected");
        assert!(lim.check(Listener::Admin, a, t0).is_ok(), "the admin listener counts on its own");
        assert!(lim.check(public, a, t0.plus(Duration::from_secs(10))).is_ok(), "one failure refilled");
        let reports = lim.drain();
        assert_eq!(reports, [FailureReport { listener: public, client: a, failures: 3, rejected_while_limited: 1 }]);
        assert!(lim.drain().is_empty());
    }
}
