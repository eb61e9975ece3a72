//! The full log of one process: every byte it wrote, kept in a file under the state directory,
//! at most `cap` bytes of it (the newest), addressed by absolute offsets since the start.
//!
//! Owns: the ring file (byte `o` lives at file offset `o % cap`), the single writer's appends,
//! lock-free reads by any number of readers, detecting a reader overtaken by the writer, and
//! the "bytes written" signal followers wait on (no polling).
//! Leaves to the caller: where the file lives, when to delete it, HTTP.
//!
//! Why a ring file: a fixed-size file needs no compaction and never holds more than `cap` bytes
//! on disk, on every filesystem (punching holes would depend on the filesystem's support).
//! A reader copies a range and then checks that the writer had not started overwriting it
//! (`reserved` is published before every write, `end` after it): a lapped read is an error,
//! never wrong bytes.
//!
//! Writes are plain `pwrite`s into the page cache from the process's supervising task, so the
//! child is never slowed beyond the pipe it writes to; a failing write (disk full) stops the
//! log at that offset and is reported in `error`, the head+tail view keeps working.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

/// One process's log.
pub struct Log {
    file: Option<File>,
    path: PathBuf,
    cap: u64,
    /// End of the bytes the writer may be touching: a read below `reserved - cap` is stale.
    reserved: AtomicU64,
    /// End of the bytes readable (published after each write). Followers watch it.
    end: watch::Sender<u64>,
    error: Mutex<Option<String>>,
    /// The log was deleted (state_max_bytes): nothing is retained any more.
    dropped: std::sync::atomic::AtomicBool,
}

/// A read below the retained window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// First offset still retained.
    pub start: u64,
}

