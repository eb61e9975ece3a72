//! UDP segmentation offload for the WireGuard socket: GSO on send, GRO on receive (Linux).
//!
//! Why: per-datagram kernel work, not the system call entry, is the largest cost of userspace
//! WireGuard (BENCHMARKS.md 3.1, "Prototypes": `sendmmsg`/`recvmmsg` gained nothing). With GSO one
//! `sendmsg` carries a *run* of equal-size datagrams to one endpoint (a `UDP_SEGMENT` control
//! message gives the size; only the last may be shorter) and the kernel splits it as late as it
//! can. A receiver with `UDP_GRO` on gets such runs (and datagrams the kernel coalesced) whole
//! in one `recvmsg` with a `UDP_GRO` control message naming the segment size, and splits them
//! itself. On loopback and veth the run then crosses the stack once instead of once per datagram.
//!
//! Owns: deciding runs ([`RunPlan`], sans-IO), the run's buffer and sending it ([`Sender`]),
//! the socket's GSO state (switched off for good, logged once, on the first error that means
//! "cannot segment"; that run is resent as plain datagrams), turning GRO on ([`enable_gro`])
//! and receiving and splitting ([`Receiver`]). Leaves to the caller: when to flush (at least
//! once per driver iteration, and whenever [`Sender::push`] refuses), holding datagrams while
//! the socket would block, and counting. Both directions use tokio's `try_io`, so `WouldBlock`
//! clears readiness and the caller awaits `writable()` / `readable()` before trying again.
//! Elsewhere than Linux everything degrades to one plain datagram per system call.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::udp::{normalize_addr, to_socket_family};

/// Most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` was 64 until Linux 6.9).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: the largest UDP payload over IPv4 (65535 − 20 IP − 8 UDP).
/// IPv6 would allow slightly more; one limit keeps runs the same on a dual-stack socket.
pub const MAX_RUN_BYTES: usize = 65507;
/// Receive slot: a GRO receive never exceeds 64 KiB of UDP payload.
pub const RECV_SLOT: usize = 65536;

/// Which datagrams may share one GSO send: consecutive, to one destination, all of the first
/// one's length except the last (which may be shorter and then ends the run), at most
/// [`MAX_SEGMENTS`] and [`MAX_RUN_BYTES`]. Sans-IO: lengths and addresses only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    bytes: usize,
    /// Nothing more may join (a shorter datagram arrived, or the first was unusable).
    closed: bool,
}

impl RunPlan {
    /// Whether a datagram of `len` bytes to `to` may join. An empty plan takes anything.
    pub fn accepts(&self, to: SocketAddr, len: usize) -> bool {
        match self.to {
            None => true,
            Some(t) => {
                !self.closed
                    && t == to
                    && len > 0
                    && len <= self.segment
                    && self.count < MAX_SEGMENTS
                    && self.bytes + len <= MAX_RUN_BYTES
            }
        }
    }

    /// Adds the datagram if [`RunPlan::accepts`] it; false (and no change) otherwise.
    #[must_use]
    pub fn push(&mut self, to: SocketAddr, len: usize) -> bool {
        if !self.accepts(to, len) {
            return false;
        }
        if self.to.is_none() {
            self.to = Some(to);
            self.segment = len;
            // A segment size must be non-zero and fit the u16 of `UDP_SEGMENT`.
            self.closed = len == 0 || len > MAX_RUN_BYTES;
        } else if len < self.segment {
            self.closed = true;
        }
        self.count += 1;
        self.bytes += len;
        true
    }

    /// Datagrams in the run.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the run has no datagram yet (it then accepts any).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// What one [`Sender::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub datagrams: usize,
    /// `sendmsg` calls that carried more than one datagram.
    pub gso_sends: usize,
    /// Datagrams the kernel refused (unreachable, bad address); they are gone.
    pub dropped: usize,
    /// The socket would block: the rest of the run stays; await `writable()`, flush again.
    pub blocked: bool,
}

/// The run being built for one socket, and that socket's GSO state.
pub struct Sender {
    /// The run's datagrams back to back; datagram `i` starts at `i * plan.segment`.
    buf: Vec<u8>,
    plan: RunPlan,
    /// Datagrams of the run already sent (a plain send can block half-way through a run).
    sent: usize,
    gso: bool,
    socket_is_ipv6: bool,
}

impl Sender {
    /// `socket_is_ipv6` is `socket.local_addr()?.is_ipv6()`; `gso` false sends one datagram
    /// per system call (use [`gso_supported`]).
    pub fn new(socket_is_ipv6: bool, gso: bool) -> Self {
        Sender {
            buf: Vec::with_capacity(MAX_RUN_BYTES),
            plan: RunPlan::default(),
            sent: 0,
            gso: gso && cfg!(target_os = "linux"),
            socket_is_ipv6,
        }
    }

