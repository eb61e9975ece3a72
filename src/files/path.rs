//! Paths as the API takes them: absolute, cleaned lexically (`.` and `..` removed the way Go's
//! `filepath.Clean` and the reference agent do: `..` drops the previous component and never
//! climbs above `/`), then optionally resolved through symbolic links.
//!
//! Lexical cleaning means `/a/link/../b` is `/a/b` whatever `link` points to: the same rule for
//! every route, so `resolve-path`, reads and writes always agree on which file a path names.
//! There is no allowed root: a path can name any file the agent's user may touch (per-peer
//! permissions are the trust layer's job).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::FilesError;

/// Symbolic links followed before giving up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Checks that `raw` is a usable absolute path and cleans it.
pub fn absolute(raw: &str) -> Result<PathBuf, FilesError> {
    if raw.is_empty() {
        return Err(FilesError::PathRequired);
    }
    if raw.contains('\0') {
        return Err(FilesError::InvalidPath {
            path: raw.to_owned(),
            why: "it contains a NUL byte",
        });
    }
    if !raw.starts_with('/') {
        return Err(FilesError::Relative(raw.to_owned()));
    }
    Ok(clean(Path::new(raw)))
}

/// Lexical cleaning of an absolute path (see the module doc). A relative input is treated as
/// if it started at `/`.
pub fn clean(path: &Path) -> PathBuf {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut out = PathBuf::from("/");
    for p in parts {
        out.push(p);
    }
    out
}

/// The components of an absolute path, as the list-directory answer gives them.
pub fn components(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Resolves symbolic links in the existing part of the cleaned absolute `path`, keeping
/// missing trailing components (so a future write's real target can be checked). Blocking.
pub fn resolve(path: &Path) -> Result<PathBuf, FilesError> {
    let mut budget = MAX_SYMLINKS;
    resolve_in(&clean(path), &mut budget, path)
}

fn resolve_in(path: &Path, budget: &mut usize, original: &Path) -> Result<PathBuf, FilesError> {
    let Some(parent) = path.parent() else {
        return Ok(path.to_owned()); // "/"
    };
    let name = path.file_name().map(OsStr::to_owned).unwrap_or_default();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if *budget == 0 {
                return Err(FilesError::SymlinkLoop(original.to_owned()));
            }
            *budget -= 1;
            let target =
                std::fs::read_link(path).map_err(|e| FilesError::io("readlink", path, e))?;
            let joined = if target.is_absolute() {
                target
            } else {
                parent.join(target)
            };
            resolve_in(&clean(&joined), budget, original)
        }
        Ok(_) => Ok(resolve_in(parent, budget, original)?.join(name)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(resolve_in(parent, budget, original)?.join(name))
        }
        Err(e) => Err(FilesError::io("lstat", path, e)),
    }
}

/// The file name of `path` as bytes-safe text, for temp-file prefixes.
pub fn file_name_lossy(path: &Path) -> String {
    path.file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_is_lexical_like_the_reference() {
        for (input, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b/", "/a/b"),
            ("//a//b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/..", "/"),
            ("/a/b/../../..", "/"),
        ] {
            assert_eq!(clean(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn only_absolute_paths_are_accepted() {
        assert!(matches!(absolute(""), Err(FilesError::PathRequired)));
        assert!(matches!(absolute("./x"), Err(FilesError::Relative(_))));
        assert!(matches!(absolute("x/y"), Err(FilesError::Relative(_))));
        assert!(matches!(
            absolute("/a\0b"),
            Err(FilesError::InvalidPath { .. })
        ));
        assert_eq!(absolute("/a/../b").unwrap(), PathBuf::from("/b"));
        assert_eq!(
            absolute("./relative").unwrap_err().to_string(),
            "file path must be absolute: \"./relative\""
        );
    }

    #[test]
    fn components_split_an_absolute_path() {
        assert_eq!(components(Path::new("/")), Vec::<String>::new());
        assert_eq!(components(Path::new("/home/u/x")), ["home", "u", "x"]);
    }

    #[test]
    fn resolve_follows_links_and_keeps_missing_tails() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("plans")).unwrap();
        std::fs::write(real.join("plans/real.txt"), "x").unwrap();
        std::os::unix::fs::symlink(real.join("plans"), real.join("link")).unwrap();
        std::os::unix::fs::symlink("real.txt", real.join("plans/rel")).unwrap();
        std::os::unix::fs::symlink(real.join("loop"), real.join("loop")).unwrap();
        // A link to a file, relative.
        assert_eq!(
            resolve(&real.join("plans/rel")).unwrap(),
            real.join("plans/real.txt")
        );
        // A linked parent, existing and missing file.
        assert_eq!(
            resolve(&real.join("link/real.txt")).unwrap(),
            real.join("plans/real.txt")
        );
        assert_eq!(
            resolve(&real.join("link/PLAN.md")).unwrap(),
            real.join("plans/PLAN.md")
        );
        assert_eq!(
            resolve(&real.join("missing/a/b")).unwrap(),
            real.join("missing/a/b")
        );
        assert!(matches!(
            resolve(&real.join("loop")),
            Err(FilesError::SymlinkLoop(_))
        ));
    }
}
