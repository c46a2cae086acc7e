//! Throttling of failed authentication, per client address.
//!
//! Each client has a bucket of failures (default 20, refilled at one every 3
//! s). While a client's bucket is empty, its requests that do not carry a
//! known-good credential are answered 429 before any store lookup. The limit is
//! per client, never per key, so an attacker can exhaust only their own
//! budget: a valid key presented from elsewhere — or one already seen to work
//! from anywhere — still gets through.
//!
//! Failures are aggregated for the audit log: [`AuthLimiter::drain`] yields one
//! count per client per interval instead of one row per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;

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
    buckets: HashMap<IpAddr, Bucket>,
    unreported: HashMap<IpAddr, u64>,
    limited: HashMap<IpAddr, u64>,
}

pub struct AuthLimiter {
    policy: LimitPolicy,
    state: Mutex<State>,
}

/// Failures of one client since the last drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    pub client: IpAddr,
    pub failures: u64,
    pub rejected_while_limited: u64,
}

impl AuthLimiter {
    pub fn new(policy: LimitPolicy) -> Self {
        Self { policy, state: Mutex::new(State::default()) }
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

    /// `Err(retry_after)` if `client` has no failures left.
    pub fn check(&self, client: IpAddr, now: Timestamp) -> Result<(), Duration> {
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

    /// Records that a request of `client` was refused because it is limited.
    pub fn rejected(&self, client: IpAddr) {
        if let Ok(mut st) = self.state.lock() {
            *st.limited.entry(client).or_default() += 1;
        }
    }

    /// Records one failed authentication by `client`.
    pub fn failure(&self, client: IpAddr, now: Timestamp) {
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
            .map(|(client, failures)| FailureReport {
                client,
                failures,
                rejected_while_limited: limited.remove(&client).unwrap_or(0),
            })
            .collect();
        out.extend(limited.into_iter().map(|(client, n)| FailureReport {
            client,
            failures: 0,
            rejected_while_limited: n,
        }));
        out.sort_by_key(|r| r.client);
        out
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
        for _ in 0..3 {
            assert!(lim.check(a, t0).is_ok());
            lim.failure(a, t0);
        }
        assert_eq!(lim.check(a, t0), Err(Duration::from_secs(10)));
        lim.rejected(a);
        assert!(lim.check(b, t0).is_ok(), "other clients are unaffected");
        assert!(lim.check(a, t0.plus(Duration::from_secs(10))).is_ok(), "one failure refilled");
        let reports = lim.drain();
        assert_eq!(reports, [FailureReport { client: a, failures: 3, rejected_while_limited: 1 }]);
        assert!(lim.drain().is_empty());
    }
}
