//! `wgagent mcp` driven by a real MCP client this project did not write: the official Python
//! `mcp` package's stdio client (`tests/mcp/client.py`), against a real agent over WireGuard.
//! Skips with a printed reason when python3 or the `mcp` package is missing; `.ci/run`
//! installs them.

mod common;

use std::path::PathBuf;

use common::*;
use wgagent::keys;

fn python_mcp_available() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import mcp.client.stdio"])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python package `mcp` missing: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A control config naming the agent `dev` (and, with `second`, another agent `other`).
fn write_config(p: &Pair, dir: &std::path::Path, second: Option<&Pair>) -> PathBuf {
    let mut cfg = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\nuapi = false\n\n\
         [[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.10/32\"]\nendpoint = \"{}\"\n",
        keys::encode_private(&p.control_keys.secret),
        keys::encode_public(&p.agent_keys.public),
        loopback(&p.agent),
    );
    if let Some(q) = second {
        cfg.push_str(&format!(
            "\n[[peer]]\nname = \"other\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.11/32\"]\nendpoint = \"{}\"\n",
            keys::encode_public(&q.agent_keys.public),
            loopback(&q.agent),
        ));
    }
    let path = dir.join("control.toml");
    std::fs::write(&path, cfg).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

async fn run_client(config: &std::path::Path, mode: &str, agent: &str) {
    run_client_via(config, mode, agent, None).await
}

/// Runs the client; with `socket`, `wgagent mcp` goes through the control daemon there.
async fn run_client_via(
    config: &std::path::Path,
    mode: &str,
    agent: &str,
    socket: Option<&std::path::Path>,
) {
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([script, env!("CARGO_BIN_EXE_wgagent")])
        .arg(config)
        .args([mode, agent])
        .arg(work.path());
    if let Some(s) = socket {
        cmd.arg(s);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), cmd.output())
        .await
        .expect("MCP client hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "MCP client failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_client_with_fixed_agent() {
    if let Err(why) = python_mcp_available() {
        println!("SKIP mcp: {why}");
        return;
    }
    let p = pair().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&p, dir.path(), None);
    run_client(&cfg, "--agent", "dev").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_client_with_two_agents() {
    if let Err(why) = python_mcp_available() {
        println!("SKIP mcp: {why}");
        return;
    }
    let p = pair().await;
    // A second agent the same control key may reach, at 100.64.0.11.
    let q = {
        let agent_keys = keypair();
        let agent = node(
            agent_keys.secret.clone(),
            "100.64.0.11",
            0,
            vec![peer(p.control_keys.public, "100.64.0.1/32", None, None)],
        )
        .await;
        let manager = serve_api(&agent);
        let control = node(keypair().secret, "100.64.0.2", 0, vec![]).await;
        Pair {
            agent,
            control,
            manager,
            agent_keys,
            control_keys: keypair(),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&p, dir.path(), Some(&q));
    run_client(&cfg, "--multi", "other").await;
    // The second agent ran the commands, the first none.
    assert!(!q.manager.list().is_empty());
    assert!(p.manager.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_client_through_the_control_daemon() {
    if let Err(why) = python_mcp_available() {
        println!("SKIP mcp: {why}");
        return;
    }
    let p = pair().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(&p, dir.path(), None);
    let cfg = wgagent::config::Config::load(&cfg_path).unwrap();
    let socket = dir.path().join("control.sock");
    let daemon = start_daemon(&cfg, &socket).await;
    // No config file for `wgagent mcp`: the daemon names the agents.
    let absent = dir.path().join("absent.toml");
    run_client_via(&absent, "--agent", "dev", Some(&socket)).await;
    assert!(
        !p.manager.list().is_empty(),
        "the commands ran on the agent"
    );
    let status = wgagent::client::DaemonConnector::new(&socket)
        .status()
        .await
        .unwrap();
    assert!(status.requests.forwarded > 0, "{:?}", status.requests);
    daemon.shutdown(std::time::Duration::from_secs(5)).await;
}
