//! The state directory: per-process logs and the records of exited processes, so results
//! survive an agent restart.
//!
//! Layout: `<dir>/lock` (one agent per directory), `<dir>/logs/<id>.log` (see `log`),
//! `<dir>/procs/<id>.json` (a [`Meta`], written atomically: temp file + rename).
//! Owns: creating and locking the directory, saving and loading records, skipping corrupt or
//! foreign files with a warning, deleting what the manager evicts.
//! Leaves to the manager: when to save, what to evict (budgets).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::head_tail::Saved;

/// Format version of [`Meta`]; other versions are skipped with a warning.
const META_VERSION: u32 = 1;

/// An open, locked state directory. A temporary one (no directory configured) is removed on
/// drop.
pub struct StateDir {
    root: PathBuf,
    _lock: Option<nix::fcntl::Flock<File>>,
    temporary: bool,
}

impl StateDir {
    /// Opens (creating) `dir`, or a fresh temporary directory when `None`. Fails if another
    /// agent holds the directory's lock.
    pub fn open(dir: Option<&Path>) -> io::Result<Self> {
        let (root, temporary) = match dir {
            Some(d) => (d.to_owned(), false),
            None => (
                std::env::temp_dir().join(format!("wgagent-state-{}", uuid::Uuid::new_v4())),
                true,
            ),
        };
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", root.display()))
        };
        for sub in ["", "logs", "procs"] {
            std::fs::create_dir_all(root.join(sub)).map_err(|e| ctx("creating", e))?;
        }
        let lock = File::create(root.join("lock")).map_err(|e| ctx("locking", e))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "state directory {} is in use by another agent",
                        root.display()
                    ),
                )
            })?;
        Ok(Self {
            root,
            _lock: Some(lock),
            temporary,
        })
    }

    /// A directory where nothing can be written: every log reports the failure.
    pub fn unusable() -> Self {
        Self {
            root: PathBuf::from("/dev/null/wgagent-state"),
            _lock: None,
            temporary: false,
        }
    }

    /// The directory (records in it, logs under `logs/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the log of process `id` lives: `<root>/logs/<id>.log`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root.join("logs").join(format!("{id}.log"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.root.join("procs").join(format!("{id}.json"))
    }

    /// Writes a record atomically.
    pub fn save(&self, meta: &Meta) -> io::Result<()> {
        let path = self.meta_path(&meta.id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(meta).map_err(io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }

    /// Deletes a record and its log.
    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.meta_path(id));
        let _ = std::fs::remove_file(self.log_path(id));
    }

    /// Every readable record, and a warning per file skipped. Logs without a record (a process
    /// that was running when the agent died) are deleted.
    pub fn load(&self) -> (Vec<Meta>, Vec<String>) {
        let mut metas = Vec::new();
        let mut warnings = Vec::new();
        let dir = self.root.join("procs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("reading {}: {e}", dir.display()));
                return (metas, warnings);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|id| is_id(id)) else {
                warnings.push(format!("skipping foreign file {}", path.display()));
                continue;
            };
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Meta>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(m) if m.version == META_VERSION && m.id == id => metas.push(m),
                Ok(m) => warnings.push(format!(
                    "skipping {}: version {} or id {:?} not ours",
                    path.display(),
                    m.version,
                    m.id
                )),
                Err(e) => warnings.push(format!("skipping corrupt {}: {e}", path.display())),
            }
        }
        if let Ok(logs) = std::fs::read_dir(self.root.join("logs")) {
            for entry in logs.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let known = name
                    .strip_suffix(".log")
                    .is_some_and(|id| metas.iter().any(|m| m.id == id));
                if !known {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        (metas, warnings)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A UUID in its text form (what `ProcessId::new_random` makes).
fn is_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// One persisted record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// [`Meta::VERSION`] when written; records of another version are skipped at load.
    pub version: u32,
    /// The process id (also the file's name).
    pub id: String,
    /// The command line.
    pub command: String,
    /// The resolved working directory.
    pub workdir: PathBuf,
    /// As requested at start.
    pub background: bool,
    /// The shell's pid (and process-group id).
    pub pid: u32,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// `None`: it was running when this was written.
    pub exit: Option<MetaExit>,
    /// The head+tail output.
    pub output: SavedOutput,
    /// The log's end offset (bytes written).
    pub log_end: u64,
    /// Why the log stopped, if it did.
    pub log_error: Option<String>,
    /// The start's idempotency key, so a retry after a restart still finds the process.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the start request, for idempotency-key conflict checks.
    pub fingerprint: u64,
    /// The user the command ran as (absent in records of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The peer that started it (absent: unknown, or an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<super::record::StartedBy>,
    /// Effective limits by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub limits: std::collections::BTreeMap<String, u64>,
}

impl Meta {
    /// The record format written by this agent.
    pub const VERSION: u32 = META_VERSION;
}

/// A persisted [`super::Exit`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaExit {
    /// Exit status, -1 when a signal killed it.
    pub code: i32,
    /// The signal's name (`"SIGKILL"`), if one killed it.
    pub signal: Option<String>,
    /// [`super::ExitReason::as_str`].
    pub reason: String,
    /// Exit time, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The head+tail buffer, base64 in JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedOutput {
    /// The first bytes, base64.
    pub head: String,
    /// The last bytes (oldest first), base64.
    pub tail: String,
    /// Bytes written in all.
    pub total: u64,
}

