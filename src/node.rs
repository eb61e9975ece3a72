//! `Node` = WireGuard (`wg`) + TCP/IP (`netstack`) + the one data-path task that drives both.
//!
//! Owns: the WireGuard UDP socket (the only host socket), the data-path task, the 250 ms timer
//! tick and 1 s rate-limiter reset, shutdown. Both roles use it: the agent listens on its tunnel
//! address, control replicas connect to agents' tunnel addresses.
//! Leaves to the caller: what runs over the TCP streams (HTTP), configuration parsing.
//!
//! Why one task: on 2 vCPUs one data-path thread beat four by about 2× (DESIGN.md); every hop
//! through a channel costs a wake-up. The task owns the `wg::Device` outright (no lock) and
//! shares the netstack with socket handles through short, never-awaited locks.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::netstack::{self, Netstack, NetstackConfig, TcpListener, TcpStream};
use crate::wg::{self, Device, DeviceConfig, PeerConfig, PublicKey, StaticSecret};

/// Everything a node needs to join the overlay.
pub struct NodeConfig {
    pub private_key: StaticSecret,
    /// Tunnel addresses of this node (at most one IPv4 and one IPv6).
    pub addresses: Vec<IpAddr>,
    /// UDP port of the WireGuard socket; 0 picks a free one (NAT'd agents, tests).
    pub listen_port: u16,
    pub mtu: usize,
    /// Receive and send buffer of every tunnel TCP socket.
    pub tcp_buffer: usize,
    /// How long `connect` waits for the TCP handshake (which includes the WireGuard handshake
    /// when there is no session yet).
    pub connect_timeout: Duration,
    pub peers: Vec<PeerConfig>,
}

impl From<&crate::config::Config> for NodeConfig {
    fn from(cfg: &crate::config::Config) -> Self {
        let peers = cfg
            .peers
            .iter()
            .map(|p| PeerConfig {
                name: p.name.clone(),
                public_key: p.public_key,
                preshared_key: p.preshared_key,
                allowed_ips: p.allowed_ips.clone(),
                endpoint: p.endpoint,
                persistent_keepalive: p.persistent_keepalive,
            })
            .collect();
        NodeConfig {
            private_key: cfg.interface.private_key.clone(),
            addresses: cfg.interface.addresses.clone(),
            listen_port: cfg.interface.listen_port,
            mtu: usize::from(cfg.interface.mtu),
            tcp_buffer: cfg.interface.tcp_buffer,
            connect_timeout: cfg.control.connect_timeout,
            peers,
        }
    }
}

