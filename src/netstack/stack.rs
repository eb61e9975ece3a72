//! The sans-IO core: one smoltcp `Interface` and `SocketSet`, the listeners (each with a
//! half-open set and a bounded accept queue), orphaned sockets that are still closing, and the
//! admission limits (socket table, per-peer cap, memory budget). Time is an argument; nothing
//! here reads a clock or touches tokio.
//!
//! Socket ownership invariant (why `SocketSet::get_mut` cannot panic): every live
//! `SocketHandle` is owned by exactly one of: a listener's half-open set, its accept queue, a
//! `TcpStream` (or a pending connect, which is a `TcpStream` in waiting), or the orphan list. A
//! handle is removed from the `SocketSet` only by the code that owns it at that moment, always
//! through [`Stack::remove`], and a `TcpStream` hands its handle to the orphan list on drop.
//! Every handle in the `SocketSet` has an entry in `meta` (its peer and the mapping that holds
//! its rings), created and removed together with it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

mod listener;

use self::listener::Listener;
pub(crate) use self::listener::ListenerId;
use super::config::{NetstackConfig, PeerTag};
use super::counters::AtomicCounters;
use super::device::VirtualDevice;
use super::error::NetstackError;
use super::memory::{self, SocketMemory};

/// How long a socket may sit in SYN-RECEIVED before it is reset.
///
/// smoltcp resends an unanswered SYN-ACK after 1 s and doubles the wait each time (no SRTT yet
/// during a handshake), so its retransmissions leave at 1, 3, 7, 15 and 31 s, and a sixth would
/// at 63 s. 60 s lets all five happen and gives the last 29 s to be answered: the handshake
/// survives five lost SYN-ACKs in a row, as with Linux (`tcp_synack_retries` = 5, which gives
/// up at 63 s). The former 30 s cut the fifth one off: a burst of five losses refused the
/// connection. Linux's 63 s would race a sixth SYN-ACK against the reset.
///
/// This is not what bounds a SYN flood: a half-open socket counts against the listener's
/// backlog, its peer's `max_connections_per_peer`, the socket table and the memory budget
/// from the SYN on (see `prepare_accept`), and only WireGuard peers can send SYNs at all. The
/// timeout only decides how long a stuck slot stays taken.
const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a dropped stream may take to finish closing before it is reset (like Linux's
/// `tcp_fin_timeout`): bounds sockets whose peer never sends its FIN.
const ORPHAN_LINGER: Duration = Duration::from_secs(60);
/// Ephemeral ports for `connect` (RFC 6335 dynamic range).
const EPHEMERAL_FIRST: u16 = 49152;
const EPHEMERAL_COUNT: u16 = 16384;
/// The last `max_sockets / RESERVE_DIVISOR` sockets are kept for peers holding fewer than
/// `max_connections_per_peer / LIGHT_DIVISOR` connections, so that several peers near their
/// cap cannot fill the table for everyone else.
const RESERVE_DIVISOR: usize = 8;
const LIGHT_DIVISOR: usize = 4;

/// A socket with the time it entered its current list (set at the first poll that sees it, so
/// a stale `now` from an idle stack never shortens a deadline).
#[derive(Debug, Clone, Copy)]
struct Timed {
    handle: SocketHandle,
    since: Option<Instant>,
}

impl Timed {
    fn new(handle: SocketHandle) -> Self {
        Self {
            handle,
            since: None,
        }
    }

    /// Records `now` on first sight; true once `limit` has passed since then.
    fn expired(&mut self, now: Instant, limit: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        now >= since + SmolDuration::from(limit)
    }

    fn deadline(&self, limit: Duration) -> Option<Instant> {
        self.since.map(|s| s + SmolDuration::from(limit))
    }
}

/// How a stream's socket is given up (see `TcpStream`'s drop and `reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// FIN after the queued data; RST instead if unread data remains (as Linux does).
    Graceful,
    /// FIN after the queued data, then discard whatever the peer still sends for at most this
    /// long (so a reply such as a 413 reaches a client that is still sending), then RST.
    Linger(Duration),
    /// RST now.
    Reset,
}

/// A socket nobody reads any more, finishing its close.
#[derive(Debug, Clone, Copy)]
struct Orphan {
    timed: Timed,
    /// Reset once this long has passed.
    limit: Duration,
    /// Discard incoming data (lingering close) instead of resetting when some arrives.
    drain: bool,
}

