//! One wal-redo process through `Redoer`: start, clean exit, errors that say
//! what to install, deadlines, and a process killed under our feet.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use walredo::process::launch::Launcher;
use walredo::process::{Failure, Interrupted};
use walredo::{Config, Error, Redoer};
use walredo_testkit::harness::*;

#[test]
fn ping_then_clean_shutdown_leaves_nothing_behind() {
    let _test = isolated_test();
    let mut r = Redoer::new(&config()).unwrap();
    r.ping().unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
    // A healthy process says nothing on stderr, even on its way out.
    assert_eq!(r.shutdown(), "");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn missing_pieces_say_what_to_install() {
    let no_pg = Config {
        pg_bindir: Some(PathBuf::from("/nonexistent/bin")),
        ..config()
    };
    let m = spawn_failure(Redoer::new(&no_pg));
    let package = format!(
        "apt-get install -y postgresql-{}",
        walredo_testkit::install::pg_version()
    );
    assert!(m.contains(&package), "{m}");
    let no_ext = Config {
        extension_path: Some(PathBuf::from("/nonexistent/pg_walredo.so")),
        ..config()
    };
    let m = spawn_failure(Redoer::new(&no_ext));
    assert!(m.contains("make -C pg_walredo install"), "{m}");
    let package = format!(
        "postgresql-server-dev-{}",
        walredo_testkit::install::pg_version()
    );
    assert!(m.contains(&package), "{m}");
}

#[test]
fn a_stopped_process_times_out_and_is_replaced() {
    let _test = isolated_test();
    // Both ways of waiting: a blocking read under the watchdog, and poll.
    for blocking_wait in [true, false] {
        stopped_process_times_out(blocking_wait);
    }
}

fn stopped_process_times_out(blocking_wait: bool) {
    let cfg = Config {
        timeout: Duration::from_millis(300),
        blocking_wait,
        ..config()
    };
    let mut r = Redoer::new(&cfg).unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let started = Instant::now();
    match r.ping() {
        Err(Error::Timeout { after_ms: 300, .. }) => {}
        other => panic!("expected a timeout (blocking_wait {blocking_wait}), got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Killed and reaped: no zombie left.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    r.ping().unwrap();
    assert_ne!(r.pid(), Some(pid));
    // Answered requests leave no deadline behind: an idle process lives on.
    let replacement = r.pid();
    std::thread::sleep(Duration::from_millis(700));
    r.ping().unwrap();
    assert_eq!(r.pid(), replacement);
    drop(r);
    assert_no_leftovers();
}

#[test]
fn a_killed_process_fails_its_request_and_the_next_one_works() {
    let _test = isolated_test();
    let (mut r, pid) = started_redoer(&config());
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // The write goes into the pipe (we hold a read end of it, so it can
    // never raise SIGPIPE here); the death shows as EOF on stdout.
    let (message, _) = redo_failure(r.ping());
    assert!(message.contains("EOF"), "{message}");
    r.ping().unwrap();
}

#[test]
fn a_request_larger_than_the_pipe_to_a_dead_process_ends_at_once() {
    let _test = isolated_test();
    let launcher = Launcher::new(&config()).unwrap();
    let mut p = ready_process(&launcher);
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) };
    // 1 MiB of pings: the pipe fills and is never drained, yet the wait
    // ends with the EOF of the dead process's stdout, not at the deadline.
    let mut request = Vec::new();
    while request.len() < 1 << 20 {
        walredo::process::protocol::write_ping(&mut request);
    }
    let mut pages = vec![0u8; 8192];
    let started = Instant::now();
    let outcome = p.transact(&request, &mut pages, Duration::from_secs(30));
    assert!(
        matches!(
            outcome,
            Err(Interrupted {
                failure: Failure::Eof,
                pages_done: 0
            })
        ),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(p);
    // The launcher owns the template process, if any.
}

#[test]
fn children_inherit_no_fd_no_environment_and_get_their_own_group() {
    let _test = isolated_test();
    // A descriptor the "host" opened without O_CLOEXEC.
    let marker = std::env::temp_dir().join(format!("walredo-leak-{}", std::process::id()));
    std::fs::write(&marker, b"x").unwrap();
    let path = std::ffi::CString::new(marker.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    std::env::set_var("WALREDO_TEST_SECRET", "must-not-leak");

    let (r, pid) = started_redoer(&config());
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    for entry in std::fs::read_dir(proc_dir.join("fd")).unwrap().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        assert_ne!(
            target, marker,
            "the host's descriptor leaked into the child"
        );
    }
    let environ = std::fs::read(proc_dir.join("environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("WALREDO_TEST_SECRET"),
        "the host's environment leaked into the child"
    );
    // SAFETY: getpgid has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::getpgid(pid as i32) },
        pid as i32,
        "own process group"
    );
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
            "{uid_line}"
        );
    }

    drop(r);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    let _ = std::fs::remove_file(&marker);
    std::env::remove_var("WALREDO_TEST_SECRET");
}

/// The version a pool serves: a `pg_version` walredo does not serve is
/// refused; a supported version this machine does not have (when there is
/// one) says which package to install; a `pg_bindir` of another version is
/// refused, naming what it is; and the version found is the one asked for.
/// Each holds on any machine, whichever versions are installed.
#[test]
fn the_version_asked_for_is_the_version_served() {
    let _test = isolated_test();
    let here = walredo_testkit::install::pg_version();
    let supported: Vec<u32> = walredo::pg::xlog::PG_VERSIONS
        .iter()
        .map(|(v, _)| *v)
        .collect();
    match Launcher::new(&Config {
        pg_version: Some(13),
        ..config()
    }) {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains(&walredo::pg::xlog::supported_versions()), "{m}")
        }
        r => panic!("expected InvalidArgument, got {r:?}"),
    }
    // Searched for (no pg_bindir): a version neither installed where Debian
    // puts it nor the one of `pg_config` on PATH.
    if let Some(missing) = supported.iter().copied().find(|v| !found_by_search(*v)) {
        match Launcher::new(&Config {
            pg_version: Some(missing),
            pg_bindir: None,
            ..config()
        }) {
            Err(Error::SpawnFailed(m)) => {
                assert!(
                    m.contains(&format!("apt-get install -y postgresql-{missing}")),
                    "{m}"
                )
            }
            r => panic!("expected SpawnFailed, got {r:?}"),
        }
    }
    let other = supported.iter().copied().find(|v| *v != here).unwrap();
    match Launcher::new(&Config {
        pg_version: Some(other),
        ..config()
    }) {
        Err(Error::SpawnFailed(m)) => {
            assert!(m.contains(&format!("is not PostgreSQL {other}")), "{m}");
            assert!(m.contains(&format!("(PostgreSQL) {here}.")), "{m}");
        }
        r => panic!("expected SpawnFailed, got {r:?}"),
    }
    let launcher = Launcher::new(&Config {
        pg_version: None,
        ..config()
    })
    .unwrap();
    assert_eq!(launcher.pg_version(), here);
}

/// Whether the library's search (no `pg_bindir`) could find PostgreSQL
/// `version` here: Debian's directory of it, or `pg_config` on PATH.
fn found_by_search(version: u32) -> bool {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin/pg_config"));
    let on_path = std::process::Command::new("pg_config")
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).starts_with(&format!("PostgreSQL {version}."))
        });
    debian.exists() || on_path
}
