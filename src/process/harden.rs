//! What is done to every child between its fork (or clone) and its exec,
//! written once for both ways the host starts one: `start::start`
//! (`CLONE_VM`: a wal-redo process started directly, and the template) and
//! std's fork and exec (`harden_child`: under valgrind, or before Linux 5.4).
//! The template's own children are hardened by pg_walredo/template.c.
//!
//! The list, in order (`Hardening::apply`): every signal back to its default
//! action; die with the thread that started it (`PR_SET_PDEATHSIG`), and
//! exit if the host is already gone; every descriptor above the three stdio
//! pipes close-on-exec; resource limits; no signal blocked. Before it, the
//! start takes the child's stdio, process group, user (which clears the
//! parent-death signal, hence after) and working directory.

use std::io;

/// `CLOSE_RANGE_CLOEXEC` from linux/close_range.h.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// What the hardening needs, read in the host before the fork: the child
/// makes only raw system calls (a `CLONE_VM` child shares the host's
/// memory), allocating nothing and taking no lock.
#[derive(Clone, Copy)]
pub(crate) struct Hardening {
    /// The host: a child whose parent is no longer it was orphaned before
    /// its parent-death signal was set, and nobody would ever kill it.
    parent: libc::pid_t,
    /// RLIMIT_AS of the child.
    memory_limit: u64,
    /// Where the fallback of `mark_host_descriptors` stops (`host_fd_bound`).
    fd_bound: libc::c_int,
    /// False only in a test, to take the fallback of kernels without
    /// `CLOSE_RANGE_CLOEXEC` (before 5.11).
    close_range: bool,
}

/// The step of [`Hardening::apply`] that failed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refused {
    /// `PR_SET_PDEATHSIG`.
    DeathSignal,
    /// The host died before the parent-death signal was set.
    ParentGone,
    /// Unblocking the signals.
    Signals,
}

impl Hardening {
    /// The hardening of a child of this process with `memory_limit`.
    pub(crate) fn new(memory_limit: u64) -> Hardening {
        Hardening {
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            memory_limit,
            fd_bound: host_fd_bound(),
            close_range: true,
        }
    }