/// Why a connection was not admitted (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener's half-open plus accept queue is full.
    Backlog,
    /// The peer already holds `max_connections_per_peer` connections.
    PeerLimit,
    /// `max_sockets` reached, or only the reserve is left and the peer is not light.
    TableFull,
    /// The socket memory budget is spent (or the OS refused a mapping).
    Memory,
}

/// Per-socket settings and admission limits, from [`NetstackConfig`].
#[derive(Debug, Clone)]
struct SocketParams {
    buffer: usize,
    keep_alive: Duration,
    idle_timeout: Duration,
    max_sockets: usize,
    backlog: usize,
    per_peer: usize,
    memory_budget: usize,
}

impl SocketParams {
    fn from_config(cfg: &NetstackConfig) -> Self {
        Self {
            // Whole pages, so the bound of `memory::committed_bound` is exact per ring.
            buffer: cfg.tcp_buffer.div_ceil(memory::PAGE) * memory::PAGE,
            keep_alive: cfg.keep_alive,
            idle_timeout: cfg.idle_timeout,
            max_sockets: cfg.max_sockets,
            backlog: cfg.backlog,
            per_peer: cfg.max_connections_per_peer,
            memory_budget: cfg.memory_budget,
        }
    }
}

/// What the stack knows about a socket besides smoltcp's state.
struct SocketMeta {
    /// The peer an accepted connection came from (`None` for our own connects).
    peer: Option<PeerTag>,
    /// The mapping holding the socket's two rings (held for its `Drop`, which unmaps them).
    _mapping: SocketMemory,
    /// Bytes taken out of the receive ring (it has carried these plus `recv_queue()`).
    read: u64,
    /// Bytes put into the send ring.
    written: u64,
}

pub(crate) struct Stack {
    iface: Interface,
    /// Dropped before `meta` (explicitly, in `Drop`): the sockets borrow its mappings.
    sockets: SocketSet<'static>,
    meta: HashMap<SocketHandle, SocketMeta>,
    /// Sockets per peer (accepted connections, from SYN to removal); no zero entries.
    per_peer: HashMap<PeerTag, usize>,
    /// Slab indexed by `ListenerId` (a slot is reused after its `TcpListener` is gone).
    listeners: Vec<Option<Listener>>,
    orphans: Vec<Orphan>,
    params: SocketParams,
    counters: Arc<AtomicCounters>,
    rng: u64,
}

