//! Live changes to a [`Device`]: [`Device::apply`] and its helpers.
//!
//! Two phases make an update all-or-nothing: [`Device::plan`] checks everything that can fail
//! (peer count, names, random receiver indices) against a model of the result without touching
//! the device; the commit then cannot fail. Both phases walk the peer sections in the same
//! order with the same rules, so the model and the result agree.
//!
//! What an update keeps: a peer's session survives changes of its allowed IPs, endpoint,
//! keepalive and name (nothing in the `Tunn` depends on them). A new pre-shared key needs a new
//! `Tunn` (boringtun has no setter), so the old one is dropped and the next is created with
//! it; a new private key re-keys every live `Tunn` in place, which drops every session (peers
//! without a `Tunn` get one with the new key when they next need it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;

use super::{Device, MAX_PEERS, Peer, Session};
use crate::wg::counters::{PeerCounters, PeerInfo};
use crate::wg::index::stable_indices;
use crate::wg::{
    AllowedIpChange, Applied, DeviceUpdate, IpNetwork, PeerId, PeerUpdate, PublicKey, StaticSecret,
    WgError, key_label,
};

impl Device {
    /// Applies `update` between two packets: every change or none. Socket-level fields
    /// (`listen_port`, `fwmark`) are the driver's and ignored here.
    ///
    /// Errors (nothing changed): [`WgError::TooManyPeers`], [`WgError::DuplicateName`] (two
    /// peers would share a name), [`WgError::Random`] (no receiver index; a retry may help).
    /// A peer section naming our own public key is ignored, as `wg` does.
    pub fn apply(&mut self, update: DeviceUpdate) -> Result<Applied, WgError> {
        let indices = self.plan(&update)?;
        Ok(self.commit(update, indices))
    }

    /// The second phase of [`Device::apply`]: cannot fail. `indices` are the receiver indices
    /// of the peers the walk creates, last first (what `plan` returned; a sharded replica gets
    /// its primary's, so that every shard gives a peer the same index).
    pub(super) fn commit(&mut self, update: DeviceUpdate, mut indices: Vec<u32>) -> Applied {
        let mut applied = Tally::default();
        if let Some(key) = update.private_key {
            applied.key_changed = self.set_private_key(key, &mut applied);
        }
        if update.replace_peers {
            let all: Vec<[u8; 32]> = self.by_key.keys().copied().collect();
            for key in all {
                self.remove_peer(&key, &mut applied);
            }
        }
        for section in update.peers {
            let key = section.public_key.to_bytes();
            if section.public_key == self.public_key {
                tracing::debug!("ignored a peer section with this node's own public key");
                continue;
            }
            if section.remove {
                self.remove_peer(&key, &mut applied);
                continue;
            }
            let index = match self.by_key.get(&key) {
                Some(&index) => index,
                None if section.update_only => continue,
                None => {
                    // `plan` reserved one index per peer this walk creates.
                    let Some(index) = indices.pop() else {
                        tracing::error!("bug: update created more peers than planned; skipped");
                        continue;
                    };
                    self.create_peer(&section, index);
                    applied.added.push(section.public_key);
                    index
                }
            };
            if self.update_peer(index, &section, &mut applied)
                && !applied.added.contains(&section.public_key)
            {
                applied.updated.push(section.public_key);
            }
        }
        // A peer added (or updated) and later removed in the same update is only "removed".
        let applied = applied.finish(|k| self.by_key.contains_key(k.as_bytes()));
        if !applied.is_empty() {
            tracing::debug!(
                added = applied.added.len(),
                updated = applied.updated.len(),
                removed = applied.removed.len(),
                key_changed = applied.key_changed,
                peers = self.peers.len(),
                "peer table updated"
            );
        }
        applied
    }

