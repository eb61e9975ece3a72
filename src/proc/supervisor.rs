//! Tree tracking: a small supervisor process per command that no descendant can escape.
//!
//! Owns: forking the supervisor, its loop, and walking and signalling its descendant tree.
//! Leaves to the manager: deciding when to terminate or kill, reading the status pipe, reaping
//! the supervisor; to `supexec`: starting it from a helper that shares nothing with the agent
//! (what the wgagent binary does; the fork here is for programs that link the library, and the
//! fallback).
//!
//! ```text
//! agent ──exec or fork──► supervisor (child subreaper, own session) ──clone/exec──► sh -c …
//!   │  status pipe ◄── "spawned pid" / "sh exited status"; EOF = supervisor gone = tree empty
//!   │  death pipe  ──► HUP when the agent dies (even by SIGKILL) or drops the manager
//!   └─ SIGTERM / SIGUSR1 to the supervisor = terminate / kill the whole tree
//! ```
//!
//! Why this design (measured and weighed in BENCHMARKS.md §1.2 and the README):
//! - `PR_SET_CHILD_SUBREAPER` makes every orphaned descendant (`setsid`, double fork, `nohup
//!   … &`, daemons) re-parent to the supervisor instead of init, so the supervisor's descendant
//!   tree is exactly the command's, whatever sessions or groups its members moved to; the
//!   attribution needs no bookkeeping. The agent itself as subreaper could not tell whose an
//!   orphan is, and dies with the trees still running when it is SIGKILLed.
//! - When the agent dies, the kernel closes the write end of the death pipe; every supervisor
//!   sees HUP and kills its tree. `PR_SET_PDEATHSIG` was not used: it fires when the *thread*
//!   that forked exits (tokio's blocking threads come and go), not the agent.
//! - A PID namespace per command would also do it, but needs privileges and changes what the
//!   command sees (`$$`, `/proc`, a shell as pid 1 ignores SIGTERM).
//!
//! The command sees nothing of this except that its shell's parent is the supervisor.
//!
//! The supervisor can be a fork of a multi-threaded process, so its loop only makes raw system
//! calls on memory prepared before the fork and on its own stack: no allocation, no locks, no
//! panics (every index is checked). Forked by the helper (`supexec`), it runs the same loop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::spawn::{self, Prepared, Report, Stack, Stdio};

/// Messages on the status pipe, fixed 16 bytes (atomic pipe writes).
pub const MSG_LEN: usize = 16;
/// `[MSG_SPAWNED, pid, nice errno, oom errno]`: the command was exec'd.
pub const MSG_SPAWNED: i32 = 1;
/// `[MSG_FAILED, stage, errno, 0]`: the command could not be started (see `spawn::Stage`).
pub const MSG_FAILED: i32 = 2;
/// `[MSG_EXITED, wait status, 1 if the tree is empty else 0, 0]`.
pub const MSG_EXITED: i32 = 3;
/// `[MSG_READY, 0]` on a helper's socket: it runs the hidden mode (its first message; see
/// `supexec`).
pub const MSG_READY: i32 = 4;

/// Signal the agent sends the supervisor to kill the whole tree (SIGTERM terminates it).
pub const KILL_TREE: libc::c_int = libc::SIGUSR1;

/// Pids collected per walk; a bigger tree is signalled in several rounds.
const MAX_WALK: usize = 4096;

/// A started supervisor: its pid, the read end of its status pipe, and what it reported.
pub struct Started {
    /// The supervisor's pid (signal it with [`KILL_TREE`]).
    pub supervisor: i32,
    /// The command's shell.
    pub pid: i32,
    /// The child's report (non-fatal nice/OOM failures).
    pub report: Report,
    /// Read end of the status pipe; [`MSG_EXITED`] arrives on it.
    pub status: OwnedFd,
}

/// Forks a supervisor that spawns `cmd` with `stdio`. Blocks until the command was exec'd (or
/// failed), like `posix_spawn`. `death` is the read end of the manager's death pipe.
pub fn start(cmd: &Prepared, stdio: Stdio, death: RawFd, null: RawFd) -> io::Result<Started> {
    let (status_r, status_w) = spawn::pipe()?;
    let mut stack = Stack::new()?;
    let keep = [
        stdio.stdin,
        stdio.stdout,
        stdio.stderr,
        death,
        status_w.as_raw_fd(),
        null,
    ];
    // SAFETY: fork with every signal blocked (restored in the parent; the supervisor keeps them
    // blocked and reads the ones it wants through a signalfd). The child runs `run`, which never
    // returns and only makes raw system calls on memory prepared above.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::fork();
        if pid == 0 {
            run(
                cmd,
                stdio,
                &keep,
                death,
                status_w.as_raw_fd(),
                null,
                &mut stack,
            );
        }
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    drop(status_w);
    await_started(pid, status_r)
}

