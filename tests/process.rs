//! One wal-redo process through `Redoer`: start, clean exit, errors that say
//! what to install, deadlines, and a process killed under our feet.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use walredo::{Config, Error, Redoer};

#[test]
fn ping_then_clean_shutdown_leaves_nothing_behind() {
    let _serial = serial();
    init_logging();
    let mut r = Redoer::new(&config()).unwrap();
    r.ping().unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
    // A healthy process says nothing on stderr, even on its way out.
    assert_eq!(r.shutdown(), "");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(r);
    assert_no_leftovers();
}

#[test]
fn missing_pieces_say_what_to_install() {
    let no_pg = Config {
        pg_bindir: Some(PathBuf::from("/nonexistent/bin")),
        ..config()
    };
    match Redoer::new(&no_pg) {
        Err(Error::SpawnFailed(m)) => {
            assert!(m.contains("apt-get install -y postgresql-15"), "{m}")
        }
        other => panic!("expected SpawnFailed, got {:?}", other.err()),
    }
    let no_ext = Config {
        extension_path: Some(PathBuf::from("/nonexistent/pg_walredo.so")),
        ..config()
    };
    match Redoer::new(&no_ext) {
        Err(Error::SpawnFailed(m)) => {
            assert!(m.contains("make -C pg_walredo install"), "{m}");
            assert!(m.contains("postgresql-server-dev-15"), "{m}");
        }
        other => panic!("expected SpawnFailed, got {:?}", other.err()),
    }
}

#[test]
fn a_stopped_process_times_out_and_is_replaced() {
    let _serial = serial();
    init_logging();
    let cfg = Config {
        timeout: Duration::from_millis(300),
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
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Killed and reaped: no zombie left.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    r.ping().unwrap();
    assert_ne!(r.pid(), Some(pid));
    drop(r);
    assert_no_leftovers();
}

#[test]
fn a_killed_process_fails_its_request_and_the_next_one_works() {
    let _serial = serial();
    init_logging();
    let mut r = Redoer::new(&config()).unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // The write may succeed (into the socket buffer) or fail with EPIPE; it
    // must never raise SIGPIPE here, and the answer is EOF or broken pipe.
    match r.ping() {
        Err(Error::RedoFailed { message, .. }) => {
            assert!(
                message.contains("EOF") || message.contains("broken pipe"),
                "{message}"
            )
        }
        other => panic!("expected RedoFailed, got {other:?}"),
    }
    r.ping().unwrap();
    drop(r);
    assert_no_leftovers();
}

#[test]
fn children_inherit_no_fd_no_environment_and_get_their_own_group() {
    let _serial = serial();
    init_logging();
    // A descriptor the "host" opened without O_CLOEXEC.
    let marker = std::env::temp_dir().join(format!("walredo-leak-{}", std::process::id()));
    std::fs::write(&marker, b"x").unwrap();
    let path = std::ffi::CString::new(marker.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    std::env::set_var("WALREDO_TEST_SECRET", "must-not-leak");

    let mut r = Redoer::new(&config()).unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
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
    assert_no_leftovers();
}