    /// Checks `update` against a model of the peer table it would produce and reserves the
    /// receiver indices of the peers it would create.
    pub(super) fn plan(&self, update: &DeviceUpdate) -> Result<Vec<u32>, WgError> {
        let own = update
            .private_key
            .as_ref()
            .map_or(self.public_key, PublicKey::from);
        // Membership changes over the current table: key → present after the update.
        let mut overlay: HashMap<[u8; 32], bool> = HashMap::new();
        let base_present = |k: &[u8; 32]| !update.replace_peers && self.by_key.contains_key(k);
        if own != self.public_key && base_present(own.as_bytes()) {
            overlay.insert(own.to_bytes(), false);
        }
        let mut created: Vec<[u8; 32]> = Vec::new();
        for section in &update.peers {
            let key = section.public_key.to_bytes();
            if section.public_key == own {
                continue;
            }
            let present = overlay
                .get(&key)
                .copied()
                .unwrap_or_else(|| base_present(&key));
            if section.remove {
                overlay.insert(key, false);
            } else if !present && !section.update_only {
                overlay.insert(key, true);
                created.push(key);
            }
        }
        let base = if update.replace_peers {
            0
        } else {
            self.peers.len()
        };
        let after = overlay
            .iter()
            .fold(base as i64, |n, (key, &present)| {
                let was = base_present(key);
                n + i64::from(present) - i64::from(was)
            })
            .max(0) as usize;
        if after > MAX_PEERS {
            return Err(WgError::TooManyPeers(after));
        }
        if update.peers.iter().any(|s| matches!(s.name, Some(Some(_)))) {
            let present = |k: &[u8; 32]| overlay.get(k).copied().unwrap_or_else(|| base_present(k));
            self.check_names(update, present, own)?;
        }
        // Stable across restarts (see `wg::index`); handed out by `pop`, so reversed.
        let key = update.private_key.as_ref().unwrap_or(&self.private_key);
        let mut indices = stable_indices(key, &created, |i| self.peers.contains_key(&i))
            .map_err(WgError::Random)?;
        indices.reverse();
        Ok(indices)
    }

    /// Two peers of the resulting table must not share a name.
    fn check_names(
        &self,
        update: &DeviceUpdate,
        present: impl Fn(&[u8; 32]) -> bool,
        own: PublicKey,
    ) -> Result<(), WgError> {
        let mut names: HashMap<[u8; 32], Option<String>> = if update.replace_peers {
            HashMap::new()
        } else {
            self.peers
                .values()
                .map(|p| (p.counters.public_key().to_bytes(), p.name.clone()))
                .collect()
        };
        for section in &update.peers {
            let key = section.public_key.to_bytes();
            if section.public_key == own || section.remove {
                continue;
            }
            if let Some(name) = &section.name {
                names.insert(key, name.clone());
            }
        }
        let mut seen = HashSet::new();
        for (key, name) in &names {
            if let (true, Some(name)) = (present(key), name)
                && !seen.insert(name.as_str())
            {
                return Err(WgError::DuplicateName(name.clone()));
            }
        }
        Ok(())
    }

    /// Re-keys every session in place (dropping them) unless `key` is the current one.
    /// Returns whether the key changed.
    fn set_private_key(&mut self, key: StaticSecret, applied: &mut Tally) -> bool {
        let public = PublicKey::from(&key);
        if public == self.public_key {
            return false;
        }
        // wireguard-go does the same: a node is never its own peer.
        self.remove_peer(public.as_bytes(), applied);
        // A replica takes its primary's new limiter: one limiter (and one cookie secret) for
        // the whole sharded device.
        self.rate_limiter = self
            .limiter_next
            .take()
            .unwrap_or_else(|| Arc::new(RateLimiter::new(&public, self.handshake_rate_limit)));
        for peer in self.peers.values_mut() {
            if let Some(tunn) = peer.session.tunn() {
                tunn.set_static_private(key.clone(), public, Some(Arc::clone(&self.rate_limiter)));
            }
            // Keepalive peers handshake again at the next tick; others on their next packet.
            peer.started = false;
            peer.traffic_waiting = false;
            peer.expired = false;
        }
        tracing::info!(
            public_key = %key_label(&public),
            peers = self.peers.len(),
            "private key changed; every session is re-established with the new key"
        );
        self.private_key = key;
        self.public_key = public;
        true
    }