/// Reads the supervisor `pid`'s first message on `status_r` (the command exec'd, or where it
/// failed); reaps the supervisor when it failed.
pub(super) fn await_started(pid: i32, status_r: OwnedFd) -> io::Result<Started> {
    let mut msg = [0u8; MSG_LEN];
    let first = read_full(status_r.as_raw_fd(), &mut msg);
    let fields = decode(&msg);
    match (first, fields[0]) {
        (Ok(true), MSG_SPAWNED) => Ok(Started {
            supervisor: pid,
            pid: fields[1],
            report: Report {
                nice_errno: fields[2],
                oom_errno: fields[3],
                ..Report::default()
            },
            status: status_r,
        }),
        (Ok(true), MSG_FAILED) => {
            reap(pid);
            Err(Report {
                stage: fields[1],
                errno: fields[2],
                ..Report::default()
            }
            .into_error())
        }
        (r, _) => {
            reap(pid);
            let why = r
                .err()
                .map_or("it exited without a word".to_owned(), |e| e.to_string());
            Err(io::Error::other(format!(
                "process supervisor failed: {why}"
            )))
        }
    }
}

/// The four native-endian `i32`s of a status message.
pub fn decode(msg: &[u8; MSG_LEN]) -> [i32; 4] {
    let f = |i: usize| i32::from_ne_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    [f(0), f(4), f(8), f(12)]
}

fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: our own child, which exits right after its failure message.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

/// Reads exactly `buf.len()` bytes (blocking); `Ok(false)` on EOF first.
fn read_full(fd: RawFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            0 => return Ok(false),
            n if n > 0 => got += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(true)
}

// ---- everything below runs in the supervisor: raw system calls only ----

pub(super) fn send(fd: RawFd, fields: [i32; 4]) {
    let mut msg = [0u8; MSG_LEN];
    for (i, v) in fields.iter().enumerate() {
        msg[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: a 16-byte write (atomic on a pipe); a dead reader only gives EPIPE (SIGPIPE is
    // blocked in the supervisor).
    unsafe { libc::write(fd, msg.as_ptr().cast(), MSG_LEN) };
}

/// The supervisor's life, forked from the agent or from its helper (`supexec`). Never
/// returns. `keep` are the fds it must not close: `stdio`, `death`, `status` and `null`.
///
/// # Safety
/// Every fd must be open; in a forked child of a multi-threaded process, only this function may
/// run (it allocates nothing and takes no locks).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run(
    cmd: &Prepared,
    stdio: Stdio,
    keep: &[RawFd; 6],
    death: RawFd,
    status: RawFd,
    null: RawFd,
    stack: &mut Stack,
) -> ! {
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"wgagent-sup".as_ptr(), 0, 0, 0);
        close_all_but(keep);
        // The agent's terminal or log pipe must not be held open by us.
        for fd in 0..3 {
            if !keep.contains(&fd) {
                libc::dup2(null, fd);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, KILL_TREE] {
            libc::sigaddset(&mut set, s);
        }
        let sigfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);

        let sh = match spawn::spawn(cmd, stdio, stack) {
            Ok((pid, report)) => {
                send(
                    status,
                    [MSG_SPAWNED, pid, report.nice_errno, report.oom_errno],
                );
                pid
            }
            Err(report) => {
                send(status, [MSG_FAILED, report.stage, report.errno, 0]);
                libc::_exit(0);
            }
        };
        // Only the command may hold its output pipe, or EOF would never come.
        for fd in [stdio.stdin, stdio.stdout, stdio.stderr] {
            if fd != null && fd > 2 {
                libc::close(fd);
            }
        }
        if sigfd < 0 {
            // Cannot happen short of fd exhaustion; without signals, only reap.
            loop_without_signals(sh, status);
        }
        let mut sh_done = false;
        let mut killing = false;
        // After a terminate: pids already sent SIGTERM, and how many quiet re-walks are left.
        let mut termed = Termed::new();
        let mut term_rewalks = 0u32;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: sigfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: death,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // While killing, re-walk now and then in case a fork raced a walk; the death pipe
            // stays readable after HUP, so it leaves the poll set once it has spoken.
            let timeout = if killing {
                100
            } else if term_rewalks > 0 {
                TERM_REWALK_MS
            } else {
                -1
            };
            if killing {
                fds[1].fd = -1;
            }
            libc::poll(fds.as_mut_ptr(), 2, timeout);
            if fds[1].revents != 0 && !killing {
                killing = true;
            }
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            while libc::read(sigfd, (&raw mut info).cast(), size) == size as isize {
                match info.ssi_signo as i32 {
                    libc::SIGTERM => {
                        termed.n = 0;
                        term_rewalks = TERM_REWALKS;
                        signal_tree(libc::SIGTERM, sh, Some(&mut termed));
                    }
                    KILL_TREE => killing = true,
                    _ => {}
                }
            }
            if killing {
                signal_tree(libc::SIGKILL, sh, None);
            } else if term_rewalks > 0 {
                // A walk can miss a member while the tree changes under it (see `walk`): walk
                // again until TERM_REWALKS walks in a row found nobody new.
                if signal_members(libc::SIGTERM, Some(&mut termed)) {
                    term_rewalks = TERM_REWALKS;
                } else {
                    term_rewalks -= 1;
                }
            }
            let mut sh_status = None;
            let empty = loop {
                let mut st = 0;
                let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                if r > 0 {
                    if r == sh {
                        sh_status = Some(st);
                    }
                    continue;
                }
                break r < 0 && *libc::__errno_location() == libc::ECHILD;
            };
            if let Some(st) = sh_status {
                // Says whether anything is left, so the agent knows the tree's state together
                // with the shell's exit (no window where a finished process looks alive).
                send(status, [MSG_EXITED, st, i32::from(empty), 0]);
                sh_done = true;
            }
            if empty && sh_done {
                // The tree is empty: our exit closes the status pipe.
                libc::_exit(0);
            }
        }
    }
}

