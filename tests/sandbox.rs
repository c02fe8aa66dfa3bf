//! The wal-redo process's sandbox (pg_walredo/sandbox.c), proven from the
//! outside: the seccomp filter is on, a forbidden system call kills the
//! process and the pool recovers, files outside the scratch directory cannot
//! be opened, only stdin, stdout and stderr stay open, and the resource limits
//! are set. Plus a record that drives PostgreSQL into PANIC next to requests
//! that must not notice.

use std::sync::Arc;

use walredo::{Config, Error, Pool, Redoer};
use walredo_testkit::harness::*;

fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn the_filter_is_active_and_only_stdio_is_open() {
    let _test = isolated_test();
    let (r, pid) = started_redoer(&config());
    assert_eq!(status_field(pid, "Seccomp"), "2", "seccomp filter mode");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    assert_eq!(fds, [0, 1, 2], "only stdin, stdout and stderr are open");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().rev().nth(2).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(limit("Max core file size"), "0", "{limits}");
    assert_ne!(limit("Max address space"), "unlimited", "{limits}");
    assert_ne!(limit("Max open files"), "unlimited", "{limits}");
    drop(r);

    // The switch for debugging really switches it off.
    let off = Config {
        extra_settings: vec!["pg_walredo.sandbox=off".into()],
        ..config()
    };
    let mut r = Redoer::new(&off).unwrap();
    r.ping().unwrap();
    assert_eq!(status_field(r.pid().unwrap(), "Seccomp"), "0");
}

#[test]
fn a_forbidden_system_call_kills_the_process_and_the_pool_recovers() {
    let _test = isolated_test();
    let dir = TempDir::new("sandbox-syscall");
    let fixtures = load_fixtures(dir.path());
    let f = fixtures.iter().find(|f| f.expect_status == 0).unwrap();
    // Pings of these processes make a forbidden system call; redo does not.
    let evil = Config {
        extra_settings: vec!["pg_walredo.test_on_ping=getppid".into()],
        ..config()
    };
    let mut r = Redoer::new(&evil).unwrap();
    match r.ping() {
        Err(Error::RedoFailed { message: m, .. }) => {
            assert!(m.contains("SIGSYS"), "{m}");
            println!("forbidden syscall: {m}")
        }
        other => panic!("a forbidden system call went through: {other:?}"),
    }
    // The next request gets a fresh, sandboxed process and the right page.
    let page = r.redo(&f.tag, f.base.as_deref(), &f.refs()).unwrap();
    assert_eq!(&page[..], &f.expected.as_ref().unwrap()[..]);
    assert_eq!(status_field(r.pid().unwrap(), "Seccomp"), "2");
}

#[test]
fn files_outside_the_scratch_directory_cannot_be_opened() {
    let _test = isolated_test();
    // A file the process's user could read without the sandbox.
    let outside = std::env::temp_dir().join(format!("walredo-outside-{}", std::process::id()));
    std::fs::write(&outside, b"secret").unwrap();
    std::fs::set_permissions(
        &outside,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let probe = |sandbox: &str| {
        let cfg = Config {
            extra_settings: vec![
                format!("pg_walredo.test_on_ping=open:{}", outside.display()),
                format!("pg_walredo.sandbox={sandbox}"),
            ],
            ..config()
        };
        let mut r = Redoer::new(&cfg).unwrap();
        r.ping()
    };
    // Confined: the open fails and the ping is answered.
    probe("on").unwrap();
    // Control: without the sandbox the same open works, and the probe says so.
    match probe("off") {
        Err(Error::SpawnFailed(m)) | Err(Error::RedoFailed { message: m, .. }) => {
            assert!(m.contains("sandbox breach"), "{m}")
        }
        other => panic!("the control probe did not open the file: {other:?}"),
    }
    let _ = std::fs::remove_file(&outside);
}

#[test]
fn a_panicking_record_fails_alone() {
    let _test = isolated_test();
    // Fixtures from real WAL: a dropped record makes PostgreSQL PANIC.
    let dir = TempDir::new("sandbox-fixtures");
    let fixtures = load_fixtures(dir.path());
    let bad: Vec<_> = fixtures.iter().filter(|f| f.expect_status == 3).collect();
    let good: Vec<_> = fixtures.iter().filter(|f| f.expect_status == 0).collect();
    assert!(!bad.is_empty() && good.len() >= 10);
    let pool = Arc::new(
        Pool::new(&Config {
            processes: 2,
            ..config()
        })
        .unwrap(),
    );
    std::thread::scope(|s| {
        for t in 0..3 {
            let (pool, good) = (pool.clone(), &good);
            s.spawn(move || {
                for round in 0..5 {
                    for f in good.iter().skip((t + round) % 3) {
                        let page = pool.redo(&f.tag, f.base.as_deref(), &f.refs()).unwrap();
                        assert_eq!(&page[..], &f.expected.as_ref().unwrap()[..]);
                    }
                }
            });
        }
        for f in &bad {
            match pool.redo(&f.tag, f.base.as_deref(), &f.refs()) {
                Err(Error::RedoFailed { message, .. }) => {
                    assert!(message.contains("PANIC"), "{message}")
                }
                other => panic!("expected the PANIC, got {other:?}"),
            }
        }
    });
}
