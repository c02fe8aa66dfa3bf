//! The answer to a blocked caller of `Pool::redo` whose request went
//! through the queue: a one-shot hand-off from a worker to the caller, and
//! the bell the caller sleeps on until it is there.
//!
//! Why not a channel or a thread's own park: crossbeam's receive spins and
//! calls `sched_yield` before it sleeps, on whatever CPU the caller is, and
//! with 64 callers on 2 CPUs those spinners took a third of the machine
//! from the workers and processes. A parked thread costs nothing, but
//! waking each of a batch's callers on its own makes the woken caller
//! preempt the worker at every wake-up: two context switches per request
//! on top of the wake-up (BENCHMARKS.md). So callers sleep on their lane's
//! [`Bell`], one futex word, and a worker rings it once for its whole
//! batch: one system call and one preemption per batch, and the woken
//! callers then run one after the other. Each caller sleeps on a bit of
//! the word, and a ring wakes only the bits it answered. A caller spins
//! first only where the placement says that costs nobody anything (a CPU
//! no worker runs on, see [`super::lanes`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::pg::page::Page;

/// How long a caller that may spin does so before it sleeps: a few round
/// trips of a short request, after which its wait is long anyway.
const SPIN_FOR: Duration = Duration::from_micros(200);

/// A futex word the callers of one lane sleep on, each on a bit of its own
/// (`FUTEX_WAIT_BITSET`): a ring wakes only the callers it answered, not
/// those of the lane whose requests are still queued (with one wake-up for
/// all, a quarter of the wake-ups at 64 callers on 2 processes were for
/// nothing). Bits are handed out in turn, so the callers of one batch (at
/// most [`BITS`] consecutive requests of a lane) have bits of their own.
#[derive(Default)]
pub(crate) struct Bell {
    /// Changes at every ring: a sleeper that saw the old value wakes.
    word: AtomicU32,
    /// Callers inside (or about to enter) `futex_wait`: a ring with none
    /// makes no system call.
    sleepers: AtomicU32,
    /// The next caller's bit number.
    next_bit: AtomicU32,
    /// Returns from `futex_wait`, for the tests.
    #[cfg(test)]
    wakeups: AtomicU32,
}

/// Bits of a futex bitset: callers that share one may wake each other.
pub(crate) const BITS: u32 = 32;

impl Bell {
    fn bit(&self) -> u32 {
        1 << (self.next_bit.fetch_add(1, Ordering::Relaxed) % BITS)
    }

    /// Wake the callers sleeping on `bits`.
    pub fn ring(&self, bits: u32) {
        // SeqCst with `sleep_until`: either the sleeper counted itself
        // before this load (and is woken), or its futex_wait sees the new
        // word and returns at once.
        self.word.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // SAFETY: FUTEX_WAKE_BITSET on a live, aligned u32 of ours; it
            // reads nothing else (the timeout and second-word arguments are
            // unused by this operation).
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                    std::ptr::null::<libc::timespec>(),
                    std::ptr::null::<u32>(),
                    bits,
                );
            }
        }
    }

    /// Sleep on `bit` until `done()`, rechecked at every ring, or until
    /// `deadline` has passed.
    fn sleep_until(&self, bit: u32, done: impl Fn() -> bool, deadline: Instant) {
        loop {
            let seen = self.word.load(Ordering::SeqCst);
            if done() {
                return;
            }
            let Some(at) = monotonic_timespec(deadline) else {
                return;
            };
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            // SAFETY: FUTEX_WAIT_BITSET on a live, aligned u32 of ours: it
            // sleeps only while the word still holds `seen`, until `at` (an
            // absolute CLOCK_MONOTONIC time, a live timespec), and returns
            // on a wake of `bit`, a signal, the timeout or at once (EAGAIN);
            // the loop rechecks.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                    seen,
                    &at as *const libc::timespec,
                    std::ptr::null::<u32>(),
                    bit,
                );
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            #[cfg(test)]
            self.wakeups.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `deadline` as an absolute `CLOCK_MONOTONIC` time (the clock of
/// `Instant` on Linux, whose value Rust does not expose); `None` once it
/// has passed.
fn monotonic_timespec(deadline: Instant) -> Option<libc::timespec> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes a timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
    Some(libc::timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(left.as_secs().min(i64::MAX as u64 / 2) as libc::time_t)
            .saturating_add((nanos / 1_000_000_000) as libc::time_t),
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    })
}

struct Inner {
    value: Mutex<Option<Result<Box<Page>>>>,
    done: AtomicBool,
}

/// The side that answers; dropped unanswered, it answers `Shutdown`.
pub(crate) struct Reply {
    inner: Option<Arc<Inner>>,
    bell: Arc<Bell>,
    bit: u32,
}

/// The side that waits: the calling thread.
pub(crate) struct Waiter {
    inner: Arc<Inner>,
    bell: Arc<Bell>,
    bit: u32,
}

/// Who must still be woken for answers given: the bell and bit of a
/// [`Reply`] sent. Dropped, it rings; [`Ring::ring_all`] rings each bell of
/// many once, for all their bits.
#[must_use = "a caller sleeps until its bell rings"]
pub(crate) struct Ring(Option<(Arc<Bell>, u32)>);

