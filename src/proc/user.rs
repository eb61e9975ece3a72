//! Users commands run as: looked up in the user database (NSS: `/etc/passwd`, LDAP, ...)
//! **before** any fork or clone, since the child of a multi-threaded process may only make raw
//! system calls (an NSS lookup there can deadlock on a lock another thread held, or load
//! modules).
//!
//! Owns: the lookup (name → uid, primary gid, supplementary groups, home, shell), the agent's
//! own identity, and the environment a command of another user gets (`HOME`, `USER`,
//! `LOGNAME`, `SHELL`). Leaves to `spawn` the `setgroups`/`setgid`/`setuid` system calls, and to
//! the API who may ask for which user.

use std::ffi::CString;
use std::path::PathBuf;

/// A user account, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the primary group included), as `initgroups` would set them.
    pub groups: Vec<u32>,
    /// Home directory (`HOME`, and the base of relative working directories).
    pub home: PathBuf,
    /// Login shell (`SHELL`; commands still run under `sh -c`).
    pub shell: PathBuf,
}

/// Why a user cannot be used. `Unknown` is the caller's mistake (400); `Lookup` an OS problem.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user. Fix the request.
    #[error("User \"{0}\" does not exist on this agent.")]
    Unknown(String),
    /// The passwd lookup itself failed (500). A retry may help.
    #[error("Looking up user \"{0}\" failed.")]
    Lookup(String, #[source] nix::Error),
    /// Another user was asked for but the agent is not root (400). Not retryable.
    #[error("Running commands as user \"{0}\" needs an agent running as root.")]
    NotRoot(String),
}

/// Environment variables of the agent that point at resources of the agent's own service
/// (systemd's notification socket, credentials, watchdog, socket activation). A command that
/// runs as another user does not get them.
const AGENT_PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "CREDENTIALS_DIRECTORY",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
];

impl User {
    /// Looks `name` up in the user database, with its supplementary groups.
    pub fn lookup(name: &str) -> Result<User, UserError> {
        let pw = nix::unistd::User::from_name(name)
            .map_err(|e| UserError::Lookup(name.to_owned(), e))?
            .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        Self::from_passwd(pw)
    }

    /// The user the agent runs as (its effective uid). Falls back to the uid as a name when
    /// the database has no entry (containers often run with an arbitrary uid).
    pub fn current() -> User {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid().as_raw();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(pw)) => Self::from_passwd(pw).unwrap_or_else(|_| Self::bare(uid.as_raw(), gid)),
            _ => Self::bare(uid.as_raw(), gid),
        }
    }

    fn bare(uid: u32, gid: u32) -> User {
        User {
            name: uid.to_string(),
            uid,
            gid,
            groups: vec![gid],
            home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
            shell: PathBuf::from("/bin/sh"),
        }
    }

    fn from_passwd(pw: nix::unistd::User) -> Result<User, UserError> {
        let cname =
            CString::new(pw.name.as_bytes()).map_err(|_| UserError::Unknown(pw.name.clone()))?;
        let groups = nix::unistd::getgrouplist(&cname, pw.gid)
            .map_err(|e| UserError::Lookup(pw.name.clone(), e))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(User {
            name: pw.name,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            groups,
            home: pw.dir,
            shell: pw.shell,
        })
    }

    /// Variables a command of this user gets over the agent's environment (`su` without `-`
    /// sets the same four).
    pub fn identity_env(&self) -> [(&'static str, String); 4] {
        let shell = if self.shell.as_os_str().is_empty() {
            "/bin/sh".to_owned()
        } else {
            self.shell.display().to_string()
        };
        [
            ("HOME", self.home.display().to_string()),
            ("USER", self.name.clone()),
            ("LOGNAME", self.name.clone()),
            ("SHELL", shell),
        ]
    }

    /// True for names of agent-private environment variables (see [`AGENT_PRIVATE_ENV`]).
    pub fn is_agent_private_env(key: &str) -> bool {
        AGENT_PRIVATE_ENV.contains(&key)
    }
}

/// True when the agent runs with effective uid 0 (it may switch users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown_users() {
        let root = User::lookup("root").unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(root.gid, 0);
        assert!(root.groups.contains(&0));
        assert!(root.home.is_absolute());
        assert!(matches!(
            User::lookup("no-such-user-wgagent"),
            Err(UserError::Unknown(_))
        ));
    }

    #[test]
    fn current_is_the_effective_user() {
        let me = User::current();
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        let env = me.identity_env();
        assert_eq!(env[1], ("USER", me.name.clone()));
        assert!(User::is_agent_private_env("NOTIFY_SOCKET"));
        assert!(!User::is_agent_private_env("PATH"));
    }
}
