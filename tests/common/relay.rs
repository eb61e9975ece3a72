//! A UDP relay that drops and delays datagrams (this kernel has no `sch_netem`): the lossy link
//! between a WireGuard peer and the agent in the loss tests.
//!
//! One side listens where the peer sends (`front`); the other sends from an ephemeral socket to
//! the agent (`back`) and relays the agent's answers to the last peer address seen. Each
//! direction runs on its own thread: a datagram is lost with probability `loss` (seeded, so a
//! run is reproducible) or sent `delay` after it arrived (a constant delay keeps the order).
//! Both threads stop when the `Relay` is dropped.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How the link misbehaves; change it at any time with [`Relay::set`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped, in each direction.
    pub loss: f64,
    /// Added to every datagram that is not dropped, in each direction.
    pub delay: Duration,
}

/// Datagram counts of a relay (both directions).
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub relayed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Relay {
    pub front: SocketAddr,
    impairment: Arc<Mutex<Impairment>>,
    pub counters: Arc<RelayCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds `front` and an ephemeral back socket (call from inside the namespace where they
    /// must live, e.g. in `netns::in_namespace`) and relays to `agent`.
    pub fn start(front: SocketAddr, agent: SocketAddr, seed: u64) -> std::io::Result<Relay> {
        let front_sock = Arc::new(UdpSocket::bind(front)?);
        let back_sock = Arc::new(UdpSocket::bind(SocketAddr::new(agent.ip(), 0))?);
        let front = front_sock.local_addr()?;
        let impairment = Arc::new(Mutex::new(Impairment {
            loss: 0.0,
            delay: Duration::ZERO,
        }));
        let counters = Arc::new(RelayCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let mut threads = Vec::new();
        // Peer → agent.
        {
            let (from, to) = (front_sock.clone(), back_sock.clone());
            let (imp, c, st, peer) = (
                impairment.clone(),
                counters.clone(),
                stop.clone(),
                peer.clone(),
            );
            threads.push(std::thread::spawn(move || {
                pump(&from, &to, &imp, &c, &st, seed, |src| {
                    *peer.lock() = Some(src);
                    Some(agent)
                })
            }));
        }
        // Agent → peer (to wherever the peer last sent from).
        {
            let (from, to) = (back_sock, front_sock);
            let (imp, c, st) = (impairment.clone(), counters.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                pump(&from, &to, &imp, &c, &st, seed ^ 0xa5a5, |_| *peer.lock())
            }));
        }
        Ok(Relay {
            front,
            impairment,
            counters,
            stop,
            threads,
        })
    }

    pub fn set(&self, imp: Impairment) {
        *self.impairment.lock() = imp;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Moves datagrams from `from` to `to` (destination chosen by `route` from the source),
/// dropping and delaying them, until `stop`. Waits in `poll(2)` (never busy) for the next
/// datagram or the next due send; at most 50 ms so `stop` is seen.
fn pump(
    from: &UdpSocket,
    to: &UdpSocket,
    imp: &Mutex<Impairment>,
    c: &RelayCounters,
    stop: &AtomicBool,
    seed: u64,
    mut route: impl FnMut(SocketAddr) -> Option<SocketAddr>,
) {
    let mut rng = seed | 1;
    let mut queue: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    from.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, dst, d) = queue.pop_front().expect("front exists");
            let _ = to.send_to(&d, dst);
            c.relayed.fetch_add(1, Ordering::Relaxed);
        }
        let wait = queue
            .front()
            .map_or(Duration::from_millis(50), |(due, _, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().max(if wait.is_zero() { 0 } else { 1 }) as i32;
        // SAFETY: one valid pollfd on a socket we own, for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        while let Ok((n, src)) = from.recv_from(&mut buf) {
            let Some(dst) = route(src) else { continue };
            let Impairment { loss, delay } = *imp.lock();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if ((rng >> 11) as f64 / (1u64 << 53) as f64) < loss {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            queue.push_back((Instant::now() + delay, dst, buf[..n].to_vec()));
        }
    }
}
