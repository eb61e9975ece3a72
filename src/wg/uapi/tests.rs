//! The protocol, request by request, as `wg` and wireguard-go write and read it.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const K1: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
const K2: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceae78e7d5a43";

fn set(body: &str) -> Result<DeviceUpdate, UapiError> {
    let body = body.trim_end_matches('\n');
    let text = if body.is_empty() {
        "set=1\n\n".to_owned()
    } else {
        format!("set=1\n{body}\n\n")
    };
    match frame(text.as_bytes()) {
        Frame::Request { request, len } => {
            assert_eq!(len, text.len());
            request.map(|r| match r {
                Request::Set(u) => u,
                Request::Get => panic!("not a set"),
            })
        }
        other => panic!("{other:?}"),
    }
}

fn key(hex: &str) -> PublicKey {
    PublicKey::from(parse_key(hex).unwrap())
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn get_is_framed_exactly() {
    assert!(matches!(frame(b""), Frame::Incomplete));
    assert!(matches!(frame(b"get=1"), Frame::Incomplete));
    assert!(matches!(frame(b"get=1\n"), Frame::Incomplete));
    assert!(matches!(
        frame(b"get=1\n\nget=1\n\n"),
        Frame::Request {
            request: Ok(Request::Get),
            len: 7
        }
    ));
    let Frame::Invalid(e) = frame(b"get=1\nx") else {
        panic!()
    };
    assert_eq!(e.errno(), errno::EINVAL);
}

#[test]
fn unknown_operations_and_long_lines_are_protocol_errors() {
    for bad in [&b"hello\n"[..], b"set=2\n\n", b"GET=1\n\n", b"\n"] {
        let Frame::Invalid(e) = frame(bad) else {
            panic!("{bad:?}")
        };
        assert_eq!(e.errno(), errno::EPROTO, "{bad:?}");
    }
    let long = vec![b'a'; MAX_LINE_BYTES + 1];
    assert!(matches!(frame(&long), Frame::Invalid(_)));
    // A set without its blank line is incomplete until it is too large.
    let mut big = b"set=1\n".to_vec();
    while big.len() <= MAX_REQUEST_BYTES {
        big.extend_from_slice(b"listen_port=1\n");
    }
    assert!(matches!(frame(&big[..1000]), Frame::Incomplete));
    let Frame::Invalid(e) = frame(&big) else {
        panic!()
    };
    assert_eq!(e.errno(), errno::EPROTO);
}

#[test]
fn empty_set_is_a_no_op() {
    let u = set("").unwrap();
    assert!(u.private_key.is_none() && u.peers.is_empty() && !u.replace_peers);
    let Frame::Request { len, .. } = frame(b"set=1\n\nget=1\n\n") else {
        panic!()
    };
    assert_eq!(len, 7);
}

#[test]
fn wg_setconf_output_parses() {
    // What `wg setconf` sends for a two-peer file (wireguard-tools ipc-uapi.h).
    let body = format!(
        "private_key={K1}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n\
         public_key={K2}\npreshared_key={K1}\nendpoint=192.0.2.1:51820\n\
         persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=100.64.0.1/32\n\
         allowed_ip=fd7a:115c:a1e0::1/128\n\
         public_key={K1}\nendpoint=[2001:db8::2]:51821\nreplace_allowed_ips=true\n"
    );
    let u = set(&body).unwrap();
    assert_eq!(
        u.private_key.as_ref().map(StaticSecret::to_bytes),
        parse_key(K1)
    );
    assert_eq!(
        (u.listen_port, u.fwmark, u.replace_peers),
        (Some(51820), Some(0), true)
    );
    assert_eq!(u.peers.len(), 2);
    let p = &u.peers[0];
    assert_eq!(p.public_key, key(K2));
    assert_eq!(p.preshared_key, parse_key(K1));
    assert_eq!(p.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
    assert_eq!(p.persistent_keepalive, Some(25));
    assert_eq!(
        p.allowed_ips,
        [
            AllowedIpChange::ReplaceAll,
            AllowedIpChange::Add(net("100.64.0.1/32")),
            AllowedIpChange::Add(net("fd7a:115c:a1e0::1/128")),
        ]
    );
    assert!(!p.remove && !p.update_only && p.name.is_none());
    let q = &u.peers[1];
    assert_eq!(q.endpoint, Some("[2001:db8::2]:51821".parse().unwrap()));
    assert_eq!(q.allowed_ips, [AllowedIpChange::ReplaceAll]);
    assert_eq!((q.preshared_key, q.persistent_keepalive), (None, None));
}

#[test]
fn peer_flags_and_incremental_allowed_ips() {
    let u = set(&format!(
        "public_key={K1}\nremove=true\npublic_key={K2}\nupdate_only=true\nprotocol_version=1\n\
         allowed_ip=-10.0.0.0/24\nallowed_ip=10.0.1.7/24\npersistent_keepalive_interval=0"
    ))
    .unwrap();
    assert!(u.peers[0].remove);
    let p = &u.peers[1];
    assert!(p.update_only && !p.remove);
    assert_eq!(p.persistent_keepalive, Some(0));
    // Host bits are cleared, as wireguard-go does on insert.
    assert_eq!(
        p.allowed_ips,
        [
            AllowedIpChange::Remove(net("10.0.0.0/24")),
            AllowedIpChange::Add(net("10.0.1.0/24")),
        ]
    );
    // Upper-case hex is accepted (Go's hex decoder is case-insensitive); v4-mapped endpoints
    // are normalised.
    let u = set(&format!(
        "public_key={}\nendpoint=[::ffff:192.0.2.7]:9",
        K1.to_uppercase()
    ))
    .unwrap();
    assert_eq!(u.peers[0].public_key, key(K1));
    assert_eq!(u.peers[0].endpoint, Some("192.0.2.7:9".parse().unwrap()));
}

#[test]
fn bad_values_and_keys_are_refused_with_the_reference_errno() {
    let zero = "0".repeat(64);
    let cases: Vec<(String, i32)> = vec![
        ("listen_port".into(), errno::EPROTO),
        ("listen_port=65536".into(), errno::EINVAL),
        ("listen_port=+1".into(), errno::EINVAL),
        ("listen_port= 1".into(), errno::EINVAL),
        ("fwmark=-1".into(), errno::EINVAL),
        ("private_key=abc".into(), errno::EINVAL),
        (format!("private_key={zero}"), errno::EINVAL),
        (format!("private_key={}", &K1[..63]), errno::EINVAL),
        (format!("private_key={}g", &K1[..63]), errno::EINVAL),
        ("replace_peers=false".into(), errno::EINVAL),
        ("bogus=1".into(), errno::EINVAL),
        ("endpoint=1.2.3.4:5".into(), errno::EINVAL),
        (format!("public_key={K1}\nbogus=1"), errno::EINVAL),
        (format!("public_key={K1}\nendpoint=1.2.3.4"), errno::EINVAL),
        (
            format!("public_key={K1}\nendpoint=fd00::1:51820"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nendpoint=0.0.0.0:51820"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nendpoint=1.2.3.4:0"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nallowed_ip=10.0.0.1"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nallowed_ip=10.0.0.1/33"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nallowed_ip=fd00::/129"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nallowed_ip=--10.0.0.0/8"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\npersistent_keepalive_interval=70000"),
            errno::EINVAL,
        ),
        (
            format!("public_key={K1}\nprotocol_version=2"),
            errno::EINVAL,
        ),
        (format!("public_key={K1}\nremove=yes"), errno::EINVAL),
        (format!("public_key={K1}\nupdate_only=1"), errno::EINVAL),
        (
            format!("public_key={K1}\nreplace_allowed_ips=TRUE"),
            errno::EINVAL,
        ),
        (format!("public_key={K1}\nprivate_key={K2}"), errno::EINVAL),
        (format!("public_key={K1}\nlisten_port=1"), errno::EINVAL),
        (format!("public_key={K1}\nnoequals"), errno::EPROTO),
        (
            format!("public_key={K1}\n{}", "x".repeat(300)),
            errno::EPROTO,
        ),
    ];
    for (body, expected) in cases {
        let e = set(&body).expect_err(&body);
        assert_eq!(e.errno(), expected, "{body}: {e}");
    }
    // Not UTF-8.
    let Frame::Request { request, .. } = frame(b"set=1\nlisten_port=\xff\n\n") else {
        panic!()
    };
    assert_eq!(request.unwrap_err().errno(), errno::EPROTO);
}

#[test]
fn a_bad_line_anywhere_refuses_the_whole_set() {
    let mut body = String::new();
    for i in 0..100 {
        body.push_str(&format!(
            "public_key={:064x}\nallowed_ip=10.1.{}.0/24\n",
            i + 1,
            i
        ));
    }
    assert_eq!(set(&body).unwrap().peers.len(), 100);
    body.push_str("allowed_ip=nonsense\n");
    assert!(set(&body).is_err());
}

#[test]
fn get_reply_is_what_wg_parses() {
    let state = DeviceState {
        private_key: Some(StaticSecret::from(parse_key(K1).unwrap())),
        listen_port: 51820,
        fwmark: 0,
        peers: vec![
            PeerState {
                public_key: key(K2),
                preshared_key: None,
                endpoint: Some("[2001:db8::1]:51821".parse().unwrap()),
                last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5_000_000)),
                rx_bytes: 148,
                tx_bytes: 92,
                persistent_keepalive: 25,
                allowed_ips: vec![net("100.64.0.1/32"), net("fd00::/64")],
            },
            PeerState {
                public_key: key(K1),
                preshared_key: Some([0xab; 32]),
                endpoint: None,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: 0,
                allowed_ips: vec![],
            },
        ],
    };
    let expected = format!(
        "private_key={K1}\nlisten_port=51820\n\
         public_key={K2}\npreshared_key={zero}\nprotocol_version=1\n\
         endpoint=[2001:db8::1]:51821\nlast_handshake_time_sec=1700000000\n\
         last_handshake_time_nsec=5000000\ntx_bytes=92\nrx_bytes=148\n\
         persistent_keepalive_interval=25\nallowed_ip=100.64.0.1/32\nallowed_ip=fd00::/64\n\
         public_key={K1}\npreshared_key={ab}\nprotocol_version=1\n\
         last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
         persistent_keepalive_interval=0\nerrno=0\n\n",
        zero = "0".repeat(64),
        ab = "ab".repeat(32),
    );
    assert_eq!(format_get(&state), expected);

    // Without secrets: no private key and no pre-shared keys at all.
    let hidden = DeviceState {
        private_key: None,
        fwmark: 3,
        peers: vec![PeerState {
            preshared_key: None,
            ..state.peers[1].clone()
        }],
        ..state
    };
    let text = format_get(&hidden);
    assert!(!text.contains("private_key") && !text.contains("preshared_key"));
    assert!(text.contains("fwmark=3\n"));
    assert_eq!(format_errno(-22), "errno=-22\n\n");
}

#[test]
fn parse_key_round_trips_format() {
    let mut out = String::new();
    line_key(&mut out, "k", &parse_key(K2).unwrap());
    assert_eq!(out, format!("k={K2}\n"));
}

proptest! {
    /// Whatever arrives, framing and parsing return; nothing panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = frame(&bytes);
        let mut with_op = b"set=1\n".to_vec();
        with_op.extend_from_slice(&bytes);
        with_op.extend_from_slice(b"\n\n");
        let _ = frame(&with_op);
    }

    /// Lines made of real keys with arbitrary values: parsed or refused, never a panic.
    #[test]
    fn arbitrary_values_of_real_keys_never_panic(
        lines in proptest::collection::vec(
            (prop::sample::select(vec![
                "private_key", "listen_port", "fwmark", "replace_peers", "public_key",
                "remove", "update_only", "preshared_key", "endpoint",
                "persistent_keepalive_interval", "replace_allowed_ips", "allowed_ip",
                "protocol_version",
            ]), "[ -~]{0,80}"),
            0..20,
        )
    ) {
        let body: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let _ = parse_set(body.as_bytes());
    }
}
