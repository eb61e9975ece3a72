//! Peers sharded over several devices, one per data-path task ([`Device::into_shards`]).
//!
//! boringtun's `Tunn` needs `&mut`, so one peer's stream stays on one task; different peers can
//! run on different cores. Every shard holds the whole peer directory (keys, allowed IPs: the
//! routing table and the inbound cryptokey-routing check are the same everywhere) but creates
//! sessions, runs timers and counts traffic only for the peers it owns. The owner is a pure
//! function of the peer's receiver index, which every datagram but an initiation carries:
//! `index % shards`. The indices are keyed hashes (see `wg::index`), so uniformly spread and
//! stable across restarts.
//!
//! Shard 0, the *primary*, reads the socket and the netstack: a datagram or IP packet for a
//! peer another shard owns comes out as [`super::Output::Forward`], classified already (an
//! initiation's static key was found with one Diffie-Hellman after the rate limiter, so the
//! owner does not repeat that). The primary alone writes the shared peer view (`Counters`:
//! peer list, ids, prefix owners, settings); the replicas share its counters, rate limiter and
//! receiver indices. A change is applied by the primary ([`Device::apply_replicated`]) and
//! replayed on every replica with [`Device::apply_replication`]: the same walk with the
//! primary's indices, so every shard ends with the same table.

use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;

use super::{Device, Kind, Outputs, Peer};
use crate::wg::session::Session;
use crate::wg::{Applied, DeviceUpdate, WgError};

/// Which part of the peer table a device runs: peers whose receiver index is `index` modulo
/// `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This device's shard, `0..count`; 0 is the primary.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl Shard {
    /// An unsharded device: it owns every peer.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The shard that owns the peer with this receiver index.
    pub fn owner(self, receiver_index: u32) -> usize {
        receiver_index as usize % self.count.max(1)
    }

    /// Whether this shard owns the peer with this receiver index.
    pub fn owns(self, receiver_index: u32) -> bool {
        self.count <= 1 || self.owner(receiver_index) == self.index
    }

    /// The primary (or only) device writes the shared peer view.
    pub(super) fn publishes(self) -> bool {
        self.index == 0
    }
}

/// Work for the shard that owns its peer (see [`super::Output::Forward`]).
pub struct Forwarded(Item);

enum Item {
    /// A datagram from `src`, checked and classified by the primary.
    Datagram {
        src: SocketAddr,
        kind: Kind,
        index: u32,
        bytes: Vec<u8>,
    },
    /// An IP packet from the netstack, routed to the peer at `index`.
    Packet { index: u32, bytes: Vec<u8> },
}

impl Forwarded {
    pub(super) fn datagram(src: SocketAddr, kind: Kind, index: u32, bytes: Vec<u8>) -> Self {
        Forwarded(Item::Datagram {
            src,
            kind,
            index,
            bytes,
        })
    }

    pub(super) fn packet(index: u32, bytes: Vec<u8>) -> Self {
        Forwarded(Item::Packet { index, bytes })
    }

    /// Tests of the driver: an IP packet for the peer at `index`, as shard 0 forwards it.
    #[cfg(test)]
    pub(crate) fn test_packet(index: u32, bytes: Vec<u8>) -> Self {
        Forwarded::packet(index, bytes)
    }

    /// Bytes carried (for logs).
    pub fn len(&self) -> usize {
        match &self.0 {
            Item::Datagram { bytes, .. } | Item::Packet { bytes, .. } => bytes.len(),
        }
    }

    /// Never true for a real one; for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver index of the peer it is for.
    pub fn receiver_index(&self) -> u32 {
        match &self.0 {
            Item::Datagram { index, .. } | Item::Packet { index, .. } => *index,
        }
    }
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarded")
            .field("index", &self.receiver_index())
            .field("len", &self.len())
            .finish()
    }
}

/// A change the primary applied, for its replicas to replay ([`Device::apply_replication`]).
#[derive(Clone)]
pub struct Replication {
    update: DeviceUpdate,
    /// The receiver indices the primary gave the peers it created (last first).
    indices: Vec<u32>,
    /// The primary's rate limiter after the change (new if the private key changed).
    limiter: Arc<RateLimiter>,
}

