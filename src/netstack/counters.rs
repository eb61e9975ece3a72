//! Counters of the netstack: lock-free increments from any thread, a plain snapshot for callers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the netstack's counters (monotonic except the gauges `sockets_open` and
/// `socket_memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Inbound packets accepted into the inbound queue.
    pub packets_in: u64,
    /// Outbound packets handed to the driver by `pop_outbound`.
    pub packets_out: u64,
    /// Inbound packets dropped because their destination is not one of our addresses.
    pub dropped_not_ours: u64,
    /// Inbound packets dropped as malformed (bad header or checksum, IPv4 fragment).
    pub dropped_malformed: u64,
    /// `push_inbound` calls refused because the inbound queue was full (the driver retries).
    pub inbound_full: u64,
    /// Times smoltcp found the outbound queue full (it keeps the data and retries).
    pub outbound_full: u64,
    /// TCP segments with RST we emitted (refused connections, aborts).
    pub resets_sent: u64,
    /// TCP sockets currently allocated (listening, connecting, connected or closing).
    pub sockets_open: u64,
    /// Connections refused, all reasons (the four `refused_*` counters add up to it).
    pub sockets_refused: u64,
    /// Connection requests refused because the listener's backlog was full.
    pub refused_backlog: u64,
    /// Connection requests refused because their peer held `max_connections_per_peer`.
    pub refused_peer_limit: u64,
    /// Connections refused because the socket table (or all but its reserve) was full.
    pub refused_table_full: u64,
    /// Connections refused because the socket memory budget was spent.
    pub refused_memory: u64,
    /// Retransmitted SYNs that reached their existing connection (not a new one).
    pub duplicate_syns: u64,
    /// Socket buffer memory committed at the last admission decision (bytes, upper bound).
    pub socket_memory: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub(crate) packets_in: Counter,
    pub(crate) packets_out: Counter,
    pub(crate) dropped_not_ours: Counter,
    pub(crate) dropped_malformed: Counter,
    pub(crate) inbound_full: Counter,
    pub(crate) outbound_full: Counter,
    pub(crate) resets_sent: Counter,
    pub(crate) sockets_open: Counter,
    pub(crate) sockets_refused: Counter,
    pub(crate) refused_backlog: Counter,
    pub(crate) refused_peer_limit: Counter,
    pub(crate) refused_table_full: Counter,
    pub(crate) refused_memory: Counter,
    pub(crate) duplicate_syns: Counter,
    pub(crate) socket_memory: Counter,
}

impl AtomicCounters {
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            packets_in: self.packets_in.get(),
            packets_out: self.packets_out.get(),
            dropped_not_ours: self.dropped_not_ours.get(),
            dropped_malformed: self.dropped_malformed.get(),
            inbound_full: self.inbound_full.get(),
            outbound_full: self.outbound_full.get(),
            resets_sent: self.resets_sent.get(),
            sockets_open: self.sockets_open.get(),
            sockets_refused: self.sockets_refused.get(),
            refused_backlog: self.refused_backlog.get(),
            refused_peer_limit: self.refused_peer_limit.get(),
            refused_table_full: self.refused_table_full.get(),
            refused_memory: self.refused_memory.get(),
            duplicate_syns: self.duplicate_syns.get(),
            socket_memory: self.socket_memory.get(),
        }
    }
}