impl Stack {
    /// Builds the interface: our addresses as /32 and /128, default routes through our own
    /// address so replies to any overlay address route (Medium::Ip has no neighbours), any-IP off.
    pub(crate) fn new(
        cfg: &NetstackConfig,
        device: &mut VirtualDevice<'_>,
        counters: Arc<AtomicCounters>,
    ) -> Result<Self, NetstackError> {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = cfg.seed;
        let mut iface = Interface::new(config, device, Instant::ZERO);
        iface.set_any_ip(false);
        let mut overflow = false;
        iface.update_ip_addrs(|addrs| {
            for ip in &cfg.addresses {
                let cidr = match ip {
                    IpAddr::V4(v4) => IpCidr::new(IpAddress::Ipv4(*v4), 32),
                    IpAddr::V6(v6) => IpCidr::new(IpAddress::Ipv6(*v6), 128),
                };
                overflow |= addrs.push(cidr).is_err();
            }
        });
        if overflow {
            return Err(NetstackError::TooManyAddresses {
                max: smoltcp::config::IFACE_MAX_ADDR_COUNT,
            });
        }
        let first_v4 = cfg.addresses.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let first_v6 = cfg.addresses.iter().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        // The route table holds two entries and starts empty, so these cannot fail.
        if let Some(v4) = first_v4 {
            let _ = iface.routes_mut().add_default_ipv4_route(v4);
        }
        if let Some(v6) = first_v6 {
            let _ = iface.routes_mut().add_default_ipv6_route(v6);
        }
        Ok(Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            meta: HashMap::new(),
            per_peer: HashMap::new(),
            listeners: Vec::new(),
            orphans: Vec::new(),
            params: SocketParams::from_config(cfg),
            counters,
            // xorshift must not start at zero.
            rng: cfg.seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
        })
    }

    /// Processes all queued inbound packets, sends what the sockets have (until the outbound
    /// queue is full), does listener and orphan bookkeeping, and returns how long until the
    /// next poll is needed (None: only new input or socket activity needs one).
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        device: &mut VirtualDevice<'_>,
    ) -> Option<Duration> {
        use smoltcp::iface::PollIngressSingleResult as Ingress;
        self.iface.poll_maintenance(now);
        // One packet at a time: a connection request gets its own LISTEN socket (or none, if
        // refused) right before smoltcp sees it, and no LISTEN socket exists otherwise, so a
        // retransmitted SYN can only reach the connection it belongs to.
        loop {
            let front = device.inbound.lock().front().and_then(|(packet, peer)| {
                super::device::connection_request(packet).map(|syn| (syn, peer))
            });
            let prepared = front.and_then(|(syn, peer)| self.prepare_accept(syn, peer));
            let r = self
                .iface
                .poll_ingress_single(now, device, &mut self.sockets);
            if let Some(p) = prepared {
                self.settle_accept(p);
            }
            if r == Ingress::None {
                break;
            }
        }
        self.egress(now, device);
        if self.bookkeeping(now) {
            // Aborts queue RSTs and drained orphans window updates: send them now.
            self.egress(now, device);
        }
        let smol = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        let own = self.next_deadline().map(|at| {
            if at > now {
                Duration::from_micros((at - now).total_micros())
            } else {
                Duration::ZERO
            }
        });
        match (smol, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn egress(&mut self, now: Instant, device: &mut VirtualDevice<'_>) {
        use smoltcp::iface::PollResult;
        while self.iface.poll_egress(now, device, &mut self.sockets) != PollResult::None {}
    }

    /// Creates a socket connecting to `remote` from our first address of its family and a
    /// random free ephemeral port. Completion is observed on the socket's state.
    pub(crate) fn connect(
        &mut self,
        remote: SocketAddr,
    ) -> Result<(SocketHandle, SocketAddr), NetstackError> {
        let local_ip = self
            .iface
            .ip_addrs()
            .iter()
            .map(|c| IpAddr::from(c.address()))
            .find(|ip| ip.is_ipv4() == remote.is_ipv4())
            .ok_or(NetstackError::Unaddressable(remote))?;
        if let Err(why) = self.admit(None, 0) {
            self.refused(why, &remote);
            return Err(match why {
                Refusal::Memory => NetstackError::MemoryBudget,
                _ => NetstackError::TooManySockets,
            });
        }
        let port = self
            .ephemeral_port(IpAddress::from(local_ip))
            .ok_or(NetstackError::TooManySockets)?;
        let local = SocketAddr::new(local_ip, port);
        let handle = match self.create(None) {
            Ok(h) => h,
            Err(why) => {
                self.refused(why, &remote);
                return Err(NetstackError::MemoryBudget);
            }
        };
        let cx = self.iface.context();
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if socket
            .connect(cx, IpEndpoint::from(remote), IpEndpoint::from(local))
            .is_err()
        {
            self.remove(handle);
            return Err(NetstackError::Unaddressable(remote));
        }
        Ok((handle, local))
    }

    /// Gives up a stream's socket (see [`Release`]). It is removed once fully closed.
    pub(crate) fn release(&mut self, handle: SocketHandle, how: Release) {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let (limit, drain) = match how {
            Release::Reset => {
                socket.abort();
                (ORPHAN_LINGER, false)
            }
            Release::Graceful => {
                if socket.can_recv() {
                    socket.abort();
                } else {
                    socket.close();
                }
                (ORPHAN_LINGER, false)
            }
            Release::Linger(limit) => {
                socket.close();
                (limit.min(ORPHAN_LINGER), true)
            }
        };
        if drain {
            self.discard_received(handle);
        }
        if closed_and_flushed(self.sockets.get::<tcp::Socket>(handle)) {
            self.remove(handle);
        } else {
            self.orphans.push(Orphan {
                timed: Timed::new(handle),
                limit,
                drain,
            });
        }
    }

    /// The socket behind a handle the caller owns (see the module invariant).
    pub(crate) fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Records that the application took `n` bytes out of the socket's receive ring.
    pub(crate) fn note_read(&mut self, handle: SocketHandle, n: usize) {
        if let Some(m) = self.meta.get_mut(&handle) {
            m.read += n as u64;
        }
    }

    /// Records that the application put `n` bytes into the socket's send ring.
    pub(crate) fn note_written(&mut self, handle: SocketHandle, n: usize) {
        if let Some(m) = self.meta.get_mut(&handle) {
            m.written += n as u64;
        }
    }

    /// Upper bound on the socket buffer memory committed now (see `memory`), in bytes.
    pub(crate) fn committed(&self) -> usize {
        self.meta
            .iter()
            .map(|(h, m)| {
                let s = self.sockets.get::<tcp::Socket>(*h);
                let rx = m.read + s.recv_queue() as u64;
                memory::committed_bound(s.recv_capacity(), rx)
                    + memory::committed_bound(s.send_capacity(), m.written)
                    + memory::SOCKET_OVERHEAD
            })
            .sum()
    }

    /// Decides whether a new connection (from `peer`, which holds `held` already) may have a
    /// socket. Listener backlogs are checked by the caller.
    fn admit(&mut self, peer: Option<PeerTag>, held: usize) -> Result<(), Refusal> {
        let p = &self.params;
        if peer.is_some() && held >= p.per_peer {
            return Err(Refusal::PeerLimit);
        }
        let open = self.meta.len();
        let reserve = p.max_sockets / RESERVE_DIVISOR;
        let light = held < (p.per_peer / LIGHT_DIVISOR).max(1);
        if open >= p.max_sockets || (open >= p.max_sockets - reserve && !light) {
            return Err(Refusal::TableFull);
        }
        let committed = self.committed();
        self.counters.socket_memory.set(committed as u64);
        if committed + memory::FRESH_SOCKET_CHARGE > p.memory_budget {
            return Err(Refusal::Memory);
        }
        Ok(())
    }

    /// Counts and logs a refused connection.
    fn refused(&self, why: Refusal, to: &dyn std::fmt::Display) {
        let c = &self.counters;
        c.sockets_refused.inc();
        match why {
            Refusal::Backlog => c.refused_backlog.inc(),
            Refusal::PeerLimit => c.refused_peer_limit.inc(),
            Refusal::TableFull => c.refused_table_full.inc(),
            Refusal::Memory => c.refused_memory.inc(),
        }
        tracing::debug!(%to, ?why, "netstack: connection refused");
    }

    /// Maps the rings and adds a fresh (closed) socket with our settings.
    fn create(&mut self, peer: Option<PeerTag>) -> Result<SocketHandle, Refusal> {
        let mut mapping = SocketMemory::map(self.params.buffer).map_err(|e| {
            tracing::debug!(error = %e, "netstack: cannot map socket buffers");
            Refusal::Memory
        })?;
        // SAFETY: called once for this mapping; the socket that borrows the rings is dropped
        // before the mapping: `remove` drops it first, and `Drop for Stack` drops every socket
        // before `meta`.
        let (rx, tx) = unsafe { mapping.rings() };
        let handle = self.sockets.add(new_socket(&self.params, rx, tx));
        self.meta.insert(
            handle,
            SocketMeta {
                peer,
                _mapping: mapping,
                read: 0,
                written: 0,
            },
        );
        if let Some(p) = peer {
            *self.per_peer.entry(p).or_default() += 1;
        }
        self.counters.sockets_open.set(self.meta.len() as u64);
        Ok(handle)
    }

    /// Removes a socket, then unmaps its rings (see the module invariant for ownership).
    fn remove(&mut self, handle: SocketHandle) {
        drop(self.sockets.remove(handle));
        if let Some(meta) = self.meta.remove(&handle)
            && let Some(peer) = meta.peer
            && let Some(n) = self.per_peer.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
        self.counters.sockets_open.set(self.meta.len() as u64);
    }

    /// Drops whatever sits in a socket's receive ring (orphans nobody reads). True if any.
    fn discard_received(&mut self, handle: SocketHandle) -> bool {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let mut total = 0;
        while let Ok(n) = socket.recv(|data| (data.len(), data.len()))
            && n > 0
        {
            total += n;
        }
        self.note_read(handle, total);
        total > 0
    }

    /// Listener bookkeeping, then orphans: lingering ones drain, others are reset when data
    /// arrives (nobody will read it), closed ones are removed, expired ones reset.
    /// Returns true when something needs sending now (an RST, a window update).
    fn bookkeeping(&mut self, now: Instant) -> bool {
        let mut send = self.listener_bookkeeping(now);
        let mut i = 0;
        while i < self.orphans.len() {
            let o = self.orphans[i];
            let h = o.timed.handle;
            if o.drain {
                send |= self.discard_received(h);
            }
            let expired = self.orphans[i].timed.expired(now, o.limit);
            let socket = self.sockets.get_mut::<tcp::Socket>(h);
            if !o.drain && socket.can_recv() {
                socket.abort();
                send = true;
            }
            if closed_and_flushed(socket) || (expired && socket.state() == State::Closed) {
                self.orphans.swap_remove(i);
                self.remove(h);
            } else {
                if expired {
                    socket.abort();
                    send = true;
                }
                i += 1;
            }
        }
        send
    }

    fn next_deadline(&self) -> Option<Instant> {
        let half_open = self
            .listeners
            .iter()
            .flatten()
            .flat_map(|l| l.half_open.iter())
            .filter_map(|t| t.deadline(HALF_OPEN_TIMEOUT));
        let orphans = self
            .orphans
            .iter()
            .filter_map(|o| o.timed.deadline(o.limit));
        half_open.chain(orphans).min()
    }

    /// A random ephemeral port not used by any socket on `local` (linear probe from a random
    /// start; the socket limit keeps this bounded).
    fn ephemeral_port(&mut self, local: IpAddress) -> Option<u16> {
        let start = (self.next_random() % u64::from(EPHEMERAL_COUNT)) as u16;
        (0..EPHEMERAL_COUNT)
            .map(|i| EPHEMERAL_FIRST + (start + i) % EPHEMERAL_COUNT)
            .find(|&port| !self.port_in_use(local, port))
    }

    fn port_in_use(&self, local: IpAddress, port: u16) -> bool {
        let listening = self
            .listeners
            .iter()
            .flatten()
            .any(|l| l.endpoint.port == port && l.endpoint.addr == local);
        listening
            || self.sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(s) => s
                    .local_endpoint()
                    .is_some_and(|ep| ep.port == port && ep.addr == local),
                #[allow(unreachable_patterns)]
                _ => false,
            })
    }

    /// See `Netstack::remote_addresses`.
    pub(crate) fn remote_addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(s) => s.remote_endpoint(),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .map(|ep| IpAddr::from(ep.addr))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// See `Netstack::abort_connections`.
    pub(crate) fn abort_where(&mut self, mut select: impl FnMut(IpAddr) -> bool) -> usize {
        let mut aborted = 0;
        for (_, socket) in self.sockets.iter_mut() {
            #[allow(irrefutable_let_patterns)]
            let smoltcp::socket::Socket::Tcp(s) = socket else {
                continue;
            };
            if let Some(ep) = s.remote_endpoint()
                && s.state() != State::Closed
                && select(IpAddr::from(ep.addr))
            {
                s.abort();
                aborted += 1;
            }
        }
        aborted
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to spread ephemeral ports; smoltcp seeds ISNs itself.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The sockets borrow the rings mapped in `meta`: drop every socket first.
        self.sockets = SocketSet::new(Vec::new());
    }
}

