//! Userspace TCP/IP: smoltcp 0.14 bridged to tokio `AsyncRead`/`AsyncWrite`.
//!
//! Owns: the smoltcp interface (our tunnel addresses as /32 and /128, default routes through
//! them, any-IP off), every TCP socket, listeners with an accept queue, and two bounded queues of
//! IP packets (inbound and outbound) made of reusable MTU-sized buffers.
//!
//! Leaves to its caller (the data-path driver in `node/driver.rs`): moving IP packets to and from
//! WireGuard, reading the clock, and sleeping. It never spawns a task. The driver calls, from one
//! task (see [`Netstack`] for the exact loop):
//! [`push_inbound`](Netstack::push_inbound) → [`poll`](Netstack::poll) →
//! [`pop_outbound`](Netstack::pop_outbound) → wait for
//! {inbound packet, [`wait_for_work`](Netstack::wait_for_work), the delay `poll` returned}.
//!
//! Nothing is dropped silently between this module and its caller: a full queue is reported
//! (inbound) or exerted as backpressure on smoltcp (outbound), and the only drops (packets not for
//! our addresses, malformed packets) are counted in [`Counters`] and logged at debug.
//!
//! Admission (no peer can lock others out): every inbound packet carries the [`PeerTag`] of the
//! WireGuard peer it came from; a connection request is refused with RST, and counted by reason,
//! when its listener's backlog is full, its peer already holds `max_connections_per_peer`
//! connections, the socket table is full (its last eighth is kept for peers holding fewer than a
//! quarter of the per-peer cap), or the socket buffer memory committed now (see `memory`) would
//! exceed `memory_budget`. Socket buffers are lazily committed mappings, returned to the OS when
//! the connection is removed.
//!
//! Sockets: [`TcpListener`] (also an `axum::serve::Listener`) and [`TcpStream`].

mod config;
mod counters;
mod device;
mod error;
mod memory;
mod stack;
mod tcp;

#[cfg(test)]
pub(crate) mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

pub use self::config::{
    DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_SOCKETS, DEFAULT_MEMORY_BUDGET, DEFAULT_MTU,
    DEFAULT_TCP_BUFFER, Limits, MTU_RANGE, NetstackConfig, PeerTag, TCP_BUFFER_RANGE,
};
pub use self::counters::Counters;
pub use self::error::{Full, NetstackError};
pub use self::tcp::{TcpListener, TcpStream};

use self::counters::AtomicCounters;
use self::device::{PacketQueue, Reject, VirtualDevice};
use self::stack::Stack;

