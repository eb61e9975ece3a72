//! The real `wg` tool (wireguard-tools from Debian) against a running `wgagent agent` binary:
//! `wg show`, `wg show dump` field by field, `wg set` add/update/remove, `wg syncconf`, and key
//! rotation with `wg set private-key` followed by a request from a control node that learned
//! the new key. Plus: a live socket is never taken over; a stale one is.
//!
//! Root only: `wg` finds userspace interfaces only in /var/run/wireguard/. Prints
//! `SKIP uapi_wg: <reason>` and passes otherwise. Interface names carry the test process's pid,
//! so parallel runs never meet. The control nodes run in this process over loopback UDP.

#[path = "common/agent_proc.rs"]
mod agent_proc;
mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proc::{AgentProc, free_udp_port};
use common::*;
use netns::{Out, STEP};
use wgagent::keys;
use wgagent::node::Node;
use wgagent::wg::{DeviceUpdate, PeerUpdate};

const WAIT: Duration = Duration::from_secs(15);

fn skip_reason() -> Option<String> {
    if let Some(why) = netns::missing_prerequisites(&["wg"]) {
        return Some(why);
    }
    if let Err(e) = std::fs::create_dir_all("/var/run/wireguard") {
        return Some(format!("cannot create /var/run/wireguard: {e}"));
    }
    None
}

/// A unique interface name (at most 15 bytes): `wgt<pid><tag>`.
fn ifname(tag: char) -> String {
    format!("wgt{}{tag}", std::process::id() % 10_000_000)
}

fn socket(name: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{name}.sock"))
}

/// Runs `wg <args>` (bounded) off the async threads.
async fn wg(args: &[&str]) -> Out {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        netns::run(Command::new("wg").args(&args).stdin(Stdio::null()), STEP)
    })
    .await
    .unwrap()
}

async fn wg_ok(args: &[&str]) -> String {
    let out = wg(args).await;
    assert!(out.ok(), "wg {args:?}: {out:?}");
    out.stdout
}

/// `wg show NAME dump`: the interface line and one line per peer, split on tabs.
struct Dump {
    interface: Vec<String>,
    peers: Vec<Vec<String>>,
}

impl Dump {
    fn peer(&self, key: &wgagent::wg::PublicKey) -> Option<&Vec<String>> {
        let b64 = keys::encode_public(key);
        self.peers.iter().find(|p| p[0] == b64)
    }
}

async fn dump(name: &str) -> Dump {
    let text = wg_ok(&["show", name, "dump"]).await;
    let mut lines = text
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<String>>());
    let interface = lines.next().expect("interface line");
    assert_eq!(interface.len(), 4, "{text}");
    let peers: Vec<_> = lines.collect();
    assert!(peers.iter().all(|p| p.len() == 8), "{text}");
    Dump { interface, peers }
}

fn agent_config(name: &str, port: u16, peers: &[(&Keypair, &str)]) -> String {
    let mut text = format!(
        "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"{AGENT_IP}\"]\n\
         listen_port = {port}\nname = \"{name}\"\n\n[api]\nshutdown_grace = \"1s\"\n\
         state_dir = \"@DIR@/state\"\n\n"
    );
    for (key, ip) in peers {
        text.push_str(&format!(
            "[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"{ip}/32\"]\n\n",
            keys::encode_public(&key.public)
        ));
    }
    text
}

