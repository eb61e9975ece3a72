//! The virtual IP device between smoltcp and the data-path driver: two bounded packet queues
//! (inbound and outbound) of reusable MTU-sized buffers, and the `phy::Device` view of them that
//! `Interface::poll` uses.
//!
//! Backpressure instead of drops: `transmit` (and `receive`, which must hand out a transmit token
//! for immediate replies) return `None` while the outbound queue is full, so smoltcp keeps the
//! segment in its socket buffer and retries on the next poll. Nothing is dropped here; the only
//! drops happen in [`classify_inbound`], before a packet is queued, and they are counted by the
//! caller.

use std::collections::VecDeque;
use std::net::IpAddr;

use parking_lot::Mutex;
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

use super::config::PeerTag;
use super::counters::AtomicCounters;

/// A bounded FIFO of IP packets whose buffers are recycled: in steady state no packet allocates.
/// Inbound packets carry the tag of the peer they came from.
#[derive(Debug)]
pub(crate) struct PacketQueue {
    /// Filled packets, oldest first.
    ready: VecDeque<(Vec<u8>, Option<PeerTag>)>,
    /// Empty buffers to reuse (each keeps its capacity).
    free: Vec<Vec<u8>>,
    capacity: usize,
    /// Packets ever queued (wrapping): marks where a poll's output starts.
    pushed: u64,
    /// [`group_by_destination`](Self::group_by_destination)'s working space, kept so that
    /// regrouping never allocates in steady state.
    regroup: Vec<(Vec<u8>, Option<PeerTag>)>,
    groups: Vec<u8>,
}

/// Most distinct destinations [`PacketQueue::group_by_destination`] regroups; a batch with
/// more keeps its order (the search per packet is linear in the destinations seen).
const MAX_GROUPS: usize = 32;

impl PacketQueue {
    /// A queue of at most `capacity` packets with `capacity` buffers of `buf_size` bytes
    /// preallocated.
    pub(crate) fn new(capacity: usize, buf_size: usize) -> Self {
        Self {
            ready: VecDeque::with_capacity(capacity),
            free: (0..capacity)
                .map(|_| Vec::with_capacity(buf_size))
                .collect(),
            capacity,
            pushed: 0,
            regroup: Vec::with_capacity(capacity),
            groups: Vec::with_capacity(capacity),
        }
    }

    /// Packets ever queued (wrapping); pass it to
    /// [`group_by_destination`](Self::group_by_destination) later.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Regroups the packets queued since [`pushed`](Self::pushed) returned `since` that are
    /// still queued, by destination address: smaller groups first (a request's answer does
    /// not wait behind a bulk transfer's 200 segments), equal ones in the order their
    /// destination first appeared, and each packet after the earlier ones to its destination
    /// (so every flow keeps its order). Why: smoltcp emits one segment per socket in turn, so
    /// a node sending to several peers at once queues A B C A B C...; grouped, the driver can
    /// send each peer's datagrams as one GSO run instead of one system call per datagram.
    /// Packets taken from the front meanwhile are not touched: they were older.
    pub(crate) fn group_by_destination(&mut self, since: u64) {
        let recent = usize::try_from(self.pushed.wrapping_sub(since))
            .unwrap_or(usize::MAX)
            .min(self.ready.len());
        if recent < 3 {
            return;
        }
        let start = self.ready.len() - recent;
        let mut dests = [0u128; MAX_GROUPS];
        let mut counts = [0usize; MAX_GROUPS];
        let mut n = 0;
        self.groups.clear();
        for (packet, _) in self.ready.range(start..) {
            let d = destination(packet);
            let g = match dests[..n].iter().position(|&x| x == d) {
                Some(g) => g,
                None if n < MAX_GROUPS => {
                    dests[n] = d;
                    n += 1;
                    n - 1
                }
                None => return,
            };
            counts[g] += 1;
            self.groups.push(g as u8);
        }
        let mut order: [u8; MAX_GROUPS] = std::array::from_fn(|g| g as u8);
        let order = &mut order[..n];
        order.sort_unstable_by_key(|&g| (counts[usize::from(g)], g));
        // One destination (a single flow, the common case), or already in that order.
        let in_order = order.iter().enumerate().all(|(i, &g)| usize::from(g) == i);
        if in_order && self.groups.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        self.regroup.clear();
        self.regroup.extend(self.ready.drain(start..));
        for &g in order.iter() {
            for (i, _) in self.groups.iter().enumerate().filter(|&(_, &x)| x == g) {
                let packet = std::mem::take(&mut self.regroup[i]);
                self.ready.push_back(packet);
            }
        }
        self.regroup.clear();
    }

