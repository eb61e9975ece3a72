//! Batched, non-blocking UDP I/O for the WireGuard socket: `recvmmsg`/`sendmmsg` on Linux (one
//! system call for up to [`BATCH`] datagrams), a plain `try_recv_from`/`try_send_to` loop
//! elsewhere. Per-packet overhead, not encryption, limits userspace WireGuard (DESIGN.md), and
//! system calls are most of that overhead.
//!
//! Owns two fixed buffers and the address conversions of a dual-stack socket (sources come
//! out normalised, IPv4 destinations are mapped as needed). Leaves waiting to the driver:
//! both calls use tokio's `try_io`, so a `WouldBlock` clears readiness and the driver awaits
//! `socket.readable()` / `socket.writable()` before calling again.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::udp::{normalize_addr, to_socket_family};

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Up to [`BATCH`] received datagrams.
pub struct RecvBatch {
    buf: Box<[u8]>,
    slot_len: usize,
    lens: [usize; BATCH],
    /// `None` marks a slot to skip (truncated, or a source that is not IP).
    srcs: [Option<SocketAddr>; BATCH],
    filled: usize,
    truncated: u64,
}

/// Up to [`BATCH`] datagrams waiting to be sent.
pub struct SendBatch {
    buf: Box<[u8]>,
    slot_len: usize,
    socket_is_ipv6: bool,
    /// Destination (already in the socket's family) and length of each queued slot.
    queued: Vec<(SocketAddr, usize)>,
    /// Slots before this one are sent.
    head: usize,
    send_errors: u64,
}

impl RecvBatch {
    /// `slot_len` is the largest datagram accepted (use at least MTU + 32); larger ones are
    /// dropped and counted in [`RecvBatch::truncated`].
    pub fn new(slot_len: usize) -> Self {
        let slot_len = slot_len.max(1);
        RecvBatch {
            buf: vec![0u8; slot_len * BATCH].into_boxed_slice(),
            slot_len,
            lens: [0; BATCH],
            srcs: [None; BATCH],
            filled: 0,
            truncated: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking, replacing the previous batch.
    /// Returns how many arrived (at least one), or `WouldBlock` when none is queued.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.filled = 0;
        let n = socket.try_io(tokio::io::Interest::READABLE, || {
            sys::recv(
                socket,
                &mut self.buf,
                self.slot_len,
                &mut self.lens,
                &mut self.srcs,
            )
        })?;
        self.filled = n;
        for i in 0..n {
            if self.lens[i] > self.slot_len {
                self.srcs[i] = None;
                self.truncated += 1;
            }
        }
        Ok(n)
    }

    /// The datagrams of the last [`RecvBatch::recv`], with normalised sources, skipping any
    /// that were truncated.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.buf
            .chunks_exact(self.slot_len)
            .zip(self.lens.iter().zip(self.srcs.iter()))
            .take(self.filled)
            .filter_map(|(slot, (&len, src))| src.map(|s| (normalize_addr(s), &slot[..len])))
    }

    /// Datagrams dropped so far because they were larger than the slot.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }
}

impl SendBatch {
    /// `slot_len` is the largest datagram accepted by [`SendBatch::push`];
    /// `socket_is_ipv6` is `socket.local_addr()?.is_ipv6()` of the socket it will flush to.
    pub fn new(slot_len: usize, socket_is_ipv6: bool) -> Self {
        let slot_len = slot_len.max(1);
        SendBatch {
            buf: vec![0u8; slot_len * BATCH].into_boxed_slice(),
            slot_len,
            socket_is_ipv6,
            queued: Vec::with_capacity(BATCH),
            head: 0,
            send_errors: 0,
        }
    }

