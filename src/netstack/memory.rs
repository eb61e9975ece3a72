//! Socket buffer memory: one anonymous mapping per TCP socket, and the bound on how much of it
//! the kernel has committed.
//!
//! Why a mapping of our own and not a `Vec`: smoltcp sockets have fixed rings (the receive and
//! send buffer, `tcp_buffer` bytes each) allocated when the socket is created. Through the
//! global allocator, glibc serves the first 512 KiB blocks with `mmap` but then raises its
//! dynamic mmap threshold on the first `free`, so later blocks come from the heap: `calloc`
//! then zeroes (commits) all of it, and freed blocks are not given back to the OS. That is how
//! 1,024 half-open requests grew the agent from 9 to 80 MB and kept it there. A private
//! anonymous mapping is committed page by page only as data passes through the ring, and
//! `munmap` returns every page when the socket is removed, whatever the allocator.
//!
//! What is committed is bounded without asking the kernel: a ring that has carried `n` bytes in
//! total has touched at most its first `n` bytes rounded up to a page, plus one page, and never
//! more than its capacity. [`committed_bound`] is that bound; the stack sums it over its sockets
//! to enforce the memory budget.

use std::io;
use std::ptr::NonNull;

/// Page size assumed by the bound (4 KiB on every Linux target we build for; a larger real page
/// only makes the bound an underestimate by less than one page per ring).
pub(crate) const PAGE: usize = 4096;

/// Fixed cost charged per socket on top of its buffers: the smoltcp socket and its slot, our
/// bookkeeping, the mapping's kernel structures.
pub(crate) const SOCKET_OVERHEAD: usize = 4096;

/// The memory a fresh socket is charged: one page of each ring plus the fixed overhead.
pub(crate) const FRESH_SOCKET_CHARGE: usize = 2 * PAGE + SOCKET_OVERHEAD;

/// An anonymous private mapping holding a socket's receive ring then its send ring.
///
/// The rings are handed to smoltcp as `&'static mut [u8]` (smoltcp's sockets borrow their
/// storage); the owner must drop the socket before this mapping (see [`SocketMemory::rings`]).
pub(crate) struct SocketMemory {
    ptr: NonNull<u8>,
    len: usize,
    ring: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing about it is tied to a thread.
unsafe impl Send for SocketMemory {}

impl SocketMemory {
    /// Maps `2 * ring` bytes (reserved address space; no page is committed yet).
    pub(crate) fn map(ring: usize) -> io::Result<Self> {
        let len = ring
            .checked_mul(2)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh private anonymous mapping at an address of the kernel's choosing; no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len, ring })
    }

    /// The receive and send rings.
    ///
    /// # Safety
    /// The slices alias this mapping and must not be used after it is dropped, and this must be
    /// called at most once per mapping (the two slices are the only references to its memory).
    pub(crate) unsafe fn rings(&mut self) -> (&'static mut [u8], &'static mut [u8]) {
        // SAFETY: the mapping is `2 * ring` bytes, readable and writable, zero-filled by the
        // kernel, and (per the caller's contract) referenced by nothing else while these live.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) };
        all.split_at_mut(self.ring)
    }
}

impl Drop for SocketMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `map` created; its users are gone (type contract).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Upper bound on the committed bytes of one ring of `capacity` bytes that has carried `total`
/// bytes since it was created.
pub(crate) fn committed_bound(capacity: usize, total: u64) -> usize {
    let touched = usize::try_from(total).unwrap_or(usize::MAX);
    touched
        .saturating_add(PAGE - 1)
        .saturating_add(PAGE)
        .min(capacity.saturating_add(PAGE - 1))
        / PAGE
        * PAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident pages of a mapping, from `mincore` (test-only: the bound must hold against it).
    fn resident(m: &SocketMemory) -> usize {
        let pages = m.len.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is our live mapping; `vec` has one byte per page.
        let r = unsafe { libc::mincore(m.ptr.as_ptr().cast(), m.len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|b| *b & 1 != 0).count() * PAGE
    }

    #[test]
    fn pages_are_committed_only_when_touched_and_the_bound_holds() {
        let ring = 512 * 1024;
        let mut m = SocketMemory::map(ring).unwrap();
        assert_eq!(resident(&m), 0, "a fresh mapping commits nothing");
        // SAFETY: called once; the slices are dropped before `m`.
        let (rx, tx) = unsafe { m.rings() };
        assert_eq!((rx.len(), tx.len()), (ring, ring));
        // (Reading an untouched page would map the zero page, which mincore counts.)
        assert_eq!((rx[0], tx[0]), (0, 0), "zero-filled");
        rx[..10_000].fill(1);
        tx[0] = 1;
        let r = resident(&m);
        assert!(
            r <= committed_bound(ring, 10_000) + committed_bound(ring, 1),
            "{r}"
        );
        assert!(r >= 4 * PAGE, "{r}");
    }

    #[test]
    fn bound_is_monotone_and_capped() {
        assert_eq!(committed_bound(65536, 0), PAGE);
        assert_eq!(committed_bound(65536, 1), 2 * PAGE);
        assert_eq!(committed_bound(65536, 4096), 2 * PAGE);
        assert_eq!(committed_bound(65536, 4097), 3 * PAGE);
        assert_eq!(committed_bound(65536, 1 << 40), 65536);
        assert_eq!(committed_bound(65536, u64::MAX), 65536);
        let mut last = 0;
        for n in (0..200_000u64).step_by(777) {
            let b = committed_bound(65536, n);
            assert!(b >= last && b <= 65536);
            last = b;
        }
    }
}