    pub(crate) fn is_full(&self) -> bool {
        self.ready.len() >= self.capacity
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.ready.len()
    }

    /// Copies `packet` into a pooled buffer at the back. `false` (nothing queued) when full.
    pub(crate) fn push_copy(&mut self, packet: &[u8], peer: Option<PeerTag>) -> bool {
        if self.is_full() {
            return false;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.ready.push_back((buf, peer));
        true
    }

    /// The oldest packet and its peer, without taking it.
    pub(crate) fn front(&self) -> Option<(&[u8], Option<PeerTag>)> {
        self.ready.front().map(|(b, p)| (&b[..], *p))
    }

    /// Appends a `len`-byte packet filled by `fill`. Callers check [`is_full`](Self::is_full)
    /// first; if they did not, the queue grows by one rather than losing the packet.
    pub(crate) fn push_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = fill(&mut buf);
        self.ready.push_back((buf, None));
        self.pushed = self.pushed.wrapping_add(1);
        r
    }

    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front().map(|(b, _)| b)
    }

    /// Puts a packet the consumer could not take back at the front (order kept; used on the
    /// outbound side, whose packets carry no peer).
    pub(crate) fn unpop(&mut self, buf: Vec<u8>) {
        self.ready.push_front((buf, None));
    }

    /// Returns a consumed buffer to the pool (kept only up to `capacity` spares).
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < self.capacity {
            self.free.push(buf);
        }
    }
}

/// Why an inbound packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Well-formed, but the destination is not one of our addresses.
    NotOurs(IpAddr),
    /// Could not be parsed, bad checksum, or a feature we do not handle (IPv4 fragments).
    Malformed(&'static str),
}

/// Checks an inbound IP packet before it is queued: version, lengths, IPv4 header checksum, no
/// IPv4 fragments, destination is ours, and (when TCP follows the fixed header) the TCP checksum.
///
/// smoltcp would drop all of these silently; checking here lets the caller count them. Because
/// the checksums are verified here, the device tells smoltcp not to verify them again.
pub(crate) fn classify_inbound(packet: &[u8], ours: &[IpAddr]) -> Result<(), Reject> {
    let version = packet.first().map(|b| b >> 4);
    let (src, dst, proto, payload) = match version {
        Some(4) => {
            let ip =
                Ipv4Packet::new_checked(packet).map_err(|_| Reject::Malformed("ipv4 header"))?;
            if !ip.verify_checksum() {
                return Err(Reject::Malformed("ipv4 header checksum"));
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(Reject::Malformed("ipv4 fragment"));
            }
            let (src, dst) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            (src, dst, ip.next_header(), ip.payload())
        }
        Some(6) => {
            let ip =
                Ipv6Packet::new_checked(packet).map_err(|_| Reject::Malformed("ipv6 header"))?;
            let (src, dst) = (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            );
            (src, dst, ip.next_header(), ip.payload())
        }
        _ => return Err(Reject::Malformed("ip version")),
    };
    let dst_ip = IpAddr::from(dst);
    if !ours.contains(&dst_ip) {
        return Err(Reject::NotOurs(dst_ip));
    }
    if proto == IpProtocol::Tcp {
        let tcp = TcpPacket::new_checked(payload).map_err(|_| Reject::Malformed("tcp header"))?;
        if !tcp.verify_checksum(&src, &dst) {
            return Err(Reject::Malformed("tcp checksum"));
        }
    }
    Ok(())
}

/// The endpoints of a connection request: a TCP segment with SYN and neither ACK nor RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syn {
    /// Our side (the packet's destination).
    pub(crate) local: IpEndpoint,
    /// The peer's side (the packet's source).
    pub(crate) remote: IpEndpoint,
}

/// `Some` when `packet` (an IP packet that passed [`classify_inbound`]) opens a connection.
/// IPv6 extension headers are not followed: such a SYN is not a connection request here (and
/// smoltcp answers it with RST, as no socket waits for it).
pub(crate) fn connection_request(packet: &[u8]) -> Option<Syn> {
    let (src, dst, payload) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d), ip.payload())
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d), ip.payload())
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    (tcp.syn() && !tcp.ack() && !tcp.rst()).then(|| Syn {
        local: IpEndpoint::new(dst, tcp.dst_port()),
        remote: IpEndpoint::new(src, tcp.src_port()),
    })
}

/// The `phy::Device` smoltcp polls: borrows the two queues for the duration of one poll.
pub(crate) struct VirtualDevice<'a> {
    pub(crate) inbound: &'a Mutex<PacketQueue>,
    pub(crate) outbound: &'a Mutex<PacketQueue>,
    pub(crate) counters: &'a AtomicCounters,
    pub(crate) mtu: usize,
}