/// See [`set_output_grouping`].
static GROUP_OUTPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Benchmarks only (process-wide, default on): whether a poll's output is regrouped by
/// destination (see [`Netstack::poll`]), so that the gain can be measured against the same
/// code without it in the same run.
#[doc(hidden)]
pub fn set_output_grouping(on: bool) {
    GROUP_OUTPUT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A userspace TCP/IP stack. Cheap to clone (shared state); sockets keep it alive.
///
/// # Driving it
/// Exactly one task (the data-path driver) calls `push_inbound`, `poll`, `pop_outbound` and
/// `wait_for_work`; sockets may be used from any task. One iteration of the driver:
/// 1. For each decrypted packet: [`push_inbound`](Self::push_inbound). On [`Full`], go to 2 and
///    offer the packet again afterwards (never drop it).
/// 2. [`poll`](Self::poll)`(now)` with a monotonic clock (e.g. microseconds since the driver
///    started); keep the returned delay.
/// 3. [`pop_outbound`](Self::pop_outbound) with a closure that encrypts and sends each packet
///    and returns false when the UDP socket would block; it returns whether the queue is empty.
/// 4. If the queue emptied and the delay is zero, go to 2. Otherwise wait for the first of: a
///    UDP datagram, [`wait_for_work`](Self::wait_for_work), the delay (if any), and UDP
///    writability if step 3 stopped early (a zero delay then only means "blocked on output").
///
/// The test module `tests::driver` is a complete in-memory driver.
#[derive(Clone)]
pub struct Netstack {
    shared: Arc<Shared>,
}

struct Shared {
    stack: Mutex<Stack>,
    inbound: Mutex<PacketQueue>,
    outbound: Mutex<PacketQueue>,
    /// Signalled by sockets when they did something that needs a poll.
    work: Notify,
    counters: Arc<AtomicCounters>,
    addresses: Vec<IpAddr>,
    mtu: usize,
    connect_timeout: Duration,
    /// Tests: every poll answers "poll again now" (a stack state that makes no progress).
    #[cfg(test)]
    stuck: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Asks the driver for a poll (a read freed window, a write queued data, a close...).
    fn wake_driver(&self) {
        self.work.notify_one();
    }
}

impl Netstack {
    /// A stack with these settings (checked: ranges, no zero limit, at most two addresses).
    pub fn new(cfg: NetstackConfig) -> Result<Self, NetstackError> {
        cfg.validate()?;
        let inbound = Mutex::new(PacketQueue::new(cfg.queue_packets, cfg.mtu));
        let outbound = Mutex::new(PacketQueue::new(cfg.queue_packets, cfg.mtu));
        let counters = Arc::new(AtomicCounters::default());
        let stack = {
            let mut device = VirtualDevice {
                inbound: &inbound,
                outbound: &outbound,
                counters: &counters,
                mtu: cfg.mtu,
            };
            Stack::new(&cfg, &mut device, counters.clone())?
        };
        Ok(Self {
            shared: Arc::new(Shared {
                stack: Mutex::new(stack),
                inbound,
                outbound,
                work: Notify::new(),
                counters,
                addresses: cfg.addresses,
                mtu: cfg.mtu,
                connect_timeout: cfg.connect_timeout,
                #[cfg(test)]
                stuck: Default::default(),
            }),
        })
    }

    /// Queues one inbound IP packet from `peer` (copied into a pooled buffer). Packets not
    /// addressed to us or malformed are dropped, counted and logged at debug, and still return
    /// `Ok`. Does not poll: the driver polls after a batch of pushes.
    pub fn push_inbound(&self, peer: PeerTag, packet: &[u8]) -> Result<(), Full> {
        let c = &self.shared.counters;
        if self.shared.inbound.lock().is_full() {
            c.inbound_full.inc();
            return Err(Full);
        }
        match device::classify_inbound(packet, &self.shared.addresses) {
            Ok(()) => {}
            Err(Reject::NotOurs(dst)) => {
                c.dropped_not_ours.inc();
                tracing::debug!(%dst, "netstack: dropped inbound packet not for our addresses");
                return Ok(());
            }
            Err(Reject::Malformed(why)) => {
                c.dropped_malformed.inc();
                tracing::debug!(
                    why,
                    len = packet.len(),
                    "netstack: dropped malformed inbound packet"
                );
                return Ok(());
            }
        }
        if self.shared.inbound.lock().push_copy(packet, Some(peer)) {
            c.packets_in.inc();
            Ok(())
        } else {
            c.inbound_full.inc();
            Err(Full)
        }
    }

    /// Runs the stack at `now`: all queued inbound packets, then all output the sockets have
    /// (until the outbound queue is full), listener and close bookkeeping, socket wakers. The
    /// output is queued grouped by destination address (each flow in order), not in smoltcp's
    /// one-segment-per-socket turns, so that a caller batching per peer (GSO) can.
    /// Returns the time until the next poll is due (`None`: only new input or socket activity
    /// needs one; `Some(ZERO)`: poll again once the outbound queue has room).
    pub fn poll(&self, now: smoltcp::time::Instant) -> Option<Duration> {
        let s = &*self.shared;
        let mut device = VirtualDevice {
            inbound: &s.inbound,
            outbound: &s.outbound,
            counters: &s.counters,
            mtu: s.mtu,
        };
        let mark = s.outbound.lock().pushed();
        let delay = s.stack.lock().poll(now, &mut device);
        // This poll's output, grouped per peer for the driver's GSO runs.
        if GROUP_OUTPUT.load(std::sync::atomic::Ordering::Relaxed) {
            s.outbound.lock().group_by_destination(mark);
        }
        #[cfg(test)]
        if s.stuck.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(Duration::ZERO);
        }
        if s.inbound.lock().is_empty() {
            delay
        } else {
            // Input left behind because the outbound queue filled up.
            Some(Duration::ZERO)
        }
    }

    /// Hands queued outbound IP packets, oldest first, to `send`; a packet for which it returns
    /// false stays queued (first) and the call stops. Returns true when the queue is empty.
    pub fn pop_outbound(&self, mut send: impl FnMut(&[u8]) -> bool) -> bool {
        let q = &self.shared.outbound;
        let mut next = q.lock().pop();
        while let Some(buf) = next {
            if !send(&buf) {
                q.lock().unpop(buf);
                return false;
            }
            self.shared.counters.packets_out.inc();
            let mut q = q.lock();
            q.recycle(buf);
            next = q.pop();
        }
        true
    }

    /// Packets waiting in the outbound queue.
    pub fn outbound_len(&self) -> usize {
        self.shared.outbound.lock().len()
    }

    /// Packets waiting in the inbound queue (the next poll consumes them).
    pub fn inbound_len(&self) -> usize {
        self.shared.inbound.lock().len()
    }

    /// Tests: makes every later poll answer a zero delay (`Some(ZERO)`, "poll again now")
    /// whatever the stack's state, as a stack state that never makes progress would; the
    /// stack itself keeps working.
    #[cfg(test)]
    pub(crate) fn simulate_stuck_poll(&self, on: bool) {
        self.shared
            .stuck
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves when a socket did something that needs a poll (read freed window, write queued
    /// data, shutdown, close, connect, listen, accept). A signal sent while nobody waits is
    /// kept, so none is lost between two waits.
    pub async fn wait_for_work(&self) {
        self.shared.work.notified().await;
    }

    /// Listens on `addr`, which must be one of our addresses (no wildcard) with a non-zero port.
    pub fn listen(&self, addr: SocketAddr) -> Result<TcpListener, NetstackError> {
        let id = self.shared.stack.lock().listen(addr)?;
        self.shared.wake_driver();
        Ok(TcpListener::new(self.shared.clone(), id, addr))
    }

    /// Connects to `remote` from our address of its family and an ephemeral port; resolves once
    /// established. Errors: `ConnectionRefused` (RST), `TimedOut` (no answer within
    /// `connect_timeout`), `QuotaExceeded` (socket limit), `NetworkUnreachable` (no address of
    /// that family). Dropping the future resets the attempt.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<TcpStream> {
        tcp::connect(self.shared.clone(), remote).await
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Socket buffer memory committed now (an upper bound, see `memory`), computed on the spot;
    /// `Counters::socket_memory` holds the figure of the last admission decision.
    pub fn socket_memory(&self) -> usize {
        self.shared.stack.lock().committed()
    }

    /// Remote addresses of every TCP connection (connecting, half-open, established, closing),
    /// each once. With [`abort_connections`](Self::abort_connections), how the node ends the
    /// connections of a WireGuard peer that was removed.
    pub fn remote_addresses(&self) -> Vec<IpAddr> {
        self.shared.stack.lock().remote_addresses()
    }

    /// Resets every TCP connection whose remote address `select` picks: the socket closes with
    /// an RST, its stream's reads and writes fail with `ConnectionReset`, listeners drop it.
    /// Returns how many were reset. Listening sockets are never touched.
    pub fn abort_connections(&self, select: impl FnMut(IpAddr) -> bool) -> usize {
        let n = self.shared.stack.lock().abort_where(select);
        if n > 0 {
            self.shared.wake_driver();
        }
        n
    }

    /// Our tunnel addresses.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.shared.addresses
    }

    /// The IP MTU of the tunnel.
    pub fn mtu(&self) -> usize {
        self.shared.mtu
    }
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("addresses", &self.shared.addresses)
            .field("counters", &self.counters())
            .finish()
    }
}
