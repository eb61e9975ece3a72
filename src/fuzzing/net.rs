//! The packet paths: WireGuard datagrams into a `wg::Device`, IP packets into a `Netstack`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use boringtun::noise::{Tunn, TunnResult};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::{Reader, frame16};
use crate::netstack::{Netstack, NetstackConfig, PeerTag};
use crate::wg::{self, Device, DeviceConfig, PeerConfig, PeerId, PublicKey, StaticSecret};

const DEVICE_KEY: [u8; 32] = [7; 32];
const PEER_KEY: [u8; 32] = [9; 32];
const AGENT: [u8; 4] = [100, 64, 0, 10];
const PEER: [u8; 4] = [100, 64, 0, 1];

/// Counts what the device produced; the outputs must be readable.
#[derive(Default)]
struct Sink {
    sent: usize,
    delivered: usize,
}

impl Sink {
    fn take(&mut self, dev: &mut Device) {
        while let Some(output) = dev.poll_output() {
            match output {
                wg::Output::Transmit { datagram, .. } => {
                    self.sent += datagram.iter().map(|&b| usize::from(b)).sum::<usize>() & 1;
                }
                wg::Output::Deliver {
                    peer: PeerId(_),
                    packet,
                } => {
                    self.delivered += packet.len() & 1;
                }
                // An unsharded device never forwards.
                wg::Output::Forward { .. } => {}
            }
        }
    }
}

fn device() -> Device {
    let peer_public = PublicKey::from(&StaticSecret::from(PEER_KEY));
    let other = PublicKey::from(&StaticSecret::from([11; 32]));
    let peer = |public_key, allowed: &str, endpoint| PeerConfig {
        name: None,
        public_key,
        preshared_key: None,
        allowed_ips: vec![allowed.parse().expect("constant prefix")],
        endpoint,
        persistent_keepalive: Some(25),
    };
    Device::new(DeviceConfig {
        private_key: StaticSecret::from(DEVICE_KEY),
        peers: vec![
            peer(peer_public, "100.64.0.1/32", None),
            peer(
                other,
                "100.64.0.0/24",
                Some(SocketAddr::from(([10, 0, 0, 2], 51820))),
            ),
        ],
        handshake_rate_limit: wg::DEFAULT_HANDSHAKE_RATE_LIMIT,
    })
    .expect("constant configuration")
}

/// Records `[op][u16 len][bytes]`: op % 4 = 0 or 1, a datagram from one of two source
/// addresses; 2, an IP packet to send; 3, a timer tick (a second later).
pub fn wg_datagram(data: &[u8]) {
    let mut dev = device();
    let mut sink = Sink::default();
    let sources = [
        SocketAddr::from(([192, 0, 2, 1], 51820)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 4000)),
    ];
    let mut wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut now = std::time::Instant::now();
    let mut r = Reader::new(data);
    let mut ops = 0;
    while !r.is_empty() && ops < 256 {
        ops += 1;
        let op = r.byte();
        let chunk = r.chunk16();
        match op % 4 {
            0 | 1 => dev.handle_datagram(sources[usize::from(op % 2)], chunk),
            2 => dev.send_ip_packet(chunk),
            _ => {
                now += Duration::from_secs(1);
                wall += Duration::from_secs(1);
                dev.update_timers(now, wall);
            }
        }
        sink.take(&mut dev);
    }
}

/// A handshake initiation from the configured peer, a packet it would send, and junk.
pub(super) fn wg_seeds() -> Vec<Vec<u8>> {
    let device_public = PublicKey::from(&StaticSecret::from(DEVICE_KEY));
    let mut tunn = Tunn::new(
        StaticSecret::from(PEER_KEY),
        device_public,
        None,
        None,
        1,
        None,
    );
    let mut buf = vec![0u8; 2048];
    let init = match tunn.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        _ => Vec::new(),
    };
    let syn = tcp_packet(PEER, AGENT, 40000, 80, TcpControl::Syn, 1000, None);
    let mut seeds = Vec::new();
    let mut one = vec![0];
    frame16(&mut one, &init);
    seeds.push(one.clone());
    one.push(2);
    frame16(&mut one, &syn);
    one.push(3);
    frame16(&mut one, &[]);
    seeds.push(one);
    let mut junk = vec![1];
    frame16(
        &mut junk,
        &[4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9],
    );
    seeds.push(junk);
    seeds
}

