//! `Node` = WireGuard (`wg`) + TCP/IP (`netstack`) + the data-path task(s) that drive both.
//!
//! Owns: building the parts (the WireGuard UDP socket, the only host socket; the device; the
//! netstack) and starting the data path ([`driver`]: timers, GSO/GRO, moving packets
//! between the socket, the device and the netstack; one task, or a crypto task and a netstack
//! task with `threads = 2`, or peers sharded over `threads - 1` crypto tasks and a netstack
//! task), live peer changes (`live`:
//! [`Node::update`] and friends, and the UAPI
//! [`Handler`](crate::wg::uapi::server::Handler) for `wg show`/`wg set`), shutdown. Both roles
//! use it: the agent listens on its tunnel address, control replicas connect to agents'
//! tunnel addresses.
//! Leaves to the caller: what runs over the TCP streams (HTTP), configuration parsing, serving
//! the UAPI socket (`Agent` and the control daemon do).
//!
//! Peer changes reach the data-path task over a small bounded command channel and are applied
//! between two packets.

mod driver;
mod live;
mod reload;
mod resolve;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::netstack::{self, Netstack, NetstackConfig, TcpListener, TcpStream};
use crate::wg::{self, Device, DeviceConfig, PeerConfig, PublicKey, StaticSecret};

pub use self::driver::{DriverCounters, Layout};
use self::live::Command;
use self::live::Published;
pub use self::reload::{bind_uapi, uapi_path};
pub use self::resolve::resolve_later;

/// Everything a node needs to join the overlay.
pub struct NodeConfig {
    /// This node's WireGuard identity (its public key is what peers list).
    pub private_key: StaticSecret,
    /// Tunnel addresses of this node (at most one IPv4 and one IPv6).
    pub addresses: Vec<IpAddr>,
    /// UDP port of the WireGuard socket; 0 picks a free one (NAT'd agents, tests).
    pub listen_port: u16,
    /// IP MTU of the tunnel in bytes (`[interface] mtu`, 1280..=9000): the largest inner packet
    /// the netstack sends, and the size of every netstack packet buffer.
    pub mtu: usize,
    /// Receive and send buffer of every tunnel TCP socket.
    pub tcp_buffer: usize,
    /// How long `connect` waits for the TCP handshake (which includes the WireGuard handshake
    /// when there is no session yet).
    pub connect_timeout: Duration,
    /// Connections in all and per peer, the socket memory budget and the handshake rate
    /// (`Default` for the agent's defaults).
    pub limits: Limits,
    /// The peers at start (configuration order); later changes go through the node's live
    /// peer updates.
    pub peers: Vec<PeerConfig>,
    /// Data-path threads (`[interface] threads`): 1 = one task does everything; 2 = a crypto
    /// task and a netstack task ([`Layout::Pipeline`]); N >= 3 = the netstack task and peers
    /// sharded over N - 1 crypto tasks ([`Layout::Sharded`]); 0 = the default for this machine
    /// ([`crate::config::Interface::default_threads`]).
    pub threads: usize,
}

/// A node's admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The netstack's: connections in all and per peer, socket memory.
    pub netstack: netstack::Limits,
    /// See [`wg::DeviceConfig::handshake_rate_limit`].
    pub handshake_rate_limit: u64,
    /// Drop a peer's WireGuard session after this long without data (`None`: never; the
    /// agent's default). See [`wg::Device::set_idle_session_timeout`].
    pub idle_session_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            netstack: netstack::Limits::default(),
            handshake_rate_limit: wg::DEFAULT_HANDSHAKE_RATE_LIMIT,
            idle_session_timeout: None,
        }
    }
}

