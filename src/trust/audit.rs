//! The audit log (`[audit]`): one JSON line per state-changing request and per denied request,
//! appended to a file and handed to the kernel (one `write(2)` per line, `O_APPEND`) before the
//! response is sent.
//!
//! Owns: the file (opened at start, mode 0600), size-based rotation (`path` → `path.1` → ... →
//! `path.<keep>`, the oldest dropped: at most `max_bytes × (keep + 1)` on disk), reopening for
//! external logrotate ([`AuditLog::reopen`], on SIGHUP), the line format ([`Entry`]).
//! Leaves to the API what goes into a line and what a failed write means for the request
//! (`fail_closed`).
//!
//! Not hand-rolled logging: a line must be on its way to the disk before the action's answer,
//! and a failed write must be visible to the caller, which `tracing` appenders do not offer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Serialize;

/// `[audit]` in the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// `path`: the log file. Absolute.
    pub path: PathBuf,
    /// `max_bytes`: rotate before a line would make the file larger than this.
    pub max_bytes: u64,
    /// `keep`: rotated files kept (`path.1` newest ... `path.<keep>` oldest); 0 keeps none.
    pub keep: u32,
    /// `fail_closed`: a request whose line cannot be written fails with 503 (and a start starts
    /// nothing). `false`: the failure is logged and the request proceeds.
    pub fail_closed: bool,
}

impl AuditConfig {
    /// 64 MiB per file: with [`Self::DEFAULT_KEEP`], at most 384 MiB on disk.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
    /// Rotated files kept by default.
    pub const DEFAULT_KEEP: u32 = 5;

    /// The log at `path` with the default rotation, failing closed.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            keep: Self::DEFAULT_KEEP,
            fail_closed: true,
        }
    }
}

/// One audit record. Absent fields are left out of the line. Never holds secrets or content:
/// environment **keys** only, file hashes and sizes only.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The peer's name (else the start of its key); `"local"` without a tunnel.
    pub peer: String,
    /// The peer's public key, base64; absent without a tunnel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The caller's tunnel address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The HTTP method (`POST`, `DELETE`, ...).
    pub method: String,
    /// The request path (as sent; query strings excluded).
    pub route: String,
    /// The HTTP status of the response (for a process start written before the process runs:
    /// 200, the status it is about to get).
    pub status: u16,
    /// The permission the request needed, on denials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
    /// The process acted on (or started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    /// The command line of a start, as requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The working directory of a start: as requested, then as resolved once it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The names of the environment variables a start set (never their values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_keys: Option<Vec<String>>,
    /// The user a process runs as: as requested, then as resolved (`run_as`, `users`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The resource limits of a start (the API's `limits` object), as requested, then as
    /// applied after defaults and maxima.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<serde_json::Value>,
    /// The signal sent, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Files written or edited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Bytes written (files, stdin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Content hashes of the files before a write or edit (a write that created its file has
    /// none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_before: Option<Vec<String>>,
    /// Content hashes of the files after a write or edit, in the order of `paths`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_after: Option<Vec<String>>,
    /// Why the request failed, when it did (the error message, never request content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The current time as the log writes it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An open audit log. Writes are serialised by a mutex held only for one `write(2)` (and a
/// rotation when one is due); never across an `.await`.
pub struct AuditLog {
    cfg: AuditConfig,
    file: Mutex<Open>,
}

