//! The open redb database behind a [`Store`](super::Store), and its recovery
//! from I/O faults. After an I/O error (a full disk, EIO) redb refuses every
//! later operation (`PreviousIo`) until the database is closed and opened
//! again; this module notices such an error, closes the database and opens it
//! again once no transaction is using it, with a bounded backoff between
//! attempts, and keeps what happened for health.
//!
//! Invariants: a transaction runs on the database it started on, holding a
//! shared hold on the slot for its whole length; a reopen takes the slot
//! exclusively, so no transaction ever sees a half-closed or half-opened
//! store. While a reopen is due but not yet possible, operations fail at once
//! with [`StorageError::Unavailable`] instead of touching redb, so a fault
//! never turns into a busy loop. Reopening changes nothing that was committed:
//! a failed commit stays failed and memory (updated only after a successful
//! commit) is still in step with the store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use redb::Database;

use super::StorageError;
use crate::clock::{Clock, SystemClock, Timestamp};

/// The first retry of a reopen comes this long after a failed one; each
/// further failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What kind of fault made the store fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// No space left on the store's filesystem (ENOSPC, EDQUOT).
    DiskFull,
    /// Any other I/O error from the filesystem.
    Io,
    /// PostgreSQL cannot be reached or used (connection lost, server gone,
    /// timed out, no connection free).
    Database,
}

impl FaultClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultClass::DiskFull => "disk_full",
            FaultClass::Io => "io_error",
            FaultClass::Database => "database_unavailable",
        }
    }

    fn of_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => FaultClass::DiskFull,
            _ => FaultClass::Io,
        }
    }

    /// The fault an error from redb stands for, if it is one (a corrupt
    /// record or a missing table is not: reopening would not change it).
    pub(super) fn of(e: &redb::Error) -> Option<Self> {
        match e {
            redb::Error::Io(io) => Some(Self::of_io(io)),
            redb::Error::PreviousIo | redb::Error::DatabaseClosed | redb::Error::LockPoisoned(_) => {
                Some(FaultClass::Io)
            }
            _ => None,
        }
    }
}

/// The store has failed and not written successfully since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// The most recent fault's class.
    pub class: FaultClass,
    /// When the first fault of this episode was seen.
    pub since: Timestamp,
    /// Faults seen in this episode.
    pub faults: u64,
}

/// The store's health, as [`Store::health`](super::Store::health) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageHealth {
    Ok,
    Failing(Failing),
}

/// One episode of faults, from the first fault until a write succeeds: what
/// health reports, for either engine.
#[derive(Default)]
pub(super) struct FaultLog {
    failing: Option<Failing>,
    /// When the latest fault was seen (see [`FaultLog::quiet_for`]).
    last_fault: Option<Instant>,
}

impl FaultLog {
    /// Counts a fault of `class`; true if it starts an episode.
    pub(super) fn record(&mut self, class: FaultClass) -> bool {
        let first = self.failing.is_none();
        let now = SystemClock.now();
        let (since, faults) = self.failing.as_ref().map_or((now, 0), |f| (f.since, f.faults));
        self.failing = Some(Failing { class, since, faults: faults + 1 });
        self.last_fault = Some(Instant::now());
        first
    }

    /// A write committed: the episode (if any) is over, and logged as such.
    pub(super) fn committed(&mut self) {
        if let Some(f) = self.failing.take() {
            tracing::info!(class = f.class.as_str(), since = %f.since, faults = f.faults, "store recovered");
        }
    }

    pub(super) fn health(&self) -> StorageHealth {
        self.failing.clone().map_or(StorageHealth::Ok, StorageHealth::Failing)
    }

    /// Whether the store is failing and no fault was seen for `quiet`.
    pub(super) fn quiet_for(&self, quiet: Duration) -> bool {
        self.failing.is_some() && self.last_fault.is_none_or(|t| t.elapsed() >= quiet)
    }
}

#[derive(Default)]
struct FaultState {
    log: FaultLog,
    /// The open database (if any) must be closed and opened again before use.
    poisoned: bool,
    next_attempt: Option<Instant>,
    /// The wait before the next reopen of this episode (zero: at once).
    backoff: Duration,
    reopens: u64,
}

pub(super) struct Engine {
    path: PathBuf,
    cache_bytes: usize,
    /// `None` once a fault closed the database and no reopen has succeeded.
    slot: RwLock<Option<Database>>,
    state: Mutex<FaultState>,
    /// `state.poisoned`, readable without the lock: the path of every
    /// transaction checks it, and it is false but after a fault.
    poisoned: AtomicBool,
}

/// A shared hold on the open database, for the length of one transaction.
pub(super) struct Held<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Held<'_> {
    pub(super) fn db(&self) -> Result<&Database, StorageError> {
        self.0.as_ref().ok_or(StorageError::Unavailable { class: FaultClass::Io.as_str() })
    }
}