impl Log {
    /// Creates (truncates) the log file at `path`. A failure is kept as the log's error: the
    /// process still runs, with its head+tail view only.
    pub fn create(path: PathBuf, cap: u64) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path);
        let (file, error) = match file {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("creating {}: {e}", path.display()))),
        };
        Self::with(file, path, cap.max(1), 0, error)
    }

    /// Re-opens a persisted log whose writer had reached `end`.
    pub fn reopen(path: PathBuf, cap: u64, end: u64, error: Option<String>) -> Self {
        let file = File::open(&path).ok();
        let missing = file.is_none() && end > 0;
        let log = Self::with(file, path, cap.max(1), end, error);
        if missing {
            log.dropped.store(true, Ordering::Release);
        }
        log
    }

    fn with(file: Option<File>, path: PathBuf, cap: u64, end: u64, error: Option<String>) -> Self {
        Self {
            file,
            path,
            cap,
            reserved: AtomicU64::new(end),
            end: watch::Sender::new(end),
            error: Mutex::new(error),
            dropped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data` (the single writer only). Never fails: an I/O error stops the log at the
    /// current offset and is kept in [`Log::error`].
    pub fn append(&self, data: &[u8]) {
        if data.is_empty() || self.error.lock().is_some() {
            return;
        }
        let Some(file) = &self.file else { return };
        let start = *self.end.borrow();
        let new_end = start + data.len() as u64;
        self.reserved.store(new_end, Ordering::Release);
        // Only the newest `cap` bytes can survive.
        let keep = &data[data.len().saturating_sub(self.cap as usize)..];
        let mut off = new_end - keep.len() as u64;
        let mut rest = keep;
        while !rest.is_empty() {
            let pos = off % self.cap;
            let n = rest.len().min((self.cap - pos) as usize);
            if let Err(e) = file.write_all_at(&rest[..n], pos) {
                let msg = format!("writing {}: {e}", self.path.display());
                tracing::warn!("process log stopped at byte {start}: {msg}");
                *self.error.lock() = Some(msg);
                self.reserved.store(start, Ordering::Release);
                return;
            }
            off += n as u64;
            rest = &rest[n..];
        }
        self.end.send_replace(new_end);
    }

    /// End of the readable bytes (= bytes written, unless the log failed).
    pub fn end(&self) -> u64 {
        *self.end.borrow()
    }

    /// First retained offset.
    pub fn start(&self) -> u64 {
        if self.dropped.load(Ordering::Acquire) {
            return self.end();
        }
        self.reserved
            .load(Ordering::Acquire)
            .saturating_sub(self.cap)
    }

    /// Bytes the log holds on disk.
    pub fn disk_bytes(&self) -> u64 {
        if self.dropped.load(Ordering::Acquire) {
            return 0;
        }
        self.end().min(self.cap)
    }

    /// Why the log stopped taking bytes (a failed write, e.g. a full disk); `None` while it
    /// works. The head+tail output is unaffected.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// A receiver that changes whenever bytes were appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Deletes the file (state_max_bytes eviction); every later read is [`Gone`].
    pub fn drop_file(&self) {
        self.dropped.store(true, Ordering::Release);
        let _ = std::fs::remove_file(&self.path);
    }

    /// Copies bytes from absolute offset `pos` into `buf` (up to the readable end); 0 at the end.
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<usize, Gone> {
        let end = self.end();
        let start = self.start();
        if pos < start {
            return Err(Gone { start });
        }
        if pos >= end || buf.is_empty() {
            return Ok(0);
        }
        let Some(file) = &self.file else {
            return Err(Gone { start: end });
        };
        let want = buf.len().min((end - pos) as usize);
        let mut done = 0;
        while done < want {
            let at = (pos + done as u64) % self.cap;
            let n = (want - done).min((self.cap - at) as usize);
            match file.read_at(&mut buf[done..done + n], at) {
                Ok(0) | Err(_) => break,
                Ok(k) => done += k,
            }
        }
        // Valid only if the writer had not reached into what we copied.
        let start = self.start();
        if pos < start || self.dropped.load(Ordering::Acquire) {
            return Err(Gone { start });
        }
        Ok(done)
    }
}

/// Reads a whole range for tests and small callers.
pub fn read_range(log: &Log, from: u64, to: u64) -> Result<Vec<u8>, Gone> {
    let mut out = vec![0u8; to.saturating_sub(from) as usize];
    let mut got = 0;
    while got < out.len() {
        let n = log.read_at(from + got as u64, &mut out[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    out.truncate(got);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes_at_absolute_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("a.log"), 10);
        log.append(b"0123456");
        assert_eq!(read_range(&log, 0, 7).unwrap(), b"0123456");
        log.append(b"789abcd");
        assert_eq!((log.start(), log.end()), (4, 14));
        assert_eq!(read_range(&log, 4, 14).unwrap(), b"456789abcd");
        assert_eq!(read_range(&log, 10, 12).unwrap(), b"ab");
        assert_eq!(log.read_at(3, &mut [0; 4]), Err(Gone { start: 4 }));
        // One write larger than the cap keeps its tail.
        log.append(b"ABCDEFGHIJKLMNOP");
        assert_eq!((log.start(), log.end()), (20, 30));
        assert_eq!(read_range(&log, 20, 30).unwrap(), b"GHIJKLMNOP");
        assert_eq!(log.disk_bytes(), 10);
        log.drop_file();
        assert_eq!(log.read_at(29, &mut [0; 1]), Err(Gone { start: 30 }));
    }

    #[test]
    fn reopen_reads_a_persisted_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let log = Log::create(path.clone(), 8);
        log.append(b"hello world");
        drop(log);
        let log = Log::reopen(path, 8, 11, None);
        assert_eq!(log.start(), 3);
        assert_eq!(read_range(&log, 3, 11).unwrap(), b"lo world");
        let gone = Log::reopen(dir.path().join("missing.log"), 8, 11, None);
        assert_eq!(gone.read_at(5, &mut [0; 2]), Err(Gone { start: 11 }));
    }

    #[test]
    fn unwritable_log_reports_an_error_and_reads_nothing() {
        let log = Log::create(PathBuf::from("/nonexistent-dir/x.log"), 8);
        log.append(b"abc");
        assert!(log.error().unwrap().contains("/nonexistent-dir/x.log"));
        assert_eq!(log.end(), 0);
    }
}