    /// Queues one datagram. Returns false, queueing nothing, when the batch is full (flush
    /// first) or the datagram is larger than the slot.
    #[must_use]
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if self.queued.len() >= BATCH || datagram.len() > self.slot_len {
            return false;
        }
        let start = self.queued.len() * self.slot_len;
        self.buf[start..start + datagram.len()].copy_from_slice(datagram);
        self.queued
            .push((to_socket_family(to, self.socket_is_ipv6), datagram.len()));
        true
    }

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.queued.len() - self.head
    }

    /// True when nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when [`SendBatch::push`] would refuse for lack of room.
    pub fn is_full(&self) -> bool {
        self.queued.len() >= BATCH
    }

    /// Sends what is queued without blocking. `Ok(n)`: everything is out (`n` sent now).
    /// `WouldBlock`: the socket buffer is full; the rest stays queued (await `writable()` and
    /// flush again, or [`SendBatch::clear`]). A datagram the kernel refuses for another reason
    /// (unreachable, wrong family) is dropped and counted in [`SendBatch::send_errors`].
    pub fn flush(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut sent = 0;
        // Each round sends at least one datagram or drops one, so BATCH + 1 rounds suffice.
        for _ in 0..=BATCH {
            if self.head >= self.queued.len() {
                break;
            }
            let pending = &self.queued[self.head..];
            let first_slot = self.head;
            let result = socket.try_io(tokio::io::Interest::WRITABLE, || {
                sys::send(socket, &self.buf, self.slot_len, first_slot, pending)
            });
            match result {
                Ok(n) => {
                    self.head += n;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    let (to, len) = self.queued[self.head];
                    tracing::debug!(%to, len, error = %e, "UDP send failed; datagram dropped");
                    self.send_errors += 1;
                    self.head += 1;
                }
            }
        }
        self.clear_if_done();
        Ok(sent)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.queued.clear();
        self.head = 0;
    }

    /// Datagrams dropped so far because the kernel refused them (not counting `WouldBlock`).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    fn clear_if_done(&mut self) {
        if self.head >= self.queued.len() {
            self.clear();
        }
    }
}

#[cfg(target_os = "linux")]
mod sys {
    //! `recvmmsg`/`sendmmsg`. The message headers live on the stack for one call only, so the
    //! batch types stay `Send` and hold no self-referential pointers.
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;
    use tokio::net::UdpSocket;

    use super::BATCH;

