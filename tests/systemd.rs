//! The systemd units in `deploy/`: `systemd-analyze verify` accepts every unit (with and without
//! its drop-ins) without a single complaint, and the opt-in hardening drop-in lowers the unit's
//! exposure as `systemd-analyze security` scores it.
//!
//! Prints `SKIP systemd: <reason>` and passes where `systemd-analyze` is missing (CI installs
//! systemd).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[test]
fn units_verify_cleanly() {
    let Some(analyze) = systemd_analyze() else {
        println!("SKIP systemd: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    let units = units();
    assert!(
        units.iter().any(|u| u.ends_with("wgagent.service")),
        "{units:?}"
    );
    for unit in &units {
        let dir = tempfile::tempdir().unwrap();
        let installed = install(unit, dir.path(), true);
        let out = run(Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&installed));
        let complaints = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && complaints.trim().is_empty(),
            "systemd-analyze verify {}: {complaints}",
            unit.display()
        );
        println!("systemd: {} verifies", unit.display());
    }

    // The verifier does complain when something is wrong, so silence above means something.
    let dir = tempfile::tempdir().unwrap();
    let agent = repo().join("deploy/wgagent.service");
    let installed = install(&agent, dir.path(), false);
    let text = std::fs::read_to_string(&installed).unwrap();
    std::fs::write(
        &installed,
        text.replace("WatchdogSec=30s", "WatchdogSec=30 seconds please"),
    )
    .unwrap();
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&installed));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WatchdogSec")
            || String::from_utf8_lossy(&out.stderr).contains("sec value"),
        "a broken unit went unnoticed: {out:?}"
    );
}

#[test]
fn hardening_drop_in_lowers_the_exposure() {
    let Some(analyze) = systemd_analyze() else {
        println!("SKIP systemd: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    let agent = repo().join("deploy/wgagent.service");
    let plain = tempfile::tempdir().unwrap();
    let hardened = tempfile::tempdir().unwrap();
    let without = exposure(&analyze, &install(&agent, plain.path(), false));
    let with = exposure(&analyze, &install(&agent, hardened.path(), true));
    println!(
        "systemd: exposure of wgagent.service {without} by default, {with} with hardening.conf"
    );
    assert!(with < without, "{with} vs {without}");
    assert!(with <= 5.0, "hardening.conf leaves exposure {with}");
}

/// `systemd-analyze security --offline=true`'s overall exposure (0 = locked down, 10 = none).
fn exposure(analyze: &Path, unit: &Path) -> f64 {
    let out = run(Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for").nth(1)?;
            rest.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Copies `unit` (and, with `drop_ins`, its `<unit>.d/` directory) into `dir`, pointing it at the
/// binary under test instead of `/usr/local/bin/wgagent`.
fn install(unit: &Path, dir: &Path, drop_ins: bool) -> PathBuf {
    let name = unit.file_name().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    let target = dir.join(name);
    std::fs::write(
        &target,
        text.replace("/usr/local/bin/wgagent", env!("CARGO_BIN_EXE_wgagent")),
    )
    .unwrap();
    let d = unit.with_file_name(format!("{}.d", name.to_string_lossy()));
    if drop_ins && d.is_dir() {
        let target_d = dir.join(d.file_name().unwrap());
        std::fs::create_dir(&target_d).unwrap();
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, target_d.join(path.file_name().unwrap())).unwrap();
        }
    }
    target
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

fn systemd_analyze() -> Option<PathBuf> {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| PathBuf::from("systemd-analyze"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
