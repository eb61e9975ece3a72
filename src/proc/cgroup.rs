//! cgroup v2 child groups: where the agent owns a delegated cgroup v2 subtree (systemd
//! `Delegate=yes`, most container runtimes with a cgroup namespace), each command runs in a
//! group of its own with `memory.max`, `memory.swap.max` and `pids.max` for the whole command,
//! and `memory.events` tells an OOM kill apart from other `SIGKILL`s. Elsewhere only the
//! rlimits of `limits` apply.
//!
//! Owns: detecting at start which of the two is available (and saying why not), preparing the
//! subtree (the agent moves itself into a leaf `agent` group so controllers can be enabled for
//! siblings: cgroup v2 allows processes only in leaves), creating, reading and removing command
//! groups. Leaves to `spawn` joining the group (the child writes itself into `cgroup.procs`
//! before `exec`, so nothing of the command ever runs outside it) and to the manager when to
//! create and remove one.
//!
//! `cpu_seconds` is CPU *time*, which cgroup v2 does not cap (`cpu.max` is a rate); it stays an
//! rlimit per process in both modes.

use std::io;
use std::path::{Path, PathBuf};

use super::limits::{Limit, Limits};

/// How per-command limits are enforced, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// rlimits per process plus a cgroup v2 group per command under `root`.
    CgroupV2(Cgroups),
    /// rlimits per process only.
    Rlimits {
        /// Why cgroup v2 is not used (turned off, or no usable delegated subtree), for health
        /// and logs.
        reason: String,
    },
}

impl Enforcement {
    /// Detects a usable delegated cgroup v2 subtree (`enabled`), else explains why not.
    pub fn detect(enabled: bool) -> Self {
        if !enabled {
            return Self::Rlimits {
                reason: "cgroups turned off ([api] cgroups = false)".to_owned(),
            };
        }
        match Cgroups::detect() {
            Ok(c) => Self::CgroupV2(c),
            Err(reason) => Self::Rlimits { reason },
        }
    }

    /// `"cgroup_v2"` or `"rlimits"`, as `/health` reports it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::CgroupV2(_) => "cgroup_v2",
            Self::Rlimits { .. } => "rlimits",
        }
    }

    /// One sentence for the log and `/health`.
    pub fn describe(&self) -> String {
        match self {
            Self::CgroupV2(c) => format!(
                "rlimits per process and a cgroup v2 group per command under {} (controllers: {})",
                c.root.display(),
                c.controllers.join(" ")
            ),
            Self::Rlimits { reason } => format!("rlimits per process only: {reason}"),
        }
    }

    /// The cgroup hierarchy commands are placed in; `None` with rlimits only.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        match self {
            Self::CgroupV2(c) => Some(c),
            Self::Rlimits { .. } => None,
        }
    }
}

/// The delegated subtree the agent manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    /// The agent's own cgroup directory (command groups are created in it).
    pub root: PathBuf,
    /// Controllers enabled for command groups (of `memory`, `pids`).
    pub controllers: Vec<String>,
}

/// Controllers we use, in the order they are enabled.
const WANTED: [&str; 2] = ["memory", "pids"];