impl VirtualDevice<'_> {
    /// The capabilities every `Interface` of ours is created with.
    pub(crate) fn capabilities_for(mtu: usize, burst: usize) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = mtu;
        // Only used by smoltcp to clamp the advertised window to `burst * MSS`; with a burst of
        // the outbound queue size the clamp never binds below the 16-bit window field.
        caps.max_burst_size = Some(burst);
        // Verified in `classify_inbound` (so failures are counted); computed on transmit.
        caps.checksum.ipv4 = Checksum::Tx;
        caps.checksum.tcp = Checksum::Tx;
        caps
    }
}

impl phy::Device for VirtualDevice<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // A reply (ACK, RST) may be emitted through the paired transmit token, so an inbound
        // packet is only taken when there is room for that reply: it stays queued otherwise.
        if self.outbound.lock().is_full() {
            self.counters.outbound_full.inc();
            return None;
        }
        let buf = self.inbound.lock().pop()?;
        Some((
            RxToken {
                buf,
                queue: self.inbound,
            },
            TxToken {
                queue: self.outbound,
                counters: self.counters,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.outbound.lock().is_full() {
            self.counters.outbound_full.inc();
            return None;
        }
        Some(TxToken {
            queue: self.outbound,
            counters: self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        VirtualDevice::capabilities_for(self.mtu, self.outbound.lock().capacity)
    }
}

pub(crate) struct RxToken<'a> {
    buf: Vec<u8>,
    queue: &'a Mutex<PacketQueue>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.buf);
        self.queue.lock().recycle(self.buf);
        r
    }
}

pub(crate) struct TxToken<'a> {
    queue: &'a Mutex<PacketQueue>,
    counters: &'a AtomicCounters,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut queue = self.queue.lock();
        queue.push_with(len, |buf| {
            let r = f(buf);
            if is_tcp_rst(buf) {
                self.counters.resets_sent.inc();
            }
            r
        })
    }
}

/// The destination address of an IP packet as one key (IPv4 tagged so it never equals an
/// IPv6 address); 0 for a packet too short to have one.
fn destination(packet: &[u8]) -> u128 {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(16..20).map_or(0, |a| {
            (1 << 127) | u128::from(u32::from_be_bytes(a.try_into().unwrap_or_default()))
        }),
        Some(6) => packet
            .get(24..40)
            .map_or(0, |a| u128::from_be_bytes(a.try_into().unwrap_or_default())),
        _ => 0,
    }
}

