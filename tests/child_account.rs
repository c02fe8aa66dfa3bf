//! A root host's wal-redo processes run as an account of their own
//! (`walredo`), never as the machine's PostgreSQL server (`postgres`): where
//! the sandbox has no Landlock, a hijacked process would otherwise reach that
//! server's files and memory. The account is made on first need, with no
//! login shell and no home; `run_as_user` still picks another. Root-only (as
//! anyone else, the processes run as the caller).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use std::time::Duration;

use walredo::process::launch::{ensure_system_account, unprivileged_user, Launcher, UserIds};
use walredo::process::Process;
use walredo::{Config, Error, Redoer, SpawnMode};
use walredo_testkit::harness::*;

/// `Uid:`, `Gid:` and `Groups:` of `/proc/<pid>/status`.
fn credentials(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// The passwd line of `name`, split at its colons.
fn passwd(name: &str) -> Vec<String> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "no account {name}");
    let line = String::from_utf8(out.stdout).unwrap();
    line.trim_end().split(':').map(str::to_string).collect()
}

/// Nobody can log in as `name`, and it has no home of its own to write in.
fn assert_system_account(name: &str, ids: UserIds) {
    let fields = passwd(name);
    assert!(
        fields[6].ends_with("/nologin") || fields[6].ends_with("/false"),
        "{name} has a login shell: {fields:?}"
    );
    match std::fs::metadata(&fields[5]) {
        Err(_) => {}
        Ok(m) => assert_ne!(m.uid(), ids.uid, "{name} owns its home {}", fields[5]),
    }
    assert!(ids.uid < 1000, "{name} is not a system account: {fields:?}");
}

/// A root host's wal-redo processes run as an account of their own, not as
/// `postgres` (whose files and servers they could otherwise reach).
#[test]
fn a_root_hosts_processes_run_as_an_account_of_their_own() {
    let Some(_test) = isolated_root_test("the processes run as the caller otherwise") else {
        return;
    };
    let (r, pid) = started_redoer(&config());
    let (uid, gid, groups) = credentials(pid);
    let walredo = unprivileged_user("walredo").unwrap().unwrap();
    let postgres = unprivileged_user("postgres").unwrap().unwrap();
    eprintln!("process {pid}: Uid {uid}, Gid {gid}, Groups {groups:?}");
    let all = |id: u32| format!("{id} {id} {id} {id}");
    assert_ne!(uid, all(postgres.uid), "the processes run as postgres");
    assert_eq!(uid, all(walredo.uid), "real, effective, saved and fs uid");
    assert_eq!(gid, all(walredo.gid));
    assert_eq!(groups, "", "no supplementary groups");
    assert_system_account("walredo", walredo);
    drop(r);

    // `run_as_user` still chooses.
    let as_postgres = Config {
        run_as_user: "postgres".into(),
        ..config()
    };
    let mut r = Redoer::new(&as_postgres).unwrap();
    r.ping().unwrap();
    assert_eq!(credentials(r.pid().unwrap()).0, all(postgres.uid));
}

/// What a hijacked process could reach without Landlock, as its account:
/// nothing of a PostgreSQL server running as `postgres` (its data directory,
/// its memory). A shell with the processes' credentials stands in for it.
#[test]
fn the_processes_account_cannot_reach_a_servers_files_or_memory() {
    let Some(_test) = isolated_root_test("the processes run as the caller otherwise") else {
        return;
    };
    let dir = TempDir::new("account");
    let mut cluster = Cluster::init(dir.path(), &[], &[]);
    cluster.start();
    let pidfile = std::fs::read_to_string(cluster.data.join("postmaster.pid")).unwrap();
    let postmaster = pidfile.lines().next().unwrap().trim().to_string();
    let ids = walredo::process::launch::Launcher::new(&config())
        .unwrap()
        .user()
        .unwrap();
    let probe = |what: &str, script: &str| probe_as(ids, what, script);
    let data = cluster.data.display().to_string();
    let reached = [
        probe(
            "write into the data directory",
            &format!(": > {data}/probe"),
        ),
        probe(
            "read pg_control",
            &format!("cat {data}/global/pg_control >/dev/null"),
        ),
        probe(
            "open the postmaster's memory for writing",
            &format!("exec 3<>/proc/{postmaster}/mem"),
        ),
        probe(
            "create a file in postgres's home",
            ": > /var/lib/postgresql/walredo-probe",
        ),
    ];
    let _ = std::fs::remove_file(cluster.data.join("probe"));
    let _ = std::fs::remove_file("/var/lib/postgresql/walredo-probe");
    cluster.stop();
    assert_eq!(
        reached, [false; 4],
        "the processes' account reached the server"
    );
}