unsafe fn loop_without_signals(sh: i32, status: RawFd) -> ! {
    unsafe {
        loop {
            let mut st = 0;
            let r = libc::waitpid(-1, &mut st, 0);
            if r == sh {
                send(status, [MSG_EXITED, st, 0, 0]);
            }
            if r < 0 && *libc::__errno_location() == libc::ECHILD {
                libc::_exit(0);
            }
        }
    }
}

/// Closes every fd except `keep` (close_range over the gaps; negative entries are ignored).
pub(super) unsafe fn close_all_but(keep: &[RawFd; 6]) {
    let mut sorted = *keep;
    sorted.sort_unstable();
    let mut lo: u32 = 0;
    for &fd in &sorted {
        if fd < 0 {
            continue;
        }
        let fd = fd as u32;
        if fd > lo {
            close_range(lo, fd - 1);
        }
        lo = lo.max(fd + 1);
    }
    close_range(lo, u32::MAX);
}

fn close_range(lo: u32, hi: u32) {
    // Keep the standard streams: they are replaced by /dev/null instead, so no later open can
    // land on 0..=2.
    let lo = lo.max(3);
    if lo > hi {
        return;
    }
    // SAFETY: close_range only closes fds of this process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
    if r != 0 {
        // Kernels before 5.9: close one by one up to a sane bound.
        for fd in lo..hi.min(65536) {
            // SAFETY: closing fds of this process; EBADF is harmless.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Quiet re-walks after a terminate before the supervisor stops looking for members a walk
/// missed, and their spacing: 10 × 20 ms.
const TERM_REWALKS: u32 = 10;
const TERM_REWALK_MS: libc::c_int = 20;

/// The members a terminate has signalled (so a re-walk signals each member once: a second
/// SIGTERM can mean "hurry" to a program shutting down gracefully).
struct Termed {
    pids: [i32; MAX_WALK],
    n: usize,
}

impl Termed {
    fn new() -> Self {
        Self {
            pids: [0; MAX_WALK],
            n: 0,
        }
    }

    /// Records `pid`; false if it was recorded already.
    fn insert(&mut self, pid: i32) -> bool {
        if self.pids[..self.n].contains(&pid) {
            return false;
        }
        if self.n < MAX_WALK {
            self.pids[self.n] = pid;
            self.n += 1;
        }
        true
    }
}

/// Sends `sig` to the shell's process group (atomic for the group, even against a fork in
/// progress), then to every descendant of this process ([`signal_members`]). SIGTERM is
/// followed by SIGCONT so stopped members can act on it.
fn signal_tree(sig: libc::c_int, sh: i32, sent: Option<&mut Termed>) {
    // SAFETY: signalling a process group; ESRCH once it is empty is harmless.
    unsafe {
        libc::kill(-sh, sig);
        if sig == libc::SIGTERM {
            libc::kill(-sh, libc::SIGCONT);
        }
    }
    signal_members(sig, sent);
}

/// Sends `sig` to every descendant of this process (collected first, then signalled, so a
/// parent that dies of it cannot hide children still to be listed). With `sent`, members
/// already in it are skipped and the others recorded; returns whether any member was
/// signalled.
fn signal_members(sig: libc::c_int, mut sent: Option<&mut Termed>) -> bool {
    let mut pids = [0i32; MAX_WALK];
    // SAFETY: getpid has no arguments.
    let n = walk(unsafe { libc::getpid() }, &mut pids);
    let mut any = false;
    for &pid in pids.iter().take(n) {
        if let Some(sent) = sent.as_deref_mut()
            && !sent.insert(pid)
        {
            continue;
        }
        any = true;
        // SAFETY: signalling a process; ESRCH (already gone) is harmless.
        unsafe {
            libc::kill(pid, sig);
            if sig == libc::SIGTERM {
                libc::kill(pid, libc::SIGCONT);
            }
        }
    }
    any
}

/// Breadth-first list of `root`'s descendants into `out`; returns how many were found.
///
/// Not a snapshot, so it can miss a live member while the tree changes: a member that dies
/// after its parent's list was read but before its own was has its children re-parented to
/// us (into a list already read) — e.g. a `setsid` child of the shell, which the group signal
/// does not reach — and the kernel lists a `children` file by position, skipping a sibling
/// when one exits during the read (proc(5): reliable only when the children are stopped).
/// Callers that must reach everyone walk again.
fn walk(root: i32, out: &mut [i32; MAX_WALK]) -> usize {
    let mut n = 0;
    let mut next = 0;
    let mut parent = root;
    loop {
        for_each_child(parent, |child| {
            if n < MAX_WALK {
                out[n] = child;
                n += 1;
            }
        });
        if next >= n {
            return n;
        }
        parent = out[next];
        next += 1;
    }
}

/// Calls `f` with every child of `pid`, from `/proc/<pid>/task/<tid>/children` of each thread
/// (children are listed under the thread that forked them).
fn for_each_child(pid: i32, mut f: impl FnMut(i32)) {
    let mut path = PathBuf64::new();
    path.push(b"/proc/");
    path.push_num(pid);
    path.push(b"/task");
    let Some(dir) = path.open(libc::O_RDONLY | libc::O_DIRECTORY) else {
        return;
    };
    let mut dents = [0u8; 2048];
    loop {
        // SAFETY: getdents64 into our buffer.
        let len = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                dents.as_mut_ptr(),
                dents.len(),
            )
        };
        if len <= 0 {
            return;
        }
        let len = len as usize;
        let mut off = 0;
        while off + 19 < len {
            let reclen = u16::from_ne_bytes([dents[off + 16], dents[off + 17]]) as usize;
            if reclen == 0 || off + reclen > len {
                return;
            }
            let name = &dents[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(tid) = parse_num(name) {
                let mut p = PathBuf64::new();
                p.push(b"/proc/");
                p.push_num(pid);
                p.push(b"/task/");
                p.push_num(tid);
                p.push(b"/children");
                if let Some(file) = p.open(libc::O_RDONLY) {
                    read_pids(file.as_raw_fd(), &mut f);
                }
            }
            off += reclen;
        }
    }
}

/// Parses the space-separated pids of a `children` file, across read boundaries.
fn read_pids(fd: RawFd, f: &mut impl FnMut(i32)) {
    let mut buf = [0u8; 1024];
    let mut cur: i64 = -1;
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b.is_ascii_digit() {
                cur = cur.max(0) * 10 + i64::from(b - b'0');
                if cur > i64::from(i32::MAX) {
                    cur = -1;
                }
            } else if cur >= 0 {
                f(cur as i32);
                cur = -1;
            }
        }
    }
    if cur >= 0 {
        f(cur as i32);
    }
}

