//! The data-path driver: the task(s) that move packets between the UDP socket, the
//! WireGuard [`Device`] and the [`Netstack`].
//!
//! Three layouts (`[interface] threads`, [`Layout`]):
//! - **single** (`threads = 1`): one task does everything below in turn. The most CPU-efficient
//!   (no hand-off between threads), bounded by one core.
//! - **pipeline** (`threads >= 2`): the same loop runs as the *crypto task* (socket, device,
//!   timers, commands), and a second task, [`run_netstack`], takes over step 2 while traffic is
//!   bulk (an iteration that received or encrypted more than `INLINE_BATCH` packets). The two
//!   meet at the netstack's own bounded packet queues (inbound: decrypted packets; outbound:
//!   packets to encrypt) and wake each other with one [`Handoff`] signal per batch, so one
//!   peer's single stream uses two cores (crypto + syscalls on one, TCP on the other). Light
//!   traffic (requests, answers) stays on the crypto task, polled there as in the single
//!   layout: a hand-off costs a cross-thread wake-up per hop, which measured +1 ms on an
//!   `execute` round trip when every packet paid it. Packet order is unchanged: one task
//!   decrypts and encrypts, and both queues are FIFO; the stack is one lock, so either task
//!   may poll it.
//! - **sharded** (`threads >= 3`): the pipeline, with peers spread over `threads - 1` crypto
//!   tasks ([`shards`]). This task is shard 0: it still reads the socket, pops the netstack's
//!   outbound queue, runs the commands and its own peers; work for another shard's peer comes
//!   out of the device as [`wg::Output::Forward`] and goes to that shard's task in batches
//!   ([`Shards`]). Per-peer order holds: one peer's packets all pass through this task in
//!   order, then through one FIFO channel to the one task that owns its `Tunn`.
//!
//! Read [`run`] top to bottom; one iteration is:
//! 1. timers (every 250 ms, first, whatever else is ready: a datagram flood must not starve
//!    keepalives, rekeys and the rate-limiter reset);
//! 2. `netstack.poll` (TCP timers, socket buffers → IP packets);
//! 3. outbound: each IP packet the netstack emitted → [`Device::send_ip_packet`] → its outputs;
//! 4. send what is queued (GSO runs); if the stack asked for another poll at once and the
//!    output has room, go again (bounded: [`ZeroDelay`] backs off a streak that makes no
//!    progress); otherwise sleep until the socket, the netstack, a command, the next timer or
//!    cancellation wakes us; a readable socket is read in GRO batches and every datagram goes
//!    → [`Device::handle_datagram`] → its outputs.
//!
//! "Its outputs": after every device call the driver takes the device's owned
//! [`wg::Output`]s and acts on them ([`Io::dispatch`]): datagrams join the GSO run, decrypted
//! packets go to the netstack. The device never calls back into the driver.
//!
//! Owns: the socket side ([`Io`]: the socket, the GSO run, datagrams held while the socket would
//! block, [`DriverCounters`]). Leaves to `node`: building the parts and the public API; to
//! `live`: applying peer changes (called between two iterations).
//!
//! Why batches: on 2 vCPUs one data-path thread beat four by about 2× (boringtun-cli
//! `--threads 1` against its default; BENCHMARKS.md 3.1); every hop costs a wake-up, so the
//! pipeline and the shards hand over batches, never single packets. Every crypto task owns its
//! device outright (no lock; boringtun's `Tunn` needs `&mut`, hence shards of peers rather than
//! a pool of workers) and shares the netstack and the socket through short, never-awaited
//! locks. On 2 cores sharding gains nothing (the two stages already fill both; BENCHMARKS.md
//! 3.3), so the 2-core default stays the pipeline.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::netstack::{self, Netstack};
use crate::wg::{self, Device};

use super::live::{self, Command, Published};

mod shards;

pub(super) use shards::{Room, SHARD_QUEUE, ShardParts, Shards, run_shard};

