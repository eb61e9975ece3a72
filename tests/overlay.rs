//! End to end over real WireGuard on loopback UDP: two (or three) real Nodes, the real API.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_route_through_the_tunnel() {
    tokio::time::timeout(T, async {
        let p = pair().await;
        let mut c = Http::connect(&p.control, api_addr()).await.unwrap();
        let (s, v) = c.call("GET", "/api/v0/health", None).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
        let (s, v) = c
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "echo through-the-tunnel"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (s, v) = c
            .call(
                "GET",
                &format!("/api/v0/processes/{id}/output?wait=true"),
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["output"], "through-the-tunnel\n");
        assert_eq!(v["exit_code"], 0);
        let (s, v) = c.call("GET", "/api/v0/processes/list", None).await;
        assert_eq!(s, 200);
        assert_eq!(v["processes"][0]["id"], id.as_str());
        let (_, v) = c
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "sleep 300"})),
            )
            .await;
        let sleeper = v["id"].as_str().unwrap().to_owned();
        let (s, _) = c
            .call(
                "POST",
                &format!("/api/v0/processes/{sleeper}/signal"),
                Some(json!({"signal": "kill"})),
            )
            .await;
        assert_eq!(s, 200);
        let (_, v) = c
            .call(
                "GET",
                &format!("/api/v0/processes/{sleeper}/output?wait=true"),
                None,
            )
            .await;
        assert_eq!(v["running"], false);
        let (s, _) = c
            .call("DELETE", &format!("/api/v0/processes/{sleeper}"), None)
            .await;
        assert_eq!(s, 200);
        let (s, v) = c.call("GET", "/api/v0/nowhere", None).await;
        assert_eq!(s, 404, "{v}");
        let stats = p.agent.stats();
        assert!(stats.wg.peers[0].handshakes >= 1);
        assert!(stats.wg.peers[0].rx_packets > 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn two_control_peers_share_one_agent() {
    tokio::time::timeout(T, async {
        let (agent, c1, c2) = agent_and_two_controls().await;
        let _manager = serve_api(&agent);
        let mut h1 = Http::connect(&c1, api_addr()).await.unwrap();
        let mut h2 = Http::connect(&c2, api_addr()).await.unwrap();
        let (_, v) = h1
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "echo from-one; sleep 300"})),
            )
            .await;
        let id = v["id"].as_str().unwrap().to_owned();
        // The other replica sees it, reads it and kills it.
        let (s, v) = h2.call("GET", "/api/v0/processes/list", None).await;
        assert_eq!(s, 200);
        assert_eq!(v["processes"][0]["id"], id.as_str());
        let mut seen = false;
        for _ in 0..100 {
            let (_, v) = h2
                .call("GET", &format!("/api/v0/processes/{id}/output"), None)
                .await;
            assert_eq!(v["running"], true);
            if v["output"] == "from-one\n" {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen, "second replica never saw the first one's output");
        let (s, _) = h2
            .call(
                "POST",
                &format!("/api/v0/processes/{id}/signal"),
                Some(json!({"signal": "kill"})),
            )
            .await;
        assert_eq!(s, 200);
        let (_, v) = h1
            .call(
                "GET",
                &format!("/api/v0/processes/{id}/output?wait=true"),
                None,
            )
            .await;
        assert_eq!(v["running"], false);
        assert_eq!(v["output"], "from-one\n");
        let stats = agent.stats();
        assert!(stats.wg.peers.iter().all(|p| p.handshakes >= 1));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn inner_source_outside_allowed_ips_is_dropped_and_counted() {
    tokio::time::timeout(T, async {
        let ak = keypair();
        let ck = keypair();
        // The agent allows this peer only 100.64.0.1; the peer uses 100.64.0.99 as its address.
        let agent = node(
            ak.secret.clone(),
            AGENT_IP,
            0,
            vec![peer(ck.public, "100.64.0.1/32", None, None)],
        )
        .await;
        let _m = serve_api(&agent);
        let spoofer = node(
            ck.secret.clone(),
            "100.64.0.99",
            0,
            vec![peer(
                ak.public,
                "100.64.0.10/32",
                Some(loopback(&agent)),
                None,
            )],
        )
        .await;
        let r = tokio::time::timeout(Duration::from_secs(3), spoofer.connect(api_addr())).await;
        assert!(
            !matches!(r, Ok(Ok(_))),
            "a spoofed source must not get a connection"
        );
        let stats = agent.stats();
        assert!(
            stats.wg.peers[0].handshakes >= 1,
            "the session itself is authentic"
        );
        assert!(
            stats.wg.peers[0].drop_allowed_ips >= 1,
            "{:?}",
            stats.wg.peers[0]
        );
        assert_eq!(
            stats.netstack.packets_in, 0,
            "nothing may reach the netstack"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_key_gets_nothing() {
    tokio::time::timeout(T, async {
        let p = pair().await;
        let stranger = keypair();
        let intruder = node(
            stranger.secret.clone(),
            "100.64.0.1",
            0,
            vec![peer(
                p.agent_keys.public,
                "100.64.0.10/32",
                Some(loopback(&p.agent)),
                None,
            )],
        )
        .await;
        let r = tokio::time::timeout(Duration::from_secs(3), intruder.connect(api_addr())).await;
        assert!(!matches!(r, Ok(Ok(_))));
        let a = p.agent.stats();
        assert!(a.wg.device.unknown_peer >= 1, "{:?}", a.wg.device);
        let i = intruder.stats();
        assert_eq!(
            i.datagrams_in, 0,
            "the agent must not answer an unknown key at all"
        );
        assert_eq!(i.wg.peers[0].handshakes, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn control_recovers_after_agent_restart() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ak = keypair();
        let ck = keypair();
        // Control has a fixed UDP port so the (NAT'd-style) agent can dial it with keepalive.
        let control = node(
            ck.secret.clone(),
            "100.64.0.1",
            0,
            vec![peer(ak.public, "100.64.0.10/32", None, None)],
        )
        .await;
        let control_ep = Some(loopback(&control));
        let agent = node(
            ak.secret.clone(),
            AGENT_IP,
            0,
            vec![peer(ck.public, "100.64.0.1/32", control_ep, Some(25))],
        )
        .await;
        let _m = serve_api(&agent);
        let mut h = connect_retry(&control).await;
        let (s, _) = h.call("GET", "/api/v0/health", None).await;
        assert_eq!(s, 200);
        // Restart: the agent process goes away and comes back with the same key (new UDP port,
        // as a NAT'd agent would), new sessions, empty process table.
        assert!(agent.shutdown(Duration::from_secs(5)).await);
        drop(agent);
        let agent = node(
            ak.secret.clone(),
            AGENT_IP,
            0,
            vec![peer(ck.public, "100.64.0.1/32", control_ep, Some(25))],
        )
        .await;
        let _m = serve_api(&agent);
        let mut h = connect_retry(&control).await;
        let (s, v) = h.call("GET", "/api/v0/processes/list", None).await;
        assert_eq!((s, &v["processes"]), (200, &json!([])));
        let stats = control.stats();
        assert!(stats.wg.peers[0].handshakes >= 2, "{:?}", stats.wg.peers[0]);
        assert_ne!(
            stats.wg.peers[0].endpoint, None,
            "control learnt the agent's new endpoint by roaming"
        );
    })
    .await
    .unwrap();
}

/// Connects once the agent (which dials in) has completed its handshake; bounded.
async fn connect_retry(control: &wgagent::node::Node) -> Http {
    for _ in 0..50 {
        if let Ok(Ok(h)) =
            tokio::time::timeout(Duration::from_secs(2), Http::connect(control, api_addr())).await
        {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not connect to the agent");
}

#[tokio::test]
async fn ten_mib_each_way_arrives_intact() {
    tokio::time::timeout(T, async {
        let p = pair().await;
        let mut listener = p.agent.listen(9000).unwrap().remove(0);
        const N: usize = 10 << 20;
        let data: Vec<u8> = (0..N)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let expect = data.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::with_capacity(N);
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < N {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF at {}", got.len());
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == expect, "upload corrupted");
            // Echo it back, then close.
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut c = p
            .control
            .connect(std::net::SocketAddr::new(ip(AGENT_IP), 9000))
            .await
            .unwrap();
        let (mut r, mut w) = tokio::io::split(&mut c);
        let writer = async {
            w.write_all(&data).await.unwrap();
        };
        let reader = async {
            let mut back = Vec::with_capacity(N);
            r.read_to_end(&mut back).await.unwrap();
            back
        };
        let (_, back) = tokio::join!(writer, reader);
        assert_eq!(back.len(), N);
        assert!(back == data, "download corrupted");
        server.await.unwrap();
        let s = p.agent.stats();
        assert_eq!(s.inbound_dropped, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn allowed_sources_filters_callers_by_tunnel_address() {
    tokio::time::timeout(T, async {
        let (agent, c1, c2) = agent_and_two_controls().await;
        // Both are WireGuard peers, but only 100.64.0.1 may use the API.
        let _m = serve_api_filtered(&agent, vec![net("100.64.0.1/32")]);
        let (s, v1) = Http::connect(&c1, api_addr())
            .await
            .unwrap()
            .call("GET", "/api/v0/processes/list", None)
            .await;
        assert_eq!(s, 200, "{v1}");
        let (s, v) = Http::connect(&c2, api_addr())
            .await
            .unwrap()
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "true"})),
            )
            .await;
        assert_eq!(s, 403, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("100.64.0.2"), "{v}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_flood_does_not_starve_keepalives() {
    tokio::time::timeout(T, async {
        let (ak, ck) = (keypair(), keypair());
        let agent = node(
            ak.secret.clone(),
            AGENT_IP,
            0,
            vec![peer(ck.public, "100.64.0.1/32", None, None)],
        )
        .await;
        let _m = serve_api(&agent);
        let control = node(
            ck.secret.clone(),
            "100.64.0.1",
            0,
            vec![peer(
                ak.public,
                "100.64.0.10/32",
                Some(loopback(&agent)),
                Some(1),
            )],
        )
        .await;
        let (s, _) = Http::connect(&control, api_addr())
            .await
            .unwrap()
            .call("GET", "/api/v0/health", None)
            .await;
        assert_eq!(s, 200);
        let before = control.stats().wg.peers[0].tx_bytes;
        // Junk "data" datagrams with an unknown receiver index at the control's port: anyone on
        // the network can send these; they are dropped before any crypto.
        let target = loopback(&control);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let floods: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    let mut junk = [0u8; 32];
                    junk[0] = 4;
                    let deadline = std::time::Instant::now() + Duration::from_secs(4);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && std::time::Instant::now() < deadline
                    {
                        let _ = sock.send_to(&junk, target);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent = control.stats().wg.peers[0].tx_bytes - before;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for f in floods {
            f.join().unwrap();
        }
        let stats = control.stats();
        assert!(
            stats.wg.device.unknown_index > 1000,
            "the flood arrived: {:?}",
            stats.wg.device
        );
        // Persistent keepalive every second: at least two 32-byte keepalives in 3 s.
        assert!(
            sent >= 64,
            "keepalives starved during the flood: {sent} bytes sent"
        );
    })
    .await
    .unwrap();
}
