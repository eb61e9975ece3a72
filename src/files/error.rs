//! `FilesError`: everything a file operation can fail with, phrased for the caller (a human or a
//! model). The API maps each variant to an HTTP status (`api::files`).

use std::io;
use std::path::{Path, PathBuf};

use super::hash::ContentHash;

/// A failed file operation. Each variant says whether retrying helps.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// No path given. Fix the request.
    #[error("\"path\" is required")]
    PathRequired,
    /// A relative path. Every path must be absolute; fix the request.
    #[error("file path must be absolute: {0:?}")]
    Relative(String),
    /// A path the OS cannot take (a NUL byte). Fix the request.
    #[error("invalid path {path:?}: {why}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Nothing at that path (or a missing parent directory). Retrying helps only once it exists.
    #[error("file does not exist: {}", .0.display())]
    NotFound(PathBuf),
    /// The OS refused (mode bits, read-only file system, immutable file). Not retryable.
    #[error("permission denied: {}", .0.display())]
    PermissionDenied(PathBuf),
    /// A file was expected and a directory (or another non-regular file) was found.
    #[error("not a file: {}", .0.display())]
    NotAFile(PathBuf),
    /// A write was aimed at a directory.
    #[error("open {}: is a directory", .0.display())]
    IsADirectory(PathBuf),
    /// A component of the path is not a directory (e.g. `/etc/hosts/x`).
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Symbolic links nest too deeply or loop.
    #[error("too many levels of symbolic links resolving {}", .0.display())]
    SymlinkLoop(PathBuf),
    /// Larger than a configured bound. Not retryable as is: send less, or raise the bound.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large: a file's path or "the file content".
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The bound it exceeded, in bytes.
        limit: u64,
    },
    /// An edit names more files than `[files] max_edit_files` allows (413, like `TooLarge`).
    #[error("an edit of {count} files is over the limit of {limit} files")]
    TooManyFiles {
        /// How many files the edit named.
        count: usize,
        /// The configured bound (`max_edit_files`).
        limit: usize,
    },
    /// The request cannot be carried out as given (a search that does not match, no edits, …).
    /// The message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// `If-Match` / `if_match` did not match the file's current content: someone changed it
    /// since the caller read it. Read it again (the current hash is given) and redo the change.
    #[error("{}", precondition_message(path, current.as_ref(), expected))]
    PreconditionFailed {
        /// The file (symbolic links resolved).
        path: PathBuf,
        /// `None`: the file does not exist.
        current: Option<ContentHash>,
        /// What the caller required, as sent (`If-Match` value or `if_match`).
        expected: String,
    },
    /// The file changed on disk (outside the agent's own writes) while an edit was computed;
    /// nothing was written. Retrying the same request is safe.
    #[error("{} changed while the edit was being applied; nothing was written, retry", .0.display())]
    Changed(PathBuf),
    /// The file system is full or over quota. Retry after freeing space.
    #[error("no space left to write {}: {source}", path.display())]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// The OS error (`ENOSPC` or `EDQUOT`).
        #[source]
        source: io::Error,
    },
    /// Any other OS error.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation that failed (`open`, `stat`, `rename`, ...), for the message.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Several files failed (multi-file edits report all of them, one per line).
    #[error("{}", join(.0))]
    Multiple(Vec<FilesError>),
}

fn precondition_message(path: &Path, current: Option<&ContentHash>, expected: &str) -> String {
    match current {
        Some(c) => format!(
            "{} changed since it was read: its content hash is {c}, not {expected}; read it \
             again and redo the change",
            path.display()
        ),
        None => format!(
            "{} does not exist (expected content hash {expected})",
            path.display()
        ),
    }
}

fn join(errors: &[FilesError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("\n")
}

impl FilesError {
    /// Maps an OS error on `path` during `op` to the variant a caller can act on.
    pub fn io(op: &'static str, path: &Path, e: io::Error) -> Self {
        use io::ErrorKind as K;
        let path = path.to_owned();
        // Wrapped errors (e.g. from `tempfile`) keep their kind but not their errno.
        let errno = e.raw_os_error().or(match e.kind() {
            K::NotFound => Some(libc::ENOENT),
            K::PermissionDenied => Some(libc::EACCES),
            K::ReadOnlyFilesystem => Some(libc::EROFS),
            K::NotADirectory => Some(libc::ENOTDIR),
            K::IsADirectory => Some(libc::EISDIR),
            K::StorageFull | K::QuotaExceeded => Some(libc::ENOSPC),
            _ => None,
        });
        match errno {
            Some(libc::ENOENT) => Self::NotFound(path),
            Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ETXTBSY) => {
                Self::PermissionDenied(path)
            }
            Some(libc::ENOTDIR) => Self::NotADirectory(path),
            Some(libc::EISDIR) => Self::IsADirectory(path),
            Some(libc::ELOOP) => Self::SymlinkLoop(path),
            Some(libc::ENOSPC | libc::EDQUOT) => Self::NoSpace { path, source: e },
            _ => Self::Io {
                op,
                path,
                source: e,
            },
        }
    }

    /// One error from several: itself when there is one.
    pub fn combine(mut errors: Vec<FilesError>) -> Option<FilesError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Self::Multiple(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_actionable_variants() {
        let p = Path::new("/x");
        let e = |n| FilesError::io("open", p, io::Error::from_raw_os_error(n));
        assert!(matches!(e(libc::ENOENT), FilesError::NotFound(_)));
        assert!(matches!(e(libc::EACCES), FilesError::PermissionDenied(_)));
        assert!(matches!(e(libc::EPERM), FilesError::PermissionDenied(_)));
        assert!(matches!(e(libc::EROFS), FilesError::PermissionDenied(_)));
        assert!(matches!(e(libc::ENOTDIR), FilesError::NotADirectory(_)));
        assert!(matches!(e(libc::EISDIR), FilesError::IsADirectory(_)));
        assert!(matches!(e(libc::ELOOP), FilesError::SymlinkLoop(_)));
        assert!(matches!(e(libc::ENOSPC), FilesError::NoSpace { .. }));
        assert!(matches!(e(libc::EIO), FilesError::Io { .. }));
        let wrapped = io::Error::new(io::ErrorKind::PermissionDenied, "in /x: denied");
        assert!(matches!(
            FilesError::io("create", p, wrapped),
            FilesError::PermissionDenied(_)
        ));
        assert_eq!(e(libc::ENOENT).to_string(), "file does not exist: /x");
        assert_eq!(e(libc::EACCES).to_string(), "permission denied: /x");
    }

    #[test]
    fn several_errors_are_reported_one_per_line() {
        assert!(FilesError::combine(vec![]).is_none());
        let one = FilesError::combine(vec![FilesError::PathRequired]).unwrap();
        assert!(matches!(one, FilesError::PathRequired));
        let two = FilesError::combine(vec![
            FilesError::NotFound("/a".into()),
            FilesError::PermissionDenied("/b".into()),
        ])
        .unwrap();
        assert_eq!(
            two.to_string(),
            "file does not exist: /a\npermission denied: /b"
        );
    }
}
