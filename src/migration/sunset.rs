//! The sunset: computed from real token lifetimes ([`sunset_at`]) and
//! fired by the timer once it passes (on the leader), or at start.

use std::sync::Arc;
use std::time::Duration;

use super::{Migration, MigrationError, MigrationState, Phase};
use crate::audit::AuditAction;
use crate::clock::Timestamp;

impl Migration {
    /// The sunset timer: every `every`, fires the sunset once `sunset_at`
    /// passes (startup fires an overdue one before serving), until `stop`.
    pub async fn run_sunset_timer(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // the first tick is immediate; startup already checked
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.sunset_if_due().await {
                Ok(true) => {
                    tracing::warn!("HS256 sunset reached: the legacy secret is wiped and HS256 tokens are refused");
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "HS256 sunset could not be recorded; will retry"),
            }
        }
    }

    /// The timer: sunset once `sunset_at` has passed (also called at startup).
    pub async fn sunset_if_due(&self) -> Result<bool, MigrationError> {
        let due = |s: &MigrationState, now| s.phase == Phase::Asymmetric && s.sunset_at.is_some_and(|at| now >= at);
        // Memory shows every committed step, so when it says "not due" no
        // transaction is needed; the decision itself is made on the stored state.
        if !due(&self.state(), self.clock.now()) {
            return Ok(false);
        }
        let next = self
            .step("scheduler", move |current, _, now| {
                let next = MigrationState { phase: Phase::Sunset, ..current.clone() };
                Ok(due(&current, now).then_some((next, AuditAction::MigrationSunset, serde_json::Value::Null)))
            })
            .await?;
        Ok(next.is_some())
    }
}

/// DESIGN.md: `max(latest HS256 exp kmsd issued, cutover + legacy cap) + skew`.
pub fn sunset_at(
    cutover: Timestamp,
    latest_exp: Option<Timestamp>,
    legacy_ttl_cap: Duration,
    skew: Duration,
) -> Timestamp {
    latest_exp.unwrap_or(cutover).max(cutover.plus(legacy_ttl_cap)).plus(skew)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sunset_covers_both_kmsds_own_tokens_and_the_legacy_cap() {
        let t = Timestamp::from_unix;
        let (cap, skew) = (Duration::from_secs(3600), Duration::from_secs(60));
        assert_eq!(sunset_at(t(1000), None, cap, skew), t(4660));
        assert_eq!(sunset_at(t(1000), Some(t(2000)), cap, skew), t(4660));
        assert_eq!(sunset_at(t(1000), Some(t(9000)), cap, skew), t(9060));
    }
}
