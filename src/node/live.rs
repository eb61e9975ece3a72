//! Live changes to a running node: peers, private key, UDP port and mark, from any task.
//!
//! A change travels to the data-path task as a [`Command`] over a bounded channel and is
//! applied there between two packets, so the device is never locked and the routing table
//! changes atomically for the data path. The reply comes back on a oneshot channel. Order of
//! work for one update, which keeps it all-or-nothing: bind the new socket and set its mark
//! (fallible, nothing else touched yet) → `Device::apply` (fallible, all-or-nothing) → swap the
//! socket in → reset the TCP connections whose remote address changed owner (a removed peer's
//! connections end; nobody else's do) → publish keys and address for other tasks.
//!
//! Also here: [`Node::peer_for_address`] (who owns a tunnel address, for permissions and audit)
//! and the UAPI [`Handler`] implementation that `wg show`/`wg set` reach through the socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::driver::Io;
use super::{Node, NodeError};
use crate::wg::uapi::server::{Handler, Refused};
use crate::wg::uapi::{DeviceState, errno};
use crate::wg::{
    self, Applied, Device, DeviceUpdate, PeerConfig, PeerIdentity, PeerStats, PeerUpdate,
    PublicKey, StaticSecret,
};

/// Commands waiting for the data path. Updates are rare and each caller waits for its reply, so
/// a small queue is plenty; a full queue makes the next caller wait (never the data path).
pub(super) const COMMAND_QUEUE: usize = 16;

/// One update for the data path, with the channel its result goes back on.
pub(super) struct Command {
    update: DeviceUpdate,
    reply: oneshot::Sender<Result<Applied, NodeError>>,
}

/// What the data path publishes for other tasks after every change: keys, socket address, mark.
pub(crate) struct Published {
    keys: Mutex<(StaticSecret, PublicKey)>,
    udp_addr: Mutex<SocketAddr>,
    fwmark: AtomicU32,
}

impl Published {
    pub(super) fn new(private_key: StaticSecret, udp_addr: SocketAddr) -> Self {
        let public = PublicKey::from(&private_key);
        Published {
            keys: Mutex::new((private_key, public)),
            udp_addr: Mutex::new(udp_addr),
            fwmark: AtomicU32::new(0),
        }
    }

    pub(super) fn public_key(&self) -> PublicKey {
        self.keys.lock().1
    }

    fn private_key(&self) -> StaticSecret {
        self.keys.lock().0.clone()
    }

    pub(super) fn udp_addr(&self) -> SocketAddr {
        *self.udp_addr.lock()
    }

    fn fwmark(&self) -> u32 {
        self.fwmark.load(Ordering::Relaxed)
    }
}

impl Node {
    /// Applies `update` between two packets, all of it or nothing (see [`DeviceUpdate`] for
    /// the semantics, which are the WireGuard UAPI `set`'s). Updating a peer's allowed IPs,
    /// endpoint or keepalive keeps its session; removing a peer ends its session and resets
    /// its TCP connections on this node; a new private key re-establishes every session.
    pub async fn update(&self, update: DeviceUpdate) -> Result<Applied, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command { update, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Adds the peer, or makes an existing peer with its key exactly `peer` (its endpoint only
    /// if `peer` names one).
    pub async fn set_peer(&self, peer: &PeerConfig) -> Result<Applied, NodeError> {
        self.update(DeviceUpdate {
            peers: vec![PeerUpdate::from_config(peer)],
            ..DeviceUpdate::default()
        })
        .await
    }

    /// Removes the peer with this key; false if there was none.
    pub async fn remove_peer(&self, key: &PublicKey) -> Result<bool, NodeError> {
        let applied = self
            .update(DeviceUpdate {
                peers: vec![PeerUpdate::remove(*key)],
                ..DeviceUpdate::default()
            })
            .await?;
        Ok(!applied.removed.is_empty())
    }

    /// Rotates the private key; every session is re-established with the new one (peers must
    /// learn the new public key). False if it was already the key.
    pub async fn set_private_key(&self, key: StaticSecret) -> Result<bool, NodeError> {
        let applied = self
            .update(DeviceUpdate {
                private_key: Some(key),
                ..DeviceUpdate::default()
            })
            .await?;
        Ok(applied.key_changed)
    }

    /// Moves the WireGuard socket to `port` (0: keep the current one, which is "any port").
    /// Returns the new local address. On error the old socket stays.
    pub async fn set_listen_port(&self, port: u16) -> Result<SocketAddr, NodeError> {
        self.update(DeviceUpdate {
            listen_port: Some(port),
            ..DeviceUpdate::default()
        })
        .await?;
        Ok(self.udp_addr())
    }

    /// The peer that owns `addr` (longest-prefix match over every peer's allowed IPs): for a
    /// caller's tunnel address, the peer whose session carried its packets (cryptokey routing
    /// drops anything else). Cheap (a shared read lock), and live: it follows every change.
    pub fn peer_for_address(&self, addr: IpAddr) -> Option<PeerIdentity> {
        self.inner.wg_counters.owner(addr)
    }

    /// The current peer with this stable id (the id a connection's packets arrived with);
    /// `None` once it was removed.
    pub fn peer_by_id(&self, id: crate::wg::PeerId) -> Option<PeerIdentity> {
        self.inner.wg_counters.peer_by_id(id)
    }

    /// The current peers, in the order they were added.
    pub fn peers(&self) -> Vec<PeerStats> {
        self.inner.wg_counters.snapshot().peers
    }

    /// The device as the UAPI `get` reports it; `secrets` includes the private and pre-shared
    /// keys.
    pub fn uapi_state(&self, secrets: bool) -> DeviceState {
        let published = &self.inner.published;
        let mut peers = self.inner.wg_counters.uapi_peers();
        if !secrets {
            for p in &mut peers {
                p.preshared_key = None;
            }
        }
        DeviceState {
            private_key: secrets.then(|| published.private_key()),
            listen_port: published.udp_addr().port(),
            fwmark: published.fwmark(),
            peers,
        }
    }
}

/// The node behind a UAPI socket: `wg show` reads [`Node::uapi_state`], `wg set` calls
/// [`Node::update`].
impl Handler for Node {
    fn state(&self, secrets: bool) -> DeviceState {
        self.uapi_state(secrets)
    }

    async fn set(&self, update: DeviceUpdate) -> Result<(), Refused> {
        match self.update(update).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(
                        added = applied.added.len(),
                        updated = applied.updated.len(),
                        removed = applied.removed.len(),
                        key_changed = applied.key_changed,
                        "UAPI set applied"
                    );
                }
                Ok(())
            }
            Err(e) => Err(Refused {
                errno: match e {
                    // wireguard-go answers a failed bind or mark with EADDRINUSE.
                    NodeError::Bind { .. } | NodeError::Fwmark { .. } => errno::EADDRINUSE,
                    NodeError::Wg(_) => errno::EINVAL,
                    NodeError::Netstack(_) | NodeError::Stopped => errno::EIO,
                },
                message: e.to_string(),
            }),
        }
    }
}

