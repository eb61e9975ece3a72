//! The container image (root only): `deploy/build-image.sh` builds `deploy/Containerfile` with
//! Debian's `buildah` (no registry pull), the test checks the image's configuration and file
//! system, then runs it with `podman` the way the Containerfile's comment tells users to (no
//! capabilities, no new privileges, read-only root, config and key mounted read-only, a state
//! volume) inside a network namespace, and reaches the agent's API through a real
//! `wireguard-go` tunnel from a control namespace with `curl`.
//!
//! Everything lives in a temporary container storage (vfs driver) and in namespaces named after
//! the test's pid; nothing is left behind. Prints `SKIP container: <reason>` and passes where the
//! image cannot be built (not root, a tool or the musl target missing); where the image builds
//! but no container can run, it checks the image and prints `SKIP container run: <why>`.

#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{ControlKey, genkey, http, pubkey};
use netns::{Lab, Out, STEP, wait_for};
use serde_json::Value;

const MUSL: &str = "x86_64-unknown-linux-musl";
/// The agent's uid/gid in the image.
const AGENT_UID: u32 = 65532;
/// A cold `cargo build --profile container` of the musl binary (CI builds it before the tests).
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

#[test]
fn image_is_minimal_and_its_agent_answers_through_the_tunnel() {
    let t0 = Instant::now();
    if let Some(why) = build_prerequisites() {
        println!("SKIP container: {why}");
        return;
    }
    let mut store = Store::new();
    let image = format!("localhost/wgagent-test{}:latest", std::process::id());
    let out = netns::run(
        Command::new(repo().join("deploy/build-image.sh"))
            .args(["--tag", &image])
            .envs(store.env())
            .stdin(Stdio::null()),
        BUILD_LIMIT,
    );
    assert!(
        out.ok(),
        "build-image.sh failed: {}\n{}",
        out.stderr,
        out.stdout
    );
    assert_eq!(out.stdout.lines().last(), Some(image.as_str()), "{out:?}");
    store.image = Some(image.clone());
    println!("container: image built after {:?}", t0.elapsed());

    check_image_config(&store, &image);
    check_image_files(&store, &image);

    let Some(runtime) = store.working_runtime(&image) else {
        return;
    };
    run_through_tunnel(&store, &image, &runtime);
    println!("container: done in {:?}", t0.elapsed());
}

/// The OCI config: user, entrypoint, command, only the WireGuard UDP port, the state volume.
fn check_image_config(store: &Store, image: &str) {
    let out = store.buildah(&["inspect", "--type", "image", image]);
    assert!(out.ok(), "{out:?}");
    let inspect: Value = serde_json::from_str(&out.stdout).expect("inspect JSON");
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(
        config["User"],
        format!("{AGENT_UID}:{AGENT_UID}"),
        "{config}"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/wgagent"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["agent", "--config", "/etc/wgagent/agent.toml"])
    );
    let ports: Vec<&String> = config["ExposedPorts"]
        .as_object()
        .expect("ports")
        .keys()
        .collect();
    assert_eq!(
        ports,
        ["51820/udp"],
        "only the WireGuard UDP port is exposed"
    );
    let volumes: Vec<&String> = config["Volumes"]
        .as_object()
        .expect("volumes")
        .keys()
        .collect();
    assert_eq!(volumes, ["/var/lib/wgagent"]);
    assert_eq!(config["StopSignal"], "SIGTERM");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"STATE_DIRECTORY=/var/lib/wgagent"), "{env:?}");
    // One layer of our own files, no base image.
    let layers = inspect["OCIv1"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("layers");
    assert!(!layers.is_empty() && layers.len() <= 4, "{layers:?}");
    println!("container: image config {config}");
}

