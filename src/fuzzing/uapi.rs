//! The WireGuard UAPI protocol (`wg show`/`wg set` over the node's socket): the framing and
//! parsing of [`crate::wg::uapi`] and the replies, driven the way the socket server drives
//! them, with every `set` applied to a real `wg::Device`.

use std::fmt::Write as _;

use super::Reader;
use crate::wg::uapi::{self, DeviceState, Frame, Request, errno};
use crate::wg::{Device, DeviceConfig, PublicKey, StaticSecret};

/// Our own private key (nonzero, so a `get` shows it).
const DEVICE_KEY: [u8; 32] = [7; 32];

/// Longest input checked byte by byte for prefix consistency (keeps an execution cheap).
const PREFIX_CHECK_BYTES: usize = 4096;

/// `[flags][split]`, then the bytes a client writes on one connection. Flags bit 0: the client
/// may see secrets (socket owner); bit 1: also re-apply the final `get` to a fresh device.
///
/// Served as `uapi::server` does: frame a request from the buffer, answer it, consume it; at
/// the end of input a partial request is refused. Checks:
/// - a framed request never depends on the bytes after it (framing a prefix cut at `split`
///   gives "incomplete" or the same result), and its length lies within the buffer;
/// - every reply is well formed: `key=value` lines, ending in `errno=N` and one blank line,
///   `N` being 0 or one of the protocol's negative errnos;
/// - with secrets, the `get` reply re-applied (`wg showconf | wg setconf`) to a fresh device
///   with the same key parses, applies and reports the same configuration.
pub fn uapi(data: &[u8]) {
    let mut r = Reader::new(data);
    let flags = r.byte();
    let split = usize::from(r.byte());
    let secrets = flags & 1 == 1;
    let mut buf = r.rest();
    let mut dev = new_device();
    // The socket-level fields the node's driver keeps (the device ignores them).
    let (mut listen_port, mut fwmark) = (51820u16, 0u32);
    let mut requests = 0;
    while requests < 64 {
        requests += 1;
        let framed = uapi::frame(buf);
        if buf.len() <= PREFIX_CHECK_BYTES {
            let cut = split.min(buf.len());
            let partial = uapi::frame(&buf[..cut]);
            if !matches!(partial, Frame::Incomplete) {
                assert_eq!(
                    format!("{partial:?}"),
                    format!("{framed:?}"),
                    "framing depends on bytes after the request"
                );
            }
        }
        let reply = match framed {
            Frame::Incomplete => {
                if !buf.is_empty() {
                    check_reply(&uapi::format_errno(errno::EPROTO));
                }
                break;
            }
            Frame::Invalid(e) => {
                check_reply(&uapi::format_errno(e.errno()));
                break;
            }
            Frame::Request { request, len } => {
                assert!(len > 0 && len <= buf.len(), "length {len} of {}", buf.len());
                buf = &buf[len..];
                match request {
                    Ok(Request::Get) => {
                        uapi::format_get(&state(&dev, secrets, listen_port, fwmark))
                    }
                    Ok(Request::Set(mut update)) => {
                        let port = update.listen_port.take();
                        let mark = update.fwmark.take();
                        match dev.apply(update) {
                            Ok(_) => {
                                listen_port = port.filter(|&p| p != 0).unwrap_or(listen_port);
                                fwmark = mark.unwrap_or(fwmark);
                                uapi::format_errno(0)
                            }
                            Err(_) => uapi::format_errno(errno::EINVAL),
                        }
                    }
                    Err(e) => uapi::format_errno(e.errno()),
                }
            }
        };
        check_reply(&reply);
    }
    if flags & 2 == 2 {
        showconf_setconf(&dev, listen_port, fwmark);
    }
}

fn new_device() -> Device {
    Device::new(DeviceConfig {
        private_key: StaticSecret::from(DEVICE_KEY),
        peers: Vec::new(),
        handshake_rate_limit: crate::wg::DEFAULT_HANDSHAKE_RATE_LIMIT,
    })
    .expect("constant configuration")
}

fn state(dev: &Device, secrets: bool, listen_port: u16, fwmark: u32) -> DeviceState {
    let mut peers = dev.counters().uapi_peers();
    if !secrets {
        for p in &mut peers {
            p.preshared_key = None;
        }
    }
    DeviceState {
        private_key: secrets.then(|| dev.private_key().clone()),
        listen_port,
        fwmark,
        peers,
    }
}

/// Keys a reply may carry (wireguard.com/xplatform, `get`).
const REPLY_KEYS: [&str; 14] = [
    "private_key",
    "listen_port",
    "fwmark",
    "public_key",
    "preshared_key",
    "protocol_version",
    "endpoint",
    "last_handshake_time_sec",
    "last_handshake_time_nsec",
    "tx_bytes",
    "rx_bytes",
    "persistent_keepalive_interval",
    "allowed_ip",
    "errno",
];

