//! Simulated agents for the fleet benchmark: each is a real boringtun `Tunn` (the same WireGuard
//! implementation the agent uses) on its own UDP socket, with a real smoltcp TCP/IP stack that
//! answers `GET /api/v0/health` with a fixed JSON body on four listening sockets of port 4.
//!
//! What is simulated (lighter than a full agent, whose netstack preallocates ~650 KB of packet
//! buffers): no process manager, no axum (a fixed HTTP answer after the request head), 4 KiB TCP
//! buffers, one `update_timers` per second (jittered) instead of every 250 ms. The WireGuard
//! behaviour is the agent's: it initiates at start towards its control replica (endpoint +
//! persistent keepalive 25 s), keeps the NAT-style keepalives going, and re-initiates whenever
//! its connection expires, exactly as `wg::Device` does for keepalive peers.
//!
//! Runs in a child process (`fleet --simulate ...`) so that the control's CPU and memory are
//! measured alone. All agents share one thread.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::net::UdpSocket;
use tokio::time::Instant;

pub const KEEPALIVE: u16 = 25;
/// Listening sockets per agent. A restarted daemon's predecessor leaves one pooled connection
/// per recently asked agent open (this agent has no idle timeout, unlike the real one): with
/// two sockets, two restarts left none listening and the third daemon's requests were refused
/// (the "failed requests" of earlier storm runs). Four leave room, as a real listener would.
const LISTENERS: usize = 4;
const MTU: usize = 1280;

/// The answer to every request: a health document as the agent's (fixed values).
fn health() -> Vec<u8> {
    let body = r#"{"status":"ok","version":"sim","uptime_seconds":1,"processes_running":0}"#;
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The secret of simulated agent `i` (derived from the run's seed: both processes compute it).
pub fn agent_secret(seed: u64, i: usize) -> StaticSecret {
    // Byte 0 and byte 31 are clamped by x25519: keep the index and the seed clear of them.
    let mut b = [0u8; 32];
    b[4..12].copy_from_slice(&(i as u64).to_le_bytes());
    b[12..20].copy_from_slice(&seed.to_le_bytes());
    b[20..30].copy_from_slice(b"wgagent-fl");
    StaticSecret::from(b)
}

/// Tunnel address of agent `i`: 100.64.0.0/10 minus the control's 100.64.0.1.
pub fn agent_ip(i: usize) -> Ipv4Addr {
    let n = 0x6440_0000u32 + 16 + i as u32;
    Ipv4Addr::from(n)
}

/// Runs `n` agents until stdin closes (the parent's signal to stop).
pub async fn run(n: usize, seed: u64, control: SocketAddr, control_pub: PublicKey) {
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let std = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        std.set_nonblocking(true).unwrap();
        let udp = UdpSocket::from_std(std).unwrap();
        udp.connect(control).await.unwrap();
        let secret = agent_secret(seed, i);
        tasks.push(tokio::spawn(agent(i, udp, secret, control_pub)));
        if i % 1000 == 999 {
            tokio::task::yield_now().await;
        }
    }
    println!("ready {n}");
    // Until the parent closes our stdin.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        use tokio::io::AsyncReadExt;
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// A smoltcp device over two packet queues.
#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = MTU;
        c
    }
}

fn now_smol(start: std::time::Instant) -> SmolInstant {
    SmolInstant::from_micros(start.elapsed().as_micros() as i64)
}

/// One agent: WireGuard on `udp` (connected to the control), TCP/IP, the health answer.
async fn agent(i: usize, udp: UdpSocket, secret: StaticSecret, control: PublicKey) {
    let index = (i as u32 + 1) & 0x00ff_ffff;
    let mut tunn = Tunn::new(secret, control, None, Some(KEEPALIVE), index, None);
    let start = std::time::Instant::now();
    let mut dev = Queues::default();
    let mut cfg = Config::new(HardwareAddress::Ip);
    cfg.random_seed = i as u64 + 1;
    let mut iface = Interface::new(cfg, &mut dev, now_smol(start));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(agent_ip(i)), 32));
    });
    let mut sockets = SocketSet::new(Vec::with_capacity(LISTENERS));
    let mut handles = Vec::new();
    for _ in 0..LISTENERS {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; 4096]),
            tcp::SocketBuffer::new(vec![0u8; 4096]),
        );
        s.set_nagle_enabled(false);
        let _ = s.listen(4);
        handles.push((sockets.add(s), Vec::<u8>::new()));
    }
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let answer = health();
    // Like the agent: handshake at once (its first timer tick), timers jittered over a second.
    if let TunnResult::WriteToNetwork(d) = tunn.format_handshake_initiation(&mut out, false) {
        let _ = udp.try_send(d);
    }
    let mut next_tick = Instant::now() + Duration::from_millis(((i * 7919) % 1000) as u64);
    let mut poll_at: Option<Instant> = None;
    loop {
        let wake = poll_at.map_or(next_tick, |p| p.min(next_tick));
        tokio::select! {
            r = udp.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                match tunn.decapsulate(None, &buf[..n], &mut out) {
                    TunnResult::WriteToNetwork(d) => {
                        let _ = udp.try_send(d);
                        while let TunnResult::WriteToNetwork(d) = tunn.decapsulate(None, &[], &mut out) {
                            let _ = udp.try_send(d);
                        }
                    }
                    TunnResult::WriteToTunnelV4(p, _) => dev.rx.push_back(p.to_vec()),
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + Duration::from_secs(1);
            match tunn.update_timers(&mut out) {
                TunnResult::WriteToNetwork(d) => {
                    let _ = udp.try_send(d);
                }
                TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => {
                    if let TunnResult::WriteToNetwork(d) =
                        tunn.format_handshake_initiation(&mut out, false)
                    {
                        let _ = udp.try_send(d);
                    }
                }
                _ => {}
            }
        }
        let t = now_smol(start);
        iface.poll(t, &mut dev, &mut sockets);
        let mut wrote = false;
        for (h, req) in &mut handles {
            let s = sockets.get_mut::<tcp::Socket>(*h);
            if s.can_recv() {
                let _ = s.recv(|d| {
                    if req.len() + d.len() <= 2048 {
                        req.extend_from_slice(d);
                    }
                    (d.len(), ())
                });
                if req.windows(4).any(|w| w == b"\r\n\r\n") {
                    req.clear();
                    if s.send_slice(&answer).is_ok() {
                        wrote = true;
                    }
                }
            }
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
            if s.state() == tcp::State::Closed {
                req.clear();
                let _ = s.listen(4);
            }
        }
        if wrote {
            iface.poll(t, &mut dev, &mut sockets);
        }
        while let Some(p) = dev.tx.pop_front() {
            if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&p, &mut out) {
                let _ = udp.try_send(d);
            }
        }
        poll_at = iface
            .poll_delay(now_smol(start), &sockets)
            .map(|d| now + Duration::from_micros(d.total_micros()));
    }
}