    /// Whether runs still go out as one GSO send (false after an "unsupported" error).
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// Appends the datagram to the run; false, changing nothing, when it cannot join (another
    /// destination or size, or the run is full): flush, then push again (an empty run takes
    /// any datagram).
    #[must_use]
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        let to = to_socket_family(to, self.socket_is_ipv6);
        if !self.plan.push(to, datagram.len()) {
            return false;
        }
        self.buf.extend_from_slice(datagram);
        true
    }

    /// Datagrams waiting in the run.
    pub fn len(&self) -> usize {
        self.plan.len() - self.sent
    }

    /// Whether nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the rest of the run without blocking: one GSO send when possible, else one
    /// datagram per call. Empty afterwards unless [`Flushed::blocked`].
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut done = Flushed::default();
        let Some(to) = self.plan.to else {
            return done;
        };
        let segment = self.plan.segment.max(1);
        // Every round sends or drops at least one datagram, or turns GSO off (once).
        for _ in 0..=MAX_SEGMENTS + 1 {
            let left = self.plan.len() - self.sent;
            if left == 0 {
                break;
            }
            let rest = &self.buf[self.sent * segment..];
            let first = &rest[..rest.len().min(segment)];
            let gso = self.gso && left > 1;
            let result = if gso {
                sys::send_gso(socket, to, rest, segment)
            } else {
                socket.try_send_to(first, to).map(|_| ())
            };
            let n = if gso { left } else { 1 };
            match result {
                Ok(()) => {
                    done.datagrams += n;
                    done.gso_sends += usize::from(n > 1);
                    self.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    done.blocked = true;
                    return done;
                }
                Err(e) if n > 1 && gso_unsupported(&e) => {
                    // EINVAL also means "bad destination" (port 0): only blame GSO if the same
                    // datagram goes out on its own.
                    match socket.try_send_to(first, to) {
                        Ok(_) => {
                            self.gso = false;
                            tracing::info!(error = %e, "UDP GSO unavailable on this socket; \
                                sending one datagram per system call");
                            done.datagrams += 1;
                            self.sent += 1;
                        }
                        Err(p) if p.kind() == io::ErrorKind::WouldBlock => {
                            done.blocked = true;
                            return done;
                        }
                        Err(p) => {
                            tracing::debug!(%to, error = %p, "UDP send failed; run dropped");
                            done.dropped += left;
                            self.sent += left;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%to, n, error = %e, "UDP send failed; dropped");
                    done.dropped += n;
                    self.sent += n;
                }
            }
        }
        if self.sent >= self.plan.len() {
            self.buf.clear();
            self.plan = RunPlan::default();
            self.sent = 0;
        }
        done
    }
}

/// The errors a GSO send gives when the socket or device cannot segment: EIO (no checksum
/// offload, or IPsec), EINVAL (checksums off, segment above the path MTU, too many
/// segments), EOPNOTSUPP (the same number as ENOTSUP on Linux).
fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
    )
}

/// One receive slot: a datagram, or a GRO batch of datagrams from one source.
pub struct Receiver {
    buf: Box<[u8]>,
    len: usize,
    /// Segment size from the `UDP_GRO` control message; 0 when there was none.
    segment: usize,
    source: Option<SocketAddr>,
}

/// What one [`Receiver::recv`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Datagrams in the slot now (0 when truncated).
    pub datagrams: usize,
    /// The kernel cut the data (or the control message) short; everything was dropped.
    pub truncated: bool,
}

impl Receiver {
    /// An empty slot; allocates its [`RECV_SLOT`] bytes once, to be reused for every receive.
    pub fn new() -> Self {
        Receiver {
            buf: vec![0u8; RECV_SLOT].into_boxed_slice(),
            len: 0,
            segment: 0,
            source: None,
        }
    }

    /// One non-blocking `recvmsg`, replacing what the slot held. `WouldBlock` when nothing
    /// is queued.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<Received> {
        self.len = 0;
        self.source = None;
        let got = sys::recv(socket, &mut self.buf)?;
        if got.truncated {
            return Ok(Received {
                datagrams: 0,
                truncated: true,
            });
        }
        self.len = got.len;
        self.segment = got.segment;
        self.source = got.source.map(normalize_addr);
        Ok(Received {
            datagrams: self.datagrams().count(),
            truncated: false,
        })
    }

    /// Normalised source of the datagrams in the slot (`None` when empty or not IP).
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// The datagrams of the last receive, split at the GRO segment size.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        let data = if self.source.is_some() {
            &self.buf[..self.len]
        } else {
            &[]
        };
        let segment = if self.segment == 0 {
            data.len().max(1)
        } else {
            self.segment
        };
        data.chunks(segment)
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns on `UDP_GRO` for `socket`: from then on a receive may return several datagrams, so
/// only a reader that splits them (a [`Receiver`]) may read it. False if the kernel refused.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    sys::set_udp_option(socket, sys::UDP_GRO, 1).is_ok()
}

/// Whether the kernel knows `UDP_SEGMENT` (Linux ≥ 4.18). The device may still be unable to
/// segment; [`Sender`] finds that out on its first run.
pub fn gso_supported(socket: &UdpSocket) -> bool {
    sys::get_udp_option(socket, sys::UDP_SEGMENT).is_ok()
}

