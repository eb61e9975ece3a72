//! Per-command resource limits: the vocabulary (`memory_bytes`, `cpu_seconds`, `open_files`,
//! `file_size_bytes`, `processes`), resolving a request's values against the agent's defaults
//! and maximums, and the `setrlimit` values the child applies before `exec`.
//!
//! Owns: names, validation (negative, zero, above the maximum: each error names the limit) and
//! the rlimit mapping. Leaves to `spawn` the system calls and to `cgroup` the cgroup v2 files.
//!
//! What each limit means with rlimits (every process of the command gets its own copy, so the
//! values are per process, not per command; a cgroup v2 group, where available, adds a limit
//! for the whole command):
//! - `memory_bytes` → `RLIMIT_AS`: address space per process; an allocation beyond it fails.
//! - `cpu_seconds` → `RLIMIT_CPU`: CPU time per process; `SIGXCPU` at the limit, `SIGKILL` a
//!   second later if that is ignored.
//! - `open_files` → `RLIMIT_NOFILE`: highest file descriptor number + 1.
//! - `file_size_bytes` → `RLIMIT_FSIZE`: largest file a process may write; `SIGXFSZ` beyond.
//! - `processes` → `RLIMIT_NPROC`: processes *of the user* (the kernel counts every process of
//!   the real user id, not only the command's); exact per command only with cgroup v2
//!   `pids.max`. The kernel does not apply it to root.

use std::fmt;

/// `setrlimit`'s resource type: an enum typedef in glibc, a plain `int` in musl (the static
/// container binary).
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// One kind of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Address space per process, bytes (`RLIMIT_AS`; with cgroup v2 also `memory.max` of
    /// the command).
    MemoryBytes,
    /// CPU time per process, seconds (`RLIMIT_CPU`, ends it with `SIGXCPU`).
    CpuSeconds,
    /// File descriptors per process (`RLIMIT_NOFILE`).
    OpenFiles,
    /// Largest file a process may write, bytes (`RLIMIT_FSIZE`, `SIGXFSZ`).
    FileSizeBytes,
    /// Processes (`RLIMIT_NPROC` of the user; with cgroup v2 `pids.max` of the command).
    Processes,
}

impl Limit {
    /// Every limit, in wire order.
    pub const ALL: [Limit; 5] = [
        Limit::MemoryBytes,
        Limit::CpuSeconds,
        Limit::OpenFiles,
        Limit::FileSizeBytes,
        Limit::Processes,
    ];

    /// The wire and config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::MemoryBytes => "memory_bytes",
            Self::CpuSeconds => "cpu_seconds",
            Self::OpenFiles => "open_files",
            Self::FileSizeBytes => "file_size_bytes",
            Self::Processes => "processes",
        }
    }

    /// The limit called `name` ([`Self::name`]); `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The rlimit resource and the (soft, hard) pair for `value`. CPU gets one second of
    /// headroom in the hard limit so that `SIGXCPU` (reported as `limit_exceeded`) comes
    /// before the hard limit's `SIGKILL`.
    fn rlimit(self, value: u64) -> (RlimitResource, u64, u64) {
        match self {
            Self::MemoryBytes => (libc::RLIMIT_AS, value, value),
            Self::CpuSeconds => (libc::RLIMIT_CPU, value, value.saturating_add(1)),
            Self::OpenFiles => (libc::RLIMIT_NOFILE, value, value),
            Self::FileSizeBytes => (libc::RLIMIT_FSIZE, value, value),
            Self::Processes => (libc::RLIMIT_NPROC, value, value),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value for some of the limits (absent = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    values: [Option<u64>; 5],
}

/// Limits as a request gives them: signed, so that a negative value can be refused by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RequestedLimits {
    values: [Option<i64>; 5],
}

/// Why requested limits are refused (HTTP 400; the same request will fail again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A negative value, as sent.
    #[error("Limit \"{0}\" must not be negative (got {1}).")]
    Negative(Limit, i64),
    /// Zero, which would let nothing run.
    #[error("Limit \"{0}\" must be at least 1 (0 would let nothing run).")]
    Zero(Limit),
    #[error("Limit \"{limit}\" ({value}) is above this agent's maximum ({max}).")]
    /// Above the agent's `max_limits`.
    AboveMax {
        /// Which limit.
        limit: Limit,
        /// The value asked for.
        value: u64,
        /// The configured maximum.
        max: u64,
    },
}

impl Limits {
    /// The value of `limit` (its unit: see [`Limit`]); `None`: not limited.
    pub fn get(&self, limit: Limit) -> Option<u64> {
        self.values[limit.index()]
    }

    /// Sets (`Some`) or clears (`None`) `limit`.
    pub fn set(&mut self, limit: Limit, value: Option<u64>) {
        self.values[limit.index()] = value;
    }