struct Open {
    file: Option<File>,
    /// Bytes in the current file (from its metadata at open, plus what we appended).
    size: u64,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log. An unusable path is an error at start.
    pub fn open(cfg: AuditConfig) -> io::Result<AuditLog> {
        let (file, size) = open(&cfg.path)?;
        Ok(AuditLog {
            cfg,
            file: Mutex::new(Open {
                file: Some(file),
                size,
            }),
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    /// Whether a failed write must fail the request ([`AuditConfig::fail_closed`]).
    pub fn fail_closed(&self) -> bool {
        self.cfg.fail_closed
    }

    /// Appends one line. The line reaches the kernel (page cache) before this returns; an
    /// error means it may not have.
    pub fn write(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut st = self.file.lock();
        if st.size > 0 && st.size + line.len() as u64 > self.cfg.max_bytes {
            self.rotate(&mut st)?;
        }
        if st.file.is_none() {
            let (file, size) = open(&self.cfg.path)?;
            *st = Open {
                file: Some(file),
                size,
            };
        }
        let file = st.file.as_mut().expect("opened above");
        // One write(2) of the whole line: with O_APPEND, lines of concurrent writers (an
        // external tool, another agent) never interleave.
        match file.write(&line) {
            Ok(n) if n == line.len() => {
                st.size += n as u64;
                Ok(())
            }
            Ok(n) => {
                st.size += n as u64;
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write ({n} of {} bytes)", line.len()),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Closes and reopens the file (after an external logrotate moved it). An error leaves the
    /// log closed; the next write tries to open it again.
    pub fn reopen(&self) -> io::Result<()> {
        let mut st = self.file.lock();
        st.file = None;
        let (file, size) = open(&self.cfg.path)?;
        *st = Open {
            file: Some(file),
            size,
        };
        Ok(())
    }

    /// `path.N` → `path.N+1` (the oldest falls off), `path` → `path.1`, then a new `path`.
    /// Only a regular file is rotated (a log pointed at a device or pipe is left alone).
    fn rotate(&self, st: &mut Open) -> io::Result<()> {
        let path = &self.cfg.path;
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            st.size = 0;
            return Ok(());
        }
        st.file = None;
        let keep = self.cfg.keep;
        if keep == 0 {
            remove_if_exists(path)?;
        } else {
            remove_if_exists(&numbered(path, keep))?;
            for n in (1..keep).rev() {
                let from = numbered(path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(path, n + 1))?;
                }
            }
            std::fs::rename(path, numbered(path, 1))?;
        }
        let (file, size) = open(path)?;
        st.file = Some(file);
        st.size = size;
        Ok(())
    }
}

fn open(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: &str) -> Entry {
        Entry {
            time: now(),
            peer: "ci".into(),
            method: "POST".into(),
            route: route.into(),
            status: 200,
            ..Entry::default()
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_json_with_absent_fields_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(AuditConfig::new(path.clone())).unwrap();
        log.write(&entry("/a")).unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["route"], "/a");
        assert_eq!(got[0]["status"], 200);
        assert!(got[0].get("command").is_none());
        let time = got[0]["time"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let one = serde_json::to_vec(&entry("/r/0000")).unwrap().len() as u64 + 1;
        let log = AuditLog::open(AuditConfig {
            max_bytes: one * 3,
            keep: 2,
            ..AuditConfig::new(path.clone())
        })
        .unwrap();
        for i in 0..20 {
            log.write(&entry(&format!("/r/{i:04}"))).unwrap();
        }
        // 20 lines, 3 per file: the current file has 2, .1 and .2 three each; older gone.
        let routes = |p: &Path| -> Vec<String> {
            lines(p)
                .iter()
                .map(|l| l["route"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(routes(&path), ["/r/0018", "/r/0019"]);
        assert_eq!(
            routes(&numbered(&path, 1)),
            ["/r/0015", "/r/0016", "/r/0017"]
        );
        assert_eq!(
            routes(&numbered(&path, 2)),
            ["/r/0012", "/r/0013", "/r/0014"]
        );
        assert!(!numbered(&path, 3).exists());
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= one * 3);
        }
    }

    #[test]
    fn reopen_follows_an_external_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(AuditConfig::new(path.clone())).unwrap();
        log.write(&entry("/before")).unwrap();
        let moved = dir.path().join("audit.log.old");
        std::fs::rename(&path, &moved).unwrap();
        log.write(&entry("/still-old")).unwrap();
        log.reopen().unwrap();
        log.write(&entry("/after")).unwrap();
        assert_eq!(lines(&moved).len(), 2);
        assert_eq!(lines(&path)[0]["route"], "/after");
    }

    #[test]
    fn a_failing_device_reports_the_error() {
        let log = AuditLog::open(AuditConfig {
            max_bytes: 10,
            ..AuditConfig::new("/dev/full".into())
        })
        .unwrap();
        assert!(log.write(&entry("/x")).is_err());
        assert!(log.write(&entry("/y")).is_err(), "never rotates a device");
    }
}
