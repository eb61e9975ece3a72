//! A [`Prepared`] command as bytes, for a supervisor started by `exec` (see `supexec`): the
//! agent writes them on a pipe, the new process rebuilds the same command from them.
//!
//! Both ends are the same binary (the agent execs its own executable), so the format is simply
//! every field in order: native-endian integers, byte strings with a `u32` length. Decoding
//! checks every length against what is left and fails on anything malformed.

use std::ffi::CString;
use std::io;

use super::{Prepared, null_terminated};
use crate::proc::limits::Rlimits;

impl Prepared {
    /// The command as bytes for [`Prepared::decode`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(4096));
        w.bytes(self.path.as_bytes());
        w.strings(&self._argv);
        w.strings(&self._envp);
        w.bytes(self.workdir.as_bytes());
        w.i32(self.nice);
        w.u8(u8::from(self.has_nice));
        w.bytes(&self.oom_text[..self.oom_len]);
        w.u32(self.ignored.len() as u32);
        for &sig in &self.ignored {
            w.i32(sig);
        }
        let limits = &self.rlimits.items[..self.rlimits.len];
        w.u32(limits.len() as u32);
        for &(resource, soft, hard) in limits {
            w.u64(resource as u64);
            w.u64(soft);
            w.u64(hard);
        }
        match &self.creds {
            Some((uid, gid, groups)) => {
                w.u8(1);
                w.u32(*uid);
                w.u32(*gid);
                w.u32(groups.len() as u32);
                for &g in groups {
                    w.u32(g);
                }
            }
            None => w.u8(0),
        }
        match &self.cgroup_procs {
            Some(p) => {
                w.u8(1);
                w.bytes(p.as_bytes());
            }
            None => w.u8(0),
        }
        w.0
    }

    /// The command [`Prepared::encode`] wrote; an error if `buf` is not exactly that.
    pub(crate) fn decode(buf: &[u8]) -> io::Result<Self> {
        let mut r = Reader(buf);
        let path = r.cstring()?;
        let argv = r.strings()?;
        let envp = r.strings()?;
        let workdir = r.cstring()?;
        let nice = r.i32()?;
        let has_nice = r.u8()? != 0;
        let oom = r.bytes()?;
        let mut oom_text = [0u8; 16];
        let oom_len = oom.len();
        oom_text
            .get_mut(..oom_len)
            .ok_or_else(malformed)?
            .copy_from_slice(oom);
        let n = r.u32()? as usize;
        let mut ignored = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            ignored.push(r.i32()?);
        }
        let mut rlimits = Rlimits::default();
        let n = r.u32()? as usize;
        if n > rlimits.items.len() {
            return Err(malformed());
        }
        for item in rlimits.items.iter_mut().take(n) {
            let resource = r.u64()?;
            *item = (
                resource.try_into().map_err(|_| malformed())?,
                r.u64()?,
                r.u64()?,
            );
        }
        rlimits.len = n;
        let creds = match r.u8()? {
            0 => None,
            _ => {
                let (uid, gid) = (r.u32()?, r.u32()?);
                let n = r.u32()? as usize;
                let mut groups = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    groups.push(r.u32()?);
                }
                Some((uid, gid, groups))
            }
        };
        let cgroup_procs = match r.u8()? {
            0 => None,
            _ => Some(r.cstring()?),
        };
        if !r.0.is_empty() {
            return Err(malformed());
        }
        Ok(Self {
            path,
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            envp_ptrs: null_terminated(&envp),
            _envp: envp,
            workdir,
            nice,
            has_nice,
            oom_text,
            oom_len,
            ignored,
            rlimits,
            creds,
            cgroup_procs,
        })
    }
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed supervisor command")
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn strings(&mut self, v: &[CString]) {
        self.u32(v.len() as u32);
        for s in v {
            self.bytes(s.as_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or_else(malformed)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        self.take().map(u32::from_ne_bytes)
    }
    fn i32(&mut self) -> io::Result<i32> {
        self.take().map(i32::from_ne_bytes)
    }
    fn u64(&mut self) -> io::Result<u64> {
        self.take().map(u64::from_ne_bytes)
    }
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err(malformed());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn cstring(&mut self) -> io::Result<CString> {
        CString::new(self.bytes()?).map_err(|_| malformed())
    }
    fn strings(&mut self) -> io::Result<Vec<CString>> {
        let n = self.u32()? as usize;
        // Each string takes at least its 4-byte length: a bound before allocating.
        if n > self.0.len() / 4 {
            return Err(malformed());
        }
        (0..n).map(|_| self.cstring()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::proc::limits::{Limit, Limits};
    use crate::proc::spawn::{Command, Host, Priority};
    use crate::proc::user::User;

    #[test]
    fn round_trip_and_malformed_input() {
        let mut limits = Limits::default();
        limits.set(Limit::OpenFiles, Some(100));
        let env: BTreeMap<String, String> = [("A".to_owned(), "b c".to_owned())].into();
        let user = User {
            groups: vec![7, 8],
            ..User::current()
        };
        let host = Host::probe();
        let cmd = Prepared::new(
            &host,
            &Command {
                command: "echo 'hi there'",
                workdir: Path::new("/tmp"),
                env: &env,
                defaults: &[("TERM", "dumb")],
                priority: Priority {
                    nice: Some(7),
                    oom_score_adj: Some(998),
                },
                limits,
                user: Some(&user),
                cgroup_procs: Some(Path::new("/sys/fs/cgroup/x/cgroup.procs")),
            },
        )
        .unwrap();
        let bytes = cmd.encode();
        let back = Prepared::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes);
        assert_eq!(back._argv[2].as_bytes(), b"echo 'hi there'");
        assert!(back._envp.iter().any(|e| e.as_bytes() == b"A=b c"));
        assert_eq!(back.argv_ptrs.len(), 4);
        assert!(back.argv_ptrs[3].is_null());
        assert_eq!(back.creds.as_ref().unwrap().2, vec![7, 8]);
        assert_eq!(back.rlimits.len, 1);
        assert_eq!(&back.oom_text[..back.oom_len], b"998\n");
        // Every truncation and a trailing byte are refused, never a panic.
        for n in 0..bytes.len() {
            assert!(Prepared::decode(&bytes[..n]).is_err(), "prefix of {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Prepared::decode(&longer).is_err());
    }
}
