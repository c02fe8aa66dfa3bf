//! Reaps a template process as soon as it dies, whoever killed it: without
//! this a template killed while its pool is idle stays a zombie of the host
//! until the next start notices. One thread per host process, blocked in
//! `poll` on the pidfds it was given (and on an eventfd that says a new one
//! came); a pidfd that becomes readable is a dead process, reaped with
//! `waitid(P_PIDFD)` and forgotten.
//!
//! No SIGCHLD handler: the library also runs inside PostgreSQL backends,
//! whose SIGCHLD must stay as it is. And never `waitpid(-1)`: only the
//! processes given here are reaped, never another child of the host's. The
//! owner of a template reaps it through the same pidfd when it drops it;
//! whichever comes second gets ECHILD, which is fine for both. The owner
//! then also closes the reaper's copy ([`forget`]): a pool freed leaves no
//! descriptor behind, however late the reaper's thread runs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use parking_lot::Mutex;

struct Reaper {
    /// The process whose thread this is (a forked copy of the host has the
    /// static but not the thread).
    owner: libc::pid_t,
    /// Processes to reap once dead: their pids and the reaper's own copies
    /// of their pidfds.
    watched: Mutex<Vec<(libc::pid_t, OwnedFd)>>,
    /// Written when `watched` grew: the thread then polls the new list.
    wake: OwnedFd,
}

static REAPER: OnceLock<Option<&'static Reaper>> = OnceLock::new();

fn reaper() -> Option<&'static Reaper> {
    *REAPER.get_or_init(|| {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return None;
        }
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
            watched: Mutex::new(Vec::new()),
            // SAFETY: a new descriptor nobody else owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        }));
        super::threads::spawn_blocking_signals("walredo-reaper".into(), move || r.run())
            .map_err(|e| log::warn!("cannot start the reaper thread ({e})"))
            .ok()
            .map(|_| r)
    })
}

impl Reaper {
    fn run(&self) {
        loop {
            // The descriptors stay open while polled: only this thread
            // removes them from the list.
            // (A descriptor `forget` closes meanwhile stays polled, as the
            // file it was, until the wake-up: never taken for another.)
            let polled: Vec<(libc::pid_t, i32)> = std::iter::once((0, self.wake.as_raw_fd()))
                .chain(
                    self.watched
                        .lock()
                        .iter()
                        .map(|(pid, fd)| (*pid, fd.as_raw_fd())),
                )
                .collect();
            let mut pfds: Vec<libc::pollfd> = polled
                .iter()
                .map(|&(_, fd)| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: a valid array of pollfds of its length.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if n <= 0 {
                continue;
            }
            if pfds[0].revents != 0 {
                let mut count = 0u64;
                // SAFETY: reading 8 bytes into a live u64 (resets the count).
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            }
            let dead: Vec<(libc::pid_t, i32)> = pfds[1..]
                .iter()
                .zip(&polled[1..])
                .filter(|(p, _)| p.revents != 0)
                .map(|(_, &watched)| watched)
                .collect();
            if dead.is_empty() {
                continue;
            }
            let mut watched = self.watched.lock();
            watched.retain(|(pid, fd)| {
                if !dead.contains(&(*pid, fd.as_raw_fd())) {
                    return true;
                }
                // Dead: reap it, unless its owner did already (ECHILD).
                super::start::reap_pidfd(fd, false);
                false
            });
        }
    }
}

/// Reap our child behind `pidfd` as soon as it dies (the reaper keeps a
/// copy of the pidfd until then). Where there is no reaper (none could
/// start, or this is a forked copy of the host), its owner reaps it when it
/// drops it, as before.
pub(crate) fn reap_when_dead(pid: libc::pid_t, pidfd: &OwnedFd) {
    let Some(r) = reaper() else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    if r.owner != unsafe { libc::getpid() } {
        return;
    }
    let Ok(copy) = pidfd.try_clone() else {
        return;
    };
    r.watched.lock().push((pid, copy));
    r.wake_up();
}

/// The owner reaped `pid` itself: close the reaper's copy of its pidfd now.
pub(crate) fn forget(pid: libc::pid_t) {
    let Some(r) = REAPER.get().copied().flatten() else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    if r.owner != unsafe { libc::getpid() } {
        return;
    }
    let gone: Vec<(libc::pid_t, OwnedFd)> = {
        let mut watched = r.watched.lock();
        let (gone, kept) = std::mem::take(&mut *watched)
            .into_iter()
            .partition(|(p, _)| *p == pid);
        *watched = kept;
        gone
    };
    if !gone.is_empty() {
        drop(gone);
        r.wake_up();
    }
}

impl Reaper {
    /// Make the thread poll the list again.
    fn wake_up(&self) {
        let one: u64 = 1;
        // SAFETY: 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}
