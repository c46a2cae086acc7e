//! The store's own unit tests: commit-then-apply as one unit.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// Starts `run` (a write of meta `key` whose memory update sets `applied`)
/// in a task, aborts that task once the write closure is running, then
/// lets the write finish. Returns whether memory was updated.
async fn drop_mid_write<F, Fut>(store: &Store, key: &'static str, run: F) -> bool
where
    F: FnOnce(Store, Box<dyn FnOnce(&mut Writer) -> Result<(), StorageError> + Send>, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let applied = Arc::new(AtomicBool::new(false));
    let (wrote, wrote_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let write = Box::new(move |w: &mut Writer| {
        w.put_meta(key, b"1")?;
        wrote.send(()).unwrap();
        go_rx.recv().unwrap();
        Ok(())
    });
    let task = tokio::spawn(run(store.clone(), write, applied.clone()));
    tokio::task::spawn_blocking(move || wrote_rx.recv()).await.unwrap().unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    go.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.read_now(|r| r.meta(key)).unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.read_now(|r| r.meta(key)).unwrap().as_deref(), Some(&b"1"[..]), "the write committed");
    // The commit is visible; give a pending apply a moment to run.
    let deadline = Instant::now() + Duration::from_millis(500);
    while !applied.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    applied.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_awaiter_cannot_split_a_commit_from_its_memory_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join(STORE_FILE), records::tests::zero_key()).unwrap();
    let helper = drop_mid_write(&store, "helper", |s, write, applied| async move {
        let _ = s.commit_then_apply(write, move |_| applied.store(true, Ordering::SeqCst)).await;
    })
    .await;
    assert!(helper, "commit_then_apply committed but did not update memory");
    // The control: commit, then update memory after the await, as the
    // call sites once did. The same drop loses the memory update.
    let split = drop_mid_write(&store, "split", |s, write, applied| async move {
        if s.write(write).await.is_ok() {
            applied.store(true, Ordering::SeqCst);
        }
    })
    .await;
    assert!(!split, "the control should lose its memory update");
}

#[tokio::test]
async fn a_failed_write_commits_nothing_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join(STORE_FILE), records::tests::zero_key()).unwrap();
    let applied = Arc::new(AtomicBool::new(false));
    let flag = applied.clone();
    let result = store
        .commit_then_apply(
            |w| {
                w.put_meta("k", b"1")?;
                Err::<(), _>(StorageError::Join("refused".into()))
            },
            move |_| flag.store(true, Ordering::SeqCst),
        )
        .await;
    assert!(result.is_err());
    assert!(!applied.load(Ordering::SeqCst));
    assert_eq!(store.read_now(|r| r.meta("k")).unwrap(), None);
}
