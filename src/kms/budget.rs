//! kmsd's own budget of KMS Sign calls: a token bucket per quota class, so
//! kmsd answers "retry after" itself instead of running into AWS's
//! `ThrottlingException` (AWS counts RSA and ECC signing against separate
//! per-account quotas). Time is passed in; nothing here reads a clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A budget: `rate` calls per second on average, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub rate: u32,
    pub burst: u32,
}

#[derive(Debug)]
struct Level {
    tokens: f64,
    at: Instant,
}

/// A token bucket; starts full.
#[derive(Debug)]
pub struct TokenBucket {
    budget: Budget,
    level: Mutex<Option<Level>>,
}

impl TokenBucket {
    pub fn new(budget: Budget) -> Self {
        Self { budget, level: Mutex::new(None) }
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.budget.rate.max(1));
        let burst = f64::from(self.budget.burst.max(1));
        let Ok(mut guard) = self.level.lock() else { return Ok(()) };
        let level = guard.get_or_insert(Level { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(level.at).as_secs_f64();
        level.tokens = (level.tokens + elapsed * rate).min(burst);
        level.at = level.at.max(now);
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - level.tokens) / rate).max(Duration::from_millis(1)))
        }
    }
}

impl TokenBucket {
    /// How many calls the bucket would allow at `now` (for `/metrics`); takes none.
    pub fn available(&self, now: Instant) -> f64 {
        let burst = f64::from(self.budget.burst.max(1));
        let Ok(guard) = self.level.lock() else { return 0.0 };
        match guard.as_ref() {
            None => burst,
            Some(level) => {
                let elapsed = now.saturating_duration_since(level.at).as_secs_f64();
                (level.tokens + elapsed * f64::from(self.budget.rate.max(1))).min(burst)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_ms(r: Result<(), Duration>) -> Option<u128> {
        r.err().map(|d| d.as_micros().div_ceil(1000))
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_refills_at_the_rate() {
        let bucket = TokenBucket::new(Budget { rate: 4, burst: 2 });
        let t0 = Instant::now();
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(wait_ms(bucket.try_take(t0)), Some(250));
        assert_eq!(wait_ms(bucket.try_take(t0 + Duration::from_millis(100))), Some(150));
        assert_eq!(bucket.try_take(t0 + Duration::from_millis(260)), Ok(()));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.try_take(later).is_ok() && bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn available_shows_the_level_without_taking() {
        let bucket = TokenBucket::new(Budget { rate: 4, burst: 2 });
        let t0 = Instant::now();
        assert_eq!(bucket.available(t0), 2.0);
        bucket.try_take(t0).unwrap();
        assert_eq!(bucket.available(t0), 1.0);
        assert_eq!(bucket.available(t0), 1.0, "looking takes nothing");
        assert_eq!(bucket.available(t0 + Duration::from_millis(125)), 1.5);
    }

    #[test]
    fn an_earlier_instant_does_not_refill() {
        let bucket = TokenBucket::new(Budget { rate: 1, burst: 1 });
        let t0 = Instant::now() + Duration::from_secs(5);
        assert!(bucket.try_take(t0).is_ok());
        assert!(bucket.try_take(t0 - Duration::from_secs(5)).is_err());
        assert!(bucket.try_take(t0).is_err());
    }
}