fn write_key(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

async fn control(key: &Keypair, addr: &str, agent_pub: wgagent::wg::PublicKey, port: u16) -> Node {
    let ep = SocketAddr::new(ip("127.0.0.1"), port);
    node(
        key.secret.clone(),
        addr,
        0,
        vec![peer(agent_pub, "100.64.0.10/32", Some(ep), None)],
    )
    .await
}

/// True if `node` gets an answer from the API within `within`.
async fn reachable(node: &Node, within: Duration) -> bool {
    let ok = tokio::time::timeout(within, async {
        let mut http = Http::connect(node, api_addr()).await.ok()?;
        Some(http.call("GET", "/api/v0/health", None).await.0)
    })
    .await;
    matches!(ok, Ok(Some(200)))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wg_show_set_syncconf_and_key_rotation_against_the_agent() {
    if let Some(why) = skip_reason() {
        println!("SKIP uapi_wg: {why}");
        return;
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        let name = ifname('a');
        let dir = tempfile::tempdir().unwrap();
        let (ak, c1, c2, c3) = (keypair(), keypair(), keypair(), keypair());
        let agent_priv = keys::encode_private(&ak.secret);
        write_key(&dir.path().join("agent.key"), &agent_priv);
        let port = free_udp_port();
        let mut agent = AgentProc::start(
            dir.path(),
            &agent_config(&name, port, &[(&c1, "100.64.0.1")]),
            &[],
        );
        agent.wait_log(0, "WireGuard UAPI socket ready", WAIT);
        agent.wait_log(0, "agent up", WAIT);
        let mode = std::fs::metadata(socket(&name)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );

        // A request from control-1, then `wg show` sees it.
        let n1 = control(&c1, "100.64.0.1", ak.public, port).await;
        assert!(reachable(&n1, WAIT).await);
        // The handshake time is published at the next 250 ms timer tick.
        let mut show = String::new();
        for _ in 0..20 {
            show = wg_ok(&["show", &name]).await;
            if show.contains("latest handshake") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for needle in [
            format!("interface: {name}"),
            format!("public key: {}", keys::encode_public(&ak.public)),
            "private key: (hidden)".to_owned(),
            format!("listening port: {port}"),
            format!("peer: {}", keys::encode_public(&c1.public)),
            format!("endpoint: 127.0.0.1:{}", n1.udp_addr().port()),
            "allowed ips: 100.64.0.1/32".to_owned(),
            "latest handshake: ".to_owned(),
            "transfer: ".to_owned(),
        ] {
            assert!(show.contains(&needle), "{needle:?} missing from:\n{show}");
        }

        // `wg show dump`, field by field; transfer counters agree with control-1's own.
        let d = dump(&name).await;
        assert_eq!(
            d.interface,
            [
                agent_priv.clone(),
                keys::encode_public(&ak.public),
                port.to_string(),
                "off".to_owned()
            ]
        );
        assert_eq!(d.peers.len(), 1);
        let p = d.peer(&c1.public).unwrap();
        assert_eq!(p[1], "(none)", "preshared key");
        assert_eq!(p[2], format!("127.0.0.1:{}", n1.udp_addr().port()));
        assert_eq!(p[3], "100.64.0.1/32");
        let handshake: u64 = p[4].parse().unwrap();
        assert!(
            handshake > 0 && now_secs().abs_diff(handshake) < 60,
            "{p:?}"
        );
        assert_eq!(p[7], "off", "keepalive");
        let mut agreed = false;
        for _ in 0..50 {
            let d = dump(&name).await;
            let p = d.peer(&c1.public).unwrap();
            let (rx, tx): (u64, u64) = (p[5].parse().unwrap(), p[6].parse().unwrap());
            let c = &n1.stats().wg.peers[0];
            if rx > 0 && tx > 0 && (rx, tx) == (c.tx_bytes, c.rx_bytes) {
                agreed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(agreed, "wg's transfer counters never matched control-1's");

        // wg set: add control-2; it reaches the API without a restart.
        let c2_pub = keys::encode_public(&c2.public);
        wg_ok(&[
            "set",
            &name,
            "peer",
            &c2_pub,
            "allowed-ips",
            "100.64.0.2/32",
        ])
        .await;
        let n2 = control(&c2, "100.64.0.2", ak.public, port).await;
        assert!(
            reachable(&n2, WAIT).await,
            "peer added with wg set cannot reach the API"
        );
        let d = dump(&name).await;
        assert_eq!(d.peer(&c2.public).unwrap()[3], "100.64.0.2/32");

        // wg set: update allowed IPs, endpoint and keepalive; the old range is refused.
        let ep2 = format!("127.0.0.1:{}", n2.udp_addr().port());
        let hs1 = n1.stats().wg.peers[0].handshakes;
        wg_ok(&[
            "set",
            &name,
            "peer",
            &c2_pub,
            "allowed-ips",
            "100.64.0.3/32,fd00::3/128",
            "endpoint",
            &ep2,
            "persistent-keepalive",
            "25",
        ])
        .await;
        let d = dump(&name).await;
        let p = d.peer(&c2.public).unwrap();
        assert_eq!(
            (p[2].as_str(), p[3].as_str(), p[7].as_str()),
            (ep2.as_str(), "100.64.0.3/32,fd00::3/128", "25")
        );
        assert!(
            !reachable(&n2, Duration::from_secs(2)).await,
            "the old range still works"
        );

        // A pre-shared key for control-1 (wg genpsk), which control-1 learns too.
        let psk = wg_ok(&["genpsk"]).await.trim().to_owned();
        let psk_file = dir.path().join("c1.psk");
        write_key(&psk_file, &psk);
        wg_ok(&[
            "set",
            &name,
            "peer",
            &keys::encode_public(&c1.public),
            "preshared-key",
            psk_file.to_str().unwrap(),
        ])
        .await;
        let mut learn = PeerUpdate::new(ak.public);
        learn.preshared_key = Some(keys::decode_key(&psk).unwrap());
        n1.update(DeviceUpdate {
            peers: vec![learn],
            ..DeviceUpdate::default()
        })
        .await
        .unwrap();
        assert!(reachable(&n1, WAIT).await, "PSK peer does not interoperate");
        assert_eq!(dump(&name).await.peer(&c1.public).unwrap()[1], psk);
        assert!(n1.stats().wg.peers[0].handshakes > hs1);

        // wg set remove.
        wg_ok(&["set", &name, "peer", &c2_pub, "remove"]).await;
        let d = dump(&name).await;
        assert!(d.peer(&c2.public).is_none() && d.peers.len() == 1);

        // wg syncconf: control-1 unchanged (its session stays), control-3 added.
        let conf = format!(
            "[Interface]\nPrivateKey = {agent_priv}\nListenPort = {port}\n\n\
             [Peer]\nPublicKey = {}\nPresharedKey = {psk}\nAllowedIPs = 100.64.0.1/32\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 100.64.0.4/32\n",
            keys::encode_public(&c1.public),
            keys::encode_public(&c3.public),
        );
        let conf_file = dir.path().join("sync.conf");
        write_key(&conf_file, &conf);
        let hs1 = n1.stats().wg.peers[0].handshakes;
        wg_ok(&["syncconf", &name, conf_file.to_str().unwrap()]).await;
        let d = dump(&name).await;
        assert_eq!(d.peers.len(), 2);
        assert_eq!(d.peer(&c3.public).unwrap()[3], "100.64.0.4/32");
        assert_eq!(d.peer(&c1.public).unwrap()[1], psk);
        let n3 = control(&c3, "100.64.0.4", ak.public, port).await;
        assert!(
            reachable(&n3, WAIT).await,
            "peer added by syncconf cannot reach the API"
        );
        assert!(reachable(&n1, WAIT).await);
        assert_eq!(
            n1.stats().wg.peers[0].handshakes,
            hs1,
            "syncconf re-handshook an unchanged peer"
        );

        // Key rotation: a new private key; control-1 with the old public key gets nothing, and
        // once it learns the new key its requests work again.
        let new_key = wg_ok(&["genkey"]).await.trim().to_owned();
        let new_file = dir.path().join("new.key");
        write_key(&new_file, &new_key);
        wg_ok(&["set", &name, "private-key", new_file.to_str().unwrap()]).await;
        let new_pub = keys::public_key(&keys::decode_private(&new_key).unwrap());
        assert_eq!(
            wg_ok(&["show", &name, "public-key"]).await.trim(),
            keys::encode_public(&new_pub)
        );
        assert!(
            !reachable(&n1, Duration::from_secs(2)).await,
            "old key still works"
        );
        let mut rekeyed = peer(
            new_pub,
            "100.64.0.10/32",
            Some(SocketAddr::new(ip("127.0.0.1"), port)),
            None,
        );
        rekeyed.preshared_key = Some(keys::decode_key(&psk).unwrap());
        n1.update(DeviceUpdate {
            peers: vec![
                PeerUpdate::remove(ak.public),
                PeerUpdate::from_config(&rekeyed),
            ],
            ..DeviceUpdate::default()
        })
        .await
        .unwrap();
        assert!(
            reachable(&n1, WAIT).await,
            "no request after learning the new key"
        );
        assert_eq!(dump(&name).await.interface[0], new_key);

        // wg set listen-port moves the socket live.
        let new_port = free_udp_port();
        wg_ok(&["set", &name, "listen-port", &new_port.to_string()]).await;
        assert_eq!(dump(&name).await.interface[2], new_port.to_string());
        let line = agent.wait_log(0, "WireGuard socket moved to a new port", WAIT);
        assert!(line.contains(&new_port.to_string()), "{line}");

        // A request the agent refuses (port 0): an error, and nothing of it applied.
        let before = dump(&name).await.peers;
        let out = wg(&[
            "set",
            &name,
            "peer",
            &keys::encode_public(&c3.public),
            "allowed-ips",
            "10.0.0.0/8",
            "endpoint",
            "[::1]:0",
        ])
        .await;
        assert!(!out.ok(), "{out:?}");
        assert!(out.stderr.contains("Unable to modify interface"), "{out:?}");
        let after = dump(&name).await.peers;
        let lines =
            |p: &[Vec<String>]| -> Vec<String> { p.iter().map(|l| l[..4].join(" ")).collect() };
        assert_eq!(lines(&after), lines(&before));

        agent.signal(libc::SIGTERM);
        assert!(agent.wait_exit(WAIT).success());
        assert!(!socket(&name).exists(), "socket left behind");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_live_socket_is_never_taken_over_and_a_stale_one_is() {
    if let Some(why) = skip_reason() {
        println!("SKIP uapi_wg: {why}");
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let name = ifname('b');
        let dir = tempfile::tempdir().unwrap();
        let start = |sub: &str| {
            let d = dir.path().join(sub);
            std::fs::create_dir(&d).unwrap();
            write_key(
                &d.join("agent.key"),
                &keys::encode_private(&keypair().secret),
            );
            AgentProc::start(&d, &agent_config(&name, 0, &[]), &[])
        };
        let mut first = start("one");
        first.wait_log(0, "WireGuard UAPI socket ready", WAIT);
        let mut second = start("two");
        let status = second.wait_exit(WAIT);
        assert!(!status.success());
        let log = second.log();
        assert!(
            log.contains(socket(&name).to_str().unwrap())
                && log.contains("served by another running process"),
            "{log}"
        );
        assert!(first.exited().is_none());
        wg_ok(&["show", &name]).await;

        // SIGKILL leaves the socket file behind: the next agent replaces the stale file.
        first.signal(libc::SIGKILL);
        first.wait_exit(WAIT);
        assert!(socket(&name).exists());
        let third = start("three");
        third.wait_log(0, "replacing a stale UAPI socket", WAIT);
        third.wait_log(0, "agent up", WAIT);
        wg_ok(&["show", &name]).await;
    })
    .await
    .expect("test timed out");
}