    /// A new peer with the section's pre-shared key (the rest is set by `update_peer`).
    fn create_peer(&mut self, section: &PeerUpdate, index: u32) {
        let preshared_key = section.preshared_key.and_then(nonzero);
        let label = key_label(&section.public_key);
        let id = PeerId(self.next_id);
        self.next_id += 1;
        // The primary registers the peer in the shared view; a replica shares its counters
        // (registered when the primary applied the same change, just before). A replica
        // replaying a change the primary already undid gets unregistered ones, dropped
        // when it replays the undo too.
        let counters = match self.shard.publishes() {
            true => {
                let counters = Arc::new(PeerCounters::new(section.public_key, PeerInfo::default()));
                let shard = self.shard.owner(index) as u64;
                counters
                    .shard
                    .store(shard, std::sync::atomic::Ordering::Relaxed);
                self.counters.add_peer(Arc::clone(&counters));
                self.counters.set_id(id, &counters);
                counters
            }
            false => self
                .counters
                .find_peer(&section.public_key)
                .unwrap_or_else(|| {
                    Arc::new(PeerCounters::new(section.public_key, PeerInfo::default()))
                }),
        };
        let peer = Peer {
            id,
            session: Session::default(),
            endpoint: None,
            name: None,
            label,
            allowed_ips: Vec::new(),
            preshared_key,
            keepalive: None,
            keepalive_due: None,
            started: false,
            traffic_waiting: false,
            expired: false,
            counters,
        };
        self.by_key.insert(section.public_key.to_bytes(), index);
        self.peers.insert(index, peer);
    }

    /// Applies one section to an existing peer; true if anything changed.
    fn update_peer(&mut self, index: u32, section: &PeerUpdate, applied: &mut Tally) -> bool {
        let mut changed = self.update_allowed_ips(index, &section.allowed_ips, applied);
        let preshared = section.preshared_key.map(nonzero);
        let Some(peer) = self.peers.get_mut(&index) else {
            return changed;
        };
        if let Some(name) = &section.name
            && peer.name != *name
        {
            peer.name.clone_from(name);
            peer.label = name
                .clone()
                .unwrap_or_else(|| key_label(&section.public_key));
            changed = true;
        }
        if let Some(psk) = preshared
            && peer.preshared_key != psk
        {
            // The old session is dropped with the old Tunn; the next packet (or the next tick,
            // for keepalive peers) handshakes with the new key in a new one.
            peer.session.reset();
            peer.preshared_key = psk;
            peer.started = false;
            peer.traffic_waiting = false;
            changed = true;
        }
        if let Some(ep) = section.endpoint
            && peer.endpoint != Some(ep)
        {
            peer.endpoint = Some(ep);
            changed = true;
        }
        if let Some(secs) = section.persistent_keepalive {
            let keepalive = (secs != 0).then_some(secs);
            if peer.keepalive != keepalive {
                // Turned on: the first keepalive goes out at the next tick (as wireguard-go).
                if peer.keepalive.is_none() {
                    peer.keepalive_due = None;
                }
                peer.keepalive = keepalive;
                changed = true;
            }
        }
        if changed && self.shard.publishes() {
            // The endpoint of a peer another shard owns is that shard's (it roams there),
            // unless this change sets it.
            let own = self.shard.owns(index) || section.endpoint.is_some();
            peer.counters.set_info(peer.info(own));
        }
        changed
    }

