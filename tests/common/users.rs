//! A throwaway system user for run-as tests (root only), removed with its home on drop.

use std::path::PathBuf;
use std::process::Command;

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl TestUser {
    /// Creates a user named `wgt<tag><pid>` with a home under /tmp; `None` (and a printed
    /// reason) when not root or `useradd` is missing.
    pub fn create(tag: &str) -> Option<TestUser> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: run-as tests need root (CI runs them as root)");
            return None;
        }
        let name = format!("wgt{tag}{}", std::process::id());
        let home = PathBuf::from(format!("/tmp/trust-home-{name}"));
        let out = match Command::new("useradd")
            .args(["--create-home", "--home-dir"])
            .arg(&home)
            .args(["--shell", "/bin/sh", "--user-group"])
            .arg(&name)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIP: useradd is not available: {e}");
                return None;
            }
        };
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pw = nix::unistd::User::from_name(&name).unwrap().unwrap();
        Some(TestUser {
            name,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home,
        })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // The tests wait for their processes, so none runs as the user any more.
        let _ = Command::new("userdel")
            .arg("--remove")
            .arg(&self.name)
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