impl Cgroups {
    /// Finds the agent's cgroup v2 directory, checks that it may be managed, moves the agent
    /// into a leaf below it and enables the controllers for command groups.
    fn detect() -> Result<Self, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let Some(rel) = unified_path(&own) else {
            return Err("no cgroup v2 hierarchy (cgroup v1 only)".to_owned());
        };
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let Some((mount_root, mount_point)) = cgroup2_mount(&mounts) else {
            return Err("cgroup v2 is not mounted".to_owned());
        };
        let Some(dir) = join_cgroup(&mount_point, &mount_root, &rel) else {
            return Err(format!(
                "our cgroup {rel} is outside the mounted cgroup v2 tree at {}",
                mount_point.display()
            ));
        };
        let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", dir.display()))?;
        let controllers: Vec<String> = WANTED
            .iter()
            .filter(|w| available.split_whitespace().any(|a| a == **w))
            .map(|w| (*w).to_owned())
            .collect();
        if controllers.is_empty() {
            return Err(format!(
                "cgroup v2 at {} offers neither the memory nor the pids controller (they may be bound to cgroup v1)",
                dir.display()
            ));
        }
        if !writable(&dir.join("cgroup.subtree_control")) || !writable(&dir.join("cgroup.procs")) {
            return Err(format!(
                "{} is not delegated to this agent (not writable; systemd: Delegate=yes)",
                dir.display()
            ));
        }
        // cgroup v2 keeps processes in leaves only (the root excepted): the agent moves into
        // `agent` so that its own group can enable controllers for the command groups.
        if rel != "/" {
            let leaf = dir.join("agent");
            mkdir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
            std::fs::write(leaf.join("cgroup.procs"), b"0")
                .map_err(|e| format!("cannot move the agent into {}: {e}", leaf.display()))?;
        }
        let enable: String = controllers
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(dir.join("cgroup.subtree_control"), enable.as_bytes()).map_err(|e| {
            format!(
                "cannot enable {enable} in {}: {e} (other processes in that group?)",
                dir.display()
            )
        })?;
        Ok(Self {
            root: dir,
            controllers,
        })
    }

    /// Creates the group of command `id` with `limits` (the ones cgroup v2 can enforce).
    pub fn create(&self, id: &str, limits: &Limits) -> io::Result<CommandGroup> {
        let dir = self.root.join(format!("cmd-{id}"));
        mkdir(&dir)?;
        let group = CommandGroup { dir };
        let has = |c: &str| self.controllers.iter().any(|x| x == c);
        let write = |file: &str, value: String| {
            std::fs::write(group.dir.join(file), value.as_bytes()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("writing {file} of {}: {e}", group.dir.display()),
                )
            })
        };
        let result = (|| {
            if let Some(m) = limits.get(Limit::MemoryBytes).filter(|_| has("memory")) {
                write("memory.max", m.to_string())?;
                // Swap would let the command exceed the limit; absent without swap accounting.
                let _ = write("memory.swap.max", "0".to_owned());
            }
            if let Some(p) = limits.get(Limit::Processes).filter(|_| has("pids")) {
                write("pids.max", p.to_string())?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(group),
            Err(e) => {
                group.remove();
                Err(e)
            }
        }
    }
}

/// One command's cgroup.
#[derive(Debug)]
pub struct CommandGroup {
    dir: PathBuf,
}

impl CommandGroup {
    /// The file the child writes itself into.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Processes of the group the OOM killer ended so far.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .map(|t| event_count(&t, "oom_kill"))
            .unwrap_or(0)
    }

    /// Removes the (empty) group; a group that still has processes stays (logged).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(dir = %self.dir.display(), "cgroup not removed: {e}");
        }
    }
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// The cgroup v2 path of `/proc/self/cgroup` (the `0::` line).
fn unified_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
        .filter(|p| p.starts_with('/'))
}

/// The first cgroup2 mount of `/proc/self/mountinfo`: (root inside the hierarchy, mount point).
fn cgroup2_mount(mountinfo: &str) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        Some((
            unescape(fields.get(3)?),
            PathBuf::from(unescape(fields.get(4)?)),
        ))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `rel` when the hierarchy's `mount_root` is mounted at `point`.
fn join_cgroup(point: &Path, mount_root: &str, rel: &str) -> Option<PathBuf> {
    let inside = Path::new(rel).strip_prefix(mount_root).ok()?;
    Some(point.join(inside))
}

/// The value of `key` in a flat-keyed file such as `memory.events`.
fn event_count(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_cgroup() {
        assert_eq!(
            unified_path("4:memory:/x\n0::/system.slice/wgagent.service\n").as_deref(),
            Some("/system.slice/wgagent.service")
        );
        assert_eq!(unified_path("4:memory:/x\n1:cpu:/\n"), None);
    }

    #[test]
    fn finds_the_cgroup2_mount_and_joins_paths() {
        let mi = "24 30 0:22 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
                  35 30 0:30 /ns /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw\n";
        let (root, point) = cgroup2_mount(mi).unwrap();
        assert_eq!(root, "/ns");
        assert_eq!(point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            join_cgroup(&point, &root, "/ns/svc").unwrap(),
            PathBuf::from("/sys/fs/cgroup/svc")
        );
        assert_eq!(join_cgroup(&point, &root, "/other"), None);
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(
            cgroup2_mount("24 30 0:22 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn reads_memory_events() {
        let t = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(event_count(t, "oom_kill"), 2);
        assert_eq!(event_count(t, "missing"), 0);
    }

    #[test]
    fn turned_off_says_so() {
        // (Detection proper moves the calling process between cgroups: the agent's tests do
        // that in a process of their own.)
        let e = Enforcement::detect(false);
        assert_eq!(e.mode(), "rlimits");
        assert!(e.describe().contains("turned off"), "{}", e.describe());
    }
}