/// Without Landlock, the processes' account could open `/proc/<pid>/mem` of
/// every other wal-redo process and of the template (same account) and so take
/// them over. Each makes itself non-dumpable before it handles any WAL: the
/// same uid no longer has the ptrace access those files need. The sandbox as
/// without Landlock (`require_landlock` off), which is where this matters.
#[test]
fn the_processes_account_cannot_open_a_siblings_or_the_templates_memory() {
    let Some(_test) = isolated_root_test("the processes run as the caller otherwise") else {
        return;
    };
    let launcher = Launcher::new(&Config {
        require_landlock: false,
        ..config()
    })
    .unwrap();
    let ids = launcher.user().unwrap();
    let mut a = ready_process(&launcher);
    let template = launcher.template_pid().expect("a template runs");
    let pid = a.pid();
    // Same account: without the fix, nothing else stands in the way.
    assert_eq!(credentials(pid).0, credentials(template).0);
    let reached = [
        probe_as(
            ids,
            "open a wal-redo process's memory for writing",
            &format!("exec 3<>/proc/{pid}/mem"),
        ),
        probe_as(
            ids,
            "read a wal-redo process's environment",
            &format!("cat /proc/{pid}/environ >/dev/null"),
        ),
        probe_as(
            ids,
            "open the template's memory for writing",
            &format!("exec 3<>/proc/{template}/mem"),
        ),
        probe_as(
            ids,
            "read the template's environment",
            &format!("cat /proc/{template}/environ >/dev/null"),
        ),
    ];
    // What stays readable to the account: the process's state.
    assert!(probe_as(
        ids,
        "read a wal-redo process's status",
        &format!("cat /proc/{pid}/status >/dev/null"),
    ));
    // It still serves, and the template still forks: a newer child is as
    // closed as the first.
    a.handshake(Duration::from_secs(10)).unwrap();
    let b = ready_process(&launcher);
    let newer = probe_as(
        ids,
        "open a newer sibling's memory for writing",
        &format!("exec 3<>/proc/{}/mem", b.pid()),
    );
    drop((a, b));
    drop(launcher);
    // A process started without a template (`SpawnMode::Direct`) too.
    let direct = Launcher::new(&Config {
        require_landlock: false,
        spawn_mode: SpawnMode::Direct,
        ..config()
    })
    .unwrap();
    let mut c = Process::spawn(&direct).unwrap();
    c.handshake(Duration::from_secs(10)).unwrap();
    let started_directly = probe_as(
        ids,
        "open a directly started process's memory for writing",
        &format!("exec 3<>/proc/{}/mem", c.pid()),
    );
    drop(c);
    drop(direct);
    assert_eq!(
        (reached, newer, started_directly),
        ([false; 4], false, false),
        "the processes' account reached another process's memory"
    );
}

/// Whether a shell with the processes' credentials (standing in for a
/// hijacked process) succeeds at `script`.
fn probe_as(ids: UserIds, what: &str, script: &str) -> bool {
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .uid(ids.uid)
        .gid(ids.gid)
        .env_clear()
        .current_dir("/")
        .output()
        .unwrap();
    eprintln!(
        "{what}: {}",
        if out.status.success() {
            "REACHED"
        } else {
            "refused"
        }
    );
    out.status.success()
}

/// The account is made where it is missing: a system account, its own
/// group, no login shell, no home. A name of the test's own, removed after.
#[test]
fn a_missing_account_is_created_as_a_system_account() {
    let Some(_test) = isolated_root_test("the processes run as the caller otherwise") else {
        return;
    };
    let name = format!("wrtest{}", std::process::id());
    assert!(unprivileged_user(&name).is_err(), "{name} exists already");
    /// Removes the account it names on drop, whatever the checks found.
    struct Made<'a>(&'a str);
    impl Drop for Made<'_> {
        fn drop(&mut self) {
            let _ = Command::new("/usr/sbin/userdel").arg(self.0).status();
        }
    }
    ensure_system_account(&name).unwrap();
    let made = Made(&name);
    let ids = unprivileged_user(&name).unwrap().unwrap();
    eprintln!("created {:?}", passwd(&name));
    assert_system_account(&name, ids);
    // Made once: asking again is a no-op.
    ensure_system_account(&name).unwrap();
    assert_eq!(unprivileged_user(&name).unwrap(), Some(ids));
    drop(made);
    assert!(passwd_absent(&name), "{name} was not removed");

    // Another missing name is not created: the error says how.
    let other = format!("wrmissing{}", std::process::id());
    match unprivileged_user(&other) {
        Err(Error::SpawnFailed(m)) => {
            assert!(m.contains("useradd --system"), "{m}");
            assert!(m.contains("run_as_user"), "{m}");
        }
        found => panic!("{other}: {found:?}"),
    }
    assert!(passwd_absent(&other), "{other} was created");
}

fn passwd_absent(name: &str) -> bool {
    !Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap()
        .status
        .success()
}
