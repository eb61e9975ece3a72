//! Userspace TCP/IP: smoltcp 0.14 bridged to tokio `AsyncRead`/`AsyncWrite`.
//!
//! Owns: the smoltcp interface (our tunnel addresses as /32 and /128, default routes through
//! them, any-IP off), every TCP socket, listeners with an accept queue, and two bounded queues of
//! IP packets (inbound and outbound) made of reusable MTU-sized buffers.
//!
//! Leaves to its caller (the data-path driver in `node.rs`): moving IP packets to and from
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

mod counters;
mod device;
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

pub use self::counters::Counters;
pub use self::tcp::{TcpListener, TcpStream};

use self::counters::AtomicCounters;
use self::device::{PacketQueue, Reject, VirtualDevice};
use self::stack::Stack;

/// Identifies the WireGuard peer an inbound packet (and so an accepted connection) came from.
/// Opaque to the netstack: the data-path driver chooses the values (a `wg::PeerId`'s index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerTag(pub u64);

/// The admission limits a node's configuration sets (the rest of [`NetstackConfig`] comes from
/// elsewhere or keeps its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`NetstackConfig::max_sockets`].
    pub max_connections: usize,
    /// See [`NetstackConfig::max_connections_per_peer`].
    pub max_connections_per_peer: usize,
    /// See [`NetstackConfig::memory_budget`].
    pub memory_budget: usize,
}

impl Default for Limits {
    /// 1,024 connections, 64 per peer, a 64 MiB memory budget (as [`NetstackConfig::default`]).
    fn default() -> Self {
        let d = NetstackConfig::default();
        Self {
            max_connections: d.max_sockets,
            max_connections_per_peer: d.max_connections_per_peer,
            memory_budget: d.memory_budget,
        }
    }
}

/// Settings of one netstack.
#[derive(Debug, Clone)]
pub struct NetstackConfig {
    /// Our tunnel addresses (at most two: smoltcp's `IFACE_MAX_ADDR_COUNT`). Only packets to
    /// these are accepted; outgoing connections use the first address of the remote's family.
    pub addresses: Vec<IpAddr>,
    /// IP MTU of the tunnel; the same on both ends (smoltcp does not fragment TCP).
    pub mtu: usize,
    /// Receive and send buffer of every TCP socket, in bytes. Above 64 KiB window scaling is
    /// negotiated; the send buffer bounds the bytes in flight (bandwidth × RTT).
    pub tcp_buffer: usize,
    /// Sockets of all kinds (half-open, connected, closing). Beyond it `connect` fails and
    /// listeners answer SYNs with RST; both are counted in `sockets_refused`. The last eighth is
    /// kept for peers holding fewer than a quarter of `max_connections_per_peer`.
    pub max_sockets: usize,
    /// Inbound connections (half-open, connected or closing) one peer may hold at once.
    pub max_connections_per_peer: usize,
    /// Budget for socket buffer memory (committed pages of the rings, bounded as in
    /// `memory::committed_bound`, plus a fixed cost per socket). New connections are refused
    /// while it is spent; connections already open may still grow to `2 * tcp_buffer` each.
    pub memory_budget: usize,
    /// Per listener: connections in the handshake plus those waiting for `accept`.
    pub backlog: usize,
    /// Packets each of the inbound and outbound queues holds.
    pub queue_packets: usize,
    /// Idle time after which a keep-alive probe is sent.
    pub keep_alive: Duration,
    /// A connection whose peer sends nothing for this long (while we send data or probes) is
    /// aborted.
    pub idle_timeout: Duration,
    /// `connect` gives up after this long without an answer to its SYN.
    pub connect_timeout: Duration,
    /// Seeds smoltcp's RNG (initial sequence numbers) and ephemeral port choice.
    pub seed: u64,
}

impl Default for NetstackConfig {
    /// MTU 1280 (safe on any path, the IPv6 minimum), 512 KiB TCP buffers, 1024 sockets, 64
    /// connections per peer, a 64 MiB memory budget, a backlog of 128, 256-packet queues,
    /// keep-alive 25 s, idle timeout 120 s, connect timeout 10 s, and a seed from the OS RNG.
    /// No addresses: set them.
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            mtu: 1280,
            tcp_buffer: 512 * 1024,
            max_sockets: 1024,
            max_connections_per_peer: 64,
            memory_budget: 64 << 20,
            backlog: 128,
            queue_packets: 256,
            keep_alive: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            seed: os_seed(),
        }
    }
}

