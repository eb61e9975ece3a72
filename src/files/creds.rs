//! File operations as another user: the blocking-pool thread that runs one operation takes the
//! user's filesystem identity (fsuid, fsgid, supplementary groups) for the duration of the
//! operation and gives it back after, so the kernel checks permissions and assigns ownership as
//! it would for that user's own process.
//!
//! Per thread, never per process: `setfsuid`/`setfsgid` act on the calling thread only, and
//! `setgroups` is made as the raw system call (glibc's wrapper changes every thread of the
//! process, which would hand the user's groups to the whole agent). The fsuid change also drops
//! the file-related capabilities (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`, `CAP_FOWNER`, ...) of this
//! thread while it lasts (capabilities(7)); they come back when fsuid returns to 0.

use std::cell::RefCell;
use std::path::PathBuf;

use super::FilesError;
use crate::proc::User;

thread_local! {
    /// The home directory of the user the current operation runs as.
    static HOME: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// The home directory of the user this thread's operation runs as, when it is not the agent's.
pub(super) fn home() -> Option<PathBuf> {
    HOME.with(|h| h.borrow().clone())
}

/// Holds another user's filesystem identity on this thread; dropping it restores the agent's.
pub(super) struct Assumed {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

/// Takes `name`'s filesystem identity on this thread. `None` when `name` is the agent's own
/// user (nothing to do).
pub(super) fn assume(name: &str) -> Result<Option<Assumed>, FilesError> {
    let user = User::lookup(name).map_err(|e| FilesError::Invalid(e.to_string()))?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if user.uid == uid {
        return Ok(None);
    }
    if uid != 0 {
        return Err(FilesError::Invalid(format!(
            "File operations as user \"{name}\" need an agent running as root."
        )));
    }
    let groups: Vec<libc::gid_t> = nix::unistd::getgroups()
        .map_err(|e| FilesError::Invalid(format!("getgroups: {e}")))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    let held = Assumed { uid, gid, groups };
    // Order: groups and gid while fsuid is still 0 (CAP_SETGID), then the uid.
    set_groups(&user.groups).map_err(|e| switch_error(name, "setgroups", e))?;
    set_fsgid(user.gid).map_err(|e| switch_error(name, "setfsgid", e))?;
    set_fsuid(user.uid).map_err(|e| switch_error(name, "setfsuid", e))?;
    HOME.with(|h| *h.borrow_mut() = Some(user.home));
    Ok(Some(held))
}

impl Drop for Assumed {
    fn drop(&mut self) {
        HOME.with(|h| *h.borrow_mut() = None);
        // Back to the agent's identity; a failure here would leave a pool thread with the
        // user's identity, so it is fatal for the process rather than silently wrong.
        let restored = set_fsuid(self.uid)
            .and_then(|()| set_fsgid(self.gid))
            .and_then(|()| set_groups(&self.groups));
        if let Err(e) = restored {
            tracing::error!("restoring the agent's file identity failed: {e}; aborting");
            std::process::abort();
        }
    }
}

fn switch_error(name: &str, call: &str, e: std::io::Error) -> FilesError {
    FilesError::Invalid(format!("cannot act as user \"{name}\" ({call}: {e})"))
}

fn set_groups(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: the raw system call reads `groups.len()` ids from a valid slice.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `setfsuid` reports no errors: it returns the previous value. Asking with an invalid id
/// (-1) changes nothing and returns the current one, which must then be `uid`.
fn set_fsuid(uid: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls with integer arguments.
    let now = unsafe {
        libc::syscall(libc::SYS_setfsuid, uid);
        libc::syscall(libc::SYS_setfsuid, u32::MAX)
    };
    if now as u32 == uid {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

fn set_fsgid(gid: u32) -> std::io::Result<()> {
    // SAFETY: as for `set_fsuid`.
    let now = unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsgid, u32::MAX)
    };
    if now as u32 == gid {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}
