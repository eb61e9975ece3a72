//! Receiver indices that survive a restart.
//!
//! Every session index we hand out carries the peer's 24-bit index in its upper bits, and a
//! peer's keepalives name it. Random indices made a restarted control daemon unable to tell
//! whose keepalives were arriving, so it could reach an agent behind NAT only when that agent's
//! own timers re-handshaked (up to 180 s + a keepalive interval later: BENCHMARKS.md §5.4).
//! Derived from our private key and the peer's public key instead, a restarted node with the
//! same key and peers gives each peer the same index, recognises its keepalives and answers them
//! with a handshake initiation (see `Device::handle_datagram`). Keyed with the private key, so
//! an outsider cannot compute them from public keys.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::StaticSecret;

/// Hash candidates tried per peer before falling back to a random index (reached only if the
/// table is nearly full around its hashes, which `MAX_PEERS` = 2^16 of 2^24 makes unlikely).
const TRIES: u32 = 16;

/// One distinct non-zero 24-bit index per key of `keys` (in order; a collision goes to the next
/// candidate of the later key), none `taken`. The same key pair and order give the same result.
pub(super) fn stable_indices(
    private_key: &StaticSecret,
    keys: &[[u8; 32]],
    taken: impl Fn(u32) -> bool,
) -> Result<Vec<u32>, getrandom::Error> {
    let mut chosen = HashSet::with_capacity(keys.len());
    let mut out = Vec::with_capacity(keys.len());
    let free = |idx: u32, chosen: &HashSet<u32>| idx != 0 && !taken(idx) && !chosen.contains(&idx);
    for key in keys {
        let mut found = (0..TRIES)
            .map(|n| candidate(private_key, key, n))
            .find(|&idx| free(idx, &chosen));
        // Terminates: at most MAX_PEERS (2^16) of the 2^24 indices are ever taken.
        while found.is_none() {
            let idx = getrandom::u32()? & 0x00ff_ffff;
            found = free(idx, &chosen).then_some(idx);
        }
        let idx = found.unwrap_or_default();
        chosen.insert(idx);
        out.push(idx);
    }
    Ok(out)
}

/// The receiver index a node with `private_key` gives the peer `peer` (its first candidate:
/// what it gets unless another peer's index took it first, a chance of about peers / 2^24).
/// With `[interface] threads = N >= 3` the peer's crypto shard is this index modulo `N - 1`.
/// For diagnostics and tests.
pub fn receiver_index(private_key: &StaticSecret, peer: &super::PublicKey) -> u32 {
    candidate(private_key, peer.as_bytes(), 0)
}

fn candidate(private_key: &StaticSecret, peer: &[u8; 32], n: u32) -> u32 {
    let mut h = Sha256::new();
    h.update(b"wgagent receiver index v1");
    h.update(private_key.to_bytes());
    h.update(peer);
    h.update(n.to_le_bytes());
    let d = h.finalize();
    u32::from_le_bytes([d[0], d[1], d[2], 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn distinct_nonzero_24_bit_and_the_same_again() {
        let secret = StaticSecret::from([3u8; 32]);
        let keys: Vec<_> = (0..5000).map(key).collect();
        let v = stable_indices(&secret, &keys, |_| false).unwrap();
        let set: HashSet<_> = v.iter().copied().collect();
        assert_eq!(set.len(), 5000);
        assert!(v.iter().all(|&i| i != 0 && i <= 0x00ff_ffff));
        assert_eq!(v, stable_indices(&secret, &keys, |_| false).unwrap());
        // Another private key: other indices.
        let other = stable_indices(&StaticSecret::from([4u8; 32]), &keys, |_| false).unwrap();
        assert!(v.iter().zip(&other).filter(|(a, b)| a == b).count() < 5);
    }

    #[test]
    fn taken_indices_move_to_the_next_candidate() {
        let secret = StaticSecret::from([3u8; 32]);
        let first = stable_indices(&secret, &[key(1)], |_| false).unwrap()[0];
        let moved = stable_indices(&secret, &[key(1)], |i| i == first).unwrap()[0];
        assert_ne!(first, moved);
        // Everything taken but one random slot: the fallback still finds one.
        let all_hashes: HashSet<u32> = (0..TRIES).map(|n| candidate(&secret, &key(1), n)).collect();
        let v = stable_indices(&secret, &[key(1)], |i| all_hashes.contains(&i)).unwrap();
        assert!(!all_hashes.contains(&v[0]) && v[0] != 0);
    }
}