/// WireGuard timer cadence (boringtun's own device uses 250 ms); the rate limiter is reset
/// every fourth tick.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Datagrams read per wake-up before the netstack is polled again. One GRO receive brings up
/// to 64, so a wake-up queues at most `RECV_BATCH - 1 + 64` = 127 packets: within the
/// netstack's inbound queue (256).
const RECV_BATCH: usize = 64;
/// Pipeline layout: a receive of more than this many datagrams, or an iteration that encrypted
/// more than this many packets, is bulk traffic, and the next poll of the stack is handed to
/// the netstack task. Below it (a request, an answer, a few ACKs) the crypto task polls the
/// stack itself, as the single task does: a hand-off costs a cross-thread wake-up on each hop
/// of a round trip, which a request/response exchange pays in full. Bulk arrives in GRO
/// batches of up to 64.
const INLINE_BATCH: usize = 8;
/// Encrypted datagrams held while the UDP socket would block; beyond it they are dropped
/// and counted (WireGuard tolerates loss, TCP retransmits).
const MAX_PENDING: usize = 1024;
/// Polls in a row that may answer "poll again now" with nothing queued either way before the
/// task backs off (see [`ZeroDelay`]).
const ZERO_REPOLLS: u32 = 8;
/// The first back-off after `ZERO_REPOLLS`; it doubles with each further such poll, up to
/// `TIMER_TICK`.
const ZERO_BACKOFF: Duration = Duration::from_millis(1);

/// Counters of the data-path task itself (the UDP socket side).
#[derive(Debug, Default)]
pub struct DriverCounters {
    /// UDP datagrams received (each datagram of a GRO batch counts).
    pub datagrams_in: AtomicU64,
    /// UDP datagrams sent (each datagram of a GSO send counts).
    pub datagrams_out: AtomicU64,
    /// Datagrams the kernel refused (not `WouldBlock`, which waits for writability instead).
    pub send_errors: AtomicU64,
    /// Decrypted packets dropped because the netstack's inbound queue stayed full.
    pub inbound_dropped: AtomicU64,
    /// `sendmsg` calls that carried several datagrams (UDP GSO); `datagrams_out` counts each.
    pub gso_sends: AtomicU64,
    /// Receives that returned several datagrams (UDP GRO); `datagrams_in` counts each.
    pub gro_receives: AtomicU64,
    /// Receives the kernel cut short (larger than our 64 KiB slot); their data was dropped.
    pub recv_truncated: AtomicU64,
    /// Timer ticks the data path ran (every 250 ms while it makes progress): the heartbeat
    /// that feeds systemd's watchdog. A data path that is stuck stops ticking.
    pub timer_ticks: AtomicU64,
    /// Pipeline layout: ticks of the netstack task (every 250 ms while it makes progress), the
    /// second half of the heartbeat. Stays 0 in the single layout.
    pub netstack_ticks: AtomicU64,
    /// Pipeline layout: times the crypto task handed a batch to the netstack task (one
    /// wake-up each). Light traffic never does; a count that grows with every request says
    /// the bulk detector fires on small exchanges.
    pub handoffs: AtomicU64,
    /// Pipeline layout: stack polls done by the netstack task (hand-offs, TCP timers, ticks).
    pub netstack_polls: AtomicU64,
    /// Stack polls by the data path, every task.
    pub stack_polls: AtomicU64,
    /// Times a task waited instead of polling the stack again at once, because polls kept
    /// answering "poll again now" with nothing queued (see [`ZeroDelay`]). Non-zero means a
    /// stack state that makes no progress; without the bound it would have spun a core.
    pub zero_delay_backoffs: AtomicU64,
    /// Sharded layout: datagrams and packets shard 0 passed to the shard owning their peer.
    pub forwarded: AtomicU64,
    /// Sharded layout: datagrams dropped because their shard was backed up (its channel full
    /// and [`shards`]' hold limit reached), or had stopped.
    pub forward_dropped: AtomicU64,
    /// Sharded layout: per shard, datagrams and packets its device handled for its own peers.
    pub shard_work: Vec<AtomicU64>,
    /// Sharded layout: per shard, timer ticks (shard 0's are `timer_ticks`, not here).
    pub shard_ticks: Vec<AtomicU64>,
}

