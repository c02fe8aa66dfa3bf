//! A descriptor the host opened without O_CLOEXEC above the child's
//! RLIMIT_NOFILE (1024) does not reach the child. (Its own test binary: it
//! may raise the process's descriptor limit.) The fallback path of kernels
//! without CLOSE_RANGE_CLOEXEC is tested in src/process/mod.rs.

use std::os::fd::AsRawFd;
use std::time::Duration;

use walredo::process::launch::Launcher;
use walredo::process::Process;
use walredo::Config;
use walredo_testkit::harness::*;

const HIGH: libc::c_int = 1500;

#[test]
fn a_host_descriptor_above_1024_is_not_open_in_the_child() {
    let _serial = serial();
    init_logging();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers; raising the soft limit up to the hard
    // one is always allowed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur <= HIGH as libc::rlim_t {
            assert!(lim.rlim_max > HIGH as libc::rlim_t, "hard limit too low");
            lim.rlim_cur = lim.rlim_max.min(4096);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    let null = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup2 of an open descriptor; dup2 never sets O_CLOEXEC.
    assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), HIGH) }, HIGH);

    // The fake child keeps whatever it inherits (PostgreSQL's sandbox would
    // close it at the first request and hide a leak).
    let launcher = Launcher::new(&Config {
        child_program: Some((walredo_testkit::fake_child(), vec![])),
        ..Config::default()
    })
    .unwrap();
    let mut p = Process::spawn(&launcher).unwrap();
    p.handshake(Duration::from_secs(10)).unwrap();
    let leaked = std::path::Path::new(&format!("/proc/{}/fd/{HIGH}", p.pid())).exists();
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    drop(p);
    // SAFETY: closing the descriptor made above.
    unsafe { libc::close(HIGH) };
    assert!(!leaked, "fd {HIGH} leaked into the child; it has {fds:?}");
    assert_no_leftovers();
}
