//! The global allowed-IPs table: longest-prefix match from an address to the one peer that owns
//! it. Used both ways: outgoing packets by destination, incoming packets by inner source (the
//! cryptokey-routing check). Because the match is global, a peer holding `10.0.0.0/24` cannot
//! use `10.0.0.5` when another peer holds `10.0.0.5/32`.
//!
//! Owns only the table; building it from config and reporting conflicts is [`super::Device`]'s.

use std::net::IpAddr;

use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;

use super::PeerId;

/// Longest-prefix-match table from allowed-IP prefixes to peers.
pub(crate) struct RouteTable {
    table: IpNetworkTable<PeerId>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            table: IpNetworkTable::new(),
        }
    }
}

impl RouteTable {
    /// Adds `network → peer`. Returns the previous owner if the exact prefix was already
    /// present (the entry is then left unchanged, so the first owner keeps it).
    pub(crate) fn insert(&mut self, network: IpNetwork, peer: PeerId) -> Option<PeerId> {
        if let Some(existing) = self.table.exact_match(network) {
            return Some(*existing);
        }
        self.table.insert(network, peer);
        None
    }

    /// The peer whose most specific prefix contains `addr`, if any.
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<PeerId> {
        self.table.longest_match(addr).map(|(_, peer)| *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn most_specific_prefix_wins() {
        let mut t = RouteTable::default();
        assert_eq!(t.insert(net("10.0.0.0/24"), PeerId(0)), None);
        assert_eq!(t.insert(net("10.0.0.5/32"), PeerId(1)), None);
        assert_eq!(t.insert(net("0.0.0.0/0"), PeerId(2)), None);
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(PeerId(1)));
        assert_eq!(t.lookup(ip("10.0.0.6")), Some(PeerId(0)));
        assert_eq!(t.lookup(ip("10.0.1.6")), Some(PeerId(2)));
    }

    #[test]
    fn families_are_separate() {
        let mut t = RouteTable::default();
        t.insert(net("10.0.0.0/8"), PeerId(0));
        t.insert(net("fd00::/8"), PeerId(1));
        assert_eq!(t.lookup(ip("fd12::1")), Some(PeerId(1)));
        // A v4-mapped IPv6 address is an IPv6 address: v4 prefixes do not cover it.
        assert_eq!(t.lookup(ip("::ffff:10.0.0.1")), None);
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn duplicate_prefix_keeps_first_owner() {
        let mut t = RouteTable::default();
        assert_eq!(t.insert(net("fd00::1/128"), PeerId(3)), None);
        assert_eq!(t.insert(net("fd00::1/128"), PeerId(4)), Some(PeerId(3)));
        assert_eq!(t.lookup(ip("fd00::1")), Some(PeerId(3)));
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t = RouteTable::default();
        assert_eq!(t.lookup(ip("0.0.0.0")), None);
        assert_eq!(t.lookup(ip("::")), None);
    }

    /// The obvious reference: scan every prefix, keep the longest one that contains `addr`.
    fn naive(entries: &[(IpNetwork, PeerId)], addr: IpAddr) -> Option<PeerId> {
        entries
            .iter()
            .filter(|(n, _)| n.contains(addr))
            .max_by_key(|(n, _)| n.netmask())
            .map(|(_, p)| *p)
    }

    fn arb_v4_net() -> impl Strategy<Value = IpNetwork> {
        // A small address space so that prefixes overlap often.
        (0u32..16, 0u8..=32).prop_map(|(hi, len)| {
            let addr = Ipv4Addr::from(0x0a00_0000 | (hi << 20) | (hi * 7));
            IpNetwork::new_truncate(addr, len).unwrap()
        })
    }

    fn arb_v6_net() -> impl Strategy<Value = IpNetwork> {
        (0u16..16, 0u8..=128).prop_map(|(x, len)| {
            let addr = Ipv6Addr::new(0xfd00, x, 0, 0, 0, 0, 0, x);
            IpNetwork::new_truncate(addr, len).unwrap()
        })
    }

    proptest! {
        #[test]
        fn matches_naive_longest_prefix(
            nets in proptest::collection::vec(prop_oneof![arb_v4_net(), arb_v6_net()], 0..24),
            probes in proptest::collection::vec((0u32..16, 0u32..4096, any::<bool>()), 1..32),
        ) {
            let mut t = RouteTable::default();
            let mut entries = Vec::new();
            for (i, n) in nets.into_iter().enumerate() {
                if t.insert(n, PeerId(i)).is_none() {
                    entries.push((n, PeerId(i)));
                }
            }
            for (hi, lo, v6) in probes {
                let addr = if v6 {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, hi as u16, 0, 0, 0, 0, 0, lo as u16))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (hi << 20) | lo))
                };
                prop_assert_eq!(t.lookup(addr), naive(&entries, addr), "addr {}", addr);
            }
        }
    }
}
