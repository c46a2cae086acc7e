//! How one transaction runs on each engine: the [`Backend`] a store is on,
//! and the blocking bodies of [`Store::read`] and [`Store::write`] (a
//! transaction begun, `f` run over it, committed or rolled back, its audit
//! events logged and observed only once it committed).

use std::sync::OnceLock;
use std::time::Duration;

use redb::ReadableDatabase;

use super::engine::Engine;
use super::postgres::engine::PgEngine;
use super::txn::Txn;
use super::{Ambient, AuditObserver, Reader, RecordKey, StorageError, StorageHealth, Store, Writer};
use crate::audit::AuditEvent;

/// The engine a store runs on.
pub(super) enum Backend {
    Redb(Engine),
    Pg(PgEngine),
}

impl Backend {
    pub(super) fn health(&self) -> StorageHealth {
        match self {
            Backend::Redb(e) => e.health(),
            Backend::Pg(e) => e.health(),
        }
    }

    pub(super) fn failing_and_quiet_for(&self, quiet: Duration) -> bool {
        match self {
            Backend::Redb(e) => e.failing_and_quiet_for(quiet),
            Backend::Pg(e) => e.failing_and_quiet_for(quiet),
        }
    }
}

impl Store {
    /// One read transaction; a fault it meets is recorded (see `engine`).
    pub(super) fn read_blocking<T>(
        engine: &Backend,
        mac: RecordKey,
        f: impl FnOnce(&Reader) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let engine = match engine {
            Backend::Redb(engine) => engine,
            Backend::Pg(pg) => {
                let reader = Reader { txn: Txn::Pg(pg.begin_read()?), mac };
                let out = f(&reader)?;
                if let Txn::Pg(txn) = reader.txn {
                    txn.commit()?;
                }
                return Ok(out);
            }
        };
        let held = engine.hold()?;
        let reader = Reader { txn: Txn::Read(held.db()?.begin_read().map_err(|e| engine.observe(e))?), mac };
        f(&reader).map_err(|e| match e {
            StorageError::Redb(e) => engine.observe(e),
            other => other,
        })
    }

    /// One write transaction. If `f` fails the transaction is aborted, which
    /// also tells whether the store met a fault on the way (redb refuses the
    /// abort then); a commit that fails is recorded as a fault of its kind.
    pub(super) fn write_blocking<T, E: From<StorageError>>(
        engine: &Backend,
        mac: RecordKey,
        (ambient, observer): (Ambient, &OnceLock<AuditObserver>),
        f: impl FnOnce(&mut Writer) -> Result<T, E>,
    ) -> Result<T, E> {
        // The redb database is held for the whole transaction.
        let held;
        let txn = match engine {
            Backend::Redb(engine) => {
                held = engine.hold()?;
                Txn::Write(Box::new(held.db()?.begin_write().map_err(|e| engine.observe(e))?))
            }
            Backend::Pg(pg) => Txn::Pg(pg.begin_write(ambient.fence.as_ref())?),
        };
        let mut w =
            Writer { r: Reader { txn, mac }, context: ambient.context, audited: Vec::new(), changes: Vec::new() };
        let out = f(&mut w);
        match (out, w.r.txn, engine) {
            (Ok(out), Txn::Write(txn), Backend::Redb(engine)) => {
                txn.commit().map_err(|e| engine.observe(e))?;
                engine.committed();
                Self::committed(&w.audited, observer);
                Ok(out)
            }
            (Ok(out), Txn::Pg(txn), _) => {
                txn.announce(&w.changes)?;
                txn.commit()?;
                Self::committed(&w.audited, observer);
                Ok(out)
            }
            (Err(e), Txn::Write(txn), Backend::Redb(engine)) => {
                if let Err(abort) = txn.abort() {
                    engine.observe(abort);
                }
                Err(e)
            }
            (Err(e), Txn::Pg(txn), _) => {
                // A rollback the server did not answer closes the connection,
                // which rolls back as well.
                let _ = txn.rollback();
                Err(e)
            }
            (_, _, _) => Err(StorageError::Engine("a write transaction of another engine".into()).into()),
        }
    }

    /// Logs and observes the audit events of a committed transaction.
    fn committed(audited: &[AuditEvent], observer: &OnceLock<AuditObserver>) {
        for event in audited {
            crate::audit::log_committed(event);
            if let Some(observe) = observer.get() {
                observe(event);
            }
        }
    }
}
