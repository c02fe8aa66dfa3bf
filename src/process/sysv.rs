//! System V clean-up. PostgreSQL always makes a small System V segment and
//! removes it only on a clean exit: a child that was killed leaves it, and
//! they pile up until `shmget` fails. Removed here for a dead child of ours
//! (`remove_sysv_segment`, when its `Process` is dropped) and for those of
//! a dead host (`remove_dead_childs_segment`, from the stale scratch
//! directories), believing the child's `postmaster.pid` only as far as it
//! can be checked.

use std::fs;
use std::time::{Duration, Instant};

/// Longest `postmaster.pid` read; PostgreSQL's is a few hundred bytes.
const PID_FILE_MAX: u64 = 4096;

/// Remove the System V shared memory segment a dead PostgreSQL process left.
///
/// PostgreSQL always creates a small SysV segment (an interlock beside its
/// anonymous shared memory) and removes it only on a clean exit. A process
/// that was killed or PANICked leaves it, and they pile up until `shmget`
/// fails. Its key and id are on line 7 of `postmaster.pid`.
///
/// That file is the child's, which may have been hijacked, so it names a
/// segment only as a hint: the segment is removed only if the dead child
/// (`pid`, running as `uid`) created it and still owns it, it still has the
/// key named, and nobody is attached. The file is read only if it is a
/// regular file (never through a link: a host running as root could read
/// anything) of at most `PID_FILE_MAX` bytes.
pub(crate) fn remove_sysv_segment(scratch: &std::path::Path, pid: u32, uid: u32) {
    let Some(pidfile) = read_pid_file(&scratch.join("postmaster.pid")) else {
        return;
    };
    let Some(line) = pidfile.lines().nth(6).filter(|l| !l.trim().is_empty()) else {
        // Killed between creating its segment and naming it there.
        remove_unnamed_segment(scratch, pid, uid);
        return;
    };
    let mut fields = line.split_whitespace().map(str::parse::<i64>);
    let (Some(Ok(key)), Some(Ok(shmid))) = (fields.next(), fields.next()) else {
        return;
    };
    let Ok(shmid) = libc::c_int::try_from(shmid) else {
        return;
    };
    remove_childs_segment(shmid, key, pid, uid);
}

/// Remove segment `shmid` if it still has `key`, the dead child (`pid`,
/// running as `uid`) created it and still owns it, and nobody is attached;
/// whether it did.
fn remove_childs_segment(shmid: libc::c_int, key: i64, pid: u32, uid: u32) -> bool {
    // SAFETY: shmid_ds is plain old data that IPC_STAT fills in.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a shmid_ds for IPC_STAT to fill.
    if unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } != 0 {
        return false; // already gone
    }
    let made_by_child = i64::from(ds.shm_cpid) == i64::from(pid)
        && ds.shm_perm.cuid == uid
        && ds.shm_perm.uid == uid;
    if !made_by_child || i64::from(ds.shm_perm.__key) != key || ds.shm_nattch != 0 {
        return false; // not the one our process made, or still in use
    }
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) == 0 }
}

/// Remove the segment of a dead child that died between `shmget` and
/// writing the segment's key to `postmaster.pid` (a kill during start-up:
/// rare, but a chaos run of thousands of kills hits it). PostgreSQL takes
/// the key from the data directory's inode number, counting up past keys
/// in use, so the first keys from there are probed; only a segment the dead
/// child (`pid`, as `uid`) created, with nobody attached, is removed.
fn remove_unnamed_segment(scratch: &std::path::Path, pid: u32, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    const KEY_PROBES: libc::key_t = 16;
    let Ok(meta) = fs::symlink_metadata(scratch) else {
        return;
    };
    let first_key = meta.ino() as libc::key_t;
    for i in 0..KEY_PROBES {
        let key = first_key.wrapping_add(i);
        if key == libc::IPC_PRIVATE {
            continue;
        }
        // SAFETY: shmget with size 0 and no flags only looks a key up.
        let shmid = unsafe { libc::shmget(key, 0, 0) };
        if shmid >= 0 && remove_childs_segment(shmid, i64::from(key), pid, uid) {
            return;
        }
    }
}