impl Device {
    /// Splits a freshly built device (no sessions yet) into `count` shards: this one becomes
    /// shard 0 (the primary) and the rest are returned in order, shards 1..count. They share
    /// the counters, the rate limiter and the peer ids. `count <= 1` returns nothing.
    pub fn into_shards(&mut self, count: usize) -> Vec<Device> {
        if count <= 1 {
            return Vec::new();
        }
        self.shard = Shard { index: 0, count };
        for (&index, peer) in &self.peers {
            let owner = self.shard.owner(index) as u64;
            peer.counters
                .shard
                .store(owner, std::sync::atomic::Ordering::Relaxed);
        }
        (1..count).map(|index| self.replica(index, count)).collect()
    }

    fn replica(&self, index: usize, count: usize) -> Device {
        let mut peers = std::collections::HashMap::with_capacity(self.peers.len());
        let mut routes = crate::wg::routing::RouteTable::default();
        for (&idx, p) in &self.peers {
            for net in &p.allowed_ips {
                routes.set(*net, idx);
            }
            peers.insert(
                idx,
                Peer {
                    id: p.id,
                    session: Session::default(),
                    endpoint: p.endpoint,
                    name: p.name.clone(),
                    label: p.label.clone(),
                    allowed_ips: p.allowed_ips.clone(),
                    preshared_key: p.preshared_key,
                    keepalive: p.keepalive,
                    keepalive_due: None,
                    started: false,
                    traffic_waiting: false,
                    expired: false,
                    counters: Arc::clone(&p.counters),
                },
            );
        }
        Device {
            private_key: self.private_key.clone(),
            public_key: self.public_key,
            peers,
            by_key: self.by_key.clone(),
            routes,
            rate_limiter: Arc::clone(&self.rate_limiter),
            handshake_rate_limit: self.handshake_rate_limit,
            counters: Arc::clone(&self.counters),
            scratch: vec![0u8; self.scratch.len()].into_boxed_slice(),
            next_id: self.next_id,
            idle_session_timeout: self.idle_session_timeout,
            outputs: Outputs::default(),
            shard: Shard { index, count },
            limiter_next: None,
            sessions_published: 0,
            handled: 0,
        }
    }

    /// This device's shard ([`Shard::ALL`] unless split with [`Device::into_shards`]).
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The shard that owns the peer an outgoing IP packet would be sent to (`None`: no
    /// route, or not an IP packet). Lets the driver hold back packets for a busy shard.
    pub fn packet_owner(&self, packet: &[u8]) -> Option<usize> {
        let dst = boringtun::noise::Tunn::dst_address(packet)?;
        self.routes.lookup(dst).map(|&i| self.shard.owner(i))
    }

    /// Datagrams and IP packets this device handled for peers it owns (after routing and
    /// classification): how much work a shard did.
    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// Handles work another shard forwarded ([`super::Output::Forward`]) as if it had come
    /// in here; its outputs are this device's. Returns the item's buffer: hand it back to the
    /// forwarding device ([`Device::recycle`]) so that its next forward reuses it instead of
    /// allocating (the buffer was allocated there; freeing it here costs a cross-thread free).
    pub fn handle_forwarded(&mut self, item: Forwarded) -> Vec<u8> {
        match item.0 {
            Item::Datagram {
                src,
                kind,
                index,
                bytes,
            } => {
                self.process_datagram(src, kind, index, &bytes);
                bytes
            }
            Item::Packet { index, bytes } => {
                self.encapsulate_for(index, &bytes);
                bytes
            }
        }
    }

    /// [`Device::apply`] on the primary of a sharded device; also returns what the replicas
    /// must replay (`None` when unsharded).
    pub fn apply_replicated(
        &mut self,
        update: DeviceUpdate,
    ) -> Result<(Applied, Option<Replication>), WgError> {
        if self.shard.count <= 1 {
            return self.apply(update).map(|a| (a, None));
        }
        let indices = self.plan(&update)?;
        let replay = Replication {
            update: update.clone(),
            indices: indices.clone(),
            limiter: Arc::clone(&self.rate_limiter),
        };
        let applied = self.commit(update, indices);
        // A new private key made a new limiter: the replicas take that one.
        let replay = Replication {
            limiter: Arc::clone(&self.rate_limiter),
            ..replay
        };
        Ok((applied, Some(replay)))
    }

    /// Replays on a replica a change its primary applied. Cannot fail: the primary checked
    /// it against the same table.
    pub fn apply_replication(&mut self, replay: Replication) {
        let Replication {
            update,
            indices,
            limiter,
        } = replay;
        self.limiter_next = Some(Arc::clone(&limiter));
        self.commit(update, indices);
        self.limiter_next = None;
        self.rate_limiter = limiter;
    }
}