impl Ring {
    pub fn ring_all(rings: Vec<Ring>) {
        let mut rung: Vec<(Arc<Bell>, u32)> = Vec::new();
        for mut ring in rings {
            if let Some((bell, bit)) = ring.0.take() {
                match rung.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &bell)) {
                    Some((_, bits)) => *bits |= bit,
                    None => rung.push((bell, bit)),
                }
            }
        }
        for (bell, bits) in rung {
            bell.ring(bits);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some((bell, bit)) = self.0.take() {
            bell.ring(bit);
        }
    }
}

/// A hand-off whose waiter is the current thread, sleeping on `bell`.
pub(crate) fn handoff(bell: &Arc<Bell>) -> (Reply, Waiter) {
    let inner = Arc::new(Inner {
        value: Mutex::new(None),
        done: AtomicBool::new(false),
    });
    let bit = bell.bit();
    (
        Reply {
            inner: Some(inner.clone()),
            bell: bell.clone(),
            bit,
        },
        Waiter {
            inner,
            bell: bell.clone(),
            bit,
        },
    )
}

impl Reply {
    /// Give the answer; the waiter wakes when the returned ring is rung.
    pub fn send(mut self, outcome: Result<Box<Page>>) -> Ring {
        if let Some(inner) = self.inner.take() {
            deliver(&inner, outcome);
        }
        Ring(Some((self.bell.clone(), self.bit)))
    }
}

fn deliver(inner: &Inner, outcome: Result<Box<Page>>) {
    *inner.value.lock() = Some(outcome);
    inner.done.store(true, Ordering::SeqCst);
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            deliver(&inner, Err(Error::Shutdown));
            self.bell.ring(self.bit);
        }
    }
}

impl Waiter {
    /// Wait until the answer is there: first spinning for up to
    /// [`SPIN_FOR`] when `spin` (yielding the CPU to anything else that
    /// wants it), then asleep on the bell. `None` when `deadline` passed
    /// first (the answer, if one still comes, goes nowhere).
    pub fn wait(self, spin: bool, deadline: Instant) -> Option<Result<Box<Page>>> {
        let done = || self.inner.done.load(Ordering::SeqCst);
        if spin {
            let started = Instant::now();
            let mut spins = 0u32;
            while !done() && started.elapsed() < SPIN_FOR {
                if spins < 64 {
                    std::hint::spin_loop();
                    spins += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        }
        self.bell.sleep_until(self.bit, done, deadline);
        if !done() {
            return None;
        }
        Some(
            self.inner
                .value
                .lock()
                .take()
                .unwrap_or(Err(Error::Shutdown)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_wait_ends_at_its_deadline() {
        let bell = Arc::new(Bell::default());
        let (_reply, waiter) = handoff(&bell);
        let started = Instant::now();
        assert!(waiter
            .wait(false, started + Duration::from_millis(20))
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn answered_from_another_thread() {
        for spin in [false, true] {
            let bell = Arc::new(Bell::default());
            let (reply, waiter) = handoff(&bell);
            let t = thread::spawn(move || {
                thread::sleep(Duration::from_millis(5));
                drop(reply.send(Err(Error::Busy(String::new()))));
            });
            assert!(matches!(
                waiter.wait(spin, far()).unwrap(),
                Err(Error::Busy(_))
            ));
            t.join().unwrap();
        }
    }

    #[test]
    fn dropped_unanswered_is_shutdown() {
        let bell = Arc::new(Bell::default());
        let (reply, waiter) = handoff(&bell);
        thread::spawn(move || drop(reply)).join().unwrap();
        assert!(matches!(
            waiter.wait(false, far()).unwrap(),
            Err(Error::Shutdown)
        ));
    }

    #[test]
    fn one_ring_wakes_a_batch_and_the_others_sleep_on() {
        let bell = Arc::new(Bell::default());
        let (replies, waiters): (Vec<Reply>, Vec<Waiter>) = (0..4).map(|_| handoff(&bell)).unzip();
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, waiter) in waiters.into_iter().enumerate() {
            let tx = tx.clone();
            thread::spawn(move || {
                let _ = waiter.wait(false, far()).unwrap();
                tx.send(i).unwrap();
            });
        }
        thread::sleep(Duration::from_millis(20));
        let mut replies = replies.into_iter();
        let rings: Vec<Ring> = replies
            .by_ref()
            .take(2)
            .map(|r| r.send(Err(Error::Busy(String::new()))))
            .collect();
        Ring::ring_all(rings);
        let mut woken = vec![rx.recv().unwrap(), rx.recv().unwrap()];
        woken.sort();
        assert_eq!(woken, [0, 1]);
        // The two unanswered were not even woken.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert_eq!(bell.wakeups.load(Ordering::SeqCst), 2);
        drop(replies);
        let mut rest = vec![rx.recv().unwrap(), rx.recv().unwrap()];
        rest.sort();
        assert_eq!(rest, [2, 3]);
    }
}
