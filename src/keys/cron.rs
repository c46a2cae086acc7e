//! Rotation schedules: cron patterns (UTC, optional seconds field), evaluated
//! against [`Timestamp`]s.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::clock::Timestamp;

#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: croner::Cron,
    text: String,
}

/// Two schedules are the same if they were parsed from the same pattern.
impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronSchedule {}

impl CronSchedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let cron = croner::Cron::from_str(text).map_err(|e| format!("{text:?} is not a cron pattern: {e}"))?;
        Ok(Self { cron, text: text.to_owned() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start: DateTime<Utc> = DateTime::from_timestamp(t.unix(), 0)?;
        self.cron.find_next_occurrence(&start, false).ok().map(|d| Timestamp::from_unix(d.timestamp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_and_second_scale_patterns() {
        let weekly = CronSchedule::parse("0 0 4 * * Mon").unwrap();
        // 2026-11-29 is a Sunday; the next Monday 04:00 UTC is 2026-11-30.
        let sunday = Timestamp::parse_iso("2026-11-29T19:36:42Z").unwrap();
        assert_eq!(weekly.next_after(sunday).unwrap().to_iso(), "2026-11-30T04:00:00.000Z");
        let every3 = CronSchedule::parse("*/3 * * * * *").unwrap();
        assert_eq!(every3.next_after(Timestamp::from_unix(1_000_000_000)), Some(Timestamp::from_unix(1_000_000_002)));
        assert!(CronSchedule::parse("every tuesday").is_err());
    }
}
