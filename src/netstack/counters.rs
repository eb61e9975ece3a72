//! Counters of the netstack: lock-free increments from any thread, a plain snapshot for callers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the netstack's counters (monotonic except `sockets_open`).
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
    /// Connections refused because `max_sockets` or a listener's backlog was reached.
    pub sockets_refused: u64,
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
        }
    }
}