    /// Harden the calling process, a new child about to exec: the list in
    /// the module notes. A failure says which step and its errno.
    ///
    /// # Safety
    /// Only in a child between fork (or clone) and exec, after it has taken
    /// its stdio and switched to its user: it changes the whole process's
    /// signal actions, descriptors and limits. Every call is a thin wrapper
    /// of one system call, async-signal-safe, allocating nothing.
    pub(crate) unsafe fn apply(&self) -> Result<(), (Refused, i32)> {
        // SAFETY: see above; every argument is valid for its call.
        unsafe {
            // While every signal is still blocked (a `start::start` child),
            // no handler of the host's may remain: a handler runs host code.
            for sig in 1..=libc::SIGRTMAX() {
                if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                // glibc's own signals (SIGCANCEL, SIGSETXID) are refused: fine.
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err((Refused::DeathSignal, errno()));
            }
            // The parent may have died before prctl: then nobody would ever
            // kill us.
            if libc::getppid() != self.parent {
                return Err((Refused::ParentGone, libc::ESRCH));
            }
            self.mark_host_descriptors();
            set_child_limits(self.memory_limit);
            // The starting thread blocks every signal (`threads`); a program
            // expects to start with none blocked, as from a shell. The raw
            // system call: glibc's wrapper is not one a `CLONE_VM` child may
            // call.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            let unblocked = libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &none as *const libc::sigset_t,
                std::ptr::null_mut::<libc::sigset_t>(),
                8usize,
            ) == 0;
            if !unblocked {
                return Err((Refused::Signals, errno()));
            }
        }
        Ok(())
    }

    /// Descriptors the host opened without O_CLOEXEC must not leak into the
    /// child; 0, 1 and 2 are already its pipes. Marked, not closed: std
    /// reports a failed exec through a descriptor of its own. Before
    /// RLIMIT_NOFILE is lowered, so that nothing of the host's lies beyond
    /// what the fallback reaches.
    ///
    /// # Safety
    /// As for `apply`.
    unsafe fn mark_host_descriptors(&self) {
        // SAFETY: close_range and fcntl on descriptor numbers; see `apply`.
        unsafe {
            let marked = self.close_range
                && libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                ) == 0;
            if !marked {
                for fd in 3..self.fd_bound {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// The hardening as std's `pre_exec` wants it (the fork-and-exec start).
///
/// # Safety
/// Only in a forked child about to exec (see `Hardening::apply`).
pub(crate) unsafe fn harden_child(hardening: &Hardening) -> io::Result<()> {
    // SAFETY: the caller's.
    unsafe { hardening.apply() }.map_err(|(_, errno)| io::Error::from_raw_os_error(errno))
}

/// This thread's errno (in a child: see `start::child_main`).
pub(crate) fn errno() -> i32 {
    // SAFETY: errno of this thread.
    unsafe { *libc::__errno_location() }
}

/// A wal-redo child's resource limits, set between fork and exec (only
/// getrlimit and setrlimit: async-signal-safe): a PANIC in redo calls
/// abort(), so no core files (in the scratch directory, or wherever
/// core_pattern points); a bounded address space; a bounded number of
/// open files (PostgreSQL needs a few dozen). Never above the limits the
/// host already has: lowering a hard limit is always allowed, raising it
/// is not.
///
/// # Safety
/// Only in a child about to exec: the limits are the whole process's.
unsafe fn set_child_limits(memory_limit: u64) {
    for (resource, limit) in [
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_AS, memory_limit),
        (libc::RLIMIT_NOFILE, 1024),
    ] {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit pointer for getrlimit to fill.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            continue;
        }
        let limit = limit.min(current.rlim_max);
        let rlim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // The kernel always allows lowering a limit; only an emulated
        // host (valgrind refuses these in a forked child) says no, and
        // then the child starts without.
        // SAFETY: a valid rlimit pointer.
        unsafe { libc::setrlimit(resource, &rlim) };
    }
}

/// Where the fallback of `mark_host_descriptors` stops: the host's RLIMIT_NOFILE
/// soft limit, read before fork (no `sysconf` in the child, and the child
/// lowers the limit). A descriptor can be open at or above it only if the
/// host lowered its limit after opening it: such a one is not covered.
fn host_fd_bound() -> libc::c_int {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return 65536;
    }
    current.rlim_cur.min(libc::c_int::MAX as libc::rlim_t) as libc::c_int
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::start;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    /// A descriptor the host opened without O_CLOEXEC at `fd`, above the
    /// child's RLIMIT_NOFILE (1024): the soft limit is raised to reach it.
    /// Closed when dropped.
    fn host_descriptor_at(fd: libc::c_int) -> OwnedFd {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid rlimit pointers; raising the soft limit up to the
        // hard one is always allowed.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            if lim.rlim_cur <= fd as libc::rlim_t {
                assert!(lim.rlim_max > fd as libc::rlim_t, "hard limit too low");
                lim.rlim_cur = lim.rlim_max.min(4096);
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            }
        }
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup2 of an open descriptor; dup2 never sets O_CLOEXEC.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), fd) }, fd);
        // SAFETY: the descriptor just made, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// A shell that fails if descriptor `fd` is open in it.
    fn shell_args(fd: libc::c_int) -> [String; 2] {
        ["-c".into(), format!("test ! -e /proc/self/fd/{fd}")]
    }

    /// The direct start (`start::start`, which the template's start uses
    /// too): a host descriptor above 1024 is not open in the child. (Was
    /// tests/child_fds.rs, which started a fake child through
    /// `Process::spawn`, that is through `start::start`.)
    #[test]
    fn a_host_descriptor_above_1024_is_not_open_in_the_child() {
        const HIGH: libc::c_int = 1500;
        if !start::pidfds_usable() {
            eprintln!("skipped: no pidfds here, no `start::start`");
            return;
        }
        let high = host_descriptor_at(HIGH);
        let null = std::fs::File::open("/dev/null").unwrap();
        let args = shell_args(HIGH).map(Into::into);
        let started = start::start(&start::Spec {
            program: std::path::Path::new("/bin/sh"),
            args: &args,
            env: &[],
            cwd: std::path::Path::new("/"),
            stdio: [null.as_raw_fd(); 3],
            user: None,
            memory_limit: 4 << 30,
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        let status = start::reap_pidfd(&started.pidfd, true);
        drop(high);
        assert_eq!(status, Some(0), "fd {HIGH} leaked into the child");
    }

    /// The same through the fallback of kernels without
    /// `CLOSE_RANGE_CLOEXEC`, in std's fork and exec.
    #[test]
    fn the_fallback_keeps_high_host_descriptors_out_of_the_child() {
        const HIGH: libc::c_int = 1501;
        let high = host_descriptor_at(HIGH);
        let hardening = Hardening {
            close_range: false,
            ..Hardening::new(4 << 30)
        };
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(shell_args(HIGH));
        // SAFETY: harden_child is async-signal-safe (see there).
        unsafe { cmd.pre_exec(move || harden_child(&hardening)) };
        let status = cmd.status().unwrap();
        drop(high);
        assert!(
            status.success(),
            "fd {HIGH} leaked into the child: {status}"
        );
    }
}