/// A stack listening on port 80 of 100.64.0.10, fed records `[flags][u16 len][packet]`:
/// bit 0 recomputes the IPv4 and TCP checksums (so mutated packets get past them), bits 1-2
/// pick the peer, bit 3 advances the clock by a second (else by 10 ms). The stack answers,
/// times out and forgets connections; nothing may panic and its socket count must stay within
/// its limit.
pub fn netstack_input(data: &[u8]) {
    let cfg = NetstackConfig {
        queue_packets: 16,
        tcp_buffer: 65536,
        max_sockets: 8,
        max_connections_per_peer: 4,
        backlog: 4,
        seed: 1,
        ..NetstackConfig::new(vec![IpAddr::from(AGENT)])
    };
    let stack = Netstack::new(cfg).expect("constant configuration");
    let _listener = stack
        .listen(SocketAddr::from((AGENT, 80)))
        .expect("free port");
    let mut now = smoltcp::time::Instant::from_secs(1);
    let mut r = Reader::new(data);
    let mut ops = 0;
    while !r.is_empty() && ops < 256 {
        ops += 1;
        let flags = r.byte();
        let mut packet = r.chunk16().to_vec();
        if flags & 1 != 0 {
            fix_checksums(&mut packet);
        }
        let _ = stack.push_inbound(PeerTag(u64::from(flags >> 1 & 3)), &packet);
        now += smoltcp::time::Duration::from_millis(if flags & 8 != 0 { 1000 } else { 10 });
        stack.poll(now);
        stack.pop_outbound(|_| true);
        assert!(stack.counters().sockets_open <= 8, "{:?}", stack.counters());
    }
    // Every timer: half-open and orphan expiry, retransmissions, keep-alive.
    for _ in 0..4 {
        now += smoltcp::time::Duration::from_secs(61);
        stack.poll(now);
        stack.pop_outbound(|_| true);
    }
}

/// Recomputes the IPv4 header checksum and, for TCP, the TCP checksum, where the headers parse.
fn fix_checksums(packet: &mut [u8]) {
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut packet[..]) else {
        return;
    };
    ip.fill_checksum();
    if ip.next_header() != IpProtocol::Tcp {
        return;
    }
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    if let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) {
        tcp.fill_checksum(&src, &dst);
    }
}

/// A TCP segment in an IPv4 packet, checksums filled.
fn tcp_packet(
    src: [u8; 4],
    dst: [u8; 4],
    src_port: u16,
    dst_port: u16,
    control: TcpControl,
    seq: i32,
    ack: Option<i32>,
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq),
        ack_number: ack.map(TcpSeqNumber),
        window_len: 1024,
        window_scale: None,
        max_seg_size: (control == TcpControl::Syn).then_some(1240),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: b"GET / HTTP/1.1\r\n\r\n"
            .get(..if control == TcpControl::None { 18 } else { 0 })
            .unwrap_or_default(),
    };
    let ip_repr = Ipv4Repr {
        src_addr: src.into(),
        dst_addr: dst.into(),
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; ip_repr.buffer_len() + repr.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
    ip_repr.emit(&mut ip, &caps);
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    let (s, d) = (
        IpAddress::from(IpAddr::from(src)),
        IpAddress::from(IpAddr::from(dst)),
    );
    repr.emit(&mut tcp, &s, &d, &caps);
    out
}

/// A handshake (SYN, then the ACK a client would send and a request), a duplicate SYN, an RST.
pub(super) fn netstack_seeds() -> Vec<Vec<u8>> {
    let syn = tcp_packet(PEER, AGENT, 40000, 80, TcpControl::Syn, 1000, None);
    let data = tcp_packet(PEER, AGENT, 40000, 80, TcpControl::None, 1001, Some(1));
    let rst = tcp_packet(PEER, AGENT, 40000, 80, TcpControl::Rst, 1001, None);
    let other = tcp_packet([100, 64, 0, 2], AGENT, 40001, 80, TcpControl::Syn, 5, None);
    let mut a = Vec::new();
    for (flags, p) in [(0, &syn), (0, &syn), (8, &data), (2, &other), (9, &rst)] {
        a.push(flags);
        frame16(&mut a, p);
    }
    let mut b = Vec::new();
    b.push(1);
    frame16(&mut b, &syn);
    vec![a, b]
}
