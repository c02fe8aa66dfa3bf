//! The deadline of a blocking wait: one thread that kills a wal-redo process
//! whose answer is overdue.
//!
//! Why it exists: waiting for an answer with `poll` and then `read` costs a
//! system call more per round trip than a blocking `read` (about 2 us here,
//! a fifth of a ping). A blocking read cannot time out by itself, so this
//! thread enforces the deadline instead, the only way that ends the read
//! without touching the host's signal handling: it kills the process, whose
//! stdout then reaches EOF. A timed-out process is killed anyway.
//!
//! Rules, each enforced here:
//! - The kill goes through a pidfd (`pidfd_send_signal`), never a pid: a pid
//!   the host reaped behind our back (SIGCHLD ignored) may belong to someone
//!   else by then; a pidfd cannot.
//! - Arming a deadline is two atomic stores, no system call, unless the
//!   thread sleeps past the new deadline: then it is woken. While requests
//!   flow with one timeout, the thread wakes about once per timeout; once
//!   nothing has been armed for a whole `LINGER`, it sleeps until the next
//!   arm wakes it.
//! - A process unregisters before it is reaped (its `Drop`), under the same
//!   lock the thread holds while it kills, so the thread never signals a
//!   process that is gone.
//! - A deadline is claimed atomically, by exactly one side: the thread
//!   swaps an overdue deadline for `FIRED` (compare-and-swap) before it
//!   kills, and the reader's disarm swaps it for 0. Whoever comes second
//!   sees what the first did: a disarm that finds `FIRED` knows the process
//!   is being killed although its answer arrived, so the process is retired
//!   instead of failing the next request with an unexplained EOF; a thread
//!   that finds 0 kills nothing.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long the thread keeps checking with nothing armed before it sleeps
/// until woken: back-to-back requests with short gaps never need to wake it.
const LINGER: Duration = Duration::from_secs(1);

/// `next_wake` while the thread is scanning: every arm then wakes it.
const SCANNING: u64 = 0;

/// `Entry::deadline` once the thread has claimed it to kill the process.
const FIRED: u64 = u64::MAX;

/// One watched process.
struct Entry {
    pidfd: OwnedFd,
    /// Nanoseconds since `Watchdog::epoch` when the answer is overdue; 0
    /// while nothing is awaited; `FIRED` once the thread killed the process
    /// (for good: a killed process is never armed again).
    deadline: AtomicU64,
}

struct Watchdog {
    /// The process whose thread this is: a forked copy of the host has the
    /// static but not the thread, and must not count on it.
    owner: libc::pid_t,
    epoch: Instant,
    entries: Mutex<Vec<Arc<Entry>>>,
    wake: Condvar,
    /// When the thread will look next (nanoseconds since `epoch`), `u64::MAX`
    /// when it sleeps until woken, `SCANNING` while it looks.
    next_wake: AtomicU64,
}

static WATCHDOG: OnceLock<Option<&'static Watchdog>> = OnceLock::new();

/// The watchdog, its thread started on first use; `None` when no thread can
/// be started (callers then wait with `poll`).
fn watchdog() -> Option<&'static Watchdog> {
    *WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
            epoch: Instant::now(),
            entries: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            next_wake: AtomicU64::new(SCANNING),
        }));
        super::threads::spawn_blocking_signals("walredo-watchdog".into(), move || dog.run())
            .map_err(|e| log::warn!("cannot start the watchdog thread ({e}); waits use poll"))
            .ok()
            .map(|_| dog)
    })
}

impl Watchdog {
    fn now(&self) -> u64 {
        // Never SCANNING (0): the epoch is in the past.
        self.epoch.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64 + 1
    }

    fn run(&self) {
        let mut entries = self.entries.lock();
        let mut idle_scans = 0;
        loop {
            self.next_wake.store(SCANNING, SeqCst);
            let now = self.now();
            let mut next = u64::MAX;
            for e in entries.iter() {
                match e.deadline.load(SeqCst) {
                    0 | FIRED => {}
                    // Killed only if the deadline is still the one we saw:
                    // a disarm in between wins (see the module notes).
                    d if d <= now => {
                        if e.deadline
                            .compare_exchange(d, FIRED, SeqCst, SeqCst)
                            .is_ok()
                        {
                            // Open while registered.
                            crate::process::killer::pidfd_signal(&e.pidfd, libc::SIGKILL);
                        }
                    }
                    d => next = next.min(d),
                }
            }
            if next == u64::MAX {
                idle_scans += 1;
                if idle_scans == 1 {
                    next = now + LINGER.as_nanos() as u64;
                }
            } else {
                idle_scans = 0;
            }
            self.next_wake.store(next, SeqCst);
            if next == u64::MAX {
                self.wake.wait(&mut entries);
            } else {
                let _ = self
                    .wake
                    .wait_for(&mut entries, Duration::from_nanos(next.saturating_sub(now)));
            }
        }
    }
}

/// A process under watch; unregisters on drop.
pub struct Watch {
    dog: &'static Watchdog,
    entry: Arc<Entry>,
}

impl Watch {
    /// Watch the process behind `pidfd` (a pidfd of our unreaped child, the
    /// watch's own copy). `None` when there is no watchdog (none could
    /// start, or we are a fork of the process that has it): then waits use
    /// `poll`.
    pub fn new(pidfd: OwnedFd) -> Option<Watch> {
        let dog = watchdog()?;
        // SAFETY: getpid has no preconditions.
        if dog.owner != unsafe { libc::getpid() } {
            return None;
        }
        let entry = Arc::new(Entry {
            pidfd,
            deadline: AtomicU64::new(0),
        });
        dog.entries.lock().push(entry.clone());
        Some(Watch { dog, entry })
    }

    /// Kill the process unless `disarm` comes within `timeout`. Does nothing
    /// once the process was killed for being late: the read in progress
    /// then ends with EOF, and `fired` says why.
    pub fn arm(&self, timeout: Duration) {
        // Below FIRED, above 0: never mistaken for either.
        let deadline = self
            .dog
            .now()
            .saturating_add(timeout.as_nanos() as u64)
            .min(FIRED - 1);
        let armed = self
            .entry
            .deadline
            .fetch_update(SeqCst, SeqCst, |d| (d != FIRED).then_some(deadline));
        if armed.is_err() {
            return;
        }
        let next = self.dog.next_wake.load(SeqCst);
        if next == SCANNING || deadline < next {
            // The thread holds the lock except while it waits, so this
            // notify cannot fall between its scan and its wait.
            let _guard = self.dog.entries.lock();
            self.dog.wake.notify_one();
        }
    }

    /// Stop the clock. Returns false when it was too late: the thread had
    /// already claimed the deadline, and the process is being killed.
    pub fn disarm(&self) -> bool {
        self.entry
            .deadline
            .fetch_update(SeqCst, SeqCst, |d| (d != FIRED).then_some(0))
            .is_ok()
    }

    /// Whether the process was killed for missing a deadline.
    pub fn fired(&self) -> bool {
        self.entry.deadline.load(SeqCst) == FIRED
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut entries = self.dog.entries.lock();
        entries.retain(|e| !Arc::ptr_eq(e, &self.entry));
    }
}
