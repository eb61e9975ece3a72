//! The sharded layout (`threads >= 3`): peers spread over `threads - 1` crypto tasks.
//!
//! Shard 0 is the crypto task of [`super::run`] (socket, netstack outbound queue, commands);
//! each other shard runs [`run_shard`] with its own [`Device`] (see `wg::device::shard`: a
//! peer's shard is its receiver index modulo the shard count). Shard 0's device hands work for
//! another shard's peers out as [`wg::Output::Forward`]; [`Shards`] collects it per shard and
//! passes it on in batches over a bounded channel, one wake-up per batch. A shard decrypts
//! (→ the netstack's inbound queue, one hand-off signal per batch) and encrypts (→ the shared
//! UDP socket, with its own GSO run). Peer changes and a new socket travel the same channel, so
//! a shard applies a change at the point of the work stream where shard 0 did.
//!
//! Bounds and backpressure: a shard's channel holds [`SHARD_QUEUE`] batches; while it is full,
//! shard 0 holds up to [`MAX_HELD`] items per shard and sends them when the shard signals
//! room. Beyond that, datagrams from the socket are dropped and counted
//! ([`super::DriverCounters::forward_dropped`]); IP packets from the netstack are not taken (they
//! stay in its bounded queue, as when the socket blocks), so TCP slows down instead of losing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Clock, DriverCounters, Handoff, Io, TIMER_TICK};
use crate::netstack::Netstack;
use crate::wg::{self, Device};

/// Batches a shard's channel holds.
pub(in crate::node) const SHARD_QUEUE: usize = 16;
/// Items per batch: a batch is sent as soon as it has this many (and at the end of every step
/// of shard 0's loop).
const FORWARD_BATCH: usize = 64;
/// Items shard 0 holds for one shard while that shard's channel is full.
const MAX_HELD: usize = 256;

/// A shard task's inbox.
pub(in crate::node) enum ShardMsg {
    /// Forwarded datagrams and packets of its peers, in order.
    Work(Vec<wg::Forwarded>),
    /// A change shard 0 applied.
    Apply(wg::Replication),
    /// The UDP socket moved (a new listen port).
    Socket(Arc<UdpSocket>),
}

/// Shard tasks → shard 0: room was made in a channel shard 0 found full.
#[derive(Default)]
pub(in crate::node) struct Room {
    waiting: AtomicBool,
    notify: Notify,
}

impl Room {
    /// Called by a shard after it took a message: wakes shard 0 only if it waits for room.
    fn made(&self) {
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }
}

/// Shard 0's side of the other shards: their channels and the batches being built.
pub(in crate::node) struct Shards {
    /// Shard `k`'s channel at `k - 1`.
    inboxes: Vec<mpsc::Sender<ShardMsg>>,
    /// Shard `k`'s batch being built (and held while its channel is full) at `k - 1`.
    batches: Vec<Vec<wg::Forwarded>>,
    /// Shard `k`'s used buffers coming back at `k - 1` (see [`Shards::reclaim`]).
    spent: Vec<mpsc::Receiver<Vec<Vec<u8>>>>,
    room: Arc<Room>,
    counters: Arc<DriverCounters>,
}

impl Shards {
    pub(in crate::node) fn new(
        inboxes: Vec<mpsc::Sender<ShardMsg>>,
        spent: Vec<mpsc::Receiver<Vec<Vec<u8>>>>,
        room: Arc<Room>,
        counters: Arc<DriverCounters>,
    ) -> Self {
        let batches = inboxes.iter().map(|_| Vec::new()).collect();
        Shards {
            inboxes,
            batches,
            spent,
            room,
            counters,
        }
    }

    /// Hands the buffers the shards used back to shard 0's device: a forward then costs a
    /// copy, not an allocation here and a free on another thread. Bounded: the device keeps
    /// what its pool holds and frees the rest.
    pub(super) fn reclaim(&mut self, device: &mut Device) {
        for rx in &mut self.spent {
            while let Ok(buffers) = rx.try_recv() {
                for b in buffers {
                    device.recycle(b);
                }
            }
        }
    }

