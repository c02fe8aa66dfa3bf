//! After reaping a process, the host removes the System V segment it left
//! (PostgreSQL's interlock segment, which a killed process never removes),
//! found through the process's `postmaster.pid`. That file is written by the
//! untrusted child, so only a segment that child created, as its own user, is
//! ever removed, and the file is read only as a bounded regular file.

use walredo::process::launch::Launcher;
use walredo::Config;
use walredo_testkit::harness::*;

fn fake_launcher(args: &[&str]) -> Launcher {
    Launcher::new(&Config {
        child_program: Some((
            walredo_testkit::fake_child(),
            args.iter().map(|s| s.to_string()).collect(),
        )),
        ..Config::default()
    })
    .unwrap()
}

/// Start a fake child with `args`, let it answer a ping (so it has written
/// its pid file), then drop it: killed, reaped, its segment removed.
/// Returns its pid.
fn run_fake_child(args: &[&str]) -> u32 {
    let launcher = fake_launcher(args);
    let p = ready_process(&launcher);
    let pid = p.pid();
    drop(p);
    pid
}

#[test]
fn a_segment_the_child_did_not_create_survives_its_reaping() {
    let _test = isolated_test();
    // Ours, unattached, named by the child as if it were its own. (Not 56
    // bytes: other tests count those as PostgreSQL's leftovers.)
    // SAFETY: shmget has no memory-safety preconditions.
    let shmid = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
    run_fake_child(&["--pidfile-names", &format!("0:{shmid}")]);
    let survived = sysv_segment_exists(shmid);
    remove_sysv_segment(shmid);
    assert!(survived, "the host removed a segment the child only named");
}

#[test]
fn a_segment_the_child_created_is_removed_only_through_a_plain_bounded_pid_file() {
    let _test = isolated_test();
    // Control: the fake child's own segment, named as PostgreSQL does, goes.
    let pid = run_fake_child(&["--own-segment", "plain"]);
    let left = sysv_segments_created_by(pid);
    left.iter().for_each(|&id| remove_sysv_segment(id));
    assert!(left.is_empty(), "its own segment was not removed: {left:?}");

    // A pid file that is a symbolic link, or whose line 7 lies beyond the
    // first 4 KiB, is not followed or read that far: the segment stays.
    for how in ["symlink", "padded"] {
        let pid = run_fake_child(&["--own-segment", how]);
        let left = sysv_segments_created_by(pid);
        left.iter().for_each(|&id| remove_sysv_segment(id));
        assert_eq!(left.len(), 1, "{how}: the pid file was read: {left:?}");
    }
}

#[test]
fn a_killed_postgres_still_has_its_own_segment_removed() {
    let _test = isolated_test();
    let (mut r, pid) = started_redoer(&config());
    let segments = sysv_segments_created_by(pid);
    assert_eq!(segments.len(), 1, "PostgreSQL's interlock segment");
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // The failed ping kills, reaps and cleans up after the dead process.
    assert!(r.ping().is_err());
    assert!(
        !sysv_segment_exists(segments[0]),
        "the killed process's segment was left behind"
    );
}
