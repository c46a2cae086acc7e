//! High availability: several replicas on one PostgreSQL (DESIGN.md, "High
//! availability"). Any replica serves every request; what differs is who
//! runs the background work and how each keeps its caches true.
//!
//! - [`Leadership`]: whether this replica leads. On redb there is one
//!   process and it always does; on PostgreSQL the leader lease decides
//!   ([`crate::storage::postgres::lease::Elector`]).
//! - [`leader_only`]: runs a background loop (rotation reconcile, GC, the
//!   sunset timer, KMS orphan cleanup) only while this replica leads, and
//!   stops it the moment leadership is lost. Every store write the loop
//!   makes is fenced by the lease it was started under, so a leader that
//!   was paused and wakes up after another took over has its writes
//!   refused rather than applying a stale plan.
//! - [`follow`]: the change feed applied to this replica's caches.

pub mod follow;

use std::future::Future;

use tokio::sync::watch;

use crate::storage::postgres::lease::{self, Fence};

/// The lease the background work is led under.
pub use crate::storage::postgres::lease::LEADER_LEASE;

/// Whether this replica leads the background work.
#[derive(Clone, Debug)]
pub enum Leadership {
    /// The only process on its store (redb): it always leads.
    Sole,
    /// One of several replicas: it leads while the lease says so.
    Elected { replica: String, lease: watch::Receiver<Option<Fence>> },
}

impl Leadership {
    pub fn leads(&self) -> bool {
        match self {
            Self::Sole => true,
            Self::Elected { lease, .. } => lease.borrow().is_some(),
        }
    }

    /// This replica's name (`None` on redb).
    pub fn replica(&self) -> Option<&str> {
        match self {
            Self::Sole => None,
            Self::Elected { replica, .. } => Some(replica),
        }
    }
}

/// Runs the loop `work` (given the shutdown signal) while this replica
/// leads: started when it comes to lead, dropped at once when it stops,
/// started again if it leads again, until `shutdown` fires or the loop ends.
/// While it runs, its store writes carry the lease's fence.
pub async fn leader_only<F, Fut>(
    leadership: Leadership,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Leadership::Elected { mut lease, .. } = leadership else { return work(shutdown).await };
    loop {
        let fence = tokio::select! {
            held = lease.wait_for(Option::is_some) => match held {
                Ok(held) => held.clone(),
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Some(fence) = fence else { continue };
        tracing::info!(work = name, epoch = fence.epoch, "leading: started");
        let run = lease::fenced(fence.clone(), work(shutdown.clone()));
        tokio::select! {
            () = run => return,
            _ = lease.wait_for(|held| held.as_ref() != Some(&fence)) => {
                tracing::warn!(work = name, epoch = fence.epoch, "no longer leading: stopped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn fence(epoch: i64) -> Fence {
        Fence { lease: LEADER_LEASE.into(), holder: "a".into(), epoch }
    }

    /// A loop that counts its starts and records the fence it runs under.
    fn counting(
        starts: Arc<AtomicUsize>,
        seen: Arc<std::sync::Mutex<Vec<Option<i64>>>>,
    ) -> impl FnMut(watch::Receiver<bool>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        move |mut stop| {
            starts.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            Box::pin(async move {
                // Inside the loop's future, where its store writes are made.
                seen.lock().unwrap().push(lease::current().map(|f| f.epoch));
                let _ = stop.wait_for(|s| *s).await;
            })
        }
    }

    #[tokio::test]
    async fn work_runs_only_while_leading_under_the_current_fence_and_stops_at_once_when_leadership_is_lost() {
        let (tx, lease) = watch::channel(None);
        let (stop, shutdown) = watch::channel(false);
        let (starts, seen) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        let leadership = Leadership::Elected { replica: "a".into(), lease };
        assert!(!leadership.leads());
        let task = tokio::spawn(leader_only(
            leadership.clone(),
            "test",
            shutdown,
            counting(starts.clone(), Arc::clone(&seen)),
        ));
        let settle = || tokio::time::sleep(Duration::from_millis(50));

        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 0, "a follower runs nothing");
        tx.send_replace(Some(fence(1)));
        settle().await;
        assert!(leadership.leads());
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        tx.send_replace(None);
        settle().await;
        tx.send_replace(Some(fence(3)));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted on leading again");
        tx.send_replace(Some(fence(4)));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 3, "a new epoch restarts the work under the new fence");
        assert_eq!(*seen.lock().unwrap(), [Some(1), Some(3), Some(4)]);

        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_sole_process_always_leads_unfenced() {
        let (stop, shutdown) = watch::channel(false);
        let (starts, seen) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        assert!(Leadership::Sole.leads());
        let task =
            tokio::spawn(leader_only(Leadership::Sole, "test", shutdown, counting(starts.clone(), Arc::clone(&seen))));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), task).await.unwrap().unwrap();
        assert_eq!((starts.load(Ordering::SeqCst), seen.lock().unwrap().clone()), (1, vec![None]));
    }
}
