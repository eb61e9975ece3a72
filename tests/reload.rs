//! SIGHUP on the real `wgagent agent` binary: the file is re-read and applied live (peers, log
//! level), running processes are untouched, a bad file changes nothing and is reported with
//! the same error as at start, keys that need a restart say so; SIGHUP never kills the agent, so
//! no child is orphaned. No root needed (no UAPI socket here).

#[path = "common/agent_proc.rs"]
mod agent_proc;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use agent_proc::{AgentProc, alive, descends_from, free_udp_port};
use common::*;
use serde_json::json;
use wgagent::config::Config;
use wgagent::keys;
use wgagent::node::Node;

const WAIT: Duration = Duration::from_secs(15);

fn config(port: u16, address: &str, level: &str, peers: &[(&str, &Keypair, &str)]) -> String {
    let mut text = format!(
        "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"{address}\"]\n\
         listen_port = {port}\nuapi = false\n\n[api]\nshutdown_grace = \"1s\"\nstate_dir = \"@DIR@/state\"\n\n\
         [log]\nlevel = \"{level}\"\n\n"
    );
    for (name, key, ip) in peers {
        text.push_str(&format!(
            "[[peer]]\nname = \"{name}\"\npublic_key = \"{}\"\nallowed_ips = [\"{ip}/32\"]\n\n",
            keys::encode_public(&key.public)
        ));
    }
    text
}

async fn control(key: &Keypair, addr: &str, agent: &Keypair, port: u16) -> Node {
    let ep = SocketAddr::new(ip("127.0.0.1"), port);
    node(
        key.secret.clone(),
        addr,
        0,
        vec![peer(agent.public, "100.64.0.10/32", Some(ep), None)],
    )
    .await
}

/// True if `node` gets an answer from the API within 2 s.
async fn reachable(node: &Node) -> bool {
    let ok = tokio::time::timeout(Duration::from_secs(2), async {
        let mut http = Http::connect(node, api_addr()).await.ok()?;
        Some(http.call("GET", "/api/v0/health", None).await.0)
    })
    .await;
    matches!(ok, Ok(Some(200)))
}

/// `text` with `@DIR@` replaced, as `AgentProc::start` writes it.
fn at(text: &str, dir: &std::path::Path) -> String {
    text.replace("@DIR@", dir.to_str().unwrap())
}

/// Sends SIGHUP and waits for the reload's outcome line after it.
fn reload(agent: &AgentProc, outcome: &str) -> String {
    let mark = agent.mark();
    agent.signal(libc::SIGHUP);
    agent.wait_log(mark, outcome, WAIT)
}

fn label(key: &Keypair) -> String {
    keys::encode_public(&key.public)[..8].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_peers_keeps_processes_and_refuses_bad_files() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (ak, c1, c2, c3) = (keypair(), keypair(), keypair(), keypair());
        let key_file = dir.path().join("agent.key");
        std::fs::write(&key_file, keys::encode_private(&ak.secret)).unwrap();
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let port = free_udp_port();
        let first = config(
            port,
            AGENT_IP,
            "info",
            &[("c1", &c1, "100.64.0.1"), ("c2", &c2, "100.64.0.2")],
        );
        let mut agent = AgentProc::start(dir.path(), &first, &[]);
        agent.wait_log(0, "agent up", WAIT);
        let n1 = control(&c1, "100.64.0.1", &ak, port).await;
        let n2 = control(&c2, "100.64.0.2", &ak, port).await;
        // c3 is not known yet. (A fresh node below: this one's failed handshake would only be
        // retried 5 s later, WireGuard's REKEY_TIMEOUT.)
        let early = control(&c3, "100.64.0.3", &ak, port).await;
        assert!(reachable(&n2).await && !reachable(&early).await);
        early.shutdown(Duration::from_secs(2)).await;

        // A background process started before the reload.
        let mut http = Http::connect(&n1, api_addr()).await.unwrap();
        let (status, v) = http
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "sleep 300", "background": true})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (_, list) = http.call("GET", "/api/v0/processes/list", None).await;
        let pid = list["processes"][0]["pid"].as_i64().unwrap() as i32;
        assert!(descends_from(pid, agent.pid()));

        // c2 leaves the file, c3 joins; the log level goes to debug.
        let second = config(
            port,
            AGENT_IP,
            "debug",
            &[("c1", &c1, "100.64.0.1"), ("c3", &c3, "100.64.0.3")],
        );
        std::fs::write(&agent.config, at(&second, dir.path())).unwrap();
        let mark = agent.mark();
        let line = reload(&agent, "configuration reloaded");
        assert!(
            line.contains(&label(&c3)) && line.contains(&label(&c2)),
            "{line}"
        );
        agent.wait_log(mark, "log level changed", WAIT);
        assert!(agent.exited().is_none(), "SIGHUP killed the agent");
        let n3 = control(&c3, "100.64.0.3", &ak, port).await;
        assert!(
            reachable(&n3).await,
            "the peer added in the file is not reachable"
        );
        assert!(
            !reachable(&n2).await,
            "the peer removed from the file still gets answers"
        );
        // The process is untouched: same record, still running, still under the agent.
        let (_, list) = http.call("GET", "/api/v0/processes/list", None).await;
        let p = &list["processes"][0];
        assert_eq!(
            (p["id"].as_str(), p["running"].as_bool()),
            (Some(id.as_str()), Some(true))
        );
        assert_eq!(p["pid"].as_i64(), Some(i64::from(pid)));
        assert!(alive(pid) && descends_from(pid, agent.pid()));
        assert_eq!(
            n1.stats().wg.peers[0].handshakes,
            1,
            "c1's session was kept"
        );

        // An invalid file: the same precise error as at start, nothing changes.
        let bad = second.replace(&keys::encode_public(&c3.public), "not-a-key");
        std::fs::write(&agent.config, at(&bad, dir.path())).unwrap();
        let expected = Config::load(&agent.config).unwrap_err().to_string();
        assert!(expected.contains("`peer[1].public_key`"), "{expected}");
        let line = reload(&agent, "reload refused");
        assert!(line.contains(&expected), "{line}\nexpected: {expected}");
        assert!(
            line.contains("previous configuration stays in force"),
            "{line}"
        );
        assert!(reachable(&n3).await && !reachable(&n2).await);

        // A key that needs a restart: said so, the old value stays.
        let moved = config(
            port,
            "100.64.0.99",
            "debug",
            &[("c1", &c1, "100.64.0.1"), ("c3", &c3, "100.64.0.3")],
        );
        std::fs::write(&agent.config, at(&moved, dir.path())).unwrap();
        let mark = agent.mark();
        reload(&agent, "configuration reloaded");
        let warning = agent.wait_log(mark, "interface.address changed", WAIT);
        assert!(warning.contains("after a restart"), "{warning}");
        assert!(reachable(&n1).await, "the old address must stay in force");

        // SIGTERM: a clean exit that takes the process with it; nothing is left behind.
        agent.signal(libc::SIGTERM);
        let status = agent.wait_exit(WAIT);
        assert!(status.success(), "{status:?}");
        assert!(!alive(pid), "sleep {pid} outlived the agent");
    })
    .await
    .expect("test timed out");
}