impl Engine {
    pub(super) fn new(path: PathBuf, cache_bytes: usize, db: Database) -> Self {
        Self {
            path,
            cache_bytes,
            slot: RwLock::new(Some(db)),
            state: Mutex::default(),
            poisoned: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, FaultState> {
        // The state is a few plain fields, consistent after any single update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The database for one transaction: reopened first if a fault made that
    /// due; [`StorageError::Unavailable`] while it cannot be used.
    pub(super) fn hold(&self) -> Result<Held<'_>, StorageError> {
        let unavailable = || StorageError::Unavailable {
            class: self.state().log.failing.as_ref().map_or(FaultClass::Io, |f| f.class).as_str(),
        };
        if self.poisoned.load(Ordering::Acquire) {
            self.reopen_if_due();
            if self.state().poisoned {
                return Err(unavailable());
            }
        }
        match self.slot.try_read() {
            Ok(g) => Ok(Held(g)),
            // A reopen is in progress: fail now rather than queue behind it.
            Err(TryLockError::WouldBlock) => Err(unavailable()),
            Err(TryLockError::Poisoned(p)) => Ok(Held(p.into_inner())),
        }
    }

    /// Records `e` if it is a fault; returns it unchanged.
    pub(super) fn observe<E: Into<redb::Error>>(&self, e: E) -> StorageError {
        let e = e.into();
        if let Some(class) = FaultClass::of(&e) {
            self.fault(class, &e);
        }
        StorageError::Redb(e)
    }

    fn fault(&self, class: FaultClass, e: &dyn std::fmt::Display) {
        let mut s = self.state();
        let first = s.log.record(class);
        if !s.poisoned {
            // The first reopen of an episode is at once, later ones back off
            // (even after a reopen that worked, if the fault is still there).
            s.poisoned = true;
            self.poisoned.store(true, Ordering::Release);
            s.next_attempt = Some(Instant::now() + s.backoff);
        }
        drop(s);
        if first {
            tracing::error!(error = %e, class = class.as_str(), "store failing: it will be reopened once the fault clears");
        }
    }

    /// A write committed: the store works again.
    pub(super) fn committed(&self) {
        let mut s = self.state();
        if s.log.failing.is_some() {
            s.backoff = Duration::ZERO;
        }
        s.log.committed();
    }

    pub(super) fn health(&self) -> StorageHealth {
        self.state().log.health()
    }

    /// Whether the store is failing and no fault was seen for `quiet`.
    pub(super) fn failing_and_quiet_for(&self, quiet: Duration) -> bool {
        self.state().log.quiet_for(quiet)
    }

    /// Successful reopens so far.
    pub(super) fn reopens(&self) -> u64 {
        self.state().reopens
    }

    /// Closes and reopens the database if a fault made that due and its
    /// backoff has passed. Waits for the transactions in progress (they
    /// hold the slot); new ones fail at once meanwhile (see [`Self::hold`]).
    fn reopen_if_due(&self) {
        let due = {
            let s = self.state();
            s.poisoned && s.next_attempt.is_none_or(|t| Instant::now() >= t)
        };
        if !due {
            return;
        }
        // Nothing guarded by the slot is left half-changed by a panic:
        // it holds the database or nothing.
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        {
            let mut s = self.state();
            if !s.poisoned || s.next_attempt.is_some_and(|t| Instant::now() < t) {
                return; // another thread reopened it, or tried just now
            }
            // Until this attempt ends, nobody else tries.
            s.next_attempt = Some(Instant::now() + MAX_BACKOFF);
        }
        // Dropping closes it (redb ignores what it cannot flush).
        drop(slot.take());
        let opened = redb::Builder::new().set_cache_size(self.cache_bytes).open(&self.path);
        let mut s = self.state();
        s.backoff = (s.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        match opened {
            Ok(db) => {
                *slot = Some(db);
                s.poisoned = false;
                self.poisoned.store(false, Ordering::Release);
                s.next_attempt = None;
                s.reopens += 1;
                drop(s);
                tracing::info!(path = %self.path.display(), "store reopened after an I/O fault");
            }
            Err(e) => {
                s.next_attempt = Some(Instant::now() + s.backoff);
                let retry = s.backoff;
                let class = match &e {
                    redb::DatabaseError::Storage(redb::StorageError::Io(io)) => FaultClass::of_io(io),
                    _ => FaultClass::Io,
                };
                if let Some(f) = s.log.failing.as_mut() {
                    f.class = class;
                    f.faults += 1;
                }
                s.log.last_fault = Some(Instant::now());
                drop(s);
                tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "store reopen failed");
            }
        }
    }
}