/// Remove the System V segment of a wal-redo process whose host died before
/// it could reap it (and so remove the segment itself, above): called for
/// each stale scratch directory before it is removed.
///
/// The dead host can no longer say which pid its child had; the child's
/// `postmaster.pid` can, but is untrusted, so it is believed only as far as
/// it can be checked: the pid it names is dead, the segment was created by
/// that pid as the children's user (`uid`) and nobody is attached to it
/// (`remove_sysv_segment`), and its key is one PostgreSQL derives from this
/// very directory (its inode number, counted up past keys already taken).
/// A child killed with its host before it named its segment there (the
/// lock file is written first) is found by those keys alone.
///
/// The host died a moment ago, perhaps: its child, killed with it
/// (`PR_SET_PDEATHSIG`), may still be exiting. Such a child (its working
/// directory is `scratch`) is waited for, briefly. Returns false when the
/// directory must stay because its process still runs.
pub(crate) fn remove_dead_childs_segment(scratch: &std::path::Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    /// How far PostgreSQL counts up from the inode number looking for a
    /// free key; in practice it takes the first.
    const KEY_PROBES: i64 = 1000;
    /// How long a child that is still exiting is waited for.
    const EXIT_WAIT: Duration = Duration::from_millis(500);
    let Some(pidfile) = read_pid_file(&scratch.join("postmaster.pid")) else {
        return true;
    };
    // A single-user backend writes its pid negated.
    let Some(pid) = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .and_then(|p| libc::pid_t::try_from(p.unsigned_abs()).ok())
        .filter(|&p| p > 0)
    else {
        return true;
    };
    let waited = Instant::now();
    while still_runs_in(pid, scratch, uid) {
        if waited.elapsed() > EXIT_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(key) = pidfile
        .lines()
        .nth(6)
        .and_then(|l| l.split_whitespace().next()?.parse::<i64>().ok())
    else {
        // Killed with its host between creating its segment and naming it
        // here: found by the directory's inode, if the dead pid made it.
        remove_sysv_segment(scratch, pid as u32, uid);
        return true;
    };
    let Ok(meta) = fs::symlink_metadata(scratch) else {
        return true;
    };
    // key_t is an int: PostgreSQL starts from the inode number cut to it.
    let first_key = i64::from(meta.ino() as libc::key_t);
    if (first_key..first_key + KEY_PROBES).contains(&key) {
        remove_sysv_segment(scratch, pid as u32, uid);
    }
    true
}

/// Whether process `pid` exists and works in `dir` (a wal-redo process runs
/// in its scratch directory); a pid that is gone, or now someone else's,
/// does not.
///
/// A wal-redo process is non-dumpable (pg_walredo's sandbox.c): a host that
/// is not root, and so runs its processes as itself (`uid`), may not read
/// their working directory. Such a process of that account may be the one
/// that worked in `dir`, so it counts as still running (the directory stays
/// for a later clean-up); a process of another account is not ours.
fn still_runs_in(pid: libc::pid_t, dir: &std::path::Path, uid: u32) -> bool {
    match fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd == dir,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => real_uid_of(pid) == Some(uid),
        // Gone: not one of our children any more.
        Err(_) => false,
    }
}

/// The real uid of process `pid` (`/proc/<pid>/status` stays readable when
/// the process is not dumpable).
fn real_uid_of(pid: libc::pid_t) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().next()?.parse().ok()
}

