//! Multi-file edits (`edit-files`), all or nothing: every file is read, checked (`if_match`)
//! and edited in memory first; only when all succeed are new contents staged next to each file,
//! and only when all are staged are they renamed into place. A failing rename (rare: the
//! directory became read-only, …) puts the files already renamed back to their old content.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::edit::{self, Edit};
use super::write::{keep_owner_and_mode, stage};
use super::{ContentHash, EDIT_TOTAL_FACTOR, Files, FilesError, Precondition, diff, path};

/// One file's edits, as requested.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EditSpec {
    /// The file, absolute (symbolic links are followed).
    pub path: String,
    /// Applied in order, each to the result of the previous one; at least one.
    pub edits: Vec<OwnedEdit>,
    /// The content hash the file must have (from an earlier read); `None`: any.
    pub if_match: Option<String>,
}

/// An [`Edit`] that owns its text (what a request deserialises into).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedEdit {
    /// See [`Edit::search`].
    pub search: String,
    /// See [`Edit::replace`].
    pub replace: String,
    /// See [`Edit::replace_all`].
    pub replace_all: bool,
}

/// One file's result, in request order (duplicate entries for one path merged into the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOutcome {
    /// The path as the caller gave it.
    pub path: String,
    /// The real file written (symbolic links resolved).
    pub target: PathBuf,
    /// Unified diff against the content before the edits (`None` unless asked for; `""` when
    /// the edits changed nothing).
    pub diff: Option<String>,
    /// The content hash before the edits.
    pub before: ContentHash,
    /// The content hash after the edits (what a later `if_match` must give).
    pub after: ContentHash,
    /// The size of the new content, in bytes.
    pub bytes: u64,
}

/// A file read and edited in memory.
struct Prepared {
    spec: EditSpec,
    target: PathBuf,
    meta: Metadata,
    old: String,
    new: String,
    before: ContentHash,
}

impl Files {
    /// Applies every file's edits, or none (see the module doc).
    pub async fn edit(
        &self,
        files: Vec<EditSpec>,
        include_diff: bool,
    ) -> Result<Vec<EditOutcome>, FilesError> {
        let limits = self.limits();
        if files.is_empty() {
            return Err(FilesError::Invalid(
                "must specify at least one file".to_owned(),
            ));
        }
        if files.len() > limits.max_edit_files {
            return Err(FilesError::TooManyFiles {
                count: files.len(),
                limit: limits.max_edit_files,
            });
        }
        self.run(move |inner| {
            let specs = merge(files)?;
            let mut errors = Vec::new();
            let mut ok = Vec::new();
            for spec in specs {
                match check(&spec) {
                    Ok(target) => ok.push((spec, target)),
                    Err(e) => errors.push(e),
                }
            }
            if let Some(e) = FilesError::combine(errors) {
                return Err(e);
            }
            let _guards = inner.lock(ok.iter().map(|(_, t)| t.as_path()));
            let mut budget = limits.max_write_bytes * EDIT_TOTAL_FACTOR;
            let mut prepared = Vec::new();
            let mut errors = Vec::new();
            for (spec, target) in ok {
                match prepare(spec, target, limits.max_write_bytes, &mut budget) {
                    Ok(p) => prepared.push(p),
                    Err(e) => errors.push(e),
                }
            }
            if let Some(e) = FilesError::combine(errors) {
                return Err(e);
            }
            commit(&prepared, limits.fsync)?;
            Ok(prepared
                .into_iter()
                .map(|p| EditOutcome {
                    diff: include_diff.then(|| diff::unified(&p.spec.path, &p.old, &p.new)),
                    after: ContentHash::of(p.new.as_bytes()),
                    bytes: p.new.len() as u64,
                    before: p.before,
                    target: p.target,
                    path: p.spec.path,
                })
                .collect())
        })
        .await
    }
}

/// Entries naming the same path (after cleaning) are merged, edits in order. Two different
/// paths that resolve to one real file are refused: merging edits addressed to different
/// names would hide accidental aliasing.
fn merge(files: Vec<EditSpec>) -> Result<Vec<EditSpec>, FilesError> {
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut out: Vec<EditSpec> = Vec::new();
    for f in files {
        let key = path::absolute(&f.path)
            .and_then(|p| path::resolve(&p))
            .unwrap_or_else(|_| PathBuf::from(&f.path));
        if let Some(&i) = seen.get(&key) {
            let prev = &mut out[i];
            let same = path::absolute(&prev.path).ok() == path::absolute(&f.path).ok();
            if !same {
                return Err(FilesError::Invalid(format!(
                    "duplicate file path {:?} aliases {:?} (same real file): combine edits into a \
                     single entry's \"edits\" list",
                    f.path, prev.path
                )));
            }
            if let (Some(a), Some(b)) = (&prev.if_match, &f.if_match)
                && a != b
            {
                return Err(FilesError::Invalid(format!(
                    "entries for {:?} give different if_match values",
                    f.path
                )));
            }
            prev.edits.extend(f.edits);
            prev.if_match = prev.if_match.take().or(f.if_match);
            continue;
        }
        seen.insert(key, out.len());
        out.push(f);
    }
    Ok(out)
}

