//! Process life in template mode (the default): processes are forked by a
//! template process, never by the host; each has its own shared memory,
//! pid file and System V segment (marked for removal as soon as it
//! exists); a dead template is replaced, and its processes (the host's
//! children) live on; and a host killed with SIGKILL
//! mid-run leaves no process, segment or (once a new pool has started)
//! scratch directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use walredo::process::launch::Launcher;
use walredo::{Config, Pool, SpawnMode};
use walredo_testkit::harness::*;
use walredo_testkit::install::{is_alive, is_template, parent_of};

fn wait_gone(pid: u32, within: Duration) -> bool {
    let start = Instant::now();
    while is_alive(pid) {
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Inodes of the shared (`s`) mappings of `pid` that are not files: its
/// shared memory.
fn shared_memory_inodes(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let anonymous_shm = f
                .get(5)
                .is_some_and(|p| p.starts_with("/dev/zero") || p.starts_with("/SYSV"));
            (f[1].ends_with('s') && anonymous_shm).then(|| format!("{} {}", f[3], f[4]))
        })
        .collect()
}

/// (key, perms) of the segments `pid` created.
fn segments_of(pid: u32) -> Vec<(i64, u32)> {
    let shm = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    shm.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4)?.parse::<u32>().ok()? == pid)
                .then(|| Some((f[0].parse().ok()?, u32::from_str_radix(f[2], 8).ok()?)))?
        })
        .collect()
}

/// Whether the version under test has a template. PostgreSQL 14 has none
/// (no fork point before shared memory: pg_walredo's template.c): there the
/// template's tests check that its launcher starts processes directly.
fn has_template() -> bool {
    if walredo_testkit::install::pg_version() >= 15 {
        return true;
    }
    let launcher = Launcher::new(&config()).unwrap();
    assert_eq!(launcher.spawn_mode(), SpawnMode::Direct);
    let a = ready_process(&launcher);
    assert_eq!(parent_of(a.pid()), Some(std::process::id()));
    assert_eq!(launcher.template_pid(), None);
    eprintln!("PostgreSQL 14 has no template: its processes start directly");
    false
}

fn scratch_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap()
}

#[test]
fn processes_are_forked_by_the_template_and_share_no_memory() {
    let _test = isolated_test();
    if !has_template() {
        return;
    }
    let launcher = Launcher::new(&config()).unwrap();
    assert_eq!(launcher.spawn_mode(), SpawnMode::Template);
    let a = ready_process(&launcher);
    let b = ready_process(&launcher);
    let template = launcher.template_pid().expect("a template runs");
    let me = std::process::id();

    // The host started only the template; the template forked both, as
    // the host's children (CLONE_PARENT: the host reaps them).
    assert_eq!(
        parent_of(template),
        Some(me),
        "the template is the host's child"
    );
    assert!(is_template(template));
    for p in [&a, &b] {
        assert_eq!(parent_of(p.pid()), Some(me));
        assert!(!is_template(p.pid()));
    }

    // Each its own shared memory (created after the fork), none in the template.
    let (ma, mb) = (shared_memory_inodes(a.pid()), shared_memory_inodes(b.pid()));
    assert!(!ma.is_empty() && !mb.is_empty(), "{ma:?} {mb:?}");
    assert!(
        ma.iter().all(|m| !mb.contains(m)),
        "siblings share memory: {ma:?} {mb:?}"
    );
    assert!(
        shared_memory_inodes(template).is_empty(),
        "the template has shared memory"
    );
    // The template is confined itself (seccomp, no new privileges).
    let status = std::fs::read_to_string(format!("/proc/{template}/status")).unwrap();
    for (field, want) in [("Seccomp:", "2"), ("NoNewPrivs:", "1")] {
        let got = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(str::trim);
        assert_eq!(got, Some(want), "template {field}");
    }

    // Its own scratch directory and pid file, naming itself.
    for p in [&a, &b] {
        let scratch = scratch_of(p.pid());
        let pidfile = std::fs::read_to_string(scratch.join("postmaster.pid")).unwrap();
        assert_eq!(
            pidfile.lines().next(),
            Some(format!("-{}", p.pid()).as_str())
        );
    }
    assert_ne!(scratch_of(a.pid()), scratch_of(b.pid()));

    // Its System V segment exists but is already marked for removal (key
    // IPC_PRIVATE, SHM_DEST): the kernel frees it with the process.
    for p in [&a, &b] {
        let segs = segments_of(p.pid());
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert_eq!(segs[0].0, 0, "key not private: not marked for removal");
        assert_ne!(segs[0].1 & 0o1000, 0, "SHM_DEST not set");
    }
    // A clean exit is silent on stderr.
    let (status, stderr) = a.shutdown(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(stderr, "", "a healthy process said something");
    drop(b);
    drop(launcher);
    assert!(!is_alive(template), "the template outlived its launcher");
}

#[test]
fn a_dead_template_is_replaced_and_its_processes_live_on() {
    let _test = isolated_test();
    if !has_template() {
        return;
    }
    let launcher = Launcher::new(&config()).unwrap();
    let mut a = ready_process(&launcher);
    let template = launcher.template_pid().unwrap();
    // SAFETY: signalling the template, our own child.
    unsafe { libc::kill(template as i32, libc::SIGKILL) };
    assert!(
        wait_gone(template, Duration::from_secs(5)),
        "the killed template lives on"
    );
    // Its process is ours, not its: it serves on.
    a.handshake(Duration::from_secs(10)).unwrap();
    let b = ready_process(&launcher);
    let second = launcher.template_pid().unwrap();
    assert_ne!(second, template);
    assert_eq!(parent_of(b.pid()), Some(std::process::id()));
}

#[test]
fn direct_mode_starts_processes_from_the_host() {
    let _test = isolated_test();
    let launcher = Launcher::new(&Config {
        spawn_mode: SpawnMode::Direct,
        ..config()
    })
    .unwrap();
    let a = ready_process(&launcher);
    assert_eq!(parent_of(a.pid()), Some(std::process::id()));
    assert_eq!(launcher.template_pid(), None);
    let segs = segments_of(a.pid());
    assert!(segs.len() == 1 && segs[0].0 == 0, "{segs:?}");
}

const HOST_ENV: &str = "WALREDO_TEST_DEATH_HOST";

/// Scratch directories of host `pid` in `root` (live or being swept).
fn dirs_of(root: &Path, pid: u32) -> Vec<String> {
    let prefixes = [format!("proc-{pid}-"), format!("trash-{pid}-")];
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose working directory is one of host `pid`'s scratch
/// directories: its template and wal-redo processes.
fn processes_of(root: &Path, pid: u32) -> Vec<u32> {
    let prefix = root.join(format!("proc-{pid}-"));
    let prefix = prefix.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            is_alive(p)
                && std::fs::read_link(format!("/proc/{p}/cwd"))
                    .is_ok_and(|c| c.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// The host of the test below (run as a separate process by it): a pool of
/// 2 processes, both busy, until it is killed.
#[test]
#[ignore = "run by a_host_killed_mid_run_leaves_nothing"]
fn death_host() {
    if std::env::var_os(HOST_ENV).is_none() {
        return;
    }
    let pool = Pool::new(&Config {
        processes: 2,
        fast_path: false,
        ..config()
    })
    .unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let _ = pool.ping();
            });
        }
        let start = Instant::now();
        while pool.pids().len() < 2 && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("READY {:?}", pool.pids());
    });
}