impl DriverCounters {
    /// Counters for a data path with `shards` crypto shards (1 unless sharded).
    pub fn with_shards(shards: usize) -> Self {
        DriverCounters {
            shard_work: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            shard_ticks: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            ..DriverCounters::default()
        }
    }
}

/// How the data path is laid out over tasks (from `[interface] threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One task does everything (`threads = 1`).
    Single,
    /// A crypto task and a netstack task (`threads = 2`).
    Pipeline,
    /// The pipeline with peers sharded over this many crypto tasks (`threads - 1`, for
    /// `threads >= 3`), see [`shards`].
    Sharded(usize),
}

impl Layout {
    /// The layout for `threads` data-path threads (0 counts as 1).
    pub fn for_threads(threads: usize) -> Layout {
        match threads {
            0 | 1 => Layout::Single,
            2 => Layout::Pipeline,
            n => Layout::Sharded(n - 1),
        }
    }

    /// Crypto tasks (each owns a shard of the peers).
    pub fn crypto_shards(self) -> usize {
        match self {
            Layout::Sharded(n) => n,
            Layout::Single | Layout::Pipeline => 1,
        }
    }
}

/// What a task does after a poll of the stack answered a zero delay ("poll again now").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repoll {
    /// Poll again after a yield.
    Now,
    /// Wait this long first (still woken by new work).
    After(Duration),
}

/// Bounds polling again at once on a zero delay. A zero delay with inbound packets still
/// queued is work (the next poll consumes them), and so is one right after a timer came due;
/// but a streak of zero delays with nothing queued either way is a stack state that makes no
/// progress, and yielding and polling again on it would spin a core. After [`ZERO_REPOLLS`]
/// such polls in a row the task waits [`ZERO_BACKOFF`], doubling with each further one up to
/// [`TIMER_TICK`], and counts it; any other answer ends the streak.
#[derive(Debug, Default)]
struct ZeroDelay {
    streak: u32,
}

impl ZeroDelay {
    /// After a poll that answered a zero delay; `input` = inbound packets are still queued.
    fn after_zero(&mut self, input: bool) -> Repoll {
        if input {
            self.streak = 0;
            return Repoll::Now;
        }
        self.streak = self.streak.saturating_add(1);
        if self.streak <= ZERO_REPOLLS {
            return Repoll::Now;
        }
        let doublings = (self.streak - ZERO_REPOLLS - 1).min(16);
        Repoll::After((ZERO_BACKOFF * (1u32 << doublings)).min(TIMER_TICK))
    }

    /// After a poll that answered anything else (a delay, none, or blocked on output).
    fn reset(&mut self) {
        self.streak = 0;
    }
}

/// When a task waits until, given the stack's poll delay: a zero delay means "blocked" (or a
/// streak [`ZeroDelay`] backs off), so only the back-off, if any, ends the wait early.
fn wake_at(delay: Option<Duration>, backoff: Option<Duration>, far: Instant) -> Instant {
    match delay {
        Some(d) if d.is_zero() => backoff.map_or(far, |b| Instant::now() + b),
        Some(d) => Instant::now() + d,
        None => far,
    }
}

/// The pipeline's two wake-up signals. Each stores one permit when nobody waits, so no batch
/// is missed between two waits; each is sent once per batch, not per packet.
#[derive(Default)]
pub(super) struct Handoff {
    /// Netstack task → crypto task: outbound packets are queued.
    to_crypto: Notify,
    /// Crypto task → netstack task: inbound packets are queued, or outbound room was freed.
    to_netstack: Notify,
}

