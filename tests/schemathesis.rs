//! Schemathesis (root only): the real `wgagent agent` binary in one network namespace, a
//! `wireguard-go` control peer in another, and schemathesis generating requests from
//! `docs/openapi.yaml` through the real tunnel, bounded in examples and time. It must find no
//! 5xx, no answer that violates the document (status, content type, headers, body schema), no
//! accepted invalid input; afterwards the agent is alive, shuts down cleanly and leaves no
//! process behind.
//!
//! The fuzzer starts arbitrary commands and writes arbitrary files, so the agent runs as
//! `nobody`, in a private mount namespace whose `/tmp`, `/var/tmp` and `/dev/shm` are fresh
//! tmpfs mounts: whatever it creates disappears with the namespace.
//!
//! Prints `SKIP schemathesis: <reason>` and passes where it cannot run (not root, a tool or
//! the Python package missing); CI installs everything. `WGAGENT_SCHEMATHESIS_SEED` overrides
//! the fixed seed, `WGAGENT_SCHEMATHESIS_EXAMPLES` the examples per operation (default 60).

#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use lab::{API, ControlKey, genkey, pubkey};
use netns::{Lab, STEP, wait_for};

const NOBODY: u32 = 65534;
/// The whole schemathesis run; it normally takes a minute or two.
const RUN_LIMIT: Duration = Duration::from_secs(420);

#[test]
fn schemathesis_finds_nothing_through_a_real_tunnel() {
    let t0 = Instant::now();
    let why_not = lab::tunnel_prerequisites(&[
        "ip",
        "wg",
        "wireguard-go",
        "curl",
        "unshare",
        "setpriv",
        "schemathesis",
    ]);
    let Some((mut lab, a)) = lab::open("schemathesis", why_not, "wgs", "a") else {
        return;
    };
    let b = lab.namespace("b").expect("namespace");
    lab.veth(&a, "va", "10.215.1.1/30", &b, "vb", "10.215.1.2/30");

    // Everything the agent reads, in a directory `nobody` can traverse: the binary (the build
    // tree may be under a private home), the config and its key.
    let dir = lab.dir.path().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("wgagent");
    std::fs::copy(env!("CARGO_BIN_EXE_wgagent"), &binary).unwrap();
    let key = dir.join("agent.key");
    genkey(&binary, &key);
    std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).unwrap();
    let agent_pub = pubkey(&binary, &key);
    let control = ControlKey::new(&dir);
    let api = "default_workdir = \"/tmp\"\nshutdown_grace = \"2s\"\nmax_running = 16\n";
    std::fs::write(
        dir.join("agent.toml"),
        lab::agent_config(api, "fuzzer", &control),
    )
    .unwrap();

    // The agent: private mount namespace with throw-away temporary directories, then `nobody`.
    let script = "set -e; mount --bind \"$1\" /mnt; \
        for d in /tmp /var/tmp /dev/shm; do mount -t tmpfs -o mode=1777,size=256m tmpfs $d; done; \
        exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
        env HOME=/tmp RUST_LOG=info,wgagent=debug /mnt/wgagent agent --config /mnt/agent.toml";
    let cmd = Lab::command(
        &a,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            dir.to_str().unwrap(),
        ],
    );
    let agent_pid = lab.spawn("agent", cmd);
    let up = wait_for(STEP, || {
        lab.log("agent").contains("agent up") || lab.exited("agent").is_some()
    });
    assert!(
        up && lab.exited("agent").is_none(),
        "agent did not start: {}",
        lab.log("agent")
    );
    let status = std::fs::read_to_string(format!("/proc/{agent_pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    let agent_mnt = std::fs::read_link(format!("/proc/{agent_pid}/ns/mnt")).unwrap();

    // The control peer.
    let reached = lab::control_peer(&mut lab, &b, &control, &agent_pub, "10.215.1.1");
    assert!(
        reached.is_some(),
        "no answer through the tunnel: {}",
        lab.log("agent")
    );
    println!("schemathesis: tunnel up after {:?}", t0.elapsed());

    // Schemathesis, from the control namespace, bounded in examples and time.
    let seed = std::env::var("WGAGENT_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261129".into());
    let examples = std::env::var("WGAGENT_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "60".into());
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let report = dir.join("schemathesis.xml");
    let mut cmd = Lab::command(
        &b,
        &[
            "schemathesis",
            "run",
            spec.to_str().unwrap(),
            "--url",
            API,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            // One worker: CPython 3.11's parser is not thread-safe when hypothesis describes
            // its strategies ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-junit-path",
            report.to_str().unwrap(),
        ],
    );
    // Hypothesis keeps its database in the working directory: the lab's, not the repository.
    cmd.current_dir(&dir).env("NO_COLOR", "1");
    let started = Instant::now();
    let out = netns::run(&mut cmd, RUN_LIMIT);
    println!(
        "schemathesis: seed {seed}, {examples} examples per operation, {:?}\n{}",
        started.elapsed(),
        tail(&out.stdout, 60)
    );
    assert!(
        out.code.is_some(),
        "schemathesis did not finish within {RUN_LIMIT:?}: {}",
        tail(&out.stdout, 40)
    );
    assert!(
        out.ok(),
        "schemathesis found problems (seed {seed}):\n{}\n{}",
        tail(&out.stdout, 200),
        out.stderr
    );

    // No crash: the agent answers, and its log has no panic.
    assert!(
        lab.exited("agent").is_none(),
        "the agent died: {}",
        lab.log("agent")
    );
    let health = lab::health(&lab, &b, 1, |out| panic!("no health answer: {out:?}")).unwrap();
    assert!(health.stdout.contains(r#""status":"ok""#), "{health:?}");
    assert!(
        !lab.log("agent").contains("panicked"),
        "{}",
        lab.log("agent")
    );

    // Graceful shutdown, and nothing left in the agent's mount namespace afterwards.
    let status = lab.stop("agent", Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}"
    );
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("ns/mnt")).ok().as_ref() == Some(&agent_mnt))
        .map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline)
            )
        })
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    println!("schemathesis: done in {:?}", t0.elapsed());
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