#[test]
fn a_host_killed_mid_run_leaves_nothing() {
    let _test = isolated_test();
    // SAFETY: geteuid cannot fail.
    let root = walredo::config::default_scratch_root();
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "death_host",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hpid = host.id();
    /// Kills the host if the test fails before it does: a host left
    /// behind pings its processes for ever, two CPUs' worth (it once
    /// loaded the machine for the rest of a make check).
    struct KillOnFailure(Option<u32>);
    impl Drop for KillOnFailure {
        fn drop(&mut self) {
            if let (Some(pid), true) = (self.0, std::thread::panicking()) {
                // SAFETY: killing our own child, not yet waited for (its
                // pid is ours until then).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
    let mut kill_on_failure = KillOnFailure(Some(hpid));
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let ready = lines
        .find_map(|l| l.ok().filter(|l| l.contains("READY")))
        .expect("the host did not get ready");
    let procs = processes_of(&root, hpid);
    // The two wal-redo processes, serving, and the template (none on 14).
    let template = usize::from(walredo_testkit::install::pg_version() >= 15);
    assert!(procs.len() >= 2 + template, "{ready}: processes {procs:?}");
    let segments: Vec<_> = procs.iter().flat_map(|&p| segments_of(p)).collect();
    assert!(!segments.is_empty(), "the processes have segments");
    assert!(!dirs_of(&root, hpid).is_empty());

    // SAFETY: killing our own child.
    unsafe { libc::kill(hpid as i32, libc::SIGKILL) };
    kill_on_failure.0 = None;
    host.wait().unwrap();

    // Every process of the host dies with it, and its segment with it.
    for &p in &procs {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "process {p} of the killed host is still alive"
        );
    }
    let left: Vec<_> = procs.iter().flat_map(|&p| segments_of(p)).collect();
    assert!(
        left.is_empty(),
        "segments of the dead host's processes: {left:?}"
    );

    // Its scratch directories go with the next pool (nobody was left to
    // remove them).
    let launcher = Launcher::new(&config()).unwrap();
    let dirs = dirs_of(&root, hpid);
    drop(launcher);
    assert!(
        dirs.is_empty(),
        "scratch directories of the dead host: {dirs:?}"
    );
}

/// A template that stops answering (here: stopped) costs one request's
/// deadline at most; it is then killed and replaced, and the start succeeds
/// on the new one.
#[test]
fn a_stopped_template_is_replaced() {
    let _test = isolated_test();
    if !has_template() {
        return;
    }
    let launcher = Launcher::new(&Config {
        timeout: Duration::from_millis(500),
        ..config()
    })
    .unwrap();
    let _a = ready_process(&launcher);
    let template = launcher.template_pid().unwrap();
    // SAFETY: signalling the template, our own child.
    unsafe { libc::kill(template as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let _b = ready_process(&launcher);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let second = launcher.template_pid().unwrap();
    assert_ne!(second, template);
    assert!(
        wait_gone(template, Duration::from_secs(5)),
        "the stopped template lives on"
    );
}

/// On PostgreSQL 14 a process asked to be a template refuses, with why.
#[test]
fn fourteen_refuses_to_be_a_template() {
    let _test = isolated_test();
    if walredo_testkit::install::pg_version() != 14 {
        return;
    }
    let mut redoer = walredo::Redoer::new(&Config {
        extra_settings: vec!["pg_walredo.template=on".into()],
        ..config()
    })
    .unwrap();
    let e = redoer.ping().unwrap_err();
    assert!(
        format!("{e:?}").contains("pg_walredo.template needs PostgreSQL 15"),
        "{e:?}"
    );
}
