//! An in-memory network of netstacks and the reference data-path driver.
//!
//! `drive` is what `node/driver.rs` does with WireGuard and UDP in place of the in-memory
//! switch: push inbound packets, poll, pop outbound packets, then wait for input, socket work or
//! the timer.
//! Here "sending" a packet means pushing it into the stack that owns its destination address,
//! tagged with the sender's index as its peer; when that stack's inbound queue is full the
//! packet stays in the sender's outbound queue (backpressure end to end, nothing dropped) unless
//! a [`Link`] impairs the wire (seeded loss, duplication, or a targeted drop).
//!
//! The driver reads tokio's clock. Tests that depend on the stacks' timers (loss and
//! retransmission) run on a paused clock (`tests::simulated`), which advances only when every
//! task waits: their simulated seconds are then the same however slowly the machine runs.

use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::netstack::{Netstack, NetstackConfig, PeerTag};

/// Several netstacks wired together; the driver task stops when this is dropped.
pub(crate) struct Network {
    pub(crate) stacks: Vec<Netstack>,
    /// What the wire did so far (so a loss test can show its losses happened).
    pub(crate) wire: Arc<WireStats>,
    task: JoinHandle<()>,
}

/// Packets the wire carried, lost and duplicated.
#[derive(Debug, Default)]
pub(crate) struct WireStats {
    pub(crate) carried: AtomicUsize,
    pub(crate) lost: AtomicUsize,
    pub(crate) duplicated: AtomicUsize,
}

impl WireStats {
    /// (carried, lost, duplicated) now.
    pub(crate) fn snapshot(&self) -> (usize, usize, usize) {
        let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        (get(&self.carried), get(&self.lost), get(&self.duplicated))
    }
}

/// What the wire does to packets (every packet, both directions).
#[derive(Default)]
pub(crate) struct Link {
    /// Probability that a packet is lost.
    pub(crate) loss: f64,
    /// Probability that a delivered packet arrives twice.
    pub(crate) duplicate: f64,
    /// Seeds the loss and duplication draws (runs are reproducible).
    pub(crate) seed: u64,
    /// Drops the packets for which it returns true (before the random draws).
    #[allow(clippy::type_complexity)]
    pub(crate) drop_if: Option<Box<dyn FnMut(&[u8]) -> bool + Send>>,
}

impl Link {
    /// A uniform draw in [0, 1) from a xorshift generator.
    fn draw(&mut self) -> f64 {
        let mut x = self.seed | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How many copies of `packet` to deliver (0, 1 or 2).
    fn copies(&mut self, packet: &[u8]) -> usize {
        if self.drop_if.as_mut().is_some_and(|f| f(packet)) {
            return 0;
        }
        if self.loss > 0.0 && self.draw() < self.loss {
            return 0;
        }
        if self.duplicate > 0.0 && self.draw() < self.duplicate {
            return 2;
        }
        1
    }
}

impl Network {
    /// One stack per address list, all other settings from `tweak(NetstackConfig::new(..))`.
    pub(crate) fn new(
        addresses: &[&[IpAddr]],
        tweak: impl Fn(NetstackConfig) -> NetstackConfig,
    ) -> Self {
        Self::with_link(addresses, tweak, Link::default())
    }

    /// Like [`new`](Self::new), over an impaired wire.
    pub(crate) fn with_link(
        addresses: &[&[IpAddr]],
        tweak: impl Fn(NetstackConfig) -> NetstackConfig,
        link: Link,
    ) -> Self {
        let stacks: Vec<Netstack> = addresses
            .iter()
            .map(|a| Netstack::new(tweak(NetstackConfig::new(a.to_vec()))).unwrap())
            .collect();
        let wire = Arc::new(WireStats::default());
        let task = tokio::spawn(drive(stacks.clone(), link, wire.clone()));
        Self { stacks, wire, task }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Microseconds since `start` as a smoltcp instant: monotonic, starts near zero.
pub(crate) fn smol_now(start: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64)
}

/// Destination address of an IP packet (test-only parsing; the netstack validates for real).
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(packet.get(16..20)?).ok()?)),
        6 => Some(IpAddr::from(
            <[u8; 16]>::try_from(packet.get(24..40)?).ok()?,
        )),
        _ => None,
    }
}

/// The driver loop for all stacks of a network.
async fn drive(stacks: Vec<Netstack>, mut link: Link, wire: Arc<WireStats>) {
    let start = Instant::now();
    loop {
        // 1. poll every stack (the inbound side was filled by the previous round's step 2).
        let now = smol_now(start);
        let mut delay: Option<Duration> = None;
        for s in &stacks {
            if let Some(d) = s.poll(now) {
                delay = Some(delay.map_or(d, |cur| cur.min(d)));
            }
        }
        // 2. deliver outbound packets; a full receiver leaves them queued at the sender.
        let mut moved = false;
        for (i, s) in stacks.iter().enumerate() {
            let tag = PeerTag(i as u64);
            s.pop_outbound(|packet| {
                let Some(dst) = destination(packet) else {
                    return true; // unroutable: the wire loses it (real drivers count this)
                };
                let Some(target) = stacks.iter().find(|t| t.addresses().contains(&dst)) else {
                    return true;
                };
                match link.copies(packet) {
                    0 => {
                        wire.lost.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    n => {
                        let ok = target.push_inbound(tag, packet).is_ok();
                        if ok {
                            wire.carried.fetch_add(1, Ordering::Relaxed);
                        }
                        if ok && n == 2 && target.push_inbound(tag, packet).is_ok() {
                            wire.duplicated.fetch_add(1, Ordering::Relaxed);
                        }
                        moved |= ok;
                        ok
                    }
                }
            });
        }
        // 3. more to do right away?
        if moved || delay == Some(Duration::ZERO) {
            tokio::task::yield_now().await;
            continue;
        }
        // 4. wait for socket work or the next timer.
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = stacks
            .iter()
            .map(|s| Box::pin(s.wait_for_work()) as Pin<Box<dyn Future<Output = ()> + Send>>)
            .collect();
        let any_work = poll_fn(|cx| {
            for w in &mut waits {
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        match delay {
            Some(d) => {
                let _ = tokio::time::timeout(d, any_work).await;
            }
            None => any_work.await,
        }
    }
}