    /// Adds an item for `shard`; dropped and counted if that shard is backed up to
    /// [`MAX_HELD`] (only datagrams reach that: packets are checked with [`Shards::full`]).
    pub(super) fn push(&mut self, shard: usize, item: wg::Forwarded) {
        let Some(batch) = shard.checked_sub(1).and_then(|k| self.batches.get_mut(k)) else {
            tracing::error!(shard, "bug: work forwarded to a shard that does not exist");
            return;
        };
        if batch.len() >= MAX_HELD {
            self.counters
                .forward_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(shard, "shard backed up; forwarded datagram dropped");
            return;
        }
        batch.push(item);
        if batch.len() >= FORWARD_BATCH {
            self.send(shard - 1);
        }
    }

    /// True while `shard` cannot take more: packets for it stay in the netstack.
    pub(super) fn full(&self, shard: usize) -> bool {
        shard
            .checked_sub(1)
            .and_then(|k| self.batches.get(k))
            .is_some_and(|b| b.len() >= MAX_HELD)
    }

    /// Sends every batch being built (those whose channel is full stay held).
    pub(super) fn flush(&mut self) {
        for k in 0..self.batches.len() {
            self.send(k);
        }
    }

    /// True while items are held for a full channel (shard 0 then waits for [`Room`]).
    pub(super) fn held(&self) -> bool {
        self.batches.iter().any(|b| !b.is_empty())
    }

    /// Resolves when a shard took a message after shard 0 found its channel full.
    pub(super) async fn room(&self) {
        self.room.notify.notified().await;
    }