    /// A builder-style `set`.
    pub fn with(mut self, limit: Limit, value: u64) -> Self {
        self.set(limit, Some(value));
        self
    }

    /// No limit set.
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The limits that are set, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        Limit::ALL
            .into_iter()
            .filter_map(|l| self.get(l).map(|v| (l, v)))
    }

    /// The effective limits of a command: each one as requested, else the default, else the
    /// maximum (a maximum is a ceiling for every command, also those that ask for nothing).
    /// A requested value above the maximum, negative or zero is refused.
    pub fn resolve(
        requested: &RequestedLimits,
        defaults: &Limits,
        max: &Limits,
    ) -> Result<Limits, LimitError> {
        let mut out = Limits::default();
        for limit in Limit::ALL {
            let asked = match requested.get(limit) {
                None => None,
                Some(v) if v < 0 => return Err(LimitError::Negative(limit, v)),
                Some(0) => return Err(LimitError::Zero(limit)),
                Some(v) => Some(v as u64),
            };
            if let (Some(value), Some(max)) = (asked, max.get(limit))
                && value > max
            {
                return Err(LimitError::AboveMax { limit, value, max });
            }
            let value = asked.or(defaults.get(limit)).or(max.get(limit));
            out.set(limit, value);
        }
        Ok(out)
    }

    /// The rlimits to apply in the child: `(resource, soft, hard)`, `len` of them valid.
    pub(crate) fn rlimits(&self) -> Rlimits {
        let mut out = Rlimits::default();
        for (limit, value) in self.iter() {
            out.items[out.len] = limit.rlimit(value);
            out.len += 1;
        }
        out
    }
}

impl RequestedLimits {
    /// The value asked for, unchecked (may be negative or zero); `None`: not asked for.
    pub fn get(&self, limit: Limit) -> Option<i64> {
        self.values[limit.index()]
    }

    /// Sets (`Some`) or clears (`None`) `limit`, unchecked.
    pub fn set(&mut self, limit: Limit, value: Option<i64>) {
        self.values[limit.index()] = value;
    }

    /// Nothing asked for (the configured defaults apply).
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }
}

/// A fixed array of rlimits, built before the clone (the child must not allocate).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rlimits {
    pub(crate) items: [(RlimitResource, u64, u64); 5],
    pub(crate) len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(Limit, i64)]) -> RequestedLimits {
        let mut r = RequestedLimits::default();
        for &(l, v) in pairs {
            r.set(l, Some(v));
        }
        r
    }

    #[test]
    fn names_round_trip() {
        for l in Limit::ALL {
            assert_eq!(Limit::parse(l.name()), Some(l));
        }
        assert_eq!(Limit::parse("memory"), None);
    }

    #[test]
    fn request_wins_then_default_then_max() {
        let defaults = Limits::default().with(Limit::CpuSeconds, 10);
        let max = Limits::default()
            .with(Limit::CpuSeconds, 60)
            .with(Limit::MemoryBytes, 1 << 30);
        let got = Limits::resolve(&req(&[]), &defaults, &max).unwrap();
        assert_eq!(got.get(Limit::CpuSeconds), Some(10));
        assert_eq!(got.get(Limit::MemoryBytes), Some(1 << 30));
        assert_eq!(got.get(Limit::OpenFiles), None);
        let got = Limits::resolve(
            &req(&[(Limit::CpuSeconds, 30), (Limit::OpenFiles, 64)]),
            &defaults,
            &max,
        )
        .unwrap();
        assert_eq!(got.get(Limit::CpuSeconds), Some(30));
        assert_eq!(got.get(Limit::OpenFiles), Some(64));
    }

    #[test]
    fn refusals_name_the_limit() {
        let max = Limits::default().with(Limit::MemoryBytes, 1000);
        let none = Limits::default();
        let e = Limits::resolve(&req(&[(Limit::MemoryBytes, 1001)]), &none, &max).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Limit \"memory_bytes\" (1001) is above this agent's maximum (1000)."
        );
        let e = Limits::resolve(&req(&[(Limit::OpenFiles, -1)]), &none, &max).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"open_files\" must not be negative"),
            "{e}"
        );
        let e = Limits::resolve(&req(&[(Limit::Processes, 0)]), &none, &max).unwrap_err();
        assert!(e.to_string().contains("\"processes\""), "{e}");
        // At the maximum is fine.
        assert!(Limits::resolve(&req(&[(Limit::MemoryBytes, 1000)]), &none, &max).is_ok());
    }

    #[test]
    fn rlimits_in_wire_order_with_cpu_headroom() {
        let l = Limits::default()
            .with(Limit::Processes, 5)
            .with(Limit::CpuSeconds, 2);
        let r = l.rlimits();
        assert_eq!(r.len, 2);
        assert_eq!(r.items[0], (libc::RLIMIT_CPU, 2, 3));
        assert_eq!(r.items[1], (libc::RLIMIT_NPROC, 5, 5));
    }
}
