//! Atomic writes: the new content goes to a temporary file in the target's directory (same file
//! system), is flushed (and `fsync`ed), gets the old file's mode (and owner, when the agent runs
//! as root), and is renamed over the target. A reader sees the old file or the new one, never a
//! mix; a write that fails or is abandoned (the caller disconnects) removes its temporary file
//! and leaves the old file untouched. Symbolic links are followed: the link stays, its target
//! gets the content.

use std::fs::{Metadata, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::read::hash_file;
use super::{ContentHash, Files, FilesError, Inner, Precondition, hash::Hasher, path};

/// Upload bytes buffered before one blocking write.
const WRITE_CHUNK: usize = 256 * 1024;

/// A write in progress: feed it with [`write`](Self::write), finish with
/// [`commit`](Self::commit). Dropping it removes the temporary file.
pub struct PendingWrite {
    files: Files,
    /// The real target (symbolic links resolved).
    target: PathBuf,
    temp: Option<NamedTempFile>,
    buf: Vec<u8>,
    hasher: Hasher,
    written: u64,
}

/// A committed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The file written (symbolic links resolved).
    pub path: PathBuf,
    /// The new content's hash.
    pub hash: ContentHash,
    /// Bytes written (the new file's size).
    pub bytes: u64,
    /// The hash of what was replaced; `None` when the file was created.
    pub previous: Option<ContentHash>,
}

impl Files {
    /// Starts writing `raw`: resolves it, creates missing parent directories (mode 0755) and
    /// the temporary file. Nothing visible changes until [`PendingWrite::commit`].
    pub async fn begin_write(&self, raw: &str) -> Result<PendingWrite, FilesError> {
        let p = path::absolute(raw)?;
        let (target, temp) = self
            .run(move |_| {
                let target = path::resolve(&p)?;
                let dir = target.parent().unwrap_or(Path::new("/")).to_owned();
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&dir)
                    .map_err(|e| match e.kind() {
                        // A component exists and is not a directory.
                        std::io::ErrorKind::AlreadyExists => FilesError::NotADirectory(dir.clone()),
                        _ => FilesError::io("mkdir", &dir, e),
                    })?;
                if let Ok(m) = std::fs::metadata(&target) {
                    check_replaceable(&target, &m)?;
                }
                let temp = stage(&target)?;
                Ok((target, temp))
            })
            .await?;
        Ok(PendingWrite {
            files: self.clone(),
            target,
            temp: Some(temp),
            buf: Vec::with_capacity(WRITE_CHUNK),
            hasher: Hasher::new(),
            written: 0,
        })
    }
}

impl PendingWrite {
    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The real target path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Appends `bytes`. Fails with `TooLarge` past `max_write_bytes` (the caller stops reading).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), FilesError> {
        let limit = self.files.limits().max_write_bytes;
        self.written += bytes.len() as u64;
        if self.written > limit {
            return Err(FilesError::TooLarge {
                what: "the file content".to_owned(),
                size: self.written,
                limit,
            });
        }
        self.hasher.update(bytes);
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), FilesError> {
        let temp = self
            .temp
            .take()
            .ok_or_else(|| super::internal("write after failure"))?;
        let buf = std::mem::take(&mut self.buf);
        let (temp, mut buf) = self
            .files
            .run(move |_| {
                temp.as_file()
                    .write_all(&buf)
                    .map_err(|e| FilesError::io("write", temp.path(), e))?;
                Ok((temp, buf))
            })
            .await?;
        buf.clear();
        self.buf = buf;
        self.temp = Some(temp);
        Ok(())
    }

    /// Makes the new content visible if `pre` holds for the file as it is now (checked under
    /// the file's lock, so two replicas' conditional writes cannot both win).
    pub async fn commit(mut self, pre: Precondition) -> Result<WriteOutcome, FilesError> {
        self.flush().await?;
        let temp = self
            .temp
            .take()
            .ok_or_else(|| super::internal("commit after failure"))?;
        let hash = std::mem::take(&mut self.hasher).finish();
        let (bytes, target) = (self.written, self.target.clone());
        self.files
            .run(move |inner| {
                let previous = replace(inner, temp, &target, &pre)?;
                Ok(WriteOutcome {
                    path: target,
                    hash,
                    bytes,
                    previous,
                })
            })
            .await
    }
}

/// Refuses to replace anything but a regular file.
fn check_replaceable(target: &Path, m: &Metadata) -> Result<(), FilesError> {
    if m.is_dir() {
        return Err(FilesError::IsADirectory(target.to_owned()));
    }
    if !m.is_file() {
        return Err(FilesError::NotAFile(target.to_owned()));
    }
    Ok(())
}

/// A new temporary file next to `target` (`.<name>.<random>.tmp`), mode 0666 less the umask.
pub(super) fn stage(target: &Path) -> Result<NamedTempFile, FilesError> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    tempfile::Builder::new()
        .prefix(&format!(".{}.", path::file_name_lossy(target)))
        .suffix(".tmp")
        .rand_bytes(8)
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| FilesError::io("create temporary file in", dir, e))
}

/// Under the target's lock: checks `pre` against the current file, gives the temporary file
/// the current file's owner and mode, and renames it over the target. Returns the replaced
/// content's hash when it was computed (`If-Match`), or `None`.
pub(super) fn replace(
    inner: &Inner,
    temp: NamedTempFile,
    target: &Path,
    pre: &Precondition,
) -> Result<Option<ContentHash>, FilesError> {
    if inner.limits.fsync {
        temp.as_file()
            .sync_data()
            .map_err(|e| FilesError::io("fsync", temp.path(), e))?;
    }
    let _guard = inner.lock([target]);
    let current = match std::fs::File::open(target) {
        Ok(f) => Some((
            f.metadata()
                .map_err(|e| FilesError::io("stat", target, e))?,
            f,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(FilesError::io("open", target, e)),
    };
    if let Some((m, _)) = &current {
        check_replaceable(target, m)?;
    }
    let previous = match (&current, pre.needs_hash()) {
        (Some((_, f)), true) => Some(hash_file(f, target)?),
        _ => None,
    };
    let holds = match pre {
        Precondition::None => true,
        Precondition::Exists => current.is_some(),
        Precondition::Absent => current.is_none(),
        Precondition::OneOf { .. } => pre.holds(previous.as_ref()),
    };
    if !holds {
        return Err(FilesError::PreconditionFailed {
            path: target.to_owned(),
            current: match (&current, previous) {
                (_, Some(h)) => Some(h),
                (Some((_, f)), None) => Some(hash_file(f, target)?),
                (None, _) => None,
            },
            expected: pre.expected(),
        });
    }
    if let Some((m, _)) = &current {
        keep_owner_and_mode(&temp, m);
    }
    temp.persist(target)
        .map_err(|e| FilesError::io("rename into", target, e.error))?;
    Ok(previous)
}

/// Gives the new file the old one's owner (when we may: running as root) and mode. Failures
/// are logged: the content is what matters.
pub(super) fn keep_owner_and_mode(temp: &NamedTempFile, m: &Metadata) {
    let f = temp.as_file();
    if nix::unistd::geteuid().is_root()
        && let Err(e) = std::os::unix::fs::fchown(f, Some(m.uid()), Some(m.gid()))
    {
        tracing::debug!(path = %temp.path().display(), "keeping the owner failed: {e}");
    }
    // After chown, which clears set-id bits.
    if let Err(e) = f.set_permissions(Permissions::from_mode(m.mode() & 0o7777)) {
        tracing::debug!(path = %temp.path().display(), "keeping the mode failed: {e}");
    }
}