/// The root file system: static binaries, no setuid/setgid file, no file capability, the agent's
/// directories owned by it and everything else by root.
fn check_image_files(store: &Store, image: &str) {
    let out = store.buildah(&["from", image]);
    assert!(out.ok(), "{out:?}");
    let working = out.stdout.trim().to_owned();
    let out = store.buildah(&["mount", &working]);
    assert!(out.ok(), "{out:?}");
    let root = PathBuf::from(out.stdout.trim());
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(&root).unwrap().to_owned();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                meta.mode() & 0o6000,
                0,
                "/{} is setuid/setgid",
                rel.display()
            );
            assert!(
                !has_file_capabilities(&path),
                "/{} carries file capabilities",
                rel.display()
            );
            let agent_owned = ["home/wgagent", "var/lib/wgagent", "run/wireguard"]
                .iter()
                .any(|d| rel.starts_with(d));
            let want = if agent_owned { AGENT_UID } else { 0 };
            assert_eq!(meta.uid(), want, "owner of /{}", rel.display());
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    for binary in ["usr/local/bin/wgagent", "bin/busybox"] {
        assert!(is_static(&root.join(binary)), "/{binary} is not static");
    }
    assert!(root.join("bin/sh").exists(), "no /bin/sh for commands");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("wgagent:x:65532:65532:"), "{passwd}");
    println!("container: image file system: {files} files, {bytes} bytes");
    let _ = store.buildah(&["umount", &working]);
    let _ = store.buildah(&["rm", &working]);
}