    /// Brings the peer's allowed IPs to the result of `changes`, touching only prefixes that
    /// change (so the shared owner view never loses an entry that stays). A prefix another peer
    /// held moves here; that peer counts as updated. True if the peer's list changed.
    fn update_allowed_ips(
        &mut self,
        index: u32,
        changes: &[AllowedIpChange],
        applied: &mut Tally,
    ) -> bool {
        if changes.is_empty() {
            return false;
        }
        let Some(peer) = self.peers.get(&index) else {
            return false;
        };
        let old: HashSet<IpNetwork> = peer.allowed_ips.iter().copied().collect();
        let mut target: Vec<IpNetwork> = peer.allowed_ips.clone();
        let mut in_target = old.clone();
        for change in changes {
            match *change {
                AllowedIpChange::ReplaceAll => {
                    target.clear();
                    in_target.clear();
                }
                AllowedIpChange::Add(net) => {
                    if in_target.insert(net) {
                        target.push(net);
                    }
                }
                AllowedIpChange::Remove(net) => {
                    if in_target.remove(&net) {
                        target.retain(|n| *n != net);
                    }
                }
            }
        }
        let counters = Arc::clone(&peer.counters);
        let mut changed = false;
        let publish = self.shard.publishes();
        for net in old.iter().filter(|n| !in_target.contains(n)) {
            if self.routes.exact(*net) == Some(&index) {
                self.routes.remove(*net);
                if publish {
                    self.counters.remove_owner(*net);
                }
            }
            changed = true;
        }
        for net in target.iter().filter(|n| !old.contains(n)) {
            if let Some(previous) = self.routes.set(*net, index)
                && previous != index
                && let Some(other) = self.peers.get_mut(&previous)
            {
                other.allowed_ips.retain(|n| n != net);
                if publish {
                    other
                        .counters
                        .set_info(other.info(self.shard.owns(previous)));
                }
                applied.updated.push(other.counters.public_key());
            }
            if publish {
                self.counters.set_owner(*net, &counters);
            }
            changed = true;
        }
        if let Some(peer) = self.peers.get_mut(&index) {
            peer.allowed_ips = target;
        }
        changed
    }

    /// Removes the peer with this key: its session ends, its prefixes route nowhere.
    fn remove_peer(&mut self, key: &[u8; 32], applied: &mut Tally) {
        let Some(index) = self.by_key.remove(key) else {
            return;
        };
        let Some(peer) = self.peers.remove(&index) else {
            return;
        };
        let publish = self.shard.publishes();
        for net in &peer.allowed_ips {
            if self.routes.exact(*net) == Some(&index) {
                self.routes.remove(*net);
                if publish {
                    self.counters.remove_owner(*net);
                }
            }
        }
        if publish {
            self.counters.remove_peer(&peer.counters);
        }

        tracing::debug!(peer = %peer.label, "peer removed");
        applied.removed.push(PublicKey::from(*key));
    }
}

impl Peer {
    /// The settings other tasks see. `own_endpoint`: this device's endpoint is current (it
    /// owns the peer, or was just told it); otherwise the published one stays.
    fn info(&self, own_endpoint: bool) -> PeerInfo {
        PeerInfo {
            name: self.name.clone(),
            endpoint: match own_endpoint {
                true => self.endpoint,
                false => self.counters.endpoint(),
            },
            allowed_ips: self.allowed_ips.clone(),
            preshared_key: self.preshared_key,
            persistent_keepalive: self.keepalive,
        }
    }
}

/// An all-zero pre-shared key means none (the `wg` convention).
fn nonzero(key: [u8; 32]) -> Option<[u8; 32]> {
    (key != [0; 32]).then_some(key)
}

/// What an update did so far; lists without duplicates, in first-seen order.
#[derive(Default)]
struct Tally {
    added: KeyList,
    updated: KeyList,
    removed: KeyList,
    key_changed: bool,
}

#[derive(Default)]
struct KeyList {
    keys: Vec<PublicKey>,
    seen: HashSet<[u8; 32]>,
}

impl KeyList {
    fn push(&mut self, key: PublicKey) {
        if self.seen.insert(key.to_bytes()) {
            self.keys.push(key);
        }
    }

    fn contains(&self, key: &PublicKey) -> bool {
        self.seen.contains(key.as_bytes())
    }
}

impl Tally {
    /// The report; `present` says whether a key is still a peer.
    fn finish(self, present: impl Fn(&PublicKey) -> bool) -> Applied {
        let mut added = self.added.keys;
        added.retain(&present);
        let mut updated = self.updated.keys;
        updated.retain(|k| present(k) && !self.added.seen.contains(k.as_bytes()));
        Applied {
            added,
            updated,
            removed: self.removed.keys,
            key_changed: self.key_changed,
        }
    }
}
