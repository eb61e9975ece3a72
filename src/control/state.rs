//! The daemon's saved endpoints: where each agent last reached it, kept across restarts.
//!
//! Why: an agent behind NAT has no endpoint in the config; the daemon learns it from the agent's
//! handshakes. A restarted daemon has no session with anyone, and the agents' keepalives (data
//! for the old session) cannot be decrypted, so without saved endpoints an agent is unreachable
//! until its own timers start a new handshake (up to ~3 minutes with boringtun's timers). The
//! agent's keepalives keep its NAT mapping towards the daemon's port open, so the daemon can
//! handshake through it at once: the first request after a restart costs one round trip more.
//!
//! Owns: the file `<state_dir>/endpoints` (`<public key> <endpoint>` per line, written to a
//! temporary file and renamed), reading it back (bounded; bad lines are skipped).
//! Leaves to the caller: when to save (periodically and at shutdown), and which peers may be
//! seeded (only those without a configured endpoint).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use crate::keys;
use crate::wg::{PublicKey, Stats};

const FILE: &str = "endpoints";
/// Larger files are ignored (65,536 peers × ~70 bytes fits well below).
const MAX_BYTES: u64 = 16 << 20;

/// The saved endpoints by public key (empty when there is no readable file).
pub(crate) fn load(dir: &Path) -> HashMap<[u8; 32], SocketAddr> {
    let mut out = HashMap::new();
    let Ok(f) = std::fs::File::open(dir.join(FILE)) else {
        return out;
    };
    let mut text = String::new();
    if f.take(MAX_BYTES).read_to_string(&mut text).is_err() {
        return out;
    }
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(k), Some(e)) = (w.next(), w.next()) else {
            continue;
        };
        if let (Ok(k), Ok(e)) = (keys::decode_public(k), e.parse::<SocketAddr>()) {
            out.insert(k.to_bytes(), e);
        }
    }
    out
}

/// Saves every peer's current endpoint.
pub(crate) fn save(dir: &Path, stats: &Stats) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::new();
    for p in &stats.peers {
        if let Some(e) = p.endpoint {
            text.push_str(&keys::encode_public(&p.public_key));
            text.push(' ');
            text.push_str(&e.to_string());
            text.push('\n');
        }
    }
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, dir.join(FILE))
}

/// The endpoint saved for `key`, if any.
pub(crate) fn lookup(saved: &HashMap<[u8; 32], SocketAddr>, key: &PublicKey) -> Option<SocketAddr> {
    saved.get(key.as_bytes()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::PeerStats;

    #[test]
    fn round_trip_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = keys::public_key(&keys::generate());
        let k2 = keys::public_key(&keys::generate());
        let peer = |k, e: Option<&str>| PeerStats {
            name: None,
            public_key: k,
            endpoint: e.map(|e| e.parse().unwrap()),
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            handshakes: 0,
            last_handshake: None,
            drop_no_endpoint: 0,
            drop_allowed_ips: 0,
            drop_decrypt: 0,
            drop_replay: 0,
            drop_malformed: 0,
            drop_rate_limited: 0,
            drop_no_session: 0,
            shard: 0,
        };
        let stats = Stats {
            device: Default::default(),
            peers: vec![peer(k1, Some("192.0.2.1:4000")), peer(k2, None)],
        };
        save(dir.path(), &stats).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"garbage\nnot-a-key 1.2.3.4:5\n").unwrap();
        let saved = load(dir.path());
        assert_eq!(saved.len(), 1);
        assert_eq!(lookup(&saved, &k1), Some("192.0.2.1:4000".parse().unwrap()));
        assert_eq!(lookup(&saved, &k2), None);
        assert!(load(&dir.path().join("absent")).is_empty());
    }
}
