//! The node's counters at scrape time: WireGuard per peer and for the device, the UDP socket,
//! the netstack. One [`crate::node::Node::stats`] snapshot per scrape.

use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{Labels, counter, counters, gauge, gauges};
use crate::keys;
use crate::node::Node;

pub(super) struct NodeCollector {
    node: Node,
}

impl NodeCollector {
    pub(super) fn new(node: Node) -> Self {
        NodeCollector { node }
    }
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

fn peer(label: &str) -> Labels {
    vec![("peer", label.to_owned())]
}

fn peer_reason(label: &str, reason: &'static str) -> Labels {
    vec![("peer", label.to_owned()), ("reason", reason.to_owned())]
}

fn reason(reason: &'static str) -> Labels {
    vec![("reason", reason.to_owned())]
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let stats = self.node.stats();
        let wg = &stats.wg;
        let labels: Vec<String> = wg
            .peers
            .iter()
            .map(|p| {
                p.name
                    .clone()
                    .unwrap_or_else(|| keys::encode_public(&p.public_key))
            })
            .collect();
        let per_peer = |f: fn(&crate::wg::PeerStats) -> u64| {
            wg.peers
                .iter()
                .zip(&labels)
                .map(move |(p, l)| (peer(l), f(p)))
        };
        let e = &mut enc;
        gauge(
            e,
            "wgagent_wireguard_peers",
            "Configured WireGuard peers",
            wg.peers.len() as f64,
        )?;
        gauge(
            e,
            "wgagent_wireguard_sessions",
            "Peers holding a WireGuard session now (created on first use, dropped after \
             idle_session_timeout without data)",
            wg.device.sessions as f64,
        )?;
        counter(
            e,
            "wgagent_wireguard_sessions_dropped_idle",
            "Sessions dropped because the peer carried no data for idle_session_timeout",
            wg.device.sessions_dropped_idle,
        )?;
        counters(
            e,
            "wgagent_wireguard_peer_received_bytes",
            "UDP payload bytes of authenticated datagrams from the peer (handshakes included)",
            per_peer(|p| p.rx_bytes),
        )?;
        counters(
            e,
            "wgagent_wireguard_peer_sent_bytes",
            "UDP payload bytes sent to the peer (handshakes and keepalives included)",
            per_peer(|p| p.tx_bytes),
        )?;
        counters(
            e,
            "wgagent_wireguard_peer_received_packets",
            "Inner IP packets delivered from the peer",
            per_peer(|p| p.rx_packets),
        )?;
        counters(
            e,
            "wgagent_wireguard_peer_sent_packets",
            "Data datagrams carrying an IP packet sent to the peer",
            per_peer(|p| p.tx_packets),
        )?;
        counters(
            e,
            "wgagent_wireguard_peer_handshakes",
            "Handshakes completed with the peer",
            per_peer(|p| p.handshakes),
        )?;
        let now = SystemTime::now();
        let last: Vec<(Labels, SystemTime)> = wg
            .peers
            .iter()
            .zip(&labels)
            .filter_map(|(p, l)| p.last_handshake.map(|t| (peer(l), t)))
            .collect();
        gauges(
            e,
            "wgagent_wireguard_peer_last_handshake_age_seconds",
            "Seconds since the current session with the peer was established (peers with a \
             session only)",
            last.iter().map(|(l, t)| {
                let age = now.duration_since(*t).unwrap_or_default();
                (l.clone(), age.as_secs_f64())
            }),
        )?;
        gauges(
            e,
            "wgagent_wireguard_peer_last_handshake_timestamp_seconds",
            "Unix time the current session with the peer was established",
            last.iter().map(|(l, t)| {
                let at = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                (l.clone(), at.as_secs_f64())
            }),
        )?;
        let drops: Vec<(Labels, u64)> = wg
            .peers
            .iter()
            .zip(&labels)
            .flat_map(|(p, l)| {
                [
                    ("no_endpoint", p.drop_no_endpoint),
                    ("allowed_ips", p.drop_allowed_ips),
                    ("decrypt", p.drop_decrypt),
                    ("replay", p.drop_replay),
                    ("malformed", p.drop_malformed),
                    ("rate_limited", p.drop_rate_limited),
                    ("no_session", p.drop_no_session),
                ]
                .map(|(r, v)| (peer_reason(l, r), v))
            })
            .collect();
        counters(
            e,
            "wgagent_wireguard_peer_dropped_packets",
            "Packets of the peer dropped, by reason: no_endpoint (nowhere to send), allowed_ips \
             (inner source not the peer's), decrypt, replay, malformed, rate_limited, no_session \
             (its session was dropped as idle)",
            drops,
        )?;
        let d = &wg.device;
        counters(
            e,
            "wgagent_wireguard_dropped_packets",
            "Packets dropped that belong to no configured peer, by reason",
            [
                ("no_route", d.no_route),
                ("unknown_peer", d.unknown_peer),
                ("unknown_index", d.unknown_index),
                ("malformed", d.malformed),
                ("invalid_mac", d.invalid_mac),
                ("rate_limited", d.rate_limited),
            ]
            .map(|(r, v)| (reason(r), v)),
        )?;

        counter(
            e,
            "wgagent_udp_received_datagrams",
            "Datagrams received on the WireGuard UDP socket",
            stats.datagrams_in,
        )?;
        counter(
            e,
            "wgagent_udp_sent_datagrams",
            "Datagrams sent on the WireGuard UDP socket",
            stats.datagrams_out,
        )?;
        counter(
            e,
            "wgagent_udp_send_errors",
            "Sends the kernel refused",
            stats.send_errors,
        )?;
        counters(
            e,
            "wgagent_udp_dropped_datagrams",
            "Received datagrams dropped by the data path: inbound_full (the netstack's queue was \
             full), truncated (larger than the receive slot), shard_full (threads >= 3: the \
             crypto shard of the datagram's peer was backed up)",
            [
                ("inbound_full", stats.inbound_dropped),
                ("truncated", stats.recv_truncated),
                ("shard_full", stats.forward_dropped),
            ]
            .map(|(r, v)| (reason(r), v)),
        )?;

        let n = &stats.netstack;
        counter(
            e,
            "wgagent_netstack_received_packets",
            "Inner packets accepted by the userspace TCP/IP stack",
            n.packets_in,
        )?;
        counter(
            e,
            "wgagent_netstack_sent_packets",
            "Inner packets the userspace TCP/IP stack sent",
            n.packets_out,
        )?;
        counters(
            e,
            "wgagent_netstack_dropped_packets",
            "Inner packets the stack dropped: not_ours (another destination), malformed, \
             inbound_full (queue full; the data path retries)",
            [
                ("not_ours", n.dropped_not_ours),
                ("malformed", n.dropped_malformed),
                ("inbound_full", n.inbound_full),
            ]
            .map(|(r, v)| (reason(r), v)),
        )?;
        counter(
            e,
            "wgagent_netstack_outbound_full",
            "Times the outbound queue was full (the data is kept and retried)",
            n.outbound_full,
        )?;
        counter(
            e,
            "wgagent_netstack_poll_backoffs",
            "Times the data path waited instead of polling the stack again at once: polls kept \
             asking for another poll with nothing queued (a stack state making no progress)",
            stats.zero_delay_backoffs,
        )?;
        counters(
            e,
            "wgagent_datapath_shard_packets",
            "Datagrams and IP packets each crypto shard handled for its own peers (one shard \
             unless threads >= 3; a shard near zero while others grow means its peers are idle)",
            stats
                .shard_work
                .iter()
                .enumerate()
                .map(|(k, &v)| (vec![("shard", k.to_string())], v)),
        )?;
        counter(
            e,
            "wgagent_netstack_resets_sent",
            "TCP resets sent (refused connections, aborts)",
            n.resets_sent,
        )?;
        counters(
            e,
            "wgagent_netstack_refused_connections",
            "Tunnel TCP connections refused (answered with RST), by reason: backlog (the \
             listener's queue was full), peer_limit (the peer held max_connections_per_peer), \
             table_full (the socket table was full), memory (the tcp_memory budget was spent)",
            [
                ("backlog", n.refused_backlog),
                ("peer_limit", n.refused_peer_limit),
                ("table_full", n.refused_table_full),
                ("memory", n.refused_memory),
            ]
            .map(|(r, v)| (reason(r), v)),
        )?;
        counter(
            e,
            "wgagent_netstack_duplicate_syns",
            "Retransmitted SYNs that reached their existing connection",
            n.duplicate_syns,
        )?;
        gauge(
            e,
            "wgagent_netstack_sockets",
            "Tunnel TCP sockets allocated (listening, connecting, connected or closing)",
            n.sockets_open as f64,
        )?;
        gauge(
            e,
            "wgagent_netstack_socket_memory_bytes",
            "Socket buffer memory committed to tunnel TCP connections (upper bound, as of the \
             last admission decision; budget: tcp_memory)",
            n.socket_memory as f64,
        )?;
        Ok(())
    }
}