/// True when nothing more will be sent for this socket: closed with its RST (if any) already
/// emitted, or in TIME-WAIT (removing it then only risks an RST to a retransmitted FIN, which
/// reaches a peer in LAST-ACK whose application has already seen our FIN: harmless).
fn closed_and_flushed(socket: &tcp::Socket<'_>) -> bool {
    match socket.state() {
        State::TimeWait => true,
        State::Closed => socket.local_endpoint().is_none(),
        _ => false,
    }
}

/// A TCP socket with our settings over the given rings: large buffers (window scaling
/// follows), CUBIC, no Nagle, keep-alive and an idle timeout.
fn new_socket(
    params: &SocketParams,
    rx: &'static mut [u8],
    tx: &'static mut [u8],
) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    socket.set_congestion_control(CongestionControl::Cubic);
    socket.set_nagle_enabled(false);
    socket.set_keep_alive(Some(params.keep_alive.into()));
    socket.set_timeout(Some(params.idle_timeout.into()));
    socket
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_get_our_tcp_settings() {
        let cfg = NetstackConfig::new(vec![IpAddr::from([10, 0, 0, 1])]);
        let params = SocketParams::from_config(&cfg);
        let mut mapping = SocketMemory::map(params.buffer).unwrap();
        // SAFETY: once; the socket is dropped before the mapping.
        let (rx, tx) = unsafe { mapping.rings() };
        let s = new_socket(&params, rx, tx);
        assert!(s.recv_capacity() >= 256 * 1024 && s.send_capacity() >= 256 * 1024);
        assert_eq!(s.congestion_control(), CongestionControl::Cubic);
        assert!(!s.nagle_enabled());
        assert_eq!(s.keep_alive(), Some(cfg.keep_alive.into()));
        assert_eq!(s.timeout(), Some(cfg.idle_timeout.into()));
        drop(s);
    }

    #[test]
    fn timed_deadline_starts_at_first_sight() {
        let mut t = Timed::new(SocketHandle::default());
        assert_eq!(t.deadline(ORPHAN_LINGER), None);
        let t0 = Instant::from_secs(1000);
        assert!(!t.expired(t0, ORPHAN_LINGER));
        assert!(!t.expired(t0 + SmolDuration::from_secs(59), ORPHAN_LINGER));
        assert!(t.expired(t0 + SmolDuration::from_secs(60), ORPHAN_LINGER));
    }
}
