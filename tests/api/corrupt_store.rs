//! Damaged store files: a corpus of copies of one real store, each damaged
//! one way (a flipped byte in the header, the region and allocator pages and
//! the pages that hold records, truncations, zeroed ranges, a record's bytes
//! edited in place). Every `kmsd serve` and `kmsd audit verify` on them is
//! refused with a one-line error and a non-zero exit, never a panic, and the
//! file's sha256 is the same afterwards: a refused start writes nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::StorageBackend;

use crate::api_keys::create_key;
use crate::daemon::{bootstrap_key, sha256_file, text, Daemon};
use crate::vault::store;

type Damage = Box<dyn Fn(&mut Vec<u8>)>;

/// One way to damage the store's bytes.
struct Case {
    name: String,
    damage: Damage,
}

fn case(name: impl Into<String>, damage: impl Fn(&mut Vec<u8>) + 'static) -> Case {
    Case { name: name.into(), damage: Box::new(damage) }
}

fn flip(at: usize) -> Case {
    case(format!("byte {at} flipped"), move |b| b[at] ^= 0xff)
}

fn zero(from: usize, len: usize) -> Case {
    case(format!("bytes {from}..{} zeroed", from + len), move |b| b[from..from + len].fill(0))
}

fn truncate(to: usize) -> Case {
    case(format!("truncated to {to} bytes"), move |b| b.truncate(to))
}

/// The store's bytes in memory, recording which pages redb reads before it
/// writes them: the pages of the committed trees (free pages hold nothing a
/// damage could change).
#[derive(Debug, Default)]
struct Recording {
    bytes: Mutex<Vec<u8>>,
    read: Mutex<BTreeSet<u64>>,
    written: Mutex<BTreeSet<u64>>,
}

impl StorageBackend for Recording {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let end = offset as usize + out.len();
        if end > bytes.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        out.copy_from_slice(&bytes[offset as usize..end]);
        let written = self.written.lock().unwrap();
        let mut read = self.read.lock().unwrap();
        for page in offset / PAGE..(end as u64).div_ceil(PAGE) {
            if !written.contains(&page) {
                read.insert(page);
            }
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if end > bytes.len() {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        self.written.lock().unwrap().extend(offset / PAGE..(end as u64).div_ceil(PAGE));
        Ok(())
    }
}

const PAGE: u64 = 4096;

/// The pages of `store` that hold its committed trees: those redb reads
/// when it checks every page and then reads every table.
fn live_pages(store: &[u8]) -> Vec<usize> {
    let rec = Arc::new(Recording { bytes: Mutex::new(store.to_vec()), ..Default::default() });
    let db = redb::Builder::new().set_check_integrity_on_open(true).create_with_backend(Shared(rec.clone())).unwrap();
    drop(db);
    let pages = rec.read.lock().unwrap().iter().map(|&p| p as usize).filter(|&p| p > 0).collect();
    pages
}

/// An `Arc<Recording>` as a backend, so the test keeps a handle on it.
#[derive(Debug)]
struct Shared(Arc<Recording>);

impl StorageBackend for Shared {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
}

/// Where `needle` first occurs in `bytes` inside one of the `live` pages
/// (freed pages may still hold an older copy of a record).
fn find(bytes: &[u8], needle: &[u8], live: &[usize]) -> usize {
    bytes
        .windows(needle.len())
        .enumerate()
        .position(|(at, w)| w == needle && live.contains(&(at / 4096)) && live.contains(&((at + w.len()) / 4096)))
        .expect("a live page holds the record")
}

/// Copies the data dir `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Runs `kmsd args` on the damaged store in `dir`: false if it was still
/// running after 20 s (it started); else checks the one-line refusal.
fn refused(dir: &Path, args: &[&str], case: &str) -> bool {
    let path = store(dir);
    let before = sha256_file(&path);
    let mut cmd = crate::daemon::command(dir, &[]);
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{case}: `kmsd {}` is refused:\n{all}", args.join(" "));
    assert!(!all.contains("panicked") && !all.contains("unreachable"), "{case}: no panic:\n{all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("kmsd: error:")).collect();
    assert_eq!(errors.len(), 1, "{case}: one error line:\n{all}");
    assert!(errors[0].contains("store"), "{case}: the error is about the store:\n{all}");
    assert_eq!(sha256_file(&path), before, "{case}: `kmsd {}` left the file as it was", args.join(" "));
    true
}

#[tokio::test]
async fn every_damaged_copy_of_a_store_is_refused_without_a_panic_or_a_write() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    std::fs::create_dir_all(&template).unwrap();
    let d = Daemon::start(&template, &[]);
    let admin = bootstrap_key(&d.output());
    let (status, created) = create_key(&d.public, &admin, &["relayauth:token:read:*"]).await;
    assert_eq!(status, 201, "{created}");
    d.stop();
    let original = std::fs::read(store(&template)).unwrap();
    let len = original.len();
    assert!(len > 64 << 10, "a real store: {len} bytes");

    let live = live_pages(&original);
    assert!(live.len() >= 8, "the store's trees span pages: {live:?}");
    let scopes = find(&original, br#""relayauth:token:read:*""#, &live);
    let admin_name = find(&original, b"bootstrap-admin", &live);
    let mut cases = vec![
        flip(0),
        flip(64),
        flip(200),
        flip(4096),
        flip(4096 + 33),
        flip(8192),
        zero(8192, 512),
        zero(0, 4096),
        zero(4096, 4096),
        flip(scopes + 3),
        flip(admin_name),
        zero(scopes & !4095, 4096),
        case("a record's scope edited in place", move |b| b[scopes + 1..scopes + 9].copy_from_slice(b"*:*:*:*:")),
        truncate(0),
        truncate(4096),
        truncate(len / 2),
        truncate(len - 4096),
    ];
    // Every page of the committed trees, damaged at its type byte and in
    // its entry count (a flip in a free page changes nothing kmsd reads).
    cases.extend(live.iter().flat_map(|&p| [flip(p * 4096), flip(p * 4096 + 2)]));

    let mut started = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        copy_dir(&template.join("kmsd-data"), &dir.join("kmsd-data"));
        let mut bytes = original.clone();
        (c.damage)(&mut bytes);
        if bytes == original {
            continue;
        }
        std::fs::write(store(&dir), &bytes).unwrap();
        if !refused(&dir, &["serve"], &c.name) {
            started.push(c.name.clone());
            continue;
        }
        assert!(refused(&dir, &["audit", "verify"], &c.name), "{}: audit verify finished", c.name);
    }
    assert!(started.is_empty(), "kmsd started on damaged stores: {started:?}");
}
