//! The leader lease: one row per lease name in `leases` with its holder, an
//! expiry in server time and a fencing epoch that grows by one each time the
//! lease changes hands.
//!
//! - [`acquire`], [`renew`], [`release`]: one statement each. Read-modify-
//!   write guard: the row lock that `INSERT ... ON CONFLICT DO UPDATE` and
//!   `UPDATE` take, with the condition (expired, or still ours) re-checked on
//!   the locked row, so of two contenders exactly one gets it.
//! - [`Fence::check`]: inside the caller's transaction, `SELECT ... FOR SHARE`
//!   on the lease row, conditional on the caller's holder and epoch and an
//!   unexpired lease. The share lock makes a takeover (an `UPDATE` of that row)
//!   wait for the fenced transaction to end, so a write either commits while
//!   its epoch is current or is refused ([`PgError::Fenced`]); a paused old
//!   leader that wakes up cannot apply a stale plan.
//! - [`Elector`]: the background task. It holds a dedicated session, tries to
//!   acquire every `renew_every`, renews while it leads, and publishes
//!   leadership on a watch channel. It steps down at once when its session
//!   ends, when a renewal fails, or when its own deadline passes: the deadline
//!   is measured from just before the statement that set the expiry was sent,
//!   so it falls before the server's expiry and no one else can hold the
//!   lease while this replica still believes it does. A leader whose session
//!   failed waits two lease times before contending again.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::{Client, GenericClient};

use super::{connect_raw, PgError, PgUrl};

/// Proof of leadership: the lease, who holds it and in which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub epoch: i64,
}

/// Takes `lease` for `holder` for `ttl` if it is free (never held, released
/// or expired). `None`: someone else holds it.
pub async fn acquire(
    db: &impl GenericClient,
    lease: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Fence>, PgError> {
    let row = db
        .query_opt(
            "INSERT INTO leases (name, holder, epoch, expires_at)
             VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 second')
             ON CONFLICT (name) DO UPDATE
                SET holder = EXCLUDED.holder, epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at
              WHERE leases.holder IS NULL OR leases.expires_at <= clock_timestamp()
             RETURNING epoch",
            &[&lease, &holder, &ttl.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|r| Fence { lease: lease.into(), holder: holder.into(), epoch: r.get(0) }))
}

/// Extends the lease by `ttl` from now if `fence` still holds it and it has
/// not expired. `false`: lost (expired, taken over or released).
pub async fn renew(db: &impl GenericClient, fence: &Fence, ttl: Duration) -> Result<bool, PgError> {
    let n = db
        .execute(
            "UPDATE leases SET expires_at = clock_timestamp() + $4::float8 * interval '1 second'
              WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()",
            &[&fence.lease, &fence.holder, &fence.epoch, &ttl.as_secs_f64()],
        )
        .await?;
    Ok(n == 1)
}

/// Gives the lease up now, so another replica need not wait for it to expire.
pub async fn release(db: &impl GenericClient, fence: &Fence) -> Result<(), PgError> {
    db.execute(
        "UPDATE leases SET holder = NULL, expires_at = clock_timestamp()
          WHERE name = $1 AND holder = $2 AND epoch = $3",
        &[&fence.lease, &fence.holder, &fence.epoch],
    )
    .await?;
    Ok(())
}

/// The lease of the replica that runs the background work (rotation, GC,
/// the sunset timer): while it is held, some replica is running.
pub const LEADER_LEASE: &str = "scheduler";

/// Who holds `lease` now (a holder, and not expired by the server's clock),
/// and in which epoch, if anyone; `None` also for a database without kmsd's
/// schema. Reads only.
pub async fn holder(db: &impl GenericClient, lease: &str) -> Result<Option<(String, i64)>, PgError> {
    let migrated: bool = db.query_one("SELECT to_regclass('leases') IS NOT NULL", &[]).await?.get(0);
    if !migrated {
        return Ok(None);
    }
    let row = db
        .query_opt(
            "SELECT holder, epoch FROM leases
              WHERE name = $1 AND holder IS NOT NULL AND expires_at > clock_timestamp()",
            &[&lease],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

impl Fence {
    /// Refuses the caller's transaction unless this fence is still current;
    /// if it is, holds a share lock on the lease row until the transaction
    /// ends, so no takeover can commit in between (see the module docs).
    pub async fn check(&self, txn: &impl GenericClient) -> Result<(), PgError> {
        let row = txn
            .query_opt(
                "SELECT 1 FROM leases
                  WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
                  FOR SHARE",
                &[&self.lease, &self.holder, &self.epoch],
            )
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(PgError::Fenced { lease: self.lease.clone(), holder: self.holder.clone(), epoch: self.epoch }),
        }
    }
}

tokio::task_local! {
    static FENCE: Fence;
}

/// Runs `f` as leader under `fence`: every store write transaction that `f`
/// makes on PostgreSQL checks the fence first ([`Fence::check`]) and is
/// refused once the lease has moved on. Work spawned onto another task is
/// not covered.
pub async fn fenced<F: std::future::Future>(fence: Fence, f: F) -> F::Output {
    FENCE.scope(fence, f).await
}

/// The fence of the leader work running on this task, if any.
pub fn current() -> Option<Fence> {
    FENCE.try_with(Fence::clone).ok()
}

/// Runs `sql` in its own transaction, only if `fence` is current; returns the
/// rows it changed.
pub async fn fenced_execute(
    client: &mut Client,
    fence: &Fence,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, PgError> {
    let txn = client.transaction().await?;
    fence.check(&txn).await?;
    let n = txn.execute(sql, params).await?;
    txn.commit().await?;
    Ok(n)
}

#[derive(Debug, Clone)]
pub struct ElectorConfig {
    pub lease: String,
    /// This replica's name, unique among replicas.
    pub holder: String,
    pub ttl: Duration,
    /// How often a follower tries to acquire and a leader renews (well under `ttl`).
    pub renew_every: Duration,
}

/// The running election; dropping it stops the task (the lease then expires).
pub struct Elector {
    leadership: watch::Receiver<Option<Fence>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Elector {
    pub fn spawn(url: PgUrl, config: ElectorConfig) -> Self {
        let (tx, leadership) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(url, config, tx, stopped));
        Self { leadership, stop: Some(stop), task }
    }

    /// `Some(fence)` while this replica leads; it changes to `None` the
    /// moment leadership is lost. Background work watches it.
    pub fn leadership(&self) -> watch::Receiver<Option<Fence>> {
        self.leadership.clone()
    }

    /// Stops electing and releases the lease if held.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(url: PgUrl, c: ElectorConfig, tx: watch::Sender<Option<Fence>>, mut stopped: oneshot::Receiver<()>) {
    let name = format!("kmsd-lease-{}", c.holder);
    loop {
        let (client, connection) = match connect_raw(&url, &name).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, lease = %c.lease, "lease session cannot connect; not leading");
                tokio::select! {
                    _ = tokio::time::sleep(c.renew_every) => continue,
                    _ = &mut stopped => return,
                }
            }
        };
        let mut session = tokio::spawn(connection);
        let stop = serve_session(&client, &c, &tx, &mut session, &mut stopped).await;
        // Whatever ended the session, this replica no longer leads.
        let held = tx.send_replace(None);
        if stop {
            if let Some(fence) = held {
                if let Err(e) = release(&client, &fence).await {
                    tracing::warn!(error = %e, lease = %c.lease, "lease not released; it will expire");
                }
            }
            return;
        }
        session.abort();
        // A leader whose session failed stays out for two lease times, so
        // that a healthy replica takes over rather than a flapping one.
        let rest = if held.is_some() { c.ttl * 2 } else { c.renew_every };
        tokio::select! {
            _ = tokio::time::sleep(rest) => {}
            _ = &mut stopped => return,
        }
    }
}