/// The agent's node; the control daemon raises the handshake rate default for its role.
impl From<&crate::config::Config> for NodeConfig {
    fn from(cfg: &crate::config::Config) -> Self {
        let peers = cfg.peers.iter().map(PeerConfig::from).collect();
        NodeConfig {
            private_key: cfg.interface.private_key.clone(),
            addresses: cfg.interface.addresses.clone(),
            listen_port: cfg.interface.listen_port,
            mtu: usize::from(cfg.interface.mtu),
            tcp_buffer: cfg.interface.tcp_buffer,
            connect_timeout: cfg.control.connect_timeout,
            limits: Limits {
                netstack: netstack::Limits {
                    max_connections: cfg.interface.max_connections,
                    max_connections_per_peer: cfg.interface.max_connections_per_peer,
                    memory_budget: cfg.interface.tcp_memory,
                },
                handshake_rate_limit: cfg
                    .interface
                    .handshake_rate_limit
                    .unwrap_or(crate::config::Interface::DEFAULT_HANDSHAKE_RATE_LIMIT),
                idle_session_timeout: cfg.interface.idle_session_timeout.filter(|t| !t.is_zero()),
            },
            peers,
            threads: cfg.interface.threads,
        }
    }
}

/// A `[[peer]]` of a configuration file as the node takes it (and back, for code that builds
/// configurations from node-level peers).
impl From<&crate::config::Peer> for PeerConfig {
    fn from(p: &crate::config::Peer) -> Self {
        PeerConfig {
            name: p.name.clone(),
            public_key: p.public_key,
            preshared_key: p.preshared_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive,
        }
    }
}

impl From<&PeerConfig> for crate::config::Peer {
    fn from(p: &PeerConfig) -> Self {
        crate::config::Peer {
            name: p.name.clone(),
            public_key: p.public_key,
            preshared_key: p.preshared_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive,
            access: Default::default(),
        }
    }
}

