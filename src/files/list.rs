//! Directory listings (`list-directory`), as the reference agent answers them: directories
//! first, then files, each group by name; `is_dir` from `lstat` (a symbolic link to a directory
//! is listed as a link, not a directory). Bounded: the first [`MAX_LIST_ENTRIES`] in that order
//! are kept, whatever the directory holds, without sorting (or stat-ing) the rest in memory.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Files, FilesError, MAX_LIST_ENTRIES, path};

/// Where to list, the reference's two ways: an absolute `path`, or `components` under the
/// root or the home directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// An absolute directory; when given (and non-empty) the other fields are ignored.
    pub path: Option<String>,
    /// Path components joined under the base that `relativity` names (`..` is resolved
    /// lexically).
    pub components: Vec<String>,
    /// The base of `components`.
    pub relativity: Relativity,
}

/// The base directory of [`ListRequest::components`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Relativity {
    /// None given: an error unless `path` is set.
    #[default]
    Unspecified,
    /// `/`.
    Root,
    /// The home directory of the user the operation runs as.
    Home,
}

/// A listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The directory listed (absolute, cleaned; symbolic links not resolved).
    pub path: PathBuf,
    /// Directories first, then the rest, each group by name; at most `MAX_LIST_ENTRIES`.
    pub entries: Vec<Entry>,
    /// Entries in the directory (more than `entries.len()` when the listing was cut).
    pub total: usize,
}

/// One directory entry, described without following symbolic links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name (lossily converted when it is not UTF-8).
    pub name: String,
    /// The listed directory joined with the name.
    pub path: PathBuf,
    /// A directory (a symbolic link to one is not).
    pub is_dir: bool,
    /// A symbolic link.
    pub is_symlink: bool,
    /// `None` when the entry vanished or could not be stat-ed after it was listed.
    pub size: Option<u64>,
    /// Permission bits (`mode & 0o7777`: setuid, setgid, sticky, rwx); `None` as for `size`.
    pub mode: Option<u32>,
    /// Last modification, in seconds since the Unix epoch; `None` as for `size`.
    pub modified_unix: Option<i64>,
}

/// Heap key: listing order (directories first, then by name).
struct Key {
    is_dir: bool,
    is_symlink: bool,
    name: std::ffi::OsString,
}

impl Key {
    fn order(&self, other: &Self) -> Ordering {
        other
            .is_dir
            .cmp(&self.is_dir)
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order(other)
    }
}

impl Files {
    /// Lists a directory.
    pub async fn list(&self, req: ListRequest) -> Result<Listing, FilesError> {
        self.run(move |_| list_blocking(req)).await
    }

    /// Resolves symbolic links in the existing part of `raw` (see [`path::resolve`]).
    pub async fn resolve(&self, raw: &str) -> Result<PathBuf, FilesError> {
        let p = path::absolute(raw)?;
        self.run(move |_| path::resolve(&p)).await
    }
}

/// The home directory of the user the operation runs as.
fn home_dir() -> Result<PathBuf, FilesError> {
    if let Some(h) = super::creds::home() {
        return Ok(h);
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .ok_or_else(|| FilesError::Invalid("failed to get user home directory".to_owned()))
}

fn target(req: &ListRequest) -> Result<PathBuf, FilesError> {
    if let Some(p) = req.path.as_deref().filter(|p| !p.is_empty()) {
        if !p.starts_with('/') {
            return Err(FilesError::Invalid(format!("path must be absolute: {p:?}")));
        }
        return path::absolute(p);
    }
    let base = match req.relativity {
        Relativity::Home => home_dir()?,
        Relativity::Root => PathBuf::from("/"),
        Relativity::Unspecified => {
            return Err(FilesError::Invalid(
                "unsupported relativity type \"\": give \"root\" or \"home\", or an absolute \
                 ?path="
                    .to_owned(),
            ));
        }
    };
    let mut p = base;
    for c in &req.components {
        if c.contains('\0') {
            return Err(FilesError::InvalidPath {
                path: c.clone(),
                why: "it contains a NUL byte",
            });
        }
        p.push(c);
    }
    Ok(path::clean(&p))
}

fn list_blocking(req: ListRequest) -> Result<Listing, FilesError> {
    let dir = target(&req)?;
    let meta = std::fs::metadata(&dir).map_err(|e| FilesError::io("stat", &dir, e))?;
    if !meta.is_dir() {
        return Err(FilesError::Invalid(format!(
            "path {:?} is not a directory",
            dir.display().to_string()
        )));
    }
    let rd = std::fs::read_dir(&dir).map_err(|e| FilesError::io("open", &dir, e))?;
    // A max-heap of the best MAX_LIST_ENTRIES keys: the worst kept one is on top.
    let mut heap: BinaryHeap<Key> = BinaryHeap::new();
    let mut total = 0;
    for entry in rd {
        // Entries that vanish or fail while listing are skipped, as the reference does.
        let Ok(entry) = entry else { continue };
        let ft = entry.file_type().ok();
        total += 1;
        heap.push(Key {
            is_dir: ft.is_some_and(|t| t.is_dir()),
            is_symlink: ft.is_some_and(|t| t.is_symlink()),
            name: entry.file_name(),
        });
        if heap.len() > MAX_LIST_ENTRIES {
            heap.pop();
        }
    }
    let entries = heap
        .into_sorted_vec()
        .into_iter()
        .map(|k| describe(&dir, k))
        .collect();
    Ok(Listing {
        path: dir,
        entries,
        total,
    })
}

fn describe(dir: &Path, k: Key) -> Entry {
    let path = dir.join(&k.name);
    let meta = std::fs::symlink_metadata(&path).ok();
    Entry {
        name: k.name.to_string_lossy().into_owned(),
        is_dir: k.is_dir,
        is_symlink: k.is_symlink,
        size: meta.as_ref().map(|m| m.len()),
        mode: meta.as_ref().map(|m| m.mode() & 0o7777),
        modified_unix: meta.as_ref().map(|m| m.mtime()),
        path,
    }
}