    /// Fills up to BATCH slots; `lens[i] > slot_len` marks a truncated datagram.
    pub(super) fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
        slot_len: usize,
        lens: &mut [usize; BATCH],
        srcs: &mut [Option<SocketAddr>; BATCH],
    ) -> io::Result<usize> {
        // SAFETY: all-zero bytes are a valid value of these plain C structs (null pointers,
        // zero lengths).
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut count = 0;
        for (((slot, iov), hdr), name) in buf
            .chunks_exact_mut(slot_len)
            .zip(iovs.iter_mut())
            .zip(hdrs.iter_mut())
            .zip(names.iter_mut())
        {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot_len;
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            count += 1;
        }
        // SAFETY: `hdrs[..count]` point at `count` live iovecs and sockaddr_storages on this
        // stack frame, and each iovec at a distinct `slot_len`-byte slot of `buf`, all of which
        // outlive the call; the kernel writes at most `iov_len`/`msg_namelen` bytes into them.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = rc as usize;
        for i in 0..n {
            let h = &hdrs[i];
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            lens[i] = if truncated {
                slot_len + 1
            } else {
                h.msg_len as usize
            };
            // SAFETY: the kernel initialised `names[i]` as an address of its own family and
            // reported its length in `msg_namelen`.
            let addr = unsafe { SockAddr::new(names[i], h.msg_hdr.msg_namelen) };
            srcs[i] = addr.as_socket();
        }
        Ok(n)
    }

    /// Sends `pending` (slots `first_slot..`); returns how many the kernel took (≥ 1).
    pub(super) fn send(
        socket: &UdpSocket,
        buf: &[u8],
        slot_len: usize,
        first_slot: usize,
        pending: &[(SocketAddr, usize)],
    ) -> io::Result<usize> {
        let count = pending.len().min(BATCH);
        let names: [Option<SockAddr>; BATCH] =
            std::array::from_fn(|i| pending.get(i).map(|(to, _)| SockAddr::from(*to)));
        // SAFETY: as in `recv`: all-zero is valid for these C structs.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, name) in names.iter().enumerate().take(count) {
            let Some(name) = name else { break };
            let start = (first_slot + i) * slot_len;
            let len = pending[i].1;
            let slot = &buf[start..start + len];
            iovs[i].iov_base = slot.as_ptr() as *mut libc::c_void;
            iovs[i].iov_len = len;
            hdrs[i].msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = name.len();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs[..count]` point at live addresses, iovecs and slices of `buf` that
        // outlive the call; sendmmsg only reads through these pointers despite the `*mut`.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT as _,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! Portable fallback: one system call per datagram.
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    use super::BATCH;

    pub(super) fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
        slot_len: usize,
        lens: &mut [usize; BATCH],
        srcs: &mut [Option<SocketAddr>; BATCH],
    ) -> io::Result<usize> {
        let mut n = 0;
        for slot in buf.chunks_exact_mut(slot_len).take(BATCH) {
            match socket.try_recv_from(slot) {
                Ok((len, src)) => {
                    lens[n] = len;
                    srcs[n] = Some(src);
                    n += 1;
                }
                Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    pub(super) fn send(
        socket: &UdpSocket,
        buf: &[u8],
        slot_len: usize,
        first_slot: usize,
        pending: &[(SocketAddr, usize)],
    ) -> io::Result<usize> {
        let (to, len) = pending[0];
        let start = first_slot * slot_len;
        socket.try_send_to(&buf[start..start + len], to)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::udp::bind_udp;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn local(port: u16) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, port).into()
    }

    /// Receives until `want` datagrams arrived (bounded), returning (source, bytes).
    async fn recv_n(
        socket: &UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            if got.len() >= want {
                break;
            }
            socket.readable().await.unwrap();
            match batch.recv(socket) {
                Ok(_) => got.extend(batch.iter().map(|(s, d)| (s, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv failed: {e}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn batch_round_trip_on_loopback() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let a = bind_udp(0).unwrap();
            let b = bind_udp(0).unwrap();
            let (pa, pb) = (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            );
            let mut out = SendBatch::new(1500, a.local_addr().unwrap().is_ipv6());
            for i in 0..BATCH {
                assert!(out.push(local(pb), &[i as u8; 100]));
            }
            assert!(out.is_full());
            assert!(!out.push(local(pb), b"no room"));
            for _ in 0..100 {
                a.writable().await.unwrap();
                match out.flush(&a) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("flush failed: {e}"),
                }
            }
            assert!(out.is_empty() && !out.is_full());
            assert_eq!(out.send_errors(), 0);

            let mut inb = RecvBatch::new(1500);
            let got = recv_n(&b, &mut inb, BATCH).await;
            assert_eq!(got.len(), BATCH);
            for (i, (src, d)) in got.iter().enumerate() {
                assert_eq!(*src, local(pa), "source not normalised");
                assert_eq!(d, &vec![i as u8; 100]);
            }
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn oversized_datagrams_are_dropped_and_counted() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let a = bind_udp(0).unwrap();
            let b = bind_udp(0).unwrap();
            let pb = b.local_addr().unwrap().port();
            let mut out = SendBatch::new(200, a.local_addr().unwrap().is_ipv6());
            assert!(
                !out.push(local(pb), &[0u8; 201]),
                "push must refuse oversize"
            );
            assert!(out.push(local(pb), &[1u8; 150]));
            assert!(out.push(local(pb), &[2u8; 10]));
            a.writable().await.unwrap();
            assert_eq!(out.flush(&a).unwrap(), 2);

            let mut inb = RecvBatch::new(64);
            let got = recv_n(&b, &mut inb, 1).await;
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, vec![2u8; 10]);
            assert_eq!(inb.truncated(), 1);
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn refused_destination_is_dropped_not_fatal() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let a = bind_udp(0).unwrap();
            let b = bind_udp(0).unwrap();
            let pb = b.local_addr().unwrap().port();
            let mut out = SendBatch::new(100, a.local_addr().unwrap().is_ipv6());
            // Port 0 is not a valid destination: the kernel refuses it.
            assert!(out.push(local(0), b"refused"));
            assert!(out.push(local(pb), b"delivered"));
            a.writable().await.unwrap();
            assert_eq!(out.flush(&a).unwrap(), 1);
            assert_eq!(out.send_errors(), 1);
            assert!(out.is_empty());
            let mut inb = RecvBatch::new(100);
            let got = recv_n(&b, &mut inb, 1).await;
            assert_eq!(got[0].1, b"delivered".to_vec());
        })
        .await
        .expect("test timed out");
    }

    #[test]
    fn batches_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<RecvBatch>();
        assert_send::<SendBatch>();
    }
}
