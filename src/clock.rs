//! Time as the program sees it: a [`Timestamp`] (whole UNIX seconds, the
//! resolution of JWT `iat`/`exp`) and the [`Clock`] capability that yields it.
//!
//! Domain logic never reads the system clock; it takes a `now` parameter or an
//! `Arc<dyn Clock>`, so every state derivation can be tested at fixed instants.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant in whole seconds since the UNIX epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(secs(d)))
    }

    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(secs(d)))
    }

    /// Whole seconds from `self` until `later`, zero if `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_secs(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    /// ISO-8601 UTC with milliseconds, as the relayauth API writes timestamps
    /// (`2026-11-29T19:36:42.000Z`).
    pub fn to_iso(self) -> String {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        let s = self.0.rem_euclid(86_400);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", s / 3600, (s / 60) % 60, s % 60)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_iso())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The capability to tell the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Milliseconds since the UNIX epoch, for what must not be rounded to
    /// whole seconds (how long a verifier may cache the JWKS). Clocks that
    /// only know seconds answer the start of the current second.
    fn now_millis(&self) -> i64 {
        self.now().unix().saturating_mul(1000)
    }
}

/// Whole seconds from `now_ms` (milliseconds) until `later`, rounded down:
/// a cache lifetime that never runs past `later` (zero if it has passed).
pub fn whole_seconds_until(now_ms: i64, later: Timestamp) -> Duration {
    let ms = later.unix().saturating_mul(1000).saturating_sub(now_ms);
    Duration::from_secs(u64::try_from(ms.div_euclid(1000)).unwrap_or(0))
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    fn now_millis(&self) -> i64 {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to: tests (and the in-process test
/// harness) set the time and advance it instead of sleeping. Millisecond
/// resolution, like the system clock; safe to share between tasks.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    /// A clock that reads `at` until it is moved.
    pub fn at(at: Timestamp) -> Self {
        Self { millis: std::sync::atomic::AtomicI64::new(at.unix().saturating_mul(1000)) }
    }

    /// A clock that starts at the system clock's current millisecond.
    pub fn starting_now() -> Self {
        Self { millis: std::sync::atomic::AtomicI64::new(SystemClock.now_millis()) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the clock to `at` (the start of that second).
    pub fn set(&self, at: Timestamp) {
        self.millis.store(at.unix().saturating_mul(1000), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_millis().div_euclid(1000))
    }

    fn now_millis(&self) -> i64 {
        self.millis.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_format_matches_the_relayauth_shape() {
        assert_eq!(Timestamp::from_unix(0).to_iso(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_unix(1_795_981_002).to_iso(), "2026-11-29T19:36:42.000Z");
        assert_eq!(Timestamp::from_unix(951_782_400).to_iso(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let t = Timestamp::from_unix(100);
        assert_eq!(t.until(Timestamp::from_unix(40)), Duration::ZERO);
        assert_eq!(t.until(Timestamp::from_unix(160)), Duration::from_secs(60));
    }

    #[test]
    fn whole_seconds_until_rounds_down_at_sub_second_instants() {
        let change = Timestamp::from_unix(100);
        assert_eq!(whole_seconds_until(99_600, change), Duration::ZERO, "0.4 s left: a 1 s cache would outlive it");
        assert_eq!(whole_seconds_until(98_200, change), Duration::from_secs(1));
        assert_eq!(whole_seconds_until(99_000, change), Duration::from_secs(1));
        assert_eq!(whole_seconds_until(100_000, change), Duration::ZERO);
        assert_eq!(whole_seconds_until(100_500, change), Duration::ZERO, "past");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::at(Timestamp::from_unix(1_000));
        assert_eq!((c.now(), c.now_millis()), (Timestamp::from_unix(1_000), 1_000_000));
        c.advance(Duration::from_millis(1_500));
        assert_eq!((c.now(), c.now_millis()), (Timestamp::from_unix(1_001), 1_001_500));
        c.set(Timestamp::from_unix(50));
        assert_eq!(c.now(), Timestamp::from_unix(50));
    }

    #[test]
    fn the_system_clock_agrees_with_itself_to_the_second() {
        let c = SystemClock;
        let (s, ms) = (c.now().unix(), c.now_millis());
        assert!((ms / 1000 - s).abs() <= 1, "{s} vs {ms}");
    }
}

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC); fractional seconds are dropped.
    pub fn parse_iso(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let body = text.strip_suffix('Z')?;
        let (main, frac) = body.split_once('.').unwrap_or((body, "0"));
        if main.len() != 19 || !frac.bytes().all(|c| c.is_ascii_digit()) || frac.is_empty() {
            return None;
        }
        let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if seps.iter().any(|(i, c)| b[*i] != *c) {
            return None;
        }
        let num = |r: std::ops::Range<usize>| main.get(r)?.parse::<i64>().ok();
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
            return None;
        }
        let t = Self(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss);
        // Reject dates such as 02-31 that do not round-trip.
        (t.to_iso()[..10] == main[..10]).then_some(t)
    }
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod iso_tests {
    use super::*;

    #[test]
    fn iso_parsing_round_trips_and_rejects_nonsense() {
        for s in ["1970-01-01T00:00:00.000Z", "2026-11-29T19:36:42.000Z", "2000-02-29T23:59:59.000Z"] {
            assert_eq!(Timestamp::parse_iso(s).map(Timestamp::to_iso).as_deref(), Some(s));
        }
        assert_eq!(Timestamp::parse_iso("2026-11-29T19:36:42Z"), Timestamp::parse_iso("2026-11-29T19:36:42.999Z"));
        for bad in ["2026-02-30T00:00:00Z", "2026-11-29 19:36:42Z", "2026-11-29T19:36:42", "x", "2026-13-01T00:00:00Z"]
        {
            assert_eq!(Timestamp::parse_iso(bad), None, "{bad}");
        }
    }
}
