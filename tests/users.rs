//! Commands as another user (manager level; root only, with a user the test creates): the uid,
//! groups and identity variables, files owned by the user, the home as default workdir, a
//! directory the user cannot enter, unknown users, the agent's private variables withheld.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use wgagent::proc::{Manager, ManagerConfig, ProcError, StartSpec, SupervisorLaunch, UserError};

#[path = "common/users.rs"]
mod users;

const T: Duration = Duration::from_secs(30);

async fn run(m: &Manager, spec: StartSpec) -> (String, i32, String) {
    let id = m.start(spec).unwrap();
    let exit = m.wait(&id, T).await.unwrap().expect("process did not exit");
    let rec = m.get(&id).unwrap();
    (rec.output.render().text, exit.code, rec.user.clone())
}

fn as_user(command: &str, user: &str) -> StartSpec {
    StartSpec {
        command: command.to_owned(),
        user: Some(user.to_owned()),
        ..Default::default()
    }
}

#[tokio::test]
async fn commands_run_as_the_user_with_its_identity_and_home() {
    let Some(u) = users::TestUser::create("a") else {
        return;
    };
    let m = Manager::new(ManagerConfig::default());
    let (out, code, user) = run(
        &m,
        as_user(
            "id -u; id -g; echo $HOME $USER $LOGNAME $SHELL; pwd; touch made-here; \
             echo ${NOTIFY_SOCKET:-none}",
            &u.name,
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(user, u.name);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], u.uid.to_string(), "{out}");
    assert_eq!(lines[1], u.gid.to_string(), "{out}");
    let home = u.home.display().to_string();
    assert_eq!(
        lines[2],
        format!("{home} {n} {n} /bin/sh", n = u.name),
        "{out}"
    );
    assert_eq!(lines[3], home, "the default workdir is the user's home");
    let made = std::fs::metadata(u.home.join("made-here")).unwrap();
    assert_eq!((made.uid(), made.gid()), (u.uid, u.gid));
    assert_eq!(lines[4], "none", "{out}");

    // The agent's own user for the same manager.
    let (out, _, user) = run(
        &m,
        StartSpec {
            command: "id -u".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out.trim(), "0");
    assert_eq!(user, "root");
}

/// Every thread of this process still has uid and gid 0 everywhere (real, effective, saved, fs).
fn assert_all_threads_root() {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for key in ["Uid:", "Gid:"] {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            assert!(
                line[key.len()..].split_whitespace().all(|v| v == "0"),
                "thread {:?}: {line}",
                task.file_name()
            );
        }
        let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert!(
            !groups.contains(' ') || groups.split_whitespace().skip(1).all(|g| g == "0"),
            "{groups}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_users_never_touches_the_agents_own_threads() {
    let Some(u) = users::TestUser::create("c") else {
        return;
    };
    // Supervisors forked and exec'd (the agent's), and none.
    let exec = SupervisorLaunch::Exec(env!("CARGO_BIN_EXE_wgagent").into());
    for (tree_tracking, supervisor) in [
        (true, SupervisorLaunch::Fork),
        (true, exec),
        (false, SupervisorLaunch::Fork),
    ] {
        let m = Manager::new(ManagerConfig {
            tree_tracking,
            supervisor,
            ..ManagerConfig::default()
        });
        for _ in 0..5 {
            let (out, _, _) = run(&m, as_user("id -u", &u.name)).await;
            assert_eq!(out.trim(), u.uid.to_string());
            assert_all_threads_root();
        }
    }
}

#[tokio::test]
async fn a_directory_the_user_cannot_enter_is_refused() {
    let Some(u) = users::TestUser::create("b") else {
        return;
    };
    // Through an exec'd supervisor (the agent's): the stage and errno come back on its pipe.
    let m = Manager::new(ManagerConfig {
        supervisor: SupervisorLaunch::Exec(env!("CARGO_BIN_EXE_wgagent").into()),
        ..ManagerConfig::default()
    });
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let err = m
        .start(StartSpec {
            workdir: Some(private.path().to_owned()),
            ..as_user("pwd", &u.name)
        })
        .unwrap_err();
    assert!(matches!(err, ProcError::WorkdirUnusable { .. }), "{err:?}");
    assert!(err.to_string().contains(&u.name), "{err}");
    // The user cannot write where root's files are, and its writes fail as its own.
    let (out, code, _) = run(&m, as_user("touch /root/x-wgagent-test", &u.name)).await;
    assert_ne!(code, 0);
    assert!(out.contains("Permission denied"), "{out}");
}

#[tokio::test]
async fn unknown_users_are_refused() {
    let m = Manager::new(ManagerConfig::default());
    let err = m
        .start(as_user("true", "no-such-user-wgagent"))
        .unwrap_err();
    assert!(
        matches!(err, ProcError::User(UserError::Unknown(_))),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "User \"no-such-user-wgagent\" does not exist on this agent."
    );
}