/// Everything the data-path task owns besides the device, built by `Node::start`.
pub(super) struct Parts {
    pub device: Device,
    pub netstack: Netstack,
    pub udp: Arc<UdpSocket>,
    pub commands: mpsc::Receiver<Command>,
    pub published: Arc<Published>,
    pub cancel: CancellationToken,
    pub counters: Arc<DriverCounters>,
    /// The smoltcp clock, shared with the netstack task (one time base for the stack).
    pub clock: Clock,
    /// `Some` in the pipeline layout: the netstack task polls the stack, not this one.
    pub handoff: Option<Arc<Handoff>>,
    /// `Some` in the sharded layout: the other crypto shards.
    pub shards: Option<Shards>,
}

/// The data-path task. Call order per iteration follows `Netstack`'s documented driver loop
/// (see the module docs); peer changes are applied between iterations.
pub(super) async fn run(parts: Parts) {
    let Parts {
        mut device,
        netstack,
        udp,
        mut commands,
        published,
        cancel,
        counters,
        clock,
        handoff,
        shards,
    } = parts;
    let mut io = Io {
        tx: live::sender_for(&udp),
        udp,
        netstack: netstack.clone(),
        pending: VecDeque::new(),
        counters,
        clock,
        shards,
        delivered: false,
    };
    let mut rx = wg::gso::Receiver::new();
    let mut next_tick = Instant::now();
    let mut ticks: u64 = 0;
    let mut zero = ZeroDelay::default();
    // Pipeline layout: the last iteration moved bulk traffic (see `INLINE_BATCH`).
    let mut bulk = false;
    let far = Instant::now() + Duration::from_secs(86400 * 365);

    loop {
        if let Some(shards) = &mut io.shards {
            shards.reclaim(&mut device);
        }
        // 1. Timers.
        let now = Instant::now();
        if now >= next_tick {
            device.update_timers(now.into_std(), SystemTime::now());
            io.dispatch(&mut device);
            ticks += 1;
            io.counters.timer_ticks.fetch_add(1, Ordering::Relaxed);
            if ticks.is_multiple_of(4) {
                device.reset_rate_limiter();
            }
            next_tick = (next_tick + TIMER_TICK).max(now);
        }
        // 2. The netstack; under bulk traffic in the pipeline layout, the netstack task's job.
        let delay = match &handoff {
            Some(_) if bulk => None,
            _ => {
                io.counters.stack_polls.fetch_add(1, Ordering::Relaxed);
                netstack.poll(io.clock.now())
            }
        };
        io.flush();
        // 3. Outbound: encrypt what the netstack emitted, while the socket takes it.
        let mut taken = 0usize;
        let drained = netstack.pop_outbound(|pkt| {
            // Stop taking packets from the stack while the socket is blocked: backpressure.
            // Checked before encrypting: a packet refused here stays queued, so it must not
            // have gone out (checking after sent the packet whose datagram was held twice).
            if !io.pending.is_empty() {
                return false;
            }
            // Sharded: a packet for a backed-up shard stays queued too.
            if let Some(shards) = &io.shards
                && device.packet_owner(pkt).is_some_and(|k| shards.full(k))
            {
                return false;
            }
            device.send_ip_packet(pkt);
            io.dispatch(&mut device);
            taken += 1;
            true
        });
        // End of the iteration's output: the last run goes out now.
        io.flush();
        let mut received = 0;
        if let Some(h) = &handoff
            && taken > 0
            && (bulk || taken > INLINE_BATCH)
        {
            // Bulk: the netstack task polls next (and a stack blocked on output has room).
            bulk = true;
            io.counters.handoffs.fetch_add(1, Ordering::Relaxed);
            h.to_netstack.notify_one();
        }
        if let Some(w) = io.counters.shard_work.first() {
            w.store(device.handled(), Ordering::Relaxed);
        }
        // `drained` is false when the socket blocked (so is `backlogged`) or a shard is
        // backed up (then `held`: its room signal wakes us).
        let blocked = io.backlogged() || !drained;
        let held = io.shards.as_ref().is_some_and(Shards::held);
        let mut backoff = None;
        if !blocked && delay == Some(Duration::ZERO) {
            // More input is waiting in the stack and the output has room: go again, within
            // bounds.
            match zero.after_zero(netstack.inbound_len() > 0) {
                Repoll::Now => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Repoll::After(d) => {
                    io.counters
                        .zero_delay_backoffs
                        .fetch_add(1, Ordering::Relaxed);
                    backoff = Some(d);
                }
            }
        } else {
            zero.reset();
        }
        // 4. Wait. While blocked on output a zero delay only means "blocked"; don't spin on
        // it, and leave datagrams in the kernel's (large) buffer rather than read more.
        let wake_at = wake_at(delay, backoff, far).min(next_tick);
        let mut stack_work = false;

        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            // Before the socket: a datagram flood must not hold off a configuration change.
            command = commands.recv() => match command {
                Some(command) => {
                    let replay = live::execute(command, &mut device, &mut io, &published);
                    if let Some(shards) = &mut io.shards {
                        shards.replay(replay).await;
                    }
                }
                None => break,
            },
            _ = io.udp.writable(), if io.backlogged() => {}
            r = io.udp.readable(), if !blocked => {
                if r.is_ok() {
                    received = io.receive(&mut device, &mut rx);
                    io.flush();
                }
            }
            // Only this task waits for it; under bulk it is passed on to the netstack task.
            _ = netstack.wait_for_work() => stack_work = true,
            _ = notified(&handoff) => {}
            _ = room(&io.shards), if held => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
        if let Some(h) = &handoff {
            bulk = received > INLINE_BATCH || taken > INLINE_BATCH;
            if bulk && (received > 0 || stack_work) {
                // One signal for the whole batch of decrypted packets or socket requests.
                io.counters.handoffs.fetch_add(1, Ordering::Relaxed);
                h.to_netstack.notify_one();
            }
        }
    }
    tracing::debug!("data path stopped");
}