/// True when `packet` is an IPv4/IPv6 TCP segment with RST set (for the resets counter).
fn is_tcp_rst(packet: &[u8]) -> bool {
    let tcp_offset = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.get(9) == Some(&6) => usize::from(packet[0] & 0x0f) * 4,
        Some(6) if packet.get(6) == Some(&6) => 40,
        _ => return false,
    };
    packet
        .get(tcp_offset + 13)
        .is_some_and(|flags| flags & 0x04 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_fifo_and_reuses_buffers() {
        let mut q = PacketQueue::new(2, 64);
        assert!(q.push_copy(b"one", Some(PeerTag(1))));
        assert!(q.push_copy(b"two", None));
        assert_eq!(q.front(), Some((&b"one"[..], Some(PeerTag(1)))));
        assert!(
            !q.push_copy(b"three", None),
            "third packet must be refused, not dropped"
        );
        let first = q.pop().unwrap();
        assert_eq!(first, b"one");
        let ptr = first.as_ptr();
        q.recycle(first);
        assert!(q.push_copy(b"four", None));
        assert_eq!(q.pop().unwrap(), b"two");
        let four = q.pop().unwrap();
        assert_eq!(four, b"four");
        assert_eq!(four.as_ptr(), ptr, "recycled buffer is reused");
        assert!(q.pop().is_none());
    }

    #[test]
    fn unpop_keeps_order() {
        let mut q = PacketQueue::new(4, 64);
        q.push_copy(b"a", None);
        q.push_copy(b"b", None);
        let a = q.pop().unwrap();
        q.unpop(a);
        assert_eq!(q.pop().unwrap(), b"a");
        assert_eq!(q.pop().unwrap(), b"b");
    }

    /// A 20-byte IPv4 header to 10.0.0.`dst` whose identification field carries `seq`, or
    /// a 40-byte IPv6 header to fd00::`dst` (seq in the flow label).
    fn packet(dst: u8, seq: u8, v6: bool) -> Vec<u8> {
        let mut p = vec![0u8; if v6 { 40 } else { 20 }];
        if v6 {
            p[0] = 0x60;
            p[3] = seq;
            p[24] = 0xfd;
            p[39] = dst;
        } else {
            p[0] = 0x45;
            p[5] = seq;
            p[16..20].copy_from_slice(&[10, 0, 0, dst]);
        }
        p
    }

    fn queued(q: &mut PacketQueue) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    fn push(q: &mut PacketQueue, p: &[u8]) {
        q.push_with(p.len(), |buf| buf.copy_from_slice(p));
    }

    /// Round-robin output (A B C A B C …, as smoltcp emits for three busy sockets) comes out
    /// grouped by destination, smaller groups first, then in first-seen order, each
    /// destination's packets in their order; packets older than the mark, or already taken,
    /// are not moved.
    #[test]
    fn recent_output_is_grouped_by_destination_keeping_each_flows_order() {
        let mut q = PacketQueue::new(64, 64);
        push(&mut q, &packet(9, 0, false)); // older than the mark: stays first
        let mark = q.pushed();
        let mut sent = Vec::new();
        for seq in 1..=4 {
            for (dst, v6) in [(3, false), (1, false), (3, true)] {
                let p = packet(dst, seq, v6);
                push(&mut q, &p);
                sent.push(p);
            }
        }
        q.group_by_destination(mark);
        let out = queued(&mut q);
        assert_eq!(out[0], packet(9, 0, false));
        let mut expect = Vec::new();
        for (dst, v6) in [(3, false), (1, false), (3, true)] {
            expect.extend((1..=4).map(|seq| packet(dst, seq, v6)));
        }
        assert_eq!(out[1..], expect[..]);
        assert_eq!(q.regroup.capacity(), 64, "no growth beyond the queue");

        // Some of the batch already taken by the other task: only the rest is regrouped.
        let mark = q.pushed();
        for seq in 1..=3 {
            for dst in [1, 2] {
                push(&mut q, &packet(dst, seq, false));
            }
        }
        let first = q.pop().unwrap(); // (1, 1)
        q.group_by_destination(mark);
        let out = queued(&mut q);
        assert_eq!(first, packet(1, 1, false));
        let order: Vec<(u8, u8)> = out.iter().map(|p| (p[19], p[5])).collect();
        assert_eq!(
            order,
            [(1, 2), (1, 3), (2, 1), (2, 2), (2, 3)],
            "smaller group first"
        );

        // An answer emitted between a bulk flow's segments goes before them.
        let mark = q.pushed();
        for seq in 1..=6 {
            push(&mut q, &packet(1, seq, false));
            if seq == 2 {
                push(&mut q, &packet(2, 0, false));
            }
        }
        q.group_by_destination(mark);
        let order: Vec<(u8, u8)> = queued(&mut q).iter().map(|p| (p[19], p[5])).collect();
        assert_eq!(
            order,
            [(2, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6)]
        );

        // More destinations than MAX_GROUPS: order kept as queued.
        let mark = q.pushed();
        for dst in 0..=MAX_GROUPS as u8 {
            push(&mut q, &packet(dst, 0, false));
        }
        push(&mut q, &packet(0, 1, false));
        q.group_by_destination(mark);
        let out = queued(&mut q);
        assert_eq!(out.last().unwrap(), &packet(0, 1, false));
    }

    #[test]
    fn classify_rejects_garbage_and_foreign() {
        let ours = [IpAddr::from([10, 0, 0, 1])];
        assert_eq!(
            classify_inbound(&[], &ours),
            Err(Reject::Malformed("ip version"))
        );
        assert_eq!(
            classify_inbound(&[0x45, 0, 0], &ours),
            Err(Reject::Malformed("ipv4 header"))
        );
        // A minimal IPv4 header (protocol 253, experimental) to 10.0.0.9.
        let mut pkt = [0u8; 20];
        pkt[0] = 0x45;
        pkt[3] = 20;
        pkt[8] = 64;
        pkt[9] = 253;
        pkt[12..16].copy_from_slice(&[10, 0, 0, 2]);
        pkt[16..20].copy_from_slice(&[10, 0, 0, 9]);
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.fill_checksum();
        assert_eq!(
            classify_inbound(&pkt, &ours),
            Err(Reject::NotOurs(IpAddr::from([10, 0, 0, 9])))
        );
        pkt[19] = 1;
        assert_eq!(
            classify_inbound(&pkt, &ours),
            Err(Reject::Malformed("ipv4 header checksum"))
        );
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.fill_checksum();
        assert_eq!(classify_inbound(&pkt, &ours), Ok(()));
    }
}
