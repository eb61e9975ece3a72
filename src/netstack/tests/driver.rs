//! An in-memory network of netstacks and the reference data-path driver.
//!
//! `drive` is what `node.rs` does with WireGuard and UDP in place of the in-memory switch: push
//! inbound packets, poll, pop outbound packets, then wait for input, socket work or the timer.
//! Here "sending" a packet means pushing it into the stack that owns its destination address;
//! when that stack's inbound queue is full the packet stays in the sender's outbound queue
//! (backpressure end to end, nothing dropped).

use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::netstack::{Netstack, NetstackConfig};

/// Several netstacks wired together; the driver task stops when this is dropped.
pub(crate) struct Network {
    pub(crate) stacks: Vec<Netstack>,
    task: JoinHandle<()>,
}

impl Network {
    /// One stack per address list, all other settings from `tweak(NetstackConfig::new(..))`.
    pub(crate) fn new(
        addresses: &[&[IpAddr]],
        tweak: impl Fn(NetstackConfig) -> NetstackConfig,
    ) -> Self {
        let stacks: Vec<Netstack> = addresses
            .iter()
            .map(|a| Netstack::new(tweak(NetstackConfig::new(a.to_vec()))).unwrap())
            .collect();
        let task = tokio::spawn(drive(stacks.clone()));
        Self { stacks, task }
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
async fn drive(stacks: Vec<Netstack>) {
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
        for s in &stacks {
            s.pop_outbound(|packet| {
                let Some(dst) = destination(packet) else {
                    return true; // unroutable: the wire loses it (real drivers count this)
                };
                match stacks.iter().find(|t| t.addresses().contains(&dst)) {
                    Some(target) => {
                        let ok = target.push_inbound(packet).is_ok();
                        moved |= ok;
                        ok
                    }
                    None => true,
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