/// What the other crypto shards must follow after a command (sharded layout; empty otherwise).
#[derive(Default)]
pub(super) struct Replay {
    /// The new socket, if the port moved.
    pub(super) socket: Option<Arc<UdpSocket>>,
    /// The peer-table change shard 0 applied.
    pub(super) replication: Option<wg::Replication>,
}

/// Runs one command on the data-path task (shard 0) and sends the result back; returns what
/// the other shards must replay (before any later work reaches them).
pub(super) fn execute(
    command: Command,
    device: &mut Device,
    io: &mut Io,
    published: &super::Published,
) -> Replay {
    let Command { update, reply } = command;
    let mut replay = Replay::default();
    let result = apply(update, device, io, published, &mut replay);
    if let Err(e) = &result {
        tracing::warn!("peer update refused, nothing changed: {e}");
    }
    // The caller may have given up waiting; the change stands either way.
    let _ = reply.send(result);
    replay
}

fn apply(
    mut update: DeviceUpdate,
    device: &mut Device,
    io: &mut Io,
    published: &Published,
    replay: &mut Replay,
) -> Result<Applied, NodeError> {
    // Socket-level changes first: they can fail, and nothing else has changed yet.
    let current = published.udp_addr();
    // 0 asks for any free port, and the current one is one: no needless rebind.
    let rebind = update
        .listen_port
        .take()
        .filter(|&p| p != 0 && p != current.port());
    let fresh = match rebind {
        Some(port) => {
            Some(wg::udp::bind_udp(port).map_err(|source| NodeError::Bind { port, source })?)
        }
        None => None,
    };
    let old_mark = published.fwmark();
    let mark = update.fwmark.take().unwrap_or(old_mark);
    let marked = fresh.as_ref().unwrap_or(&*io.udp);
    if mark != old_mark || (fresh.is_some() && mark != 0) {
        set_mark(marked, mark).map_err(|source| NodeError::Fwmark { mark, source })?;
    }

    // Who owns each connection's remote address now, to reset those whose owner changes.
    let before: HashMap<IpAddr, Option<wg::PeerId>> = io
        .netstack
        .remote_addresses()
        .into_iter()
        .map(|ip| (ip, device.route(ip)))
        .collect();
    let applied = match device.apply_replicated(update) {
        Ok((applied, replication)) => {
            replay.replication = replication;
            applied
        }
        Err(e) => {
            if fresh.is_none() && mark != old_mark {
                let _ = set_mark(&io.udp, old_mark);
            }
            return Err(e.into());
        }
    };

    if let Some(udp) = fresh {
        let addr = wg::udp::normalize_addr(udp.local_addr().unwrap_or(current));
        let udp = Arc::new(udp);
        replay.socket = Some(Arc::clone(&udp));
        swap_socket(io, udp);
        *published.udp_addr.lock() = addr;
        tracing::info!(%addr, "WireGuard socket moved to a new port");
    }
    published.fwmark.store(mark, Ordering::Relaxed);
    if applied.key_changed {
        *published.keys.lock() = (device.private_key().clone(), device.public_key());
    }
    let reset = io.netstack.abort_connections(|ip| {
        before
            .get(&ip)
            .is_some_and(|owner| *owner != device.route(ip))
    });
    if reset > 0 {
        tracing::info!(
            connections = reset,
            "reset TCP connections of removed or re-routed peers"
        );
    }
    Ok(applied)
}

/// The GSO sender for a socket (and GRO turned on for it).
pub(super) fn sender_for(udp: &UdpSocket) -> wg::gso::Sender {
    let udp_is_v6 = udp.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let gso = wg::gso::gso_supported(udp);
    let gro = wg::gso::enable_gro(udp);
    tracing::info!(gso, gro, "UDP segmentation offload");
    wg::gso::Sender::new(udp_is_v6, gso)
}

/// Puts a new socket in place of the old one. What the old run could not send is dropped
/// (WireGuard tolerates loss); datagrams held for writability go out on the new socket.
fn swap_socket(io: &mut Io, udp: Arc<UdpSocket>) {
    io.send_run();
    io.tx = sender_for(&udp);
    io.udp = udp;
}

fn set_mark(udp: &UdpSocket, mark: u32) -> std::io::Result<()> {
    socket2::SockRef::from(udp).set_mark(mark)
}