impl NetstackConfig {
    /// Defaults with these addresses.
    pub fn new(addresses: Vec<IpAddr>) -> Self {
        Self {
            addresses,
            ..Self::default()
        }
    }

    /// These settings with `limits` applied.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self {
            max_sockets: limits.max_connections,
            max_connections_per_peer: limits.max_connections_per_peer,
            memory_budget: limits.memory_budget,
            ..self
        }
    }
}

/// Errors of the netstack. None is worth retrying unchanged except `TooManySockets`.
#[derive(Debug, thiserror::Error)]
pub enum NetstackError {
    #[error("no tunnel address configured")]
    NoAddresses,
    #[error("too many addresses (at most {max})")]
    TooManyAddresses { max: usize },
    #[error("MTU {0} out of range (1280..=65535)")]
    InvalidMtu(usize),
    #[error("TCP buffer size {0} out of range (65536..=1073741824)")]
    InvalidBuffer(usize),
    #[error("{name} must be at least 1")]
    ZeroLimit { name: &'static str },
    #[error("{0} is not one of our addresses")]
    AddressNotLocal(IpAddr),
    #[error("port 0 is not allowed")]
    PortZero,
    #[error("{0} is already being listened on")]
    AddrInUse(SocketAddr),
    /// Retry after connections close.
    #[error("socket limit reached")]
    TooManySockets,
    /// Retry after connections close.
    #[error("socket memory budget spent")]
    MemoryBudget,
    #[error("no local address can reach {0}")]
    Unaddressable(SocketAddr),
}

impl From<NetstackError> for io::Error {
    fn from(e: NetstackError) -> Self {
        let kind = match e {
            NetstackError::AddressNotLocal(_) => io::ErrorKind::AddrNotAvailable,
            NetstackError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            NetstackError::TooManySockets | NetstackError::MemoryBudget => {
                io::ErrorKind::QuotaExceeded
            }
            NetstackError::Unaddressable(_) => io::ErrorKind::NetworkUnreachable,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// `push_inbound` could not queue the packet: poll, then offer it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("netstack inbound queue is full")]
pub struct Full;

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
}

impl Shared {
    /// Asks the driver for a poll (a read freed window, a write queued data, a close...).
    fn wake_driver(&self) {
        self.work.notify_one();
    }
}

impl Netstack {
    pub fn new(cfg: NetstackConfig) -> Result<Self, NetstackError> {
        validate(&cfg)?;
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
    /// (until the outbound queue is full), listener and close bookkeeping, socket wakers.
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
        let delay = s.stack.lock().poll(now, &mut device);
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

    pub fn addresses(&self) -> &[IpAddr] {
        &self.shared.addresses
    }

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

fn validate(cfg: &NetstackConfig) -> Result<(), NetstackError> {
    if cfg.addresses.is_empty() {
        return Err(NetstackError::NoAddresses);
    }
    if !(1280..=65535).contains(&cfg.mtu) {
        return Err(NetstackError::InvalidMtu(cfg.mtu));
    }
    // smoltcp panics above 1 GiB; below 64 KiB there is no window scaling.
    if !(65536..=(1 << 30)).contains(&cfg.tcp_buffer) {
        return Err(NetstackError::InvalidBuffer(cfg.tcp_buffer));
    }
    for (name, v) in [
        ("max_sockets", cfg.max_sockets),
        ("max_connections_per_peer", cfg.max_connections_per_peer),
        ("memory_budget", cfg.memory_budget),
        ("backlog", cfg.backlog),
        ("queue_packets", cfg.queue_packets),
    ] {
        if v == 0 {
            return Err(NetstackError::ZeroLimit { name });
        }
    }
    Ok(())
}

/// A seed from the OS RNG; the clock if that fails (smoltcp only needs it to differ per boot).
fn os_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED)
    })
}