/// Errors starting or changing a node. None is fixed by retrying unchanged, except `Bind` when
/// the port is in use by a process that is about to exit.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// At start: the configuration. In an update: too many peers, a duplicate name, or no
    /// randomness; nothing was changed.
    #[error("invalid WireGuard configuration: {0}")]
    Wg(#[from] wg::WgError),
    /// At start: the netstack settings were refused (no address, MTU or TCP buffer out of
    /// range, a zero limit).
    #[error("invalid netstack configuration: {0}")]
    Netstack(#[from] netstack::NetstackError),
    /// The UDP port cannot be bound (at start, or a new `listen_port`: the old socket stays).
    #[error("cannot bind the WireGuard UDP port {port}: {source}")]
    Bind {
        /// The UDP port that was asked for.
        port: u16,
        /// What the bind returned.
        source: io::Error,
    },
    /// `SO_MARK` could not be set (it needs `CAP_NET_ADMIN`); nothing was changed.
    #[error("cannot set fwmark {mark} on the WireGuard socket: {source}")]
    Fwmark {
        /// The mark that was asked for.
        mark: u32,
        /// What `setsockopt` returned.
        source: io::Error,
    },
    /// The data path has stopped (the node was shut down).
    #[error("the node has stopped")]
    Stopped,
}

/// A running node: a cheap handle (clones share one data path). The data path stops when
/// [`Node::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    netstack: Netstack,
    wg_counters: Arc<wg::Counters>,
    driver: Arc<DriverCounters>,
    /// Keys, socket address and mark as the data path last published them.
    published: Arc<Published>,
    /// Peer changes to the data path (bounded; each carries its own reply channel).
    commands: mpsc::Sender<Command>,
    layout: Layout,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Everything a node counts, at one moment.
#[derive(Debug, Clone)]
pub struct NodeStats {
    /// The WireGuard device's counters: device-level drops and per-peer traffic.
    pub wg: wg::Stats,
    /// The TCP/IP stack's counters.
    pub netstack: netstack::Counters,
    /// UDP datagrams received on the WireGuard socket (each datagram of a GRO batch counts).
    pub datagrams_in: u64,
    /// UDP datagrams sent (each datagram of a GSO send counts).
    pub datagrams_out: u64,
    /// See [`DriverCounters::send_errors`].
    pub send_errors: u64,
    /// See [`DriverCounters::inbound_dropped`].
    pub inbound_dropped: u64,
    /// See [`DriverCounters::gso_sends`].
    pub gso_sends: u64,
    /// See [`DriverCounters::gro_receives`].
    pub gro_receives: u64,
    /// See [`DriverCounters::recv_truncated`].
    pub recv_truncated: u64,
    /// See [`DriverCounters::handoffs`].
    pub handoffs: u64,
    /// See [`DriverCounters::netstack_polls`].
    pub netstack_polls: u64,
    /// See [`DriverCounters::stack_polls`].
    pub stack_polls: u64,
    /// See [`DriverCounters::zero_delay_backoffs`].
    pub zero_delay_backoffs: u64,
    /// See [`DriverCounters::forwarded`].
    pub forwarded: u64,
    /// See [`DriverCounters::forward_dropped`].
    pub forward_dropped: u64,
    /// Per crypto shard (one unless sharded): datagrams and packets it handled for its own
    /// peers. See [`DriverCounters::shard_work`].
    pub shard_work: Vec<u64>,
}

impl Node {
    /// Binds the UDP socket and starts the data path. Must be called inside a tokio runtime.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let mut device = Device::new(DeviceConfig {
            private_key: cfg.private_key.clone(),
            peers: cfg.peers,
            handshake_rate_limit: cfg.limits.handshake_rate_limit,
        })?;
        device.set_idle_session_timeout(cfg.limits.idle_session_timeout);
        let ns_cfg = NetstackConfig {
            mtu: cfg.mtu,
            tcp_buffer: cfg.tcp_buffer,
            connect_timeout: cfg.connect_timeout,
            ..NetstackConfig::new(cfg.addresses)
        }
        .with_limits(cfg.limits.netstack);
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
        let published = Arc::new(Published::new(cfg.private_key, udp_addr));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (commands, command_rx) = mpsc::channel(live::COMMAND_QUEUE);
        let threads = match cfg.threads {
            0 => crate::config::Interface::default_threads(),
            n => n,
        };
        let layout = Layout::for_threads(threads);
        let driver = Arc::new(DriverCounters::with_shards(layout.crypto_shards()));
        let clock = driver::Clock::start();
        let udp = Arc::new(udp);
        let handoff = (layout != Layout::Single).then(|| Arc::new(driver::Handoff::default()));
        // Sharded: shards 1.. get their own task and device; shard 0 is `driver::run`'s.
        let replicas = device.into_shards(layout.crypto_shards());
        let shards = (!replicas.is_empty()).then(|| {
            let room = Arc::new(driver::Room::default());
            let (mut inboxes, mut returns) = (Vec::new(), Vec::new());
            for replica in replicas {
                let (tx, inbox) = mpsc::channel(driver::SHARD_QUEUE);
                let (spent, back) = mpsc::channel(driver::SHARD_QUEUE);
                inboxes.push(tx);
                returns.push(back);
                tracker.spawn(driver::run_shard(driver::ShardParts {
                    device: replica,
                    inbox,
                    udp: Arc::clone(&udp),
                    netstack: netstack.clone(),
                    cancel: cancel.clone(),
                    counters: driver.clone(),
                    clock,
                    handoff: Arc::clone(handoff.as_ref().expect("sharded implies pipeline")),
                    room: Arc::clone(&room),
                    spent,
                }));
            }
            driver::Shards::new(inboxes, returns, room, driver.clone())
        });
        if let Some(handoff) = &handoff {
            tracker.spawn(driver::run_netstack(
                netstack.clone(),
                Arc::clone(handoff),
                clock,
                cancel.clone(),
                driver.clone(),
            ));
        }
        tracker.spawn(driver::run(driver::Parts {
            device,
            netstack: netstack.clone(),
            udp,
            commands: command_rx,
            published: Arc::clone(&published),
            cancel: cancel.clone(),
            counters: driver.clone(),
            clock,
            handoff,
            shards,
        }));
        tracker.close();
        tracing::debug!(threads, ?layout, "data path started");
        Ok(Node {
            inner: Arc::new(Inner {
                netstack,
                wg_counters,
                driver,
                published,
                commands,
                layout,
                cancel,
                tracker,
            }),
        })
    }

    /// Listens on `port` of every tunnel address.
    pub fn listen(&self, port: u16) -> Result<Vec<TcpListener>, NodeError> {
        let netstack = &self.inner.netstack;
        let mut out = Vec::new();
        for ip in netstack.addresses() {
            out.push(netstack.listen(SocketAddr::new(*ip, port))?);
        }
        Ok(out)
    }

    /// Opens a TCP connection through the tunnel. The first packet triggers the WireGuard
    /// handshake if there is no session yet.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.inner.netstack.connect(addr).await
    }

    /// Our current public key (it changes when the private key is rotated).
    pub fn public_key(&self) -> PublicKey {
        self.inner.published.public_key()
    }

    /// The WireGuard UDP socket's local address (`[::]`/`0.0.0.0` and the bound port); it
    /// changes when `listen_port` is changed live.
    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.published.udp_addr()
    }

    /// This node's tunnel addresses (at most one IPv4 and one IPv6), as configured.
    pub fn addresses(&self) -> &[IpAddr] {
        self.inner.netstack.addresses()
    }

    /// A snapshot of every counter of the node. Each counter is read on its own (relaxed), so
    /// the snapshot is not atomic across counters; cheap enough for every metrics scrape.
    pub fn stats(&self) -> NodeStats {
        let d = &self.inner.driver;
        NodeStats {
            wg: self.inner.wg_counters.snapshot(),
            netstack: self.inner.netstack.counters(),
            datagrams_in: d.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: d.datagrams_out.load(Ordering::Relaxed),
            send_errors: d.send_errors.load(Ordering::Relaxed),
            inbound_dropped: d.inbound_dropped.load(Ordering::Relaxed),
            gso_sends: d.gso_sends.load(Ordering::Relaxed),
            gro_receives: d.gro_receives.load(Ordering::Relaxed),
            recv_truncated: d.recv_truncated.load(Ordering::Relaxed),
            handoffs: d.handoffs.load(Ordering::Relaxed),
            netstack_polls: d.netstack_polls.load(Ordering::Relaxed),
            stack_polls: d.stack_polls.load(Ordering::Relaxed),
            zero_delay_backoffs: d.zero_delay_backoffs.load(Ordering::Relaxed),
            forwarded: d.forwarded.load(Ordering::Relaxed),
            forward_dropped: d.forward_dropped.load(Ordering::Relaxed),
            shard_work: d
                .shard_work
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// The data path's heartbeat: timer ticks so far (see [`DriverCounters::timer_ticks`]);
    /// in the pipeline layout the smaller of the two tasks' tick counts, so that either task
    /// being stuck stops it. Cheap enough to read every second.
    pub fn heartbeat(&self) -> u64 {
        let d = &self.inner.driver;
        let ticks = d.timer_ticks.load(Ordering::Relaxed);
        let shards = d
            .shard_ticks
            .iter()
            .skip(1)
            .map(|t| t.load(Ordering::Relaxed));
        match self.inner.layout {
            Layout::Single => ticks,
            Layout::Pipeline | Layout::Sharded(_) => shards
                .fold(ticks, u64::min)
                .min(d.netstack_ticks.load(Ordering::Relaxed)),
        }
    }

    /// How the data path runs (from [`NodeConfig::threads`]).
    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// Stops the data path (for every clone); true if it finished within `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.inner.cancel.cancel();
        tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_ok()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A cheap, cloneable handle that opens tunnel connections: the SDK's transport
/// (`client::Connect`). Every `AgentConn` of a control replica shares one node through it.
#[derive(Clone)]
pub struct NodeConnector {
    netstack: Netstack,
}

impl Node {
    /// A connector that dials tunnel addresses through this node, for the SDK's `AgentConn`.
    pub fn connector(&self) -> NodeConnector {
        NodeConnector {
            netstack: self.inner.netstack.clone(),
        }
    }
}

impl crate::client::Connect for NodeConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.netstack.connect(addr).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn secret() -> StaticSecret {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).unwrap();
        StaticSecret::from(b)
    }

    async fn node(
        key: &StaticSecret,
        ip: &str,
        peer: &StaticSecret,
        peer_ip: &str,
        endpoint: Option<SocketAddr>,
        threads: usize,
    ) -> Node {
        Node::start(NodeConfig {
            threads,
            private_key: key.clone(),
            addresses: vec![ip.parse().unwrap()],
            listen_port: 0,
            mtu: 1280,
            tcp_buffer: 256 * 1024,
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            peers: vec![PeerConfig {
                name: None,
                public_key: PublicKey::from(peer),
                preshared_key: None,
                allowed_ips: vec![format!("{peer_ip}/32").parse().unwrap()],
                endpoint,
                persistent_keepalive: None,
            }],
        })
        .await
        .unwrap()
    }

    /// A bulk transfer between two nodes goes through GSO runs and GRO receives, arrives
    /// intact, and the counters count datagrams, not system calls: in every layout (threads = 3: sharded).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_goes_out_in_gso_runs_and_counts_datagrams() {
        for threads in [1, 2, 3] {
            bulk_in_gso_runs(threads).await;
        }
    }

    /// A stack state that keeps answering "poll again now" with nothing queued (simulated)
    /// must not spin the data path: the tasks back off (counted), timers keep ticking, and a
    /// connection still works meanwhile. Without the bound each task yields and polls again
    /// at once: hundreds of thousands of polls a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stack_asking_for_polls_without_progress_does_not_spin() {
        for threads in [1, 2, 3] {
            stuck_stack_backs_off(threads).await;
        }
    }

    async fn stuck_stack_backs_off(threads: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            let (ka, kc) = (secret(), secret());
            let agent = node(&ka, "10.9.0.2", &kc, "10.9.0.1", None, threads).await;
            let to_agent = SocketAddr::from((Ipv4Addr::LOCALHOST, agent.udp_addr().port()));
            let control = node(&kc, "10.9.0.1", &ka, "10.9.0.2", Some(to_agent), threads).await;
            let mut listener = agent.listen(7000).unwrap().remove(0);
            let echo = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
            });
            agent.inner.netstack.simulate_stuck_poll(true);
            control.inner.netstack.simulate_stuck_poll(true);
            let (before, beat) = (agent.stats(), agent.heartbeat());
            tokio::time::sleep(Duration::from_millis(800)).await;
            let after = agent.stats();
            let polls = after.stack_polls - before.stack_polls;
            assert!(polls < 1000, "{polls} polls in 0.8 s: {after:?}");
            assert!(
                after.zero_delay_backoffs > before.zero_delay_backoffs,
                "{after:?}"
            );
            assert!(agent.heartbeat() > beat, "timers still tick");
            // The stack still works while stuck: new work wakes the tasks despite back-off.
            let mut s = control
                .connect(SocketAddr::new("10.9.0.2".parse().unwrap(), 7000))
                .await
                .unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            echo.await.unwrap();
        })
        .await
        .expect("test timed out");
    }

    async fn bulk_in_gso_runs(threads: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            const BYTES: usize = 4 << 20;
            let (ka, kc) = (secret(), secret());
            let agent = node(&ka, "10.9.0.2", &kc, "10.9.0.1", None, threads).await;
            assert_eq!(agent.layout(), Layout::for_threads(threads));
            let to_agent = SocketAddr::from((Ipv4Addr::LOCALHOST, agent.udp_addr().port()));
            let control = node(&kc, "10.9.0.1", &ka, "10.9.0.2", Some(to_agent), threads).await;
            let mut listener = agent.listen(7000).unwrap().remove(0);
            let reader = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0;
                // Bounded: BYTES arrive in at least one byte per read.
                for _ in 0..=BYTES {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    assert!(buf[..n].iter().all(|&b| b == 0x5a));
                    total += n;
                }
                total
            });
            let mut s = control
                .connect(SocketAddr::new("10.9.0.2".parse().unwrap(), 7000))
                .await
                .unwrap();
            let chunk = vec![0x5au8; 64 * 1024];
            for _ in 0..BYTES / chunk.len() {
                s.write_all(&chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            assert_eq!(reader.await.unwrap(), BYTES);

            let (c, a) = (control.stats(), agent.stats());
            assert!(c.gso_sends > 0, "the sender used GSO: {c:?}");
            assert!(a.gro_receives > 0, "the receiver got GRO batches: {a:?}");
            // One datagram per TCP segment (MSS 1240), several per system call.
            assert!(c.datagrams_out as usize >= BYTES / 1240, "{c:?}");
            assert!(c.datagrams_out > 2 * c.gso_sends, "{c:?}");
            assert!(a.datagrams_in + 64 >= c.datagrams_out, "{a:?} {c:?}");
            for st in [&c, &a] {
                assert_eq!(
                    (st.send_errors, st.inbound_dropped, st.recv_truncated),
                    (0, 0, 0),
                    "{st:?}"
                );
            }
        })
        .await
        .expect("test timed out");
    }
}