fn parse_num(s: &[u8]) -> Option<i32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: i64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(b - b'0');
    }
    i32::try_from(v).ok()
}

/// A NUL-terminated path built on the stack.
struct PathBuf64 {
    buf: [u8; 64],
    len: usize,
}

impl PathBuf64 {
    fn new() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn push_num(&mut self, v: i32) {
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        let mut v = i64::from(v).unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn open(&mut self, flags: libc::c_int) -> Option<OwnedFd> {
        self.buf[self.len] = 0;
        // SAFETY: a NUL-terminated path in our buffer.
        let fd = unsafe { libc::open(self.buf.as_ptr().cast(), flags | libc::O_CLOEXEC) };
        // SAFETY: a fresh fd; OwnedFd closes it on drop (close is async-signal-safe).
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_numbers() {
        let mut p = PathBuf64::new();
        p.push(b"/proc/");
        p.push_num(12345);
        p.push(b"/task/");
        p.push_num(0);
        assert_eq!(&p.buf[..p.len], b"/proc/12345/task/0");
        assert_eq!(parse_num(b"4242"), Some(4242));
        assert_eq!(parse_num(b"."), None);
        assert_eq!(parse_num(b""), None);
        assert_eq!(parse_num(b"99999999999"), None);
    }

    #[test]
    fn walk_finds_own_children() {
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut out = [0i32; MAX_WALK];
        // SAFETY: getpid has no arguments.
        let n = walk(unsafe { libc::getpid() }, &mut out);
        let found = out[..n].contains(&(c.id() as i32));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(found, "{:?}", &out[..n]);
    }
}
