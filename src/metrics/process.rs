//! The standard `process_*` figures of this process, read from `/proc` at
//! scrape time (Linux; elsewhere nothing is reported): open and maximum file
//! descriptors, resident memory, CPU seconds and start time. A figure that
//! cannot be read is left out, never guessed.

/// What `/proc` says about this process now.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFigures {
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    pub fn read() -> Self {
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| max_open_files(&t));
        let (ticks, page) = (sysconf(libc::_SC_CLK_TCK), sysconf(libc::_SC_PAGESIZE));
        let stat = std::fs::read_to_string("/proc/self/stat").ok().and_then(|t| parse_stat(&t));
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| boot_time(&t));
        let (cpu_seconds, resident_bytes, start_time_seconds) = match (stat, ticks) {
            (Some(s), Some(hz)) => (
                Some((s.utime + s.stime) as f64 / hz),
                page.map(|p| s.rss_pages as f64 * p),
                boot.map(|b| b as f64 + s.start_ticks as f64 / hz),
            ),
            _ => (None, None, None),
        };
        Self { open_fds, max_fds, resident_bytes, cpu_seconds, start_time_seconds }
    }
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as f64)
}

#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    rss_pages: u64,
}

/// Fields 14, 15, 22 and 24 of `/proc/self/stat` (counted after the command
/// name, which may hold spaces and parentheses, so the split is at the last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat { utime: field(14)?, stime: field(15)?, start_ticks: field(22)?, rss_pages: field(24)? })
}

fn boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

fn max_open_files(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let text = "1234 (k (m) d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 9000 1000000 512 18446744073709551615";
        assert_eq!(parse_stat(text), Some(Stat { utime: 250, stime: 50, start_ticks: 9000, rss_pages: 512 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1_700_000_000));
        let limits =
            "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
    }

    #[test]
    fn this_process_has_figures_on_linux() {
        let f = ProcessFigures::read();
        if cfg!(target_os = "linux") {
            assert!(f.open_fds.is_some_and(|n| n >= 3.0), "{f:?}");
            assert!(f.resident_bytes.is_some_and(|b| b > 1_000_000.0), "{f:?}");
            assert!(f.start_time_seconds.is_some_and(|t| t > 1_600_000_000.0), "{f:?}");
            assert!(f.cpu_seconds.is_some(), "{f:?}");
        }
    }
}