/// Request-shape checks for one entry; the resolved target.
fn check(spec: &EditSpec) -> Result<PathBuf, FilesError> {
    let p = path::absolute(&spec.path)?;
    if spec.edits.is_empty() {
        return Err(FilesError::Invalid(format!(
            "{}: must specify at least one edit",
            spec.path
        )));
    }
    path::resolve(&p)
}

fn prepare(
    spec: EditSpec,
    target: PathBuf,
    max_file: u64,
    budget: &mut u64,
) -> Result<Prepared, FilesError> {
    let (file, size) = super::read::open_regular(&target)?;
    let meta = file
        .metadata()
        .map_err(|e| FilesError::io("stat", &target, e))?;
    if size > max_file || size > *budget {
        return Err(FilesError::TooLarge {
            what: spec.path.clone(),
            size,
            limit: max_file.min(*budget),
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(max_file + 1)
        .read_to_end(&mut data)
        .map_err(|e| FilesError::io("read", &target, e))?;
    if data.len() as u64 > max_file {
        return Err(FilesError::TooLarge {
            what: spec.path.clone(),
            size: data.len() as u64,
            limit: max_file,
        });
    }
    *budget -= data.len() as u64;
    let before = ContentHash::of(&data);
    if let Some(want) = &spec.if_match {
        let pre = Precondition::if_match(want);
        if !pre.holds(Some(&before)) {
            return Err(FilesError::PreconditionFailed {
                path: PathBuf::from(&spec.path),
                current: Some(before),
                expected: want.clone(),
            });
        }
    }
    let old = String::from_utf8(data).map_err(|_| {
        FilesError::Invalid(format!(
            "edit {}: the file is not UTF-8 text; replace it with write-file instead",
            spec.path
        ))
    })?;
    let mut new = old.clone();
    for e in &spec.edits {
        new = edit::apply(
            &new,
            Edit {
                search: &e.search,
                replace: &e.replace,
                replace_all: e.replace_all,
            },
        )
        .map_err(|err| FilesError::Invalid(format!("edit {}: {err}", spec.path)))?;
    }
    Ok(Prepared {
        spec,
        target,
        meta,
        old,
        new,
        before,
    })
}

/// Whether the file at `p` is still the one that was read (same inode, size and mtime).
fn unchanged(p: &Path, was: &Metadata) -> bool {
    std::fs::metadata(p).is_ok_and(|m| {
        m.dev() == was.dev()
            && m.ino() == was.ino()
            && m.len() == was.len()
            && m.mtime() == was.mtime()
            && m.mtime_nsec() == was.mtime_nsec()
    })
}

/// Stages every changed file, then renames them all; rolls back on a failed rename.
fn commit(prepared: &[Prepared], fsync: bool) -> Result<(), FilesError> {
    let changed: Vec<&Prepared> = prepared.iter().filter(|p| p.new != p.old).collect();
    let mut staged: Vec<(NamedTempFile, &Prepared)> = Vec::new();
    for p in &changed {
        staged.push((write_temp(p, &p.new, fsync)?, p));
    }
    for (_, p) in &staged {
        if !unchanged(&p.target, &p.meta) {
            return Err(FilesError::Changed(p.target.clone()));
        }
    }
    let mut done: Vec<&Prepared> = Vec::new();
    for (temp, p) in staged {
        if let Err(e) = temp.persist(&p.target) {
            let err = FilesError::io("rename into", &p.target, e.error);
            let mut unrestored = Vec::new();
            for d in done {
                let back = write_temp(d, &d.old, fsync).and_then(|t| {
                    t.persist(&d.target)
                        .map_err(|e| FilesError::io("rename", &d.target, e.error))
                });
                if back.is_err() {
                    unrestored.push(d.target.display().to_string());
                }
            }
            if unrestored.is_empty() {
                return Err(err);
            }
            return Err(FilesError::Invalid(format!(
                "{err}; and restoring the files already written failed for: {}",
                unrestored.join(", ")
            )));
        }
        done.push(p);
    }
    Ok(())
}

fn write_temp(p: &Prepared, content: &str, fsync: bool) -> Result<NamedTempFile, FilesError> {
    use std::io::Write;
    let temp = stage(&p.target)?;
    temp.as_file()
        .write_all(content.as_bytes())
        .map_err(|e| FilesError::io("write", temp.path(), e))?;
    if fsync {
        temp.as_file()
            .sync_data()
            .map_err(|e| FilesError::io("fsync", temp.path(), e))?;
    }
    keep_owner_and_mode(&temp, &p.meta);
    Ok(temp)
}
