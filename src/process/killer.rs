//! Ending a process's work from another thread ([`Killer`]), and the pidfd
//! calls every kill goes through: a pidfd, unlike a pid, cannot name a
//! process that took a reaped child's pid.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Ends the work of one process on demand, from any thread: a cancelled
/// call's request must not keep a slot busy until its deadline.
///
/// The process is killed through its pidfd, never its pid (see `watchdog`):
/// the descriptor stays open as long as a `Killer` does, and a signal to a
/// process that is gone, even reaped, is refused (ESRCH) instead of reaching
/// whoever has its pid now. Its driver then sees EOF at once, in a blocking
/// read too. Without a pidfd (Linux before 5.3, valgrind) there is no
/// blocking read either (no watchdog): the driver's `poll` loop also
/// watches `wake`, and ends the wait itself; the driver then kills its
/// process as after any failure.
pub(crate) struct Killer {
    /// The process as a pidfd, if one could be opened.
    pub(super) pidfd: Option<OwnedFd>,
    /// An eventfd written by `kill`; `None` if none could be made.
    pub(super) wake: Option<OwnedFd>,
    fired: AtomicBool,
}

impl Killer {
    /// The killer of the process behind `pidfd`.
    pub(super) fn new(pidfd: Option<OwnedFd>) -> Killer {
        Killer {
            pidfd,
            wake: new_eventfd(),
            fired: AtomicBool::new(false),
        }
    }

    /// Kill the process, or at least end its driver's wait. Returns false
    /// when neither is possible (no pidfd, no eventfd).
    pub fn kill(&self) -> bool {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(wake) = &self.wake {
            let one: u64 = 1;
            // SAFETY: 8 bytes from a live u64 to an eventfd we own.
            unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        if let Some(pidfd) = &self.pidfd {
            pidfd_signal(pidfd, libc::SIGKILL);
        }
        self.pidfd.is_some() || self.wake.is_some()
    }

    /// SIGKILL through the pidfd only, without marking a cancel.
    pub(super) fn kill_process(&self) {
        if let Some(pidfd) = &self.pidfd {
            pidfd_signal(pidfd, libc::SIGKILL);
        }
    }

    /// Whether `kill` was called: the process must not serve again, and its
    /// failure, if any, is the cancel's.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// A close-on-exec, non-blocking eventfd; `None` if none can be made.
fn new_eventfd() -> Option<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    // SAFETY: a new descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd for our child `pid`, opened right after it started (while it
/// cannot have been reaped by us; a host ignoring SIGCHLD leaves the window
/// of a child that dies, and whose pid is reused, before this call).
pub(crate) fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: pidfd_open returned a new descriptor (close-on-exec) that
    // nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Send `signal` (0: only check that the process exists) to the process
/// behind `pidfd`; whether it was delivered. Never by pid: a pidfd cannot
/// name a process that took a reaped child's pid.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) -> bool {
    // SAFETY: a pidfd the caller owns, open for the call; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}
