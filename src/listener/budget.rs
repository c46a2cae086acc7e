//! File descriptors: at start the soft `RLIMIT_NOFILE` is raised to the hard
//! limit, and the connection caps are sized from the result so that both
//! listeners together never hold more than four fifths of the descriptors;
//! the rest stays for the store, the KMS and log sockets and the runtime.
//! Each listener has its own cap, so a full public listener can never take
//! the admin listener's descriptors.

use std::io;

use super::ConnectionLimits;

/// The connection cap of each listener and the limit they were sized from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    pub fd_limit: u64,
    pub public: usize,
    pub admin: usize,
}

impl Budgets {
    /// Raises the process's descriptor limit, sizes the caps from it and logs
    /// both. A limit that cannot be read is taken as 1024 (systemd's default).
    pub fn for_process(limits: &ConnectionLimits) -> Budgets {
        let fd_limit = match raise_fd_limit() {
            Ok((before, after)) => {
                if before != after {
                    tracing::info!(
                        from = before,
                        to = after,
                        "raised the soft file-descriptor limit to the hard limit"
                    );
                }
                after
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the file-descriptor limit; sizing for 1024");
                1024
            }
        };
        let budgets = Budgets::new(fd_limit, limits.public_max_connections, limits.admin_max_connections);
        if limits.public_max_connections.is_some_and(|p| p > budgets.public)
            || limits.admin_max_connections > budgets.admin
        {
            tracing::warn!(
                fd_limit,
                public = ?limits.public_max_connections,
                admin = limits.admin_max_connections,
                "configured connection caps exceed what the file-descriptor limit allows; lowered"
            );
        }
        tracing::info!(fd_limit, public = budgets.public, admin = budgets.admin, "connection caps");
        budgets
    }

    /// The caps for `fd_limit` descriptors: the admin cap (at most half of
    /// the usable four fifths), then the public cap (what is left, or less if
    /// configured). Never zero.
    pub fn new(fd_limit: u64, public: Option<usize>, admin: usize) -> Budgets {
        let usable = usize::try_from(fd_limit - fd_limit / 5).unwrap_or(usize::MAX);
        let admin = admin.min(usable / 2).max(1);
        let room = usable.saturating_sub(admin).max(1);
        let public = public.map_or(room, |p| p.min(room));
        Budgets { fd_limit, public, admin }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after).
#[cfg(unix)]
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given, which we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no RLIMIT_NOFILE on this platform"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_a_fifth_of_the_descriptors_and_the_admin_share_is_separate() {
        // systemd's default soft limit: 820 usable, 256 for admin, the rest public.
        assert_eq!(Budgets::new(1024, None, 256), Budgets { fd_limit: 1024, public: 564, admin: 256 });
        assert_eq!(Budgets::new(1_048_576, None, 256).public, 838_605);
        // A configured public cap is kept when it fits, lowered when it does not.
        assert_eq!(Budgets::new(1024, Some(100), 256).public, 100);
        assert_eq!(Budgets::new(1024, Some(5000), 256).public, 564);
        // A tiny limit still leaves both listeners something, admin at most half.
        assert_eq!(Budgets::new(64, None, 256), Budgets { fd_limit: 64, public: 26, admin: 26 });
        assert_eq!(Budgets::new(0, None, 256), Budgets { fd_limit: 0, public: 1, admin: 1 });
        // RLIM_INFINITY does not overflow.
        assert!(Budgets::new(u64::MAX, None, 256).public > 1 << 40);
    }

    #[test]
    fn raising_the_limit_leaves_soft_at_hard() {
        let (before, after) = raise_fd_limit().unwrap();
        assert!(after >= before);
        assert_eq!(raise_fd_limit().unwrap(), (after, after));
    }
}
