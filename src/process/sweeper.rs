//! Scratch directories of processes that are gone are removed on a thread
//! of their own, off the path of the request that waits for a new process:
//! on a disk file system removing one takes milliseconds (several files,
//! each unlink journaled and discarded), more than the new process's whole
//! start. The directory is first renamed `trash-<host pid>-<n>` (one quick
//! metadata change) so that its name is never taken for a live process's;
//! a host that dies before its trash is gone leaves it to the next pool's
//! stale-directory cleanup like any other directory of a dead host.
//!
//! [`flush`] waits until everything handed over is gone: a launcher calls it
//! when it is dropped, so a dropped pool leaves nothing behind.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::{Condvar, Mutex};

use crate::process::launch::unique_suffix;

struct Sweeper {
    /// The process whose thread this is (a forked copy of the host has the
    /// static but not the thread).
    owner: libc::pid_t,
    queue: Mutex<Queue>,
    work: Condvar,
    done: Condvar,
}

struct Queue {
    dirs: VecDeque<PathBuf>,
    /// Handed over and not yet removed (queued or being removed).
    pending: usize,
}

static SWEEPER: OnceLock<Option<&'static Sweeper>> = OnceLock::new();

fn sweeper() -> Option<&'static Sweeper> {
    *SWEEPER.get_or_init(|| {
        let s: &'static Sweeper = Box::leak(Box::new(Sweeper {
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
            queue: Mutex::new(Queue {
                dirs: VecDeque::new(),
                pending: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }));
        crate::process::threads::spawn_blocking_signals("walredo-sweeper".into(), move || s.run())
            .ok()
            .map(|_| s)
    })
}

impl Sweeper {
    fn run(&self) {
        loop {
            let dir = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(d) = q.dirs.pop_front() {
                        break d;
                    }
                    self.work.wait(&mut q);
                }
            };
            remove(&dir);
            let mut q = self.queue.lock();
            q.pending -= 1;
            if q.pending == 0 {
                self.done.notify_all();
            }
        }
    }

    fn usable(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.owner == unsafe { libc::getpid() }
    }
}

fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        log::warn!("cannot remove scratch directory {}: {e}", dir.display());
    }
}

/// Remove `dir` (a scratch directory whose process is gone) soon, on the
/// sweeper's thread; at once where there is none.
pub(crate) fn sweep(dir: &Path) {
    let Some(s) = sweeper().filter(|s| s.usable()) else {
        return remove(dir);
    };
    let Some(root) = dir.parent() else {
        return remove(dir);
    };
    let trash = root.join(format!("trash-{}", unique_suffix()));
    if std::fs::rename(dir, &trash).is_err() {
        return remove(dir);
    }
    let mut q = s.queue.lock();
    q.dirs.push_back(trash);
    q.pending += 1;
    s.work.notify_one();
}

/// Wait until every directory handed to `sweep` is gone.
pub(crate) fn flush() {
    let Some(s) = SWEEPER.get().copied().flatten().filter(|s| s.usable()) else {
        return;
    };
    let mut q = s.queue.lock();
    while q.pending > 0 {
        s.done.wait(&mut q);
    }
}