/// Errors starting a node. None is fixed by retrying unchanged, except `Bind` when the port
/// is in use by a process that is about to exit.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid WireGuard configuration: {0}")]
    Wg(#[from] wg::WgError),
    #[error("invalid netstack configuration: {0}")]
    Netstack(#[from] netstack::NetstackError),
    #[error("cannot bind the WireGuard UDP port {port}: {source}")]
    Bind { port: u16, source: io::Error },
}

/// A running node. Dropping it stops the data path.
pub struct Node {
    netstack: Netstack,
    wg_counters: Arc<wg::Counters>,
    driver: Arc<DriverCounters>,
    public_key: PublicKey,
    udp_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Counters of the data-path task itself (the UDP socket side).
#[derive(Debug, Default)]
pub struct DriverCounters {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// Datagrams the kernel refused (not `WouldBlock`, which waits for writability instead).
    pub send_errors: AtomicU64,
    /// Decrypted packets dropped because the netstack's inbound queue stayed full.
    pub inbound_dropped: AtomicU64,
}

/// Everything a node counts, at one moment.
#[derive(Debug, Clone)]
pub struct NodeStats {
    pub wg: wg::Stats,
    pub netstack: netstack::Counters,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub send_errors: u64,
    pub inbound_dropped: u64,
}

impl Node {
    /// Binds the UDP socket and starts the data path. Must be called inside a tokio runtime.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let device = Device::new(DeviceConfig {
            private_key: cfg.private_key,
            peers: cfg.peers,
        })?;
        let ns_cfg = NetstackConfig {
            mtu: cfg.mtu,
            tcp_buffer: cfg.tcp_buffer,
            connect_timeout: cfg.connect_timeout,
            ..NetstackConfig::new(cfg.addresses)
        };
        let netstack = Netstack::new(ns_cfg)?;
        let udp = wg::udp::bind_udp(cfg.listen_port).map_err(|source| NodeError::Bind {
            port: cfg.listen_port,
            source,
        })?;
        let udp_addr =
            wg::udp::normalize_addr(udp.local_addr().map_err(|source| NodeError::Bind {
                port: cfg.listen_port,
                source,
            })?);
        let wg_counters = device.counters();
        let public_key = device.public_key();
        let driver = Arc::new(DriverCounters::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(run(
            device,
            netstack.clone(),
            udp,
            cancel.clone(),
            driver.clone(),
        ));
        tracker.close();
        Ok(Node {
            netstack,
            wg_counters,
            driver,
            public_key,
            udp_addr,
            cancel,
            tracker,
        })
    }

    /// Listens on `port` of every tunnel address.
    pub fn listen(&self, port: u16) -> Result<Vec<TcpListener>, NodeError> {
        let mut out = Vec::new();
        for ip in self.netstack.addresses() {
            out.push(self.netstack.listen(SocketAddr::new(*ip, port))?);
        }
        Ok(out)
    }

    /// Opens a TCP connection through the tunnel. The first packet triggers the WireGuard
    /// handshake if there is no session yet.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.netstack.connect(addr).await
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The WireGuard UDP socket's local address (`[::]`/`0.0.0.0` and the bound port).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn addresses(&self) -> &[IpAddr] {
        self.netstack.addresses()
    }

    pub fn stats(&self) -> NodeStats {
        let d = &self.driver;
        NodeStats {
            wg: self.wg_counters.snapshot(),
            netstack: self.netstack.counters(),
            datagrams_in: d.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: d.datagrams_out.load(Ordering::Relaxed),
            send_errors: d.send_errors.load(Ordering::Relaxed),
            inbound_dropped: d.inbound_dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the data path; true if it finished within `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.cancel.cancel();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// WireGuard timer cadence (boringtun's own device uses 250 ms); the rate limiter is reset
/// every fourth tick.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Datagrams read per wake-up before the netstack is polled again (≤ its inbound queue).
const RECV_BATCH: usize = 64;
/// Encrypted datagrams held while the UDP socket would block; beyond it they are dropped
/// and counted (WireGuard tolerates loss, TCP retransmits).
const MAX_PENDING: usize = 1024;
/// Largest UDP datagram we read.
const MAX_DATAGRAM: usize = 65536;

/// The data path's side of the UDP socket and the netstack: the `wg::Output` the device writes
/// into. Datagrams go to the socket (or wait for it), decrypted packets go to the netstack.
struct Sink {
    udp: UdpSocket,
    udp_is_v6: bool,
    netstack: Netstack,
    /// Encrypted datagrams held while the socket would block.
    pending: VecDeque<(SocketAddr, Vec<u8>)>,
    counters: Arc<DriverCounters>,
    clock: Clock,
}

impl wg::Output for Sink {
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        if !self.pending.is_empty() {
            self.hold(to, datagram);
            return;
        }
        let dest = wg::udp::to_socket_family(to, self.udp_is_v6);
        match self.udp.try_send_to(datagram, dest) {
            Ok(_) => {
                self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.hold(to, datagram),
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%to, error = %e, "UDP send failed");
            }
        }
    }

    fn deliver(&mut self, ip_packet: &[u8]) {
        if self.netstack.push_inbound(ip_packet).is_ok() {
            return;
        }
        // Full: let the stack consume its queue, then offer the packet again.
        self.netstack.poll(self.clock.now());
        if self.netstack.push_inbound(ip_packet).is_err() {
            self.counters
                .inbound_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("netstack inbound queue full; packet dropped");
        }
    }
}

impl Sink {
    fn hold(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back((to, datagram.to_vec()));
        } else {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, "UDP socket blocked and pending queue full; datagram dropped");
        }
    }

    /// Sends held datagrams until the socket would block again.
    fn flush(&mut self) {
        while let Some((to, d)) = self.pending.front() {
            let dest = wg::udp::to_socket_family(*to, self.udp_is_v6);
            match self.udp.try_send_to(d, dest) {
                Ok(_) => {
                    self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%to, error = %e, "UDP send failed");
                }
            }
            self.pending.pop_front();
        }
    }

    /// Reads up to `RECV_BATCH` datagrams and feeds them to the device.
    fn receive(&mut self, device: &mut Device, rx: &mut [u8]) {
        for _ in 0..RECV_BATCH {
            match self.udp.try_recv_from(rx) {
                Ok((n, src)) => {
                    self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    device.handle_datagram(wg::udp::normalize_addr(src), &rx[..n], self);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // e.g. ICMP port unreachable reported on the socket: not fatal.
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
    }
}

/// Monotonic time for smoltcp, relative to the driver's start.
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

/// The data-path task. Call order per iteration follows `Netstack`'s documented driver loop.
async fn run(
    mut device: Device,
    netstack: Netstack,
    udp: UdpSocket,
    cancel: CancellationToken,
    counters: Arc<DriverCounters>,
) {
    let udp_is_v6 = udp.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let mut sink = Sink {
        udp,
        udp_is_v6,
        netstack: netstack.clone(),
        pending: VecDeque::new(),
        counters,
        clock: Clock(std::time::Instant::now()),
    };
    let mut rx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut next_tick = Instant::now();
    let mut ticks: u64 = 0;
    let far = Instant::now() + Duration::from_secs(86400 * 365);

    loop {
        // Timers first, every iteration, whatever else is ready: a flood of datagrams (even junk
        // from a non-peer) must not starve keepalives, rekeys and the rate-limiter reset.
        let now = Instant::now();
        if now >= next_tick {
            device.update_timers(SystemTime::now(), &mut sink);
            ticks += 1;
            if ticks.is_multiple_of(4) {
                device.reset_rate_limiter();
            }
            next_tick = (next_tick + TIMER_TICK).max(now);
        }
        let delay = netstack.poll(sink.clock.now());
        sink.flush();
        let drained = sink.pending.is_empty()
            && netstack.pop_outbound(|pkt| {
                device.send_ip_packet(pkt, &mut sink);
                // Stop taking packets from the stack while the socket is blocked: backpressure.
                sink.pending.is_empty()
            });
        // `drained` is false only when a datagram had to be held, so this is "socket blocked".
        let blocked = !sink.pending.is_empty() || !drained;
        if !blocked && delay == Some(Duration::ZERO) {
            // More input is waiting in the stack and the output has room: go again.
            tokio::task::yield_now().await;
            continue;
        }
        // While blocked on output a zero delay only means "blocked"; don't spin on it, and
        // leave datagrams in the kernel's (large) buffer rather than read more.
        let wake_at = match delay {
            Some(d) if !(blocked && d.is_zero()) => Instant::now() + d,
            _ => far,
        }
        .min(next_tick);

        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = sink.udp.writable(), if blocked => {}
            r = sink.udp.readable(), if !blocked => {
                if r.is_ok() {
                    sink.receive(&mut device, &mut rx);
                }
            }
            _ = netstack.wait_for_work() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
    tracing::debug!("data path stopped");
}

/// A cheap, cloneable handle that opens tunnel connections: the SDK's transport
/// (`client::Connect`). Every `AgentConn` of a control replica shares one node through it.
#[derive(Clone)]
pub struct NodeConnector {
    netstack: Netstack,
}

impl Node {
    pub fn connector(&self) -> NodeConnector {
        NodeConnector {
            netstack: self.netstack.clone(),
        }
    }
}

impl crate::client::Connect for NodeConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.netstack.connect(addr).await
    }
}