fn check_reply(reply: &str) {
    let body = reply
        .strip_suffix("\n\n")
        .unwrap_or_else(|| panic!("reply without the blank line: {reply:?}"));
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("reply line without '=': {line:?}"));
        assert!(REPLY_KEYS.contains(&key), "unknown reply key {key:?}");
        assert!(!value.is_empty(), "empty value for {key}");
        if lines.peek().is_none() {
            assert_eq!(key, "errno", "reply does not end in errno: {reply:?}");
            let n: i32 = value.parse().expect("numeric errno");
            assert!(
                [
                    0,
                    errno::EIO,
                    errno::EINVAL,
                    errno::EPROTO,
                    errno::EADDRINUSE
                ]
                .contains(&n),
                "unexpected errno {n}"
            );
        } else {
            assert_ne!(key, "errno", "errno before the end: {reply:?}");
        }
    }
}

/// `wg showconf | wg setconf` on a fresh device with our key: the configuration survives.
fn showconf_setconf(dev: &Device, listen_port: u16, fwmark: u32) {
    let shown = uapi::format_get(&state(dev, true, listen_port, fwmark));
    let mut request = String::from("set=1\nreplace_peers=true\n");
    for line in shown.lines() {
        let key = line.split_once('=').map_or(line, |(k, _)| k);
        // What `wg showconf` leaves out: the counters and the reply's own errno.
        if !matches!(
            key,
            "last_handshake_time_sec"
                | "last_handshake_time_nsec"
                | "tx_bytes"
                | "rx_bytes"
                | "errno"
                | ""
        ) {
            let _ = writeln!(request, "{line}");
        }
    }
    request.push('\n');
    let update = match uapi::frame(request.as_bytes()) {
        Frame::Request {
            request: Ok(Request::Set(update)),
            len,
        } => {
            assert_eq!(len, request.len());
            update
        }
        other => panic!("our own get reply does not parse back: {other:?}\n{request}"),
    };
    let mut fresh = new_device();
    let mut update = update;
    let port = update.listen_port.take().unwrap_or(51820);
    let mark = update.fwmark.take().unwrap_or(0);
    if let Err(e) = fresh.apply(update) {
        panic!("our own get reply does not apply: {e}\n{request}");
    }
    let again = uapi::format_get(&state(&fresh, true, port, mark));
    assert_eq!(
        without_counters(&again),
        without_counters(&shown),
        "configuration changed through showconf/setconf"
    );
}

fn without_counters(reply: &str) -> Vec<&str> {
    reply
        .lines()
        .filter(|l| {
            !l.starts_with("last_handshake_time_")
                && !l.starts_with("tx_bytes=")
                && !l.starts_with("rx_bytes=")
        })
        .collect()
}

/// Requests as `wg` writes them (`wg show`, `wg set`, `wg setconf`), and a few refused ones.
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let hex = |k: [u8; 32]| {
        k.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let peer = |seed: u8| hex(*PublicKey::from(&StaticSecret::from([seed; 32])).as_bytes());
    let (a, b) = (peer(9), peer(11));
    let requests = [
        "get=1\n\n".to_owned(),
        format!(
            "set=1\nreplace_peers=true\nlisten_port=51821\nfwmark=0\npublic_key={a}\n\
             protocol_version=1\nreplace_allowed_ips=true\nallowed_ip=100.64.0.1/32\n\
             allowed_ip=fd00::1/128\nendpoint=[::1]:51820\npersistent_keepalive_interval=25\n\
             public_key={b}\npreshared_key={}\nallowed_ip=100.64.0.0/24\n\
             endpoint=192.0.2.1:4000\n\nget=1\n\n",
            hex([3; 32])
        ),
        format!(
            "set=1\npublic_key={a}\nupdate_only=true\nallowed_ip=-100.64.0.1/32\n\n\
             set=1\npublic_key={b}\nremove=true\n\nget=1\n\n"
        ),
        format!("set=1\nprivate_key={}\n\nget=1\n\n", hex([5; 32])),
        "set=1\nlisten_port=x\n\nget=1\nX".to_owned(),
        "set=1\nprivate_key=00\n\nhello\n".to_owned(),
        format!("set=1\npublic_key={a}\nallowed_ip=10.0.0.0\n\nget=1\n\nset=1\nlisten_port"),
    ];
    requests
        .iter()
        .enumerate()
        .map(|(i, req)| {
            // Flags: secrets and the showconf/setconf check on all but the first.
            let mut seed = vec![if i == 0 { 0 } else { 3 }, 17];
            seed.extend_from_slice(req.as_bytes());
            seed
        })
        .collect()
}