/// The content of a regular file at `path`, not a link to one (O_NOFOLLOW),
/// of at most `PID_FILE_MAX` bytes; `None` for anything else. O_NONBLOCK: a
/// FIFO must not block the open; O_NOCTTY: a terminal never becomes ours.
fn read_pid_file(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(PID_FILE_MAX + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > PID_FILE_MAX {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A scratch directory whose process (dead now) made a System V
    /// segment with PostgreSQL's key but was killed before it named the
    /// segment in `postmaster.pid`: the directory, the segment's id and the
    /// dead pid.
    fn unnamed_segment_of_a_dead_child(name: &str) -> (PathBuf, libc::c_int, libc::pid_t) {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("walredo-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let key = fs::metadata(&dir).unwrap().ino() as libc::key_t;
        // SAFETY: the child only calls shmget and _exit, both
        // async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let ok = libc::shmget(key, 56, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) >= 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0, "the child could not make its segment");
        // SAFETY: a key lookup.
        let shmid = unsafe { libc::shmget(key, 0, 0) };
        assert!(shmid >= 0);
        (dir, shmid, pid)
    }

    /// The lock file as PostgreSQL has it before the segment line, naming
    /// `pid` (negated, as a single-user backend writes it).
    fn write_unnamed_pid_file(dir: &Path, pid: libc::pid_t) {
        fs::write(
            dir.join("postmaster.pid"),
            format!("-{pid}\n{}\n0\n\n\n\n", dir.display()),
        )
        .unwrap();
    }

    /// Whether segment `shmid` still exists (removed here if so, and the
    /// directory with it, before the caller's assertion).
    fn still_there_then_clean(dir: &Path, shmid: libc::c_int) -> bool {
        // SAFETY: shmid_ds is plain old data; IPC_STAT fills it in.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a shmid_ds for IPC_STAT.
        let there = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } == 0;
        if there {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        let _ = fs::remove_dir_all(dir);
        there
    }

    /// A child killed after `shmget` but before its key reached
    /// `postmaster.pid`: its host still finds the segment (by the
    /// directory's inode) and removes it, and leaves someone else's alone.
    #[test]
    fn a_segment_not_yet_named_in_the_pid_file_is_removed() {
        let (dir, shmid, pid) = unnamed_segment_of_a_dead_child("unnamed");
        write_unnamed_pid_file(&dir, pid);
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        // Another pid: not its segment.
        remove_sysv_segment(&dir, pid as u32 + 1, uid);
        // SAFETY: shmid_ds is plain old data; IPC_STAT fills it in.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a shmid_ds for IPC_STAT.
        let kept = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } == 0;
        remove_sysv_segment(&dir, pid as u32, uid);
        let left = still_there_then_clean(&dir, shmid);
        assert!(kept, "removed a stranger's");
        assert!(!left, "the unnamed segment was left behind");
    }

    /// The same child, killed together with its host: the next pool's
    /// clean-up of the dead host's scratch directory removes the segment
    /// (before, it needed the key in `postmaster.pid`), but not when the
    /// lock file names a pid that did not make it.
    #[test]
    fn a_dead_hosts_unnamed_segment_is_removed_by_the_next_pool() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let (dir, shmid, pid) = unnamed_segment_of_a_dead_child("dead-host-unnamed");
        write_unnamed_pid_file(&dir, pid + 1);
        assert!(remove_dead_childs_segment(&dir, uid));
        assert!(
            still_there_then_clean(&dir, shmid),
            "removed a segment the named pid did not make"
        );
        let (dir, shmid, pid) = unnamed_segment_of_a_dead_child("dead-host-unnamed");
        write_unnamed_pid_file(&dir, pid);
        assert!(remove_dead_childs_segment(&dir, uid));
        assert!(
            !still_there_then_clean(&dir, shmid),
            "the dead host's unnamed segment was left behind"
        );
    }

    /// A host that is not root cannot read a non-dumpable process's working
    /// directory (EACCES): one of its own account still counts as running
    /// (its scratch directory must stay), one of another account does not.
    /// The host is a thread that dropped to `nobody` (a raw setresuid
    /// changes only the calling thread); the process is `sleep` as `nobody`
    /// from a copy it may execute but not read, which makes it non-dumpable
    /// as pg_walredo's prctl does. Root only.
    #[test]
    fn a_non_dumpable_child_hidden_from_a_host_that_is_not_root_still_runs() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("walredo-undumpable-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let sleep = dir.join("sleep");
        fs::copy("/bin/sleep", &sleep).unwrap();
        fs::set_permissions(&sleep, fs::Permissions::from_mode(0o711)).unwrap();
        let mut child = std::process::Command::new(&sleep)
            .arg("60")
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Wait for the exec (the working directory then names the copy's).
        let exe = dir.join("sleep");
        while fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() != Some(exe.as_path()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (dir2, own) = (dir.clone(), std::process::id() as libc::pid_t);
        let seen = std::thread::spawn(move || {
            // SAFETY: setresuid on this thread only (the raw system call);
            // the thread ends right after.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) };
            assert_eq!(r, 0);
            let hidden = fs::read_link(format!("/proc/{pid}/cwd")).map_err(|e| e.kind());
            (
                hidden,
                still_runs_in(pid, &dir2, NOBODY),
                still_runs_in(pid, &dir2, NOBODY + 1),
                still_runs_in(own, &dir2, NOBODY),
            )
        })
        .join()
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            seen.0,
            Err(std::io::ErrorKind::PermissionDenied),
            "the process is dumpable"
        );
        assert!(seen.1, "a live child of the host's account counted as gone");
        assert!(!seen.2, "another account's process counted as ours");
        assert!(!seen.3, "root's process counted as the host's");
    }
}
