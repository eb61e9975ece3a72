//! Non-blocking reads and writes on a raw fd through tokio's I/O driver, for pipes and pty
//! masters alike (tokio's `pipe` types refuse a pty).
//!
//! Owns: readiness waits and the EIO that a pty master returns once the terminal's last slave fd
//! closed (reported as end of file). Leaves to the caller: what the bytes mean.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The reading end of a pipe or a pty master.
pub struct Reader {
    fd: AsyncFd<OwnedFd>,
}

impl Reader {
    /// `fd` must be non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: the AsyncFd owns the fd until it is dropped, and never replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(Self { fd })
    }

    /// Reads some bytes; `Ok(0)` at end of file (or a pty whose terminal was closed).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| sys_read(fd.as_raw_fd(), buf)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The writing end of a pipe or a pty master.
pub struct Writer {
    fd: AsyncFd<OwnedFd>,
}

impl Writer {
    /// `fd` must be non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: as in `Reader::new`.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE)? };
        Ok(Self { fd })
    }

    /// Writes all of `data`, waiting for room as long as the caller lets this future run; on
    /// cancellation, `written` says how much went out.
    pub async fn write_all(&self, data: &[u8], written: &mut usize) -> io::Result<()> {
        while *written < data.len() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| sys_write(fd.as_raw_fd(), &data[*written..])) {
                Ok(Ok(n)) => *written += n,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

fn sys_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn sys_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: writing from a valid buffer.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