/// Starts the image in namespace A (read-only root, no capabilities), a `wireguard-go` control
/// peer in namespace B, and drives the API through the tunnel with `curl`.
fn run_through_tunnel(store: &Store, image: &str, runtime: &Runtime) {
    let mut lab = Lab::new("wgc");
    let a = lab.namespace("a").expect("namespace");
    let b = lab.namespace("b").expect("namespace");
    lab.veth(&a, "va", "10.214.1.1/30", &b, "vb", "10.214.1.2/30");

    // Config and key as an operator would mount them: read-only, the key readable by the
    // agent's uid only.
    let etc = lab.dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let wgagent = env!("CARGO_BIN_EXE_wgagent");
    let agent_key = etc.join("agent.key");
    genkey(wgagent, &agent_key);
    chown_mode(&agent_key, AGENT_UID, 0o400);
    let agent_pub = pubkey(wgagent, &agent_key);
    let control = ControlKey::new(lab.dir.path());
    let config = lab::agent_config("shutdown_grace = \"2s\"\n", "control", &control);
    std::fs::write(etc.join("agent.toml"), config).unwrap();
    let state = lab.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chown_mode(&state, AGENT_UID, 0o700);

    let name = format!("wgagent-test{}", std::process::id());
    let mut args: Vec<String> = runtime.global.clone();
    args.push("run".to_owned());
    args.extend(runtime.run.iter().cloned());
    args.extend(
        [
            "-d",
            "--name",
            &name,
            "--network",
            &format!("ns:/run/netns/{a}"),
            "--cap-drop=all",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp",
            "--mount",
            "type=tmpfs,destination=/run/wireguard,U=true",
            "-v",
            &format!("{}:/etc/wgagent:ro", etc.display()),
            "-v",
            &format!("{}:/var/lib/wgagent", state.display()),
            "-e",
            "RUST_LOG=info",
            image,
        ]
        .map(str::to_owned),
    );
    let out = store.podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.ok(), "podman run: {out:?}");
    let _container = Container { store, name: &name };
    let logs = || store.podman(&["logs", &name]).stderr + &store.podman(&["logs", &name]).stdout;
    let up = wait_for(STEP, || logs().contains("agent up"));
    assert!(up, "the agent in the container did not come up: {}", logs());

    // The agent's process as the host sees it: the image's user, no capability, no new privileges.
    let out = store.podman(&["inspect", "--format", "{{.State.Pid}}", &name]);
    let pid: u32 = out.stdout.trim().parse().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        field("Uid:").starts_with(&AGENT_UID.to_string()),
        "{status}"
    );
    for caps in ["CapPrm:", "CapEff:", "CapAmb:", "CapBnd:"] {
        assert_eq!(field(caps), "0000000000000000", "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), "1");

    // The control peer: wireguard-go in B, dialling the container's UDP port.
    let health = lab::control_peer(&mut lab, &b, &control, &agent_pub, "10.214.1.1");
    let health = health.unwrap_or_else(|| panic!("no answer through the tunnel: {}", logs()));
    let health: Value = serde_json::from_str(&health.stdout).expect("health JSON");
    assert_eq!(health["status"], "ok", "{health}");

    let (status, started) = http(
        &lab,
        &b,
        "/api/v0/processes/start",
        Some(
            r#"{"command":"echo hello from $(id -u) in $PWD; touch /usr/x 2>&1 || echo read-only; ls /etc/wgagent; tr '\\0' ' ' </proc/$PPID/cmdline"}"#,
        ),
    );
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().expect("id");
    let (status, output) = http(
        &lab,
        &b,
        &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=10000"),
        None,
    );
    assert_eq!(status, 200, "{output}");
    let text = output["output"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("hello from 65532 in /home/wgagent\n"),
        "{output}"
    );
    assert!(
        text.contains("read-only"),
        "the root file system is writable: {text}"
    );
    assert!(
        text.contains("agent.key") && text.contains("agent.toml"),
        "{text}"
    );
    // The static binary in the container exec'd the supervisor from itself (/proc/self/exe),
    // not a fork of the agent: the shell's parent runs in the hidden mode.
    assert!(
        text.contains(&format!(
            "wgagent-sup {} ",
            wgagent::proc::SUPERVISOR_MODE_ARG
        )),
        "the shell's parent is not an exec'd supervisor: {text}"
    );
    assert_eq!(output["exit_code"], 0, "{output}");

    // Only the WireGuard UDP socket on the container's network: no TCP listener at all.
    let tcp = lab.must(&a, &["ss", "-Htln"]);
    assert!(
        tcp.trim().is_empty(),
        "TCP listeners in the container: {tcp}"
    );
    let udp = lab.must(&a, &["ss", "-Huln"]);
    assert!(udp.contains(&format!(":{}", lab::AGENT_PORT)), "{udp}");

    // `podman stop` sends the image's STOPSIGNAL: a graceful shutdown, exit 0.
    let out = store.podman(&["stop", "-t", "15", &name]);
    assert!(out.ok(), "{out:?}");
    let out = store.podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(out.stdout.trim(), "0", "exit code; logs: {}", logs());
    assert!(logs().contains("agent stopped"), "{}", logs());
    println!("container: the agent ran in the container and answered through the tunnel");
}

/// Why the image cannot be built here, or `None`.
fn build_prerequisites() -> Option<String> {
    if let Some(why) = netns::missing_prerequisites(&[
        "buildah",
        "podman",
        "busybox",
        "readelf",
        "ip",
        "ss",
        "wg",
        "wireguard-go",
        "curl",
        "rustup",
    ]) {
        return Some(why);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun for wireguard-go".into());
    }
    let out = netns::run(
        Command::new("rustup").args(["target", "list", "--installed"]),
        STEP,
    );
    if !out.stdout.lines().any(|l| l.trim() == MUSL) {
        return Some(format!(
            "the Rust target {MUSL} is not installed (rustup target add {MUSL})"
        ));
    }
    if !is_static(Path::new(&which("busybox"))) {
        return Some("busybox is not the static one (apt-get install busybox-static)".into());
    }
    None
}

/// A private container storage (vfs, in a temporary directory) and engine configuration, so
/// the test shares nothing with the host's containers.
struct Store {
    dir: tempfile::TempDir,
    image: Option<String>,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                root.display()
            ),
        )
        .unwrap();
        // No journald or systemd here: file logs, no event log, cgroupfs.
        std::fs::write(
            root.join("containers.conf"),
            "[containers]\nlog_driver = \"k8s-file\"\n\n[engine]\nevents_logger = \"none\"\n\
             cgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        Store { dir, image: None }
    }

    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            (
                "CONTAINERS_STORAGE_CONF",
                self.dir.path().join("storage.conf"),
            ),
            ("CONTAINERS_CONF", self.dir.path().join("containers.conf")),
            ("TMPDIR", self.dir.path().to_owned()),
        ]
    }

    fn buildah(&self, args: &[&str]) -> Out {
        netns::run(
            Command::new("buildah")
                .args(args)
                .envs(self.env())
                .stdin(Stdio::null()),
            Duration::from_secs(60),
        )
    }

    fn podman(&self, args: &[&str]) -> Out {
        netns::run(
            Command::new("podman")
                .args(args)
                .envs(self.env())
                .stdin(Stdio::null()),
            Duration::from_secs(60),
        )
    }

    /// The podman options under which a container of `image` runs here, trying the default
    /// runtime first, then runc (crun refuses cgroup v1/v2 hybrid hosts such as this one).
    /// Resource limits are pinned to the test's own: podman asks for more than a process
    /// without CAP_SYS_RESOURCE may set. `None` (with the reason printed) when nothing runs.
    fn working_runtime(&self, image: &str) -> Option<Runtime> {
        let limits = |name: &str| {
            let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().rev().nth(1).map(str::to_owned))
        };
        let mut ulimits = Vec::new();
        if let Some(n) = limits("Max open files") {
            ulimits.push(format!("--ulimit=nofile={n}:{n}"));
        }
        // podman lowers its own RLIMIT_NPROC to 32768 before starting the runtime.
        if let Some(n) = limits("Max processes") {
            let n = n.parse::<u64>().map_or(32768, |n| n.min(32768));
            ulimits.push(format!("--ulimit=nproc={n}:{n}"));
        }
        let mut failures = Vec::new();
        for runtime in [None, Some("runc")] {
            if runtime.is_some_and(|r| !netns::have_tool(r)) {
                continue;
            }
            let mut global: Vec<String> = Vec::new();
            if let Some(r) = runtime {
                global.extend(["--runtime".to_owned(), r.to_owned()]);
            }
            let mut args = global.clone();
            args.extend(["run", "--rm", "--network", "none"].map(str::to_owned));
            args.extend(ulimits.iter().cloned());
            args.extend([image.to_owned(), "--version".to_owned()]);
            let out = self.podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
            if out.ok() && out.stdout.starts_with("wgagent ") {
                return Some(Runtime {
                    global,
                    run: ulimits,
                });
            }
            failures.push(format!(
                "{}: {}",
                runtime.unwrap_or("default runtime"),
                out.stderr.trim()
            ));
        }
        println!(
            "SKIP container run: no container can run here ({}); the image was built and checked",
            failures.join("; ")
        );
        None
    }
}

/// How to start a container here: podman's global options and the options of `run`.
struct Runtime {
    global: Vec<String>,
    run: Vec<String>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(image) = &self.image {
            let _ = self.buildah(&["rmi", "-f", image]);
        }
        // vfs layers are plain directories; a failed test may leave a mounted working container.
        let _ = self.buildah(&["rm", "--all"]);
        let _ = self.podman(&["system", "reset", "--force"]);
    }
}

/// A running container, removed (killed if needed) when dropped.
struct Container<'a> {
    store: &'a Store,
    name: &'a str,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.store.podman(&["logs", self.name]);
            eprintln!("---- container log ----\n{}{}", out.stdout, out.stderr);
        }
        let _ = self.store.podman(&["rm", "-f", "-t", "2", self.name]);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn which(tool: &str) -> String {
    let out = netns::run(
        Command::new("sh").args(["-c", &format!("command -v {tool}")]),
        STEP,
    );
    out.stdout.trim().to_owned()
}

/// An ELF file without a program interpreter (`PT_INTERP`) runs without a C library.
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= bytes.len() && u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) != 3
    })
}

fn has_file_capabilities(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: lgetxattr with a null buffer and size 0 only asks for the value's length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n >= 0
}

fn chown_mode(path: &Path, uid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
