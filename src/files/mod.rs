//! Workspace files: list a directory, resolve a path, read a file (bytes or numbered lines),
//! write a file atomically, apply search/replace edits to several files at once.
//!
//! Owns: all filesystem work of the file API, behind one type, [`Files`], whose blocking
//! operations all pass through one choke point (`Files::run`): that is where a peer's file
//! operations take its `run_as` user's filesystem identity (per-thread `setfsuid`/`setfsgid`
//! and supplementary groups, `creds`), without touching callers.
//! Pure parts are sans-IO modules: [`edit`] (search/replace with whitespace tolerance and hints),
//! [`lines`] (numbered pages), [`hash`] (content hashes and preconditions), [`path`] (cleaning),
//! [`diff`] (unified diffs).
//! Leaves to the caller: HTTP (statuses, streaming bodies: `api::files`), who may call what
//! (permissions) and the audit record, and reading request bodies (it is handed chunks).
//!
//! Concurrency: writes and edits that go through one agent are serialised per file (striped
//! locks held from the precondition check to the rename), so `If-Match` between control
//! replicas is exact. Writers outside the agent are not locked out; an edit notices a file that
//! changed under it and writes nothing (`Changed`).

mod apply;
mod creds;
pub mod diff;
pub mod edit;
mod error;
pub mod hash;
pub mod lines;
mod list;
pub mod path;
mod read;
mod write;

use std::hash::{DefaultHasher, Hash, Hasher as _};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Semaphore;

pub use apply::{EditOutcome, EditSpec, OwnedEdit};
pub use error::FilesError;
pub use hash::{ContentHash, Precondition};
pub use list::{Entry, ListRequest, Listing, Relativity};
pub use read::{LinesRead, ReadFile};
pub use write::{PendingWrite, WriteOutcome};

/// Bounds of the file API (`[files]` in the agent config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest write-file body and edit-files request; also the largest file an edit or a
    /// line read loads into memory, and the largest file whose reads carry a content hash.
    pub max_write_bytes: u64,
    /// Files per edit-files request.
    pub max_edit_files: usize,
    /// `fsync` a new file's data before renaming it over the old one (crash safety).
    pub fsync: bool,
}

impl Default for Limits {
    /// 16 MiB, 32 files, fsync on.
    fn default() -> Self {
        Self {
            max_write_bytes: 16 << 20,
            max_edit_files: 32,
            fsync: true,
        }
    }
}

/// Blocking file operations allowed at once (each holds a blocking-pool thread; edits and line
/// reads also hold file contents in memory).
const CONCURRENT_OPS: usize = 8;
/// Stripes of the per-file lock table (a path hashes to one; collisions only serialise more).
const LOCK_STRIPES: usize = 64;
/// Edit-files loads at most this many times `max_write_bytes` of files in one request.
const EDIT_TOTAL_FACTOR: u64 = 4;
/// Entries a directory listing returns at most (the first ones in listing order).
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// The workspace's file operations. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
    /// Operations run with this user's filesystem identity (a peer's `run_as`); `None`: the
    /// agent's own.
    run_as: Option<Arc<str>>,
}

struct Inner {
    limits: Limits,
    locks: Vec<Mutex<()>>,
    slots: Semaphore,
}

impl Default for Files {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Files {
    /// File operations under `limits`, as the agent's own user.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                slots: Semaphore::new(CONCURRENT_OPS),
            }),
            run_as: None,
        }
    }

    /// The same operations (shared limits, locks and slots), run as user `name` (see
    /// `creds`): permission checks and the owner of new files are that user's. `None`, or the
    /// agent's own user: as the agent.
    pub fn as_user(&self, name: Option<&str>) -> Files {
        Files {
            inner: self.inner.clone(),
            run_as: name.map(Arc::from),
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Runs blocking filesystem work on the blocking pool, at most [`CONCURRENT_OPS`] at a
    /// time. The one place file operations execute: the `run_as` user's filesystem identity is
    /// assumed on the pool thread for the operation and dropped after it (`creds`).
    async fn run<T, F>(&self, op: F) -> Result<T, FilesError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, FilesError> + Send + 'static,
    {
        let _permit = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| internal("closed"))?;
        let inner = self.inner.clone();
        let run_as = self.run_as.clone();
        tokio::task::spawn_blocking(move || {
            let _as = match run_as.as_deref() {
                Some(name) => creds::assume(name)?,
                None => None,
            };
            op(&inner)
        })
        .await
        .map_err(|e| internal(&e.to_string()))?
    }
}

impl Inner {
    /// Locks the stripes of `paths` (in stripe order, so two requests never deadlock).
    fn lock<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = paths
            .into_iter()
            .map(|p| {
                let mut h = DefaultHasher::new();
                p.hash(&mut h);
                (h.finish() % LOCK_STRIPES as u64) as usize
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|i| self.locks[i].lock()).collect()
    }
}

fn internal(why: &str) -> FilesError {
    FilesError::Io {
        op: "run",
        path: "/".into(),
        source: std::io::Error::other(why.to_owned()),
    }
}