#[cfg(target_os = "linux")]
mod sys {
    //! `sendmsg` with `UDP_SEGMENT`, `recvmsg` reading `UDP_GRO`, and the socket options.
    //! Message headers and control buffers live on the stack for one call only.
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use socket2::{SockAddr, SockAddrStorage};
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    pub(super) use libc::{UDP_GRO, UDP_SEGMENT};

    /// One `recvmsg` result.
    pub(super) struct Got {
        pub len: usize,
        pub segment: usize,
        pub source: Option<SocketAddr>,
        pub truncated: bool,
    }

    /// Room for one control message with an `int` payload, aligned for `cmsghdr`.
    #[repr(C, align(8))]
    struct ControlBuf([u8; 64]);

    pub(super) fn set_udp_option(socket: &UdpSocket, option: i32, value: i32) -> io::Result<()> {
        let value: libc::c_int = value;
        // SAFETY: the fd is open for the lifetime of `socket`; we pass a pointer to a live
        // c_int and its exact size, as setsockopt(2) requires.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn get_udp_option(socket: &UdpSocket, option: i32) -> io::Result<i32> {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as in `set_udp_option`; the kernel writes at most `len` bytes to `value`
        // and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                option,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    }

    /// Sends `data` to `to` as datagrams of `segment` bytes (the last may be shorter) in one
    /// `sendmsg`. All or nothing: UDP sends are atomic.
    pub(super) fn send_gso(
        socket: &UdpSocket,
        to: SocketAddr,
        data: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let segment =
            u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let name = SockAddr::from(to);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = ControlBuf([0; 64]);
        // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_name = name.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = name.len();
        hdr.msg_iov = &raw mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is pure arithmetic.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
        debug_assert!(hdr.msg_controllen as usize <= control.0.len());
        // SAFETY: `msg_control` points at `control`, 8-byte aligned and at least
        // `msg_controllen` bytes, so CMSG_FIRSTHDR returns a non-null header inside it with
        // room for a u16 payload (CMSG_SPACE above); we write only within that space.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&raw const hdr);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
        socket.try_io(Interest::WRITABLE, || {
            // SAFETY: `hdr` points at `name`, `iov` (which points into `data`) and `control`,
            // all alive across the call; sendmsg only reads through them despite the `*mut`.
            let rc =
                unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const hdr, libc::MSG_DONTWAIT) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }

    /// One `recvmsg` into `buf`, with the `UDP_GRO` segment size if the kernel sent one.
    pub(super) fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Got> {
        socket.try_io(Interest::READABLE, || {
            // SockAddrStorage is repr(transparent) over sockaddr_storage.
            let mut name = SockAddrStorage::zeroed();
            // SAFETY: all-zero bytes are a valid msghdr.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut control = ControlBuf([0; 64]);
            hdr.msg_name = (&raw mut name).cast();
            hdr.msg_namelen = name.size_of();
            hdr.msg_iov = &raw mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = control.0.len() as _;
            // SAFETY: `hdr` points at `name`, `iov` (into `buf`) and `control`, all alive
            // across the call; the kernel writes at most the lengths given.
            let rc = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut hdr, libc::MSG_DONTWAIT) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut segment = 0;
            // SAFETY: the kernel filled `hdr.msg_control` with `msg_controllen` bytes of
            // well-formed control messages; CMSG_FIRSTHDR/NXTHDR stay within them and return
            // null at the end. The UDP_GRO payload is an int (udp_cmsg_recv), read unaligned.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&raw const hdr);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                        let v =
                            std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                        segment = usize::try_from(v).unwrap_or(0);
                    }
                    cmsg = libc::CMSG_NXTHDR(&raw const hdr, cmsg);
                }
            }
            // SAFETY: the kernel initialised `name` as an address of its own family and
            // reported its length in `msg_namelen`.
            let source = unsafe { SockAddr::new(name, hdr.msg_namelen) }.as_socket();
            Ok(Got {
                len: rc as usize,
                segment,
                source,
                truncated: hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
            })
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! No GSO/GRO: options fail, so the callers never ask for segmented sends.
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    pub(super) const UDP_SEGMENT: i32 = 103;
    pub(super) const UDP_GRO: i32 = 104;

    pub(super) struct Got {
        pub len: usize,
        pub segment: usize,
        pub source: Option<SocketAddr>,
        pub truncated: bool,
    }

    pub(super) fn set_udp_option(_: &UdpSocket, _: i32, _: i32) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn get_udp_option(_: &UdpSocket, _: i32) -> io::Result<i32> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn send_gso(_: &UdpSocket, _: SocketAddr, _: &[u8], _: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Got> {
        let (len, source) = socket.try_recv_from(buf)?;
        Ok(Got {
            len,
            segment: 0,
            source: Some(source),
            truncated: false,
        })
    }
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