impl From<&Saved> for SavedOutput {
    fn from(s: &Saved) -> Self {
        Self {
            head: B64.encode(&s.head),
            tail: B64.encode(&s.tail),
            total: s.total,
        }
    }
}

impl SavedOutput {
    /// The buffer contents; `None` when the base64 is corrupt.
    pub fn decode(&self) -> Option<Saved> {
        Some(Saved {
            head: B64.decode(&self.head).ok()?,
            tail: B64.decode(&self.tail).ok()?,
            total: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> Meta {
        Meta {
            version: Meta::VERSION,
            id: id.to_owned(),
            command: "echo hi".into(),
            workdir: "/".into(),
            background: false,
            pid: 1,
            started_at_ms: 1,
            exit: None,
            output: SavedOutput::from(&Saved {
                head: b"hi\n".to_vec(),
                tail: vec![],
                total: 3,
            }),
            log_end: 3,
            log_error: None,
            idempotency_key: Some("k".into()),
            fingerprint: 7,
            user: Some("nobody".into()),
            started_by: Some(crate::proc::StartedBy {
                peer: "ctl".into(),
                public_key: "k=".into(),
            }),
            limits: [("cpu_seconds".to_owned(), 5)].into(),
        }
    }

    #[test]
    fn saves_loads_and_skips_bad_files_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(Some(dir.path())).unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        state.save(&meta(&id)).unwrap();
        std::fs::write(state.log_path(&id), b"hi\n").unwrap();
        let orphan = uuid::Uuid::new_v4().to_string();
        std::fs::write(state.log_path(&orphan), b"x").unwrap();
        let bad = uuid::Uuid::new_v4().to_string();
        let text = serde_json::to_string(&meta(&bad)).unwrap();
        std::fs::write(
            dir.path().join("procs").join(format!("{bad}.json")),
            &text[..text.len() / 2],
        )
        .unwrap();
        std::fs::write(dir.path().join("procs").join("notes.txt"), b"x").unwrap();

        let (metas, warnings) = state.load();
        assert_eq!(metas.len(), 1);
        assert_eq!(metas[0].output.decode().unwrap().head, b"hi\n");
        assert_eq!(metas[0].user.as_deref(), Some("nobody"));
        assert_eq!(metas[0].started_by.as_ref().unwrap().peer, "ctl");
        assert_eq!(metas[0].limits["cpu_seconds"], 5);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("corrupt") && w.contains(&bad)),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("notes.txt")),
            "{warnings:?}"
        );
        assert!(!state.log_path(&orphan).exists(), "orphan logs are deleted");
        assert!(state.log_path(&id).exists());
        // A second agent on the same directory is refused.
        let err = StateDir::open(Some(dir.path())).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