/// Acquires and renews on one session until it ends (`false`) or the elector
/// is stopped (`true`).
async fn serve_session(
    client: &Client,
    c: &ElectorConfig,
    tx: &watch::Sender<Option<Fence>>,
    session: &mut tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    stopped: &mut oneshot::Receiver<()>,
) -> bool {
    let mut deadline: Option<Instant> = None;
    let mut next = Instant::now();
    loop {
        let until = deadline;
        let expiry = async move {
            match until {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut *stopped => return true,
            _ = &mut *session => {
                tracing::warn!(lease = %c.lease, "lease session lost; stepping down");
                return false;
            }
            _ = expiry => {
                tracing::warn!(lease = %c.lease, "lease not renewed in time; stepping down");
                deadline = None;
                tx.send_replace(None);
            }
            _ = tokio::time::sleep_until(next) => {
                next = Instant::now() + c.renew_every;
                let sent = Instant::now();
                let held = tx.borrow().clone();
                // Bounded: a statement that hangs (a cut network) must not
                // outlast this replica's own deadline while it leads.
                let limit = deadline.unwrap_or(sent + c.renew_every);
                let outcome = match held {
                    Some(fence) => tokio::time::timeout_at(limit, renew(client, &fence, c.ttl))
                        .await
                        .map(|r| r.map(|ok| ok.then_some(fence))),
                    None => tokio::time::timeout_at(limit, acquire(client, &c.lease, &c.holder, c.ttl)).await,
                };
                let outcome = outcome.unwrap_or_else(|_| Err(PgError::Timeout { waited: limit - sent }));
                match outcome {
                    Ok(Some(fence)) => {
                        // A little short of the server's expiry, for clock-rate drift.
                        deadline = Some(sent + c.ttl.mul_f64(0.9));
                        if tx.borrow().as_ref() != Some(&fence) {
                            tracing::info!(lease = %c.lease, epoch = fence.epoch, "leading");
                            tx.send_replace(Some(fence));
                        }
                    }
                    Ok(None) => {
                        if tx.send_replace(None).is_some() {
                            tracing::warn!(lease = %c.lease, "lease lost to another replica; stepping down");
                        }
                        deadline = None;
                    }
                    Err(e) => {
                        // The session may be broken in a way it cannot tell
                        // (a timeout behind a cut network): a new one.
                        tracing::warn!(error = %e, lease = %c.lease, "lease statement failed; stepping down and reconnecting");
                        return false;
                    }
                }
            }
        }
    }
}
