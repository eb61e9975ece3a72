//! The global allowed-IPs table: longest-prefix match from an address to the one peer that owns
//! it. Used both ways: outgoing packets by destination, incoming packets by inner source (the
//! cryptokey-routing check). Because the match is global, a peer holding `10.0.0.0/24` cannot
//! use `10.0.0.5` when another peer holds `10.0.0.5/32`.
//!
//! Owns only the table; building it from config, reporting conflicts and keeping each peer's
//! own list of prefixes in step with it is [`super::Device`]'s. Generic over what a prefix maps
//! to, so the same table serves the data path (receiver indices) and the shared identity view
//! other tasks read (`Counters::owner`).

use std::net::IpAddr;

use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;

/// Longest-prefix-match table from allowed-IP prefixes to an owner.
pub(crate) struct RouteTable<V> {
    table: IpNetworkTable<V>,
}

impl<V> Default for RouteTable<V> {
    fn default() -> Self {
        RouteTable {
            table: IpNetworkTable::new(),
        }
    }
}

impl<V> RouteTable<V> {
    /// Sets `network → owner`, replacing and returning any previous owner of the exact prefix
    /// (the WireGuard UAPI semantics: a prefix given to one peer is taken from another).
    pub(crate) fn set(&mut self, network: IpNetwork, owner: V) -> Option<V> {
        self.table.insert(network, owner)
    }

    /// Removes the exact prefix; returns its owner.
    pub(crate) fn remove(&mut self, network: IpNetwork) -> Option<V> {
        self.table.remove(network)
    }

    /// The owner of exactly this prefix.
    pub(crate) fn exact(&self, network: IpNetwork) -> Option<&V> {
        self.table.exact_match(network)
    }

    /// The owner of the most specific prefix that contains `addr`, if any.
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<&V> {
        self.table.longest_match(addr).map(|(_, owner)| owner)
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
        assert_eq!(t.set(net("10.0.0.0/24"), 0), None);
        assert_eq!(t.set(net("10.0.0.5/32"), 1), None);
        assert_eq!(t.set(net("0.0.0.0/0"), 2), None);
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(&1));
        assert_eq!(t.lookup(ip("10.0.0.6")), Some(&0));
        assert_eq!(t.lookup(ip("10.0.1.6")), Some(&2));
    }

    #[test]
    fn families_are_separate() {
        let mut t = RouteTable::default();
        t.set(net("10.0.0.0/8"), 0);
        t.set(net("fd00::/8"), 1);
        assert_eq!(t.lookup(ip("fd12::1")), Some(&1));
        // A v4-mapped IPv6 address is an IPv6 address: v4 prefixes do not cover it.
        assert_eq!(t.lookup(ip("::ffff:10.0.0.1")), None);
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn set_takes_a_prefix_over_and_remove_uncovers_the_shorter_one() {
        let mut t = RouteTable::default();
        t.set(net("10.0.0.0/24"), 0);
        assert_eq!(t.set(net("10.0.0.5/32"), 1), None);
        assert_eq!(t.set(net("10.0.0.5/32"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(&2));
        assert_eq!(t.exact(net("10.0.0.5/32")), Some(&2));
        assert_eq!(t.remove(net("10.0.0.5/32")), Some(2));
        assert_eq!(t.remove(net("10.0.0.5/32")), None);
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(&0));
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t: RouteTable<u32> = RouteTable::default();
        assert_eq!(t.lookup(ip("0.0.0.0")), None);
        assert_eq!(t.lookup(ip("::")), None);
    }

    /// The obvious reference: scan every prefix, keep the longest one that contains `addr`.
    fn naive(entries: &[(IpNetwork, u32)], addr: IpAddr) -> Option<u32> {
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

    /// One table operation of the property test: set (takes the prefix over) or remove.
    #[derive(Debug, Clone)]
    enum Op {
        Set(IpNetwork),
        Remove(IpNetwork),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let net = || prop_oneof![arb_v4_net(), arb_v6_net()];
        prop_oneof![
            3 => net().prop_map(Op::Set),
            2 => net().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn matches_naive_longest_prefix(
            ops in proptest::collection::vec(arb_op(), 0..32),
            probes in proptest::collection::vec((0u32..16, 0u32..4096, any::<bool>()), 1..32),
        ) {
            let mut t = RouteTable::default();
            let mut entries: Vec<(IpNetwork, u32)> = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                let owner = i as u32;
                match op {
                    Op::Set(n) => {
                        let pos = entries.iter().position(|(e, _)| *e == n);
                        let previous = pos.map(|p| entries.remove(p).1);
                        prop_assert_eq!(t.set(n, owner), previous);
                        entries.push((n, owner));
                    }
                    Op::Remove(n) => {
                        let pos = entries.iter().position(|(e, _)| *e == n);
                        let previous = pos.map(|p| entries.remove(p).1);
                        prop_assert_eq!(t.remove(n), previous);
                    }
                }
            }
            for (hi, lo, v6) in probes {
                let addr = if v6 {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, hi as u16, 0, 0, 0, 0, 0, lo as u16))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (hi << 20) | lo))
                };
                prop_assert_eq!(t.lookup(addr).copied(), naive(&entries, addr), "addr {}", addr);
            }
        }
    }
}
