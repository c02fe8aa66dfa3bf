//! How the library starts its threads: with every signal blocked.
//!
//! A host's signal handlers must run on the host's threads: a PostgreSQL
//! backend's SIGINT handler (query cancel) touches backend state and sets
//! its latch, and the kernel delivers a process-directed signal to any
//! thread that does not block it. A thread inherits its creator's mask, so
//! the creator blocks everything around the spawn and restores its own mask
//! right after: the new thread never runs a single instruction with a signal
//! unblocked (blocking from inside the new thread would leave that window).
//! Children forked from these threads get a clean mask back before exec
//! (`harden_child`).

use std::io;
use std::thread::{Builder, JoinHandle};

/// Restores the creating thread's mask, also when unwinding.
struct RestoreMask(libc::sigset_t);

impl Drop for RestoreMask {
    fn drop(&mut self) {
        // SAFETY: a mask pthread_sigmask filled in, passed by pointer.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// `std::thread::Builder::spawn` with the new thread's signals all blocked
/// (glibc leaves out the two it keeps for itself; SIGKILL and SIGSTOP cannot
/// be blocked). The calling thread's mask is unchanged when this returns.
pub(crate) fn spawn_blocking_signals<F, T>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: sigset_t is plain old data, filled by sigfillset; the old mask
    // is written by pthread_sigmask before RestoreMask can read it.
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        RestoreMask(old)
    };
    Builder::new().name(name).spawn(f)
}
