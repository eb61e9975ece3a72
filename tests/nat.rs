//! A real NAT (root only): the `wgagent agent` binary in a private namespace behind a router
//! namespace doing nftables masquerade (random ports), two `wgagent control` daemons in a
//! "public" namespace that has no route to the private range, and the CLI through their sockets.
//!
//! ```text
//!   P (private): agent 100.64.0.10      R (router): masquerade        U (public): control-1 :51820
//!   10.77.1.2/24 ------------------ 10.77.1.1 | 10.78.0.1 ------------ 10.78.0.2  control-2 :51821
//! ```
//!
//! The agent dials both replicas (endpoint + persistent keepalive); the replicas know no
//! endpoint for it. Checked: the first `exec` once the agent reached the daemon, sequential and
//! concurrent `exec`, both replicas at once, failover after replica 1 is killed with SIGKILL
//! mid-command, a NAT mapping change (`conntrack -F`), and the error without a daemon. Timing
//! bounds are generous; the figures are printed and measured properly in `benches/fleet/`.
//! Prints `SKIP nat: <reason>` and passes when not root or a tool is missing.

#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/threads.rs"]
mod threads;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Lab, Out, STEP, wait_for};
use serde_json::Value;
use threads::threads_line;

/// The agent's keepalive towards each replica, seconds (short, so the test is quick).
const KEEPALIVE: u64 = 3;

