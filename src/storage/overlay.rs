//! A redb storage backend that reads a store file and never writes it: every
//! write redb makes (the repair after an unclean shutdown, the integrity
//! check's rebuilt allocator state) lands in memory, over the file. With it a
//! store can be repaired, checked page by page and read to decide whether it
//! may open, while the file stays byte for byte as it was; only once that
//! answer is yes is the file opened for writing.
//!
//! Locks are taken on the file itself, shared: a writer (a running kmsd)
//! still keeps this reader out (`DatabaseAlreadyOpen`), and readers do not
//! keep each other out. The file is opened read-only, so this backend cannot
//! write it even by mistake.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Overwritten bytes are kept in blocks of this size.
const BLOCK: u64 = 4096;

#[derive(Debug)]
pub(super) struct Overlay {
    file: FileBackend,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The length redb sees (the file's, until redb sets another).
    len: u64,
    /// Bytes of the file at or past this offset were cut off by `set_len`
    /// (they read as zeros, like any growth).
    file_visible: u64,
    /// Block index -> the block's bytes as redb last wrote them.
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Self { file, state: Mutex::new(State { len, file_visible: len, blocks: BTreeMap::new() }) })
    }

    /// Bytes of the file itself at `offset` (zeros past `visible`).
    fn read_file(&self, visible: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let available = visible.saturating_sub(offset).min(out.len() as u64) as usize;
        let (from_file, past_end) = out.split_at_mut(available);
        if !from_file.is_empty() {
            self.file.read(offset, from_file)?;
        }
        past_end.fill(0);
        Ok(())
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().unwrap_or_else(PoisonError::into_inner).len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = offset.checked_add(out.len() as u64).filter(|&e| e <= state.len);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the store"));
        };
        let mut at = offset;
        while at < end {
            let (block, within) = (at / BLOCK, at % BLOCK);
            let n = (BLOCK - within).min(end - at) as usize;
            let dst = &mut out[(at - offset) as usize..][..n];
            match state.blocks.get(&block) {
                Some(bytes) => dst.copy_from_slice(&bytes[within as usize..][..n]),
                None => self.read_file(state.file_visible, at, dst)?,
            }
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if len < state.len {
            // Bytes cut off read as zeros if the store grows again.
            state.file_visible = state.file_visible.min(len);
            state.blocks.split_off(&len.div_ceil(BLOCK));
            if let Some(bytes) = state.blocks.get_mut(&(len / BLOCK)) {
                bytes[(len % BLOCK) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past the largest offset"))?;
        let mut at = offset;
        while at < end {
            let (block, within) = (at / BLOCK, at % BLOCK);
            let n = (BLOCK - within).min(end - at) as usize;
            if !state.blocks.contains_key(&block) {
                let mut b = vec![0; BLOCK as usize];
                self.read_file(state.file_visible, block * BLOCK, &mut b)?;
                state.blocks.insert(block, b);
            }
            if let Some(bytes) = state.blocks.get_mut(&block) {
                bytes[within as usize..][..n].copy_from_slice(&data[(at - offset) as usize..][..n]);
            }
            at += n as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    // Every lock is taken shared on the file: this backend never writes it.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_memory_and_reads_see_them_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let o = Overlay::open(&path).unwrap();
        o.write(4090, &[0xAA; 20]).unwrap();
        let mut got = vec![0; 40];
        o.read(4080, &mut got).unwrap();
        assert_eq!(&got[..10], &original[4080..4090]);
        assert_eq!(&got[10..30], &[0xAA; 20]);
        assert_eq!(&got[30..], &original[4110..4120]);
        o.set_len(12_000).unwrap();
        let mut tail = vec![1; 2000];
        o.read(10_000, &mut tail).unwrap();
        assert_eq!(tail, vec![0; 2000], "growth reads as zeros");
        o.set_len(5000).unwrap();
        assert!(o.read(4999, &mut [0; 2]).is_err(), "past the end");
        o.set_len(9000).unwrap();
        let mut regrown = vec![1; 4000];
        o.read(5000, &mut regrown).unwrap();
        assert_eq!(regrown, vec![0; 4000], "bytes cut off are gone");
        o.write(20_000, b"xyz").unwrap();
        assert_eq!(o.len().unwrap(), 20_003);
        assert_eq!(std::fs::read(&path).unwrap(), original, "the file was never written");
    }
}
