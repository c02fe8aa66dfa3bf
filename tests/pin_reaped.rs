//! CPU pinning (`Process::follow_cpu`) never reaches a process that is not
//! our live child. When the host ignores SIGCHLD, a dead child is reaped by
//! the kernel at once and its pid is free for anyone: pinning by that pid
//! would pin a stranger. (Its own test binary: the signal disposition is
//! process-wide.)

use std::process::{Child, Command};
use std::time::Duration;

use walredo::process::launch::Launcher;
use walredo::process::Process;
use walredo::Config;
use walredo_testkit::harness::*;

fn affinity(pid: u32) -> Vec<usize> {
    // SAFETY: cpu_set_t is plain old data for sched_getaffinity to fill.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid cpu_set_t of the size passed.
    let rc = unsafe {
        libc::sched_getaffinity(pid as i32, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
    };
    assert_eq!(rc, 0, "sched_getaffinity({pid})");
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid as i32, 0) != 0 }
}

/// A new process with pid `pid`, made by asking the kernel to hand out that
/// number next (root only); others forking meanwhile may take it first.
fn stranger_with_pid(pid: u32) -> Option<Child> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
        let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
        if child.id() == pid {
            return Some(child);
        }
        let _ = child.kill();
        // ECHILD at once: the kernel reaps it (SIGCHLD is ignored).
        let _ = child.wait();
    }
    None
}

#[test]
fn a_reaped_childs_recycled_pid_is_never_pinned() {
    // Only the segments this test makes count (assert_no_leftovers).
    isolate_ipc();
    init_logging();
    // SAFETY: setting a signal disposition; this test binary runs only this.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let launcher = Launcher::new(&Config {
        child_program: Some((walredo_testkit::fake_child(), vec![])),
        ..Config::default()
    })
    .unwrap();
    let mut p = Process::spawn(&launcher).unwrap();
    p.handshake(Duration::from_secs(10)).unwrap();
    let pid = p.pid();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // The kernel reaps it by itself; its pid is free.
    while !gone(pid) {
        std::thread::sleep(Duration::from_millis(1));
    }

    match stranger_with_pid(pid) {
        Some(mut stranger) => {
            eprintln!("pid {pid} now belongs to a stranger (sleep)");
            let before = affinity(pid);
            assert!(before.len() > 1, "needs more than one CPU: {before:?}");
            p.follow_cpu();
            let after = affinity(pid);
            let _ = stranger.kill();
            let _ = stranger.wait();
            assert_eq!(
                after, before,
                "a stranger with the dead child's pid was pinned"
            );
        }
        None => {
            eprintln!("no stranger could take pid {pid} (needs root); only the dead pid is tried");
            p.follow_cpu();
        }
    }
    drop(p);

    // Control: a live child is pinned, to the CPU of the calling thread.
    let mut live = Process::spawn(&launcher).unwrap();
    live.handshake(Duration::from_secs(10)).unwrap();
    live.follow_cpu();
    assert_eq!(affinity(live.pid()).len(), 1, "a live child was not pinned");
    drop(live);
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    assert_no_leftovers();
}