#[test]
fn agent_behind_nat_through_two_control_daemons() {
    let t0 = Instant::now();
    let why_not = netns::missing_prerequisites(&["ip", "nft", "conntrack", "curl", "sysctl"]);
    let Some((mut lab, p)) = lab::open("nat", why_not, "wgn", "p") else {
        return;
    };
    let [r, u] = ["r", "u"].map(|s| lab.namespace(s).expect("namespace"));
    lab.veth(&p, "vp", "10.77.1.2/24", &r, "vr", "10.77.1.1/24");
    lab.veth(&r, "vu", "10.78.0.1/24", &u, "vq", "10.78.0.2/24");
    lab.must(&p, &["ip", "route", "add", "default", "via", "10.77.1.1"]);
    lab.must(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    for rule in [
        "add table ip nat",
        "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        "add rule ip nat post oifname \"vu\" masquerade random",
    ] {
        let argv: Vec<&str> = ["nft"].into_iter().chain(split_nft(rule)).collect();
        lab.must(&r, &argv);
    }
    // The public side cannot reach the private range: NAT is the only way in.
    let ping = lab.exec(&u, &["ip", "route", "get", "10.77.1.2"], STEP);
    assert!(
        !ping.ok(),
        "public namespace has a route to the agent: {ping:?}"
    );

    let dir = lab.dir.path().to_owned();
    let wgagent = env!("CARGO_BIN_EXE_wgagent");
    let agent_pub = genkey(&dir.join("agent.key"));
    let c1_pub = genkey(&dir.join("c1.key"));
    let c2_pub = genkey(&dir.join("c2.key"));
    lab::write_new(
        &dir.join("agent.toml"),
        &format!(
            "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"100.64.0.10\"]\nuapi = false\n{}\n\
             [api]\nshutdown_grace = \"1s\"\n\n\
             [[peer]]\nname = \"control-1\"\npublic_key = \"{c1_pub}\"\nallowed_ips = [\"100.64.0.1/32\"]\n\
             endpoint = \"10.78.0.2:51820\"\npersistent_keepalive = {KEEPALIVE}\n\n\
             [[peer]]\nname = \"control-2\"\npublic_key = \"{c2_pub}\"\nallowed_ips = [\"100.64.0.2/32\"]\n\
             endpoint = \"10.78.0.2:51821\"\npersistent_keepalive = {KEEPALIVE}\n",
            threads_line()
        ),
    );
    let sockets: Vec<PathBuf> = (1..=2).map(|i| dir.join(format!("c{i}.sock"))).collect();
    for i in 1..=2 {
        lab::write_new(
            &dir.join(format!("c{i}.toml")),
            &format!(
                "[interface]\nprivate_key_file = \"c{i}.key\"\naddress = [\"100.64.0.{i}\"]\nlisten_port = {}\nuapi = false\n{}\n\
                 [control]\nconnect_timeout = \"5s\"\n\n\
                 [[peer]]\nname = \"dev\"\npublic_key = \"{agent_pub}\"\nallowed_ips = [\"100.64.0.10/32\"]\n",
                51819 + i,
                threads_line()
            ),
        );
    }
    for i in 1..=2 {
        let cfg = dir.join(format!("c{i}.toml"));
        let mut cmd = Lab::command(
            &u,
            &[
                wgagent,
                "control",
                "--config",
                cfg.to_str().unwrap(),
                "--socket",
            ],
        );
        cmd.arg(&sockets[i - 1])
            .env("RUST_LOG", "info,wgagent=debug")
            .env("NO_COLOR", "1");
        lab.spawn(&format!("control-{i}"), cmd);
    }
    for i in 1..=2 {
        let name = format!("control-{i}");
        let up = wait_for(STEP, || {
            lab.log(&name).contains("control daemon up") || lab.exited(&name).is_some()
        });
        assert!(up && lab.exited(&name).is_none(), "{name} did not start");
    }
    let mut cmd = Lab::command(&p, &[wgagent, "agent", "--config"]);
    cmd.arg(dir.join("agent.toml"))
        .env("RUST_LOG", "info,wgagent=debug")
        .env("NO_COLOR", "1");
    lab.spawn("agent", cmd);
    println!("nat: lab up after {:?}", t0.elapsed());

    // 1. Both replicas learn the agent's NAT'd endpoint from its handshakes.
    let reached = wait_for(Duration::from_secs(15), || {
        sockets.iter().all(|s| handshaken(s).is_some())
    });
    assert!(reached, "the agent did not reach both daemons within 15 s");
    let endpoint = handshaken(&sockets[1]).unwrap();
    assert!(
        endpoint.starts_with("10.78.0.1:"),
        "the replica sees the router: {endpoint}"
    );
    println!(
        "nat: agent reached both daemons after {:?} (as {endpoint})",
        t0.elapsed()
    );

    // 2. The first exec, then 10 sequential ones, each well under a second.
    let o = cli(&sockets[0], &["exec", "dev", "--", "echo first"]);
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "first\n"), "{o:?}");
    let mut times = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let o = cli(
            &sockets[0],
            &["exec", "dev", "--", &format!("echo seq-{i}")],
        );
        times.push(t.elapsed());
        assert_eq!(
            (o.code, o.stdout.clone()),
            (Some(0), format!("seq-{i}\n")),
            "{o:?}"
        );
    }
    println!("nat: 10 sequential exec through the daemon: {times:?}");
    assert!(
        times.iter().all(|t| *t < Duration::from_secs(1)),
        "an exec took a second or more: {times:?}"
    );

    // 3. 8 concurrent execs through one daemon, then through both replicas at once.
    let outs = concurrently(
        (0..8)
            .map(|i| (sockets[0].clone(), format!("echo par-{i}")))
            .collect(),
    );
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            (o.code, o.stdout.clone()),
            (Some(0), format!("par-{i}\n")),
            "{o:?}"
        );
    }
    let outs = concurrently(
        (0..4)
            .map(|i| (sockets[i % 2].clone(), format!("echo both-{i}")))
            .collect(),
    );
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            (o.code, o.stdout.clone()),
            (Some(0), format!("both-{i}\n")),
            "{o:?}"
        );
    }
    println!("nat: concurrent execs OK after {:?}", t0.elapsed());

    // 4. Failover: processes started through replica 1, which is killed with SIGKILL while a
    // foreground exec runs through it; replica 2 lists, reads and signals them.
    let bg = |cmd: &str| {
        let o = cli(&sockets[0], &["exec", "dev", "--background", "--", cmd]);
        assert_eq!(o.code, Some(0), "{o:?}");
        o.stdout.trim().to_owned()
    };
    let reader = bg("echo one; sleep 2; echo two");
    let sleeper = bg("sleep 600");
    let mut fg = cli_command(&sockets[0], &["exec", "dev", "--", "sleep 1; echo fg-done"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let killed = lab.kill("control-1");
    assert!(killed, "control-1 was not running");
    let fg_out = netns::run_child(&mut fg, Duration::from_secs(20));
    println!("nat: exec through the killed replica: {fg_out:?}");
    assert_ne!(
        fg_out.code,
        Some(0),
        "an exec through a killed daemon cannot succeed"
    );
    let o = cli(&sockets[1], &["ps", "dev", "--json"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let list: Value = serde_json::from_str(&o.stdout).unwrap();
    let ids: Vec<&str> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(
        ids.contains(&reader.as_str()) && ids.contains(&sleeper.as_str()),
        "{ids:?}"
    );
    let o = cli(&sockets[1], &["output", "dev", &reader, "--wait"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(0), "one\ntwo\n"),
        "{o:?}"
    );
    let o = cli(&sockets[1], &["signal", "dev", &sleeper, "terminate"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = cli(
        &sockets[1],
        &["output", "dev", &sleeper, "--wait", "--json"],
    );
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["running"], false, "{o:?}");
    let o = cli(&sockets[1], &["ps", "dev", "--json"]);
    let list: Value = serde_json::from_str(&o.stdout).unwrap();
    let fg_proc = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["command"] == "sleep 1; echo fg-done")
        .expect("the foreground command started through replica 1 is listed")
        .clone();
    let o = cli(
        &sockets[1],
        &["output", "dev", fg_proc["id"].as_str().unwrap(), "--wait"],
    );
    assert_eq!(o.stdout, "fg-done\n", "{o:?}");
    let sleeper_info = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == sleeper.as_str())
        .unwrap();
    assert_eq!(sleeper_info["exit_signal"], "SIGTERM", "{sleeper_info}");
    println!("nat: failover OK after {:?}", t0.elapsed());

    // 5. The NAT mapping changes: the next exec succeeds once the agent's next keepalive (from
    // a new random port) reached the daemon.
    let before = handshaken(&sockets[1]).unwrap();
    lab.must(&r, &["conntrack", "-F"]);
    let t = Instant::now();
    let o = cli(&sockets[1], &["exec", "dev", "--", "echo remapped"]);
    let took = t.elapsed();
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(0), "remapped\n"),
        "{o:?}"
    );
    let after = handshaken(&sockets[1]).unwrap();
    println!("nat: after conntrack -F: exec took {took:?}; endpoint {before} -> {after}");
    assert_ne!(before, after, "masquerade random picked a new port");
    assert!(
        took < Duration::from_secs(KEEPALIVE + 10),
        "exec after the mapping change took {took:?}"
    );

    // 6. Without a daemon: the clear error, exit 255, at once.
    let t = Instant::now();
    let mut cmd = Lab::command(&u, &[wgagent, "exec", "--direct", "--config"]);
    cmd.arg(dir.join("c2.toml")).args(["dev", "--", "true"]);
    let o = netns::run(&mut cmd, Duration::from_secs(20));
    println!("nat: without a daemon: {o:?} in {:?}", t.elapsed());
    assert_eq!(o.code, Some(255), "{o:?}");
    assert!(o.stderr.contains("agent dev: no endpoint in"), "{o:?}");
    assert!(o.stderr.contains("wgagent control"), "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    let status = lab.stop("control-2", Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "control-2 exit: {status:?}"
    );
    assert!(!sockets[1].exists(), "the socket is removed on SIGTERM");
    println!("nat: done in {:?}", t0.elapsed());
}

