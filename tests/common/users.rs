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
        // Tests run in parallel and useradd locks /etc/passwd: retry a few times (bounded).
        let mut attempts = 0;
        let out = loop {
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
            attempts += 1;
            if out.status.success() || attempts == 20 {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
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
        // The tests wait for their processes, so none runs as the user any more. userdel
        // locks /etc/passwd too: retry like useradd.
        for _ in 0..20 {
            let done = Command::new("userdel")
                .arg("--remove")
                .arg(&self.name)
                .output()
                .is_ok_and(|o| o.status.success() || o.status.code() == Some(6));
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