    fn send(&mut self, k: usize) {
        if self.batches[k].is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batches[k]);
        let n = batch.len() as u64;
        let mut sent = self.inboxes[k].try_send(ShardMsg::Work(batch));
        if let Err(mpsc::error::TrySendError::Full(msg)) = sent {
            // Ask for a room signal, then try once more: the shard may have emptied its
            // channel between the first try and the flag (its signals then saw nobody
            // waiting), and would never signal again.
            self.room.waiting.store(true, Ordering::SeqCst);
            sent = self.inboxes[k].try_send(msg);
        }
        match sent {
            Ok(()) => {
                self.counters.forwarded.fetch_add(n, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(ShardMsg::Work(batch))) => {
                // Held; the shard signals room after its next message.
                self.batches[k] = batch;
            }
            Err(_) => {
                // The shard task ended (shutdown).
                self.counters
                    .forward_dropped
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Makes every shard follow a change shard 0 applied: the work forwarded before it (also
    /// what is held for a full channel: the change must reach the shard at the point of the
    /// work stream where shard 0 applied it), then the new socket, then the peer table. Waits
    /// for room (neither the work nor a change is dropped; shards take messages promptly).
    pub(super) async fn replay(&mut self, replay: super::super::live::Replay) {
        self.flush();
        for (inbox, batch) in self.inboxes.iter().zip(&mut self.batches) {
            let held = std::mem::take(batch);
            if !held.is_empty() {
                let n = held.len() as u64;
                let counter = match inbox.send(ShardMsg::Work(held)).await {
                    Ok(()) => &self.counters.forwarded,
                    // The shard task ended (shutdown).
                    Err(_) => &self.counters.forward_dropped,
                };
                counter.fetch_add(n, Ordering::Relaxed);
            }
            if let Some(udp) = &replay.socket {
                let _ = inbox.send(ShardMsg::Socket(Arc::clone(udp))).await;
            }
            if let Some(r) = &replay.replication {
                let _ = inbox.send(ShardMsg::Apply(r.clone())).await;
            }
        }
    }
}

/// Everything a shard task (1..) owns.
pub(in crate::node) struct ShardParts {
    pub device: Device,
    pub inbox: mpsc::Receiver<ShardMsg>,
    pub udp: Arc<UdpSocket>,
    pub netstack: Netstack,
    pub cancel: CancellationToken,
    pub counters: Arc<DriverCounters>,
    pub clock: Clock,
    pub handoff: Arc<Handoff>,
    pub room: Arc<Room>,
    /// Used buffers back to shard 0 (bounded; full: freed here instead).
    pub spent: mpsc::Sender<Vec<Vec<u8>>>,
}

/// A crypto shard other than 0: timers of its peers every 250 ms (first, whatever else is
/// ready), then forwarded work in batches. Decrypted packets go to the netstack (one hand-off
/// signal per batch), encrypted datagrams out on the shared socket.
pub(in crate::node) async fn run_shard(parts: ShardParts) {
    let ShardParts {
        mut device,
        mut inbox,
        udp,
        netstack,
        cancel,
        counters,
        clock,
        handoff,
        room,
        spent,
    } = parts;
    let shard = device.shard().index;
    let mut io = Io {
        tx: super::super::live::sender_for(&udp),
        udp,
        netstack,
        pending: VecDeque::new(),
        counters: Arc::clone(&counters),
        clock,
        shards: None,
        delivered: false,
    };
    let mut next_tick = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_tick {
            device.update_timers(now.into_std(), SystemTime::now());
            io.dispatch(&mut device);
            if let Some(t) = counters.shard_ticks.get(shard) {
                t.fetch_add(1, Ordering::Relaxed);
            }
            next_tick = (next_tick + TIMER_TICK).max(now);
        }
        io.flush();
        if io.delivered {
            // One signal for the whole batch of decrypted packets.
            io.delivered = false;
            counters.handoffs.fetch_add(1, Ordering::Relaxed);
            handoff.to_netstack.notify_one();
        }
        // While the socket would block, leave work in the channel: shard 0 holds, then the
        // netstack keeps its packets (backpressure).
        let blocked = io.backlogged();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = io.udp.writable(), if blocked => {}
            msg = inbox.recv(), if !blocked => {
                room.made();
                match msg {
                    None => break,
                    Some(ShardMsg::Work(batch)) => {
                        let mut used = Vec::with_capacity(batch.len());
                        for item in batch {
                            used.push(device.handle_forwarded(item));
                            io.dispatch(&mut device);
                        }
                        let _ = spent.try_send(used);
                        if let Some(w) = counters.shard_work.get(shard) {
                            w.store(device.handled(), Ordering::Relaxed);
                        }
                    }
                    Some(ShardMsg::Apply(replay)) => device.apply_replication(replay),
                    Some(ShardMsg::Socket(udp)) => {
                        io.send_run();
                        io.tx = super::super::live::sender_for(&udp);
                        io.udp = udp;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_tick) => {}
        }
    }
    tracing::debug!(shard, "crypto shard stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::node::live::Replay;

    /// What a shard's inbox held, in order, as short words.
    async fn drain(rx: &mut mpsc::Receiver<ShardMsg>, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                Ok(Some(ShardMsg::Work(b))) => got.push(format!("work {}", b.len())),
                Ok(Some(ShardMsg::Socket(_))) => got.push("socket".to_string()),
                Ok(Some(ShardMsg::Apply(_))) => got.push("apply".to_string()),
                Ok(None) | Err(_) => break,
            }
        }
        got
    }

    /// A change replayed while shard 0 holds work for a full channel reaches the shard after
    /// that work: the shard must apply it at the point of the work stream where shard 0 did
    /// (work forwarded before the change was classified against the old table).
    #[tokio::test]
    async fn a_replay_follows_the_work_held_for_a_full_shard() {
        let (tx, mut rx) = mpsc::channel(1);
        let (_spent, back) = mpsc::channel(1);
        let counters = Arc::new(DriverCounters::with_shards(2));
        let room = Arc::new(Room::default());
        let mut shards = Shards::new(vec![tx.clone()], vec![back], room, Arc::clone(&counters));
        // The shard's channel is full: the next batch is held.
        tx.try_send(ShardMsg::Work(Vec::new())).unwrap();
        shards.push(1, wg::Forwarded::test_packet(7, vec![0x45; 20]));
        shards.flush();
        assert!(shards.held());
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let replay = Replay {
            socket: Some(udp),
            replication: None,
        };
        let ((), got) = tokio::join!(shards.replay(replay), drain(&mut rx, 3));
        assert_eq!(got, ["work 0", "work 1", "socket"]);
        assert!(!shards.held());
        assert_eq!(counters.forwarded.load(Ordering::Relaxed), 1);
    }
}