/// `nft` arguments: words, with `{ ... }` and quoted strings kept as single arguments.
fn split_nft(rule: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = rule.trim();
    while !rest.is_empty() {
        let end = if rest.starts_with('{') {
            rest.find('}').map_or(rest.len(), |i| i + 1)
        } else if let Some(quoted) = rest.strip_prefix('"') {
            quoted.find('"').map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(' ').unwrap_or(rest.len())
        };
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    out
}

/// `wgagent genkey` into `path` (0600); returns the public key.
fn genkey(path: &Path) -> String {
    let wgagent = env!("CARGO_BIN_EXE_wgagent");
    lab::genkey(wgagent, path);
    lab::pubkey(wgagent, path)
}

/// The CLI through the daemon on `socket`, with no config file at all.
fn cli_command(socket: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgagent"));
    c.args(args)
        .env("WGAGENT_SOCKET", socket)
        .env("WGAGENT_CONFIG", "/nonexistent/wgagent-nat-test.toml")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn cli(socket: &Path, args: &[&str]) -> Out {
    netns::run(&mut cli_command(socket, args), Duration::from_secs(30))
}

/// Runs `exec dev -- <cmd>` through each `(socket, cmd)` at once; outputs in order.
fn concurrently(runs: Vec<(PathBuf, String)>) -> Vec<Out> {
    let handles: Vec<_> = runs
        .into_iter()
        .map(|(s, c)| std::thread::spawn(move || cli(&s, &["exec", "dev", "--", &c])))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// The agent's endpoint as the daemon on `socket` sees it, once it has a handshake.
fn handshaken(socket: &Path) -> Option<String> {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(socket)
        .arg("http://wgagent/v0/status")
        .stdin(Stdio::null());
    let out = netns::run(&mut c, Duration::from_secs(10));
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    let dev = v["peers"].as_array()?.iter().find(|p| p["name"] == "dev")?;
    dev["latest_handshake_unix"].as_u64()?;
    dev["endpoint"].as_str().map(str::to_owned)
}
