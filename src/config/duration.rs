//! Durations as the config writes them.

use std::time::Duration;

use super::file::DurationText;

/// Parses `"90s"`, `"15m"`, `"2h"`, `"31d"` or a plain number of seconds.
pub fn parse(text: &DurationText) -> Result<Duration, String> {
    let s = match text {
        DurationText::Seconds(n) => return Ok(Duration::from_secs(*n)),
        DurationText::Text(s) => s.trim(),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. \"90s\", \"15m\", \"2h\", \"31d\")"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(factor).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too large"))
}

/// Renders a duration the way the config writes it, choosing the largest
/// whole unit: `3600s` -> `"1h"`, `90s` -> `"90s"`.
pub fn render(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 && s > 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Duration, String> {
        parse(&DurationText::Text(s.into()))
    }

    #[test]
    fn units_parse_and_render() {
        assert_eq!(p("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(p("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(p("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(p("31d"), Ok(Duration::from_secs(31 * 86_400)));
        assert_eq!(p("42"), Ok(Duration::from_secs(42)));
        assert!(p("1w").is_err());
        assert!(p("h").is_err());
        assert_eq!(render(Duration::from_secs(3600)), "1h");
        assert_eq!(render(Duration::from_secs(90)), "90s");
        assert_eq!(render(Duration::from_secs(25 * 3600)), "25h");
    }
}