/// Resolves when a backed-up shard made room; never without shards.
async fn room(shards: &Option<Shards>) {
    match shards {
        Some(s) => s.room().await,
        None => std::future::pending().await,
    }
}

/// The crypto task's wake-up from the netstack task; never resolves in the single layout.
async fn notified(handoff: &Option<Arc<Handoff>>) {
    match handoff {
        Some(h) => h.to_crypto.notified().await,
        None => std::future::pending().await,
    }
}

/// The pipeline's netstack task: polls smoltcp when the crypto task hands it bulk work (queued
/// inbound packets, freed outbound room, socket requests it passes on) and when the TCP timers
/// of its last poll are due, and signals the crypto task when outbound packets are queued.
pub(super) async fn run_netstack(
    netstack: Netstack,
    handoff: Arc<Handoff>,
    clock: Clock,
    cancel: CancellationToken,
    counters: Arc<DriverCounters>,
) {
    let mut next_tick = Instant::now();
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut zero = ZeroDelay::default();
    loop {
        let now = Instant::now();
        if now >= next_tick {
            counters.netstack_ticks.fetch_add(1, Ordering::Relaxed);
            next_tick = (next_tick + TIMER_TICK).max(now);
        }
        let delay = netstack.poll(clock.now());
        counters.netstack_polls.fetch_add(1, Ordering::Relaxed);
        counters.stack_polls.fetch_add(1, Ordering::Relaxed);
        let queued = netstack.outbound_len() > 0;
        if queued {
            handoff.to_crypto.notify_one();
        }
        let mut backoff = None;
        if delay == Some(Duration::ZERO) && !queued {
            // More input is waiting and the outbound queue is empty: go again, within bounds.
            match zero.after_zero(netstack.inbound_len() > 0) {
                Repoll::Now => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Repoll::After(d) => {
                    counters.zero_delay_backoffs.fetch_add(1, Ordering::Relaxed);
                    backoff = Some(d);
                }
            }
        } else {
            zero.reset();
        }
        // A zero delay with packets queued means "blocked on output": the crypto task signals
        // once it took some.
        let wake_at = wake_at(delay, backoff, far).min(next_tick);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = handoff.to_netstack.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
    tracing::debug!("netstack task stopped");
}

/// The data path's side of the UDP socket and the netstack: where the device's outputs go.
/// Datagrams join a GSO run (sent when the next one cannot join and at the end of every
/// iteration) or wait for the socket; decrypted packets go to the netstack.
pub(super) struct Io {
    pub(super) udp: Arc<UdpSocket>,
    pub(super) netstack: Netstack,
    /// The run of datagrams being built; sent with one `sendmsg` where GSO works.
    pub(super) tx: wg::gso::Sender,
    /// Encrypted datagrams held while the socket would block (after the run, in order).
    pub(super) pending: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(super) counters: Arc<DriverCounters>,
    pub(super) clock: Clock,
    /// Shard 0 of the sharded layout: where forwarded work goes.
    pub(super) shards: Option<Shards>,
    /// Packets were delivered to the netstack since the owner last cleared it (shard tasks
    /// signal the netstack task once per batch).
    pub(super) delivered: bool,
}

impl Io {
    /// Acts on everything the last device call produced, in order, and hands the buffers
    /// back to the device for its next outputs.
    fn dispatch(&mut self, device: &mut Device) {
        while let Some(output) = device.poll_output() {
            match output {
                wg::Output::Transmit { to, datagram } => {
                    if let Some(used) = self.send_datagram(to, datagram) {
                        device.recycle(used);
                    }
                }
                wg::Output::Deliver { peer, packet } => {
                    self.deliver(peer, &packet);
                    device.recycle(packet);
                }
                wg::Output::Forward { shard, item } => match &mut self.shards {
                    Some(shards) => shards.push(shard, item),
                    None => tracing::error!(shard, "bug: a shard forwarded work; dropped"),
                },
            }
        }
    }

    /// Adds the datagram to the GSO run (its bytes are copied: the buffer comes back) or holds
    /// it while the socket would block (kept: `None`).
    fn send_datagram(&mut self, to: SocketAddr, datagram: Vec<u8>) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            if self.tx.push(to, &datagram) {
                return Some(datagram);
            }
            // It cannot join the run (other endpoint or size, or the run is full): send the
            // run; an empty run takes any datagram.
            if self.send_run() && self.tx.push(to, &datagram) {
                return Some(datagram);
            }
        }
        self.hold(to, datagram);
        None
    }

    fn deliver(&mut self, peer: wg::PeerId, ip_packet: &[u8]) {
        // The netstack keys per-peer connection limits (and callers' identity) by this tag.
        let peer = netstack::PeerTag(peer.0);
        self.delivered = true;
        if self.netstack.push_inbound(peer, ip_packet).is_ok() {
            return;
        }
        // Full: let the stack consume its queue, then offer the packet again.
        self.netstack.poll(self.clock.now());
        if self.netstack.push_inbound(peer, ip_packet).is_err() {
            self.counters
                .inbound_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("netstack inbound queue full; packet dropped");
        }
    }

    fn hold(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back((to, datagram));
        } else {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, "UDP socket blocked and pending queue full; datagram dropped");
        }
    }

    /// Sends the current run; true if it is all out (or dropped), false if the socket would
    /// block (the rest of the run stays).
    pub(super) fn send_run(&mut self) -> bool {
        let done = self.tx.flush(&self.udp);
        let c = &self.counters;
        c.datagrams_out
            .fetch_add(done.datagrams as u64, Ordering::Relaxed);
        c.gso_sends
            .fetch_add(done.gso_sends as u64, Ordering::Relaxed);
        c.send_errors
            .fetch_add(done.dropped as u64, Ordering::Relaxed);
        !done.blocked
    }

    /// Sends the run, then the held datagrams (coalesced into runs too), until everything is
    /// out or the socket would block again.
    fn flush(&mut self) {
        if let Some(shards) = &mut self.shards {
            shards.flush();
        }
        // Each round empties the run and refills it from `pending`; an empty run takes any
        // datagram, so every round moves at least one and the loop ends.
        loop {
            if !self.send_run() {
                return;
            }
            let mut moved = false;
            while let Some((to, d)) = self.pending.front() {
                if !self.tx.push(*to, d) {
                    break;
                }
                self.pending.pop_front();
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// True while datagrams wait for the socket.
    fn backlogged(&self) -> bool {
        !self.pending.is_empty() || !self.tx.is_empty()
    }

    /// Reads up to `RECV_BATCH` datagrams (a GRO receive brings several) and hands each to the
    /// device, acting on its outputs after each.
    /// Returns how many datagrams it read.
    fn receive(&mut self, device: &mut Device, rx: &mut wg::gso::Receiver) -> usize {
        let mut datagrams = 0;
        // Bounded in receives too, in case they keep bringing nothing usable.
        for _ in 0..RECV_BATCH {
            if datagrams >= RECV_BATCH {
                break;
            }
            match rx.recv(&self.udp) {
                Ok(got) => {
                    datagrams += got.datagrams;
                    let c = &self.counters;
                    c.datagrams_in
                        .fetch_add(got.datagrams as u64, Ordering::Relaxed);
                    if got.datagrams > 1 {
                        c.gro_receives.fetch_add(1, Ordering::Relaxed);
                    }
                    if got.truncated {
                        c.recv_truncated.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("UDP receive larger than 64 KiB; dropped");
                    }
                    let Some(src) = rx.source() else { continue };
                    for d in rx.datagrams() {
                        device.handle_datagram(src, d);
                        self.dispatch(device);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // e.g. ICMP port unreachable reported on the socket: not fatal.
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
        datagrams
    }
}

/// Monotonic time for smoltcp, relative to the node's start (one base for every task that
/// polls the stack: smoltcp's time must never go back).
#[derive(Clone, Copy)]
pub(super) struct Clock(std::time::Instant);

impl Clock {
    pub(super) fn start() -> Clock {
        Clock(std::time::Instant::now())
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streak of zero delays with nothing queued backs off after `ZERO_REPOLLS`, doubling
    /// up to the timer tick; queued input or any other answer ends the streak.
    #[test]
    fn zero_delay_repolls_are_bounded() {
        let mut z = ZeroDelay::default();
        for _ in 0..ZERO_REPOLLS {
            assert_eq!(z.after_zero(false), Repoll::Now);
        }
        let backoffs: Vec<_> = (0..12).map(|_| z.after_zero(false)).collect();
        assert_eq!(backoffs[0], Repoll::After(ZERO_BACKOFF));
        assert_eq!(backoffs[1], Repoll::After(ZERO_BACKOFF * 2));
        assert_eq!(backoffs[2], Repoll::After(ZERO_BACKOFF * 4));
        assert_eq!(backoffs[11], Repoll::After(TIMER_TICK));
        // Queued input is progress: repoll at once, and the streak starts over.
        assert_eq!(z.after_zero(true), Repoll::Now);
        for _ in 0..ZERO_REPOLLS {
            assert_eq!(z.after_zero(false), Repoll::Now);
        }
        assert_eq!(z.after_zero(false), Repoll::After(ZERO_BACKOFF));
        z.reset();
        assert_eq!(z.after_zero(false), Repoll::Now);
        // Never stuck at a huge streak either.
        z.streak = u32::MAX - 1;
        assert_eq!(z.after_zero(false), Repoll::After(TIMER_TICK));
        assert_eq!(z.after_zero(false), Repoll::After(TIMER_TICK));
    }
}
