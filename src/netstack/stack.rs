//! The sans-IO core: one smoltcp `Interface` and `SocketSet`, the listeners (each with a
//! half-open set and a bounded accept queue), orphaned sockets that are still closing, and the
//! socket limit. Time is an argument; nothing here reads a clock or touches tokio.
//!
//! Socket ownership invariant (why `SocketSet::get_mut` cannot panic): every live
//! `SocketHandle` is owned by exactly one of: a listener's LISTEN slot, its half-open set, its
//! accept queue, a `TcpStream` (or a pending connect, which is a `TcpStream` in waiting), or the
//! orphan list. A handle is removed from the `SocketSet` only by the code that owns it at that
//! moment, and a `TcpStream` hands its handle to the orphan list on drop.

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
use super::counters::AtomicCounters;
use super::device::VirtualDevice;
use super::{NetstackConfig, NetstackError};

/// How long a socket may sit in SYN-RECEIVED before it is reset (bounds SYN floods).
const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped stream may take to finish closing before it is reset (like Linux's
/// `tcp_fin_timeout`): bounds sockets whose peer never sends its FIN.
const ORPHAN_LINGER: Duration = Duration::from_secs(60);
/// Ephemeral ports for `connect` (RFC 6335 dynamic range).
const EPHEMERAL_FIRST: u16 = 49152;
const EPHEMERAL_COUNT: u16 = 16384;

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

/// Per-socket settings, from [`NetstackConfig`].
#[derive(Debug, Clone)]
struct SocketParams {
    buffer: usize,
    keep_alive: Duration,
    idle_timeout: Duration,
    max_sockets: usize,
    backlog: usize,
}

pub(crate) struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    /// Slab indexed by `ListenerId` (a slot is reused after its `TcpListener` is gone).
    listeners: Vec<Option<Listener>>,
    orphans: Vec<Timed>,
    params: SocketParams,
    counters: Arc<AtomicCounters>,
    /// Sockets in `sockets` (smoltcp does not count them for us).
    open: usize,
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
            listeners: Vec::new(),
            orphans: Vec::new(),
            params: SocketParams {
                buffer: cfg.tcp_buffer,
                keep_alive: cfg.keep_alive,
                idle_timeout: cfg.idle_timeout,
                max_sockets: cfg.max_sockets,
                backlog: cfg.backlog,
            },
            counters,
            open: 0,
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
        // One packet at a time so that a listener whose LISTEN socket just took a SYN gets a
        // fresh LISTEN socket before the next SYN of the same burst is processed.
        while self
            .iface
            .poll_ingress_single(now, device, &mut self.sockets)
            != Ingress::None
        {
            self.replenish_all();
        }
        self.egress(now, device);
        if self.bookkeeping(now) {
            // Aborts queue RSTs: send them now rather than at the next timer.
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
        if self.open >= self.params.max_sockets {
            self.counters.sockets_refused.inc();
            return Err(NetstackError::TooManySockets);
        }
        let local_ip = self
            .iface
            .ip_addrs()
            .iter()
            .map(|c| IpAddr::from(c.address()))
            .find(|ip| ip.is_ipv4() == remote.is_ipv4())
            .ok_or(NetstackError::Unaddressable(remote))?;
        let port = self
            .ephemeral_port(IpAddress::from(local_ip))
            .ok_or(NetstackError::TooManySockets)?;
        let local = SocketAddr::new(local_ip, port);
        let mut socket = new_socket(&self.params);
        socket
            .connect(
                self.iface.context(),
                IpEndpoint::from(remote),
                IpEndpoint::from(local),
            )
            .map_err(|_| NetstackError::Unaddressable(remote))?;
        Ok((self.add(socket), local))
    }

    /// Gives up a stream's socket: closed gracefully (FIN after queued data) unless unread data
    /// remains, which resets it as Linux does. It is removed once fully closed.
    pub(crate) fn release(&mut self, handle: SocketHandle) {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if socket.can_recv() {
            socket.abort();
        } else {
            socket.close();
        }
        if closed_and_flushed(socket) {
            self.remove(handle);
        } else {
            self.orphans.push(Timed::new(handle));
        }
    }

    /// The socket behind a handle the caller owns (see the module invariant).
    pub(crate) fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    fn add(&mut self, socket: tcp::Socket<'static>) -> SocketHandle {
        self.open += 1;
        self.counters.sockets_open.set(self.open as u64);
        self.sockets.add(socket)
    }

    fn remove(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
        self.open -= 1;
        self.counters.sockets_open.set(self.open as u64);
    }

    /// Listener bookkeeping, then reaps closed orphans and resets those that linger.
    /// Returns true when it aborted a socket (an RST is waiting to be sent).
    fn bookkeeping(&mut self, now: Instant) -> bool {
        let mut aborted = self.listener_bookkeeping(now);
        let mut i = 0;
        while i < self.orphans.len() {
            let t = &mut self.orphans[i];
            let socket = self.sockets.get_mut::<tcp::Socket>(t.handle);
            let expired = t.expired(now, ORPHAN_LINGER);
            if closed_and_flushed(socket) || (expired && socket.state() == State::Closed) {
                let h = t.handle;
                self.orphans.swap_remove(i);
                self.sockets.remove(h);
                self.open -= 1;
            } else {
                if expired {
                    socket.abort();
                    aborted = true;
                }
                i += 1;
            }
        }
        self.counters.sockets_open.set(self.open as u64);
        aborted
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
            .filter_map(|t| t.deadline(ORPHAN_LINGER));
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

/// True when nothing more will be sent for this socket: closed with its RST (if any) already
/// emitted, or in TIME-WAIT (removing it then only risks an RST to a retransmitted FIN).
fn closed_and_flushed(socket: &tcp::Socket<'_>) -> bool {
    match socket.state() {
        State::TimeWait => true,
        State::Closed => socket.local_endpoint().is_none(),
        _ => false,
    }
}

/// A TCP socket with our settings: large buffers (window scaling follows), CUBIC, no Nagle,
/// keep-alive and an idle timeout. The zeroed buffers come from `calloc`, so their pages are
/// only committed as data flows through them.
fn new_socket(params: &SocketParams) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; params.buffer]);
    let tx = tcp::SocketBuffer::new(vec![0u8; params.buffer]);
    let mut socket = tcp::Socket::new(rx, tx);
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
        let params = SocketParams {
            buffer: cfg.tcp_buffer,
            keep_alive: cfg.keep_alive,
            idle_timeout: cfg.idle_timeout,
            max_sockets: cfg.max_sockets,
            backlog: cfg.backlog,
        };
        let s = new_socket(&params);
        assert!(s.recv_capacity() >= 256 * 1024 && s.send_capacity() >= 256 * 1024);
        assert_eq!(s.congestion_control(), CongestionControl::Cubic);
        assert!(!s.nagle_enabled());
        assert_eq!(s.keep_alive(), Some(cfg.keep_alive.into()));
        assert_eq!(s.timeout(), Some(cfg.idle_timeout.into()));
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
