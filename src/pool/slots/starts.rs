//! Starting a slot's process: the rules of the module notes of
//! [`super`] on starts killed from outside, starts that fail by themselves
//! or hang, and the back-off.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Slots;
use crate::error::{Error, Result};
use crate::pool::stats::bump;
use crate::process::Process;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Starts killed in a row that are started again at once; the next one
/// counts toward the back-off (never as the requests' own failure: see the
/// module notes).
const KILLED_STARTS_FORGIVEN: u32 = 3;

pub(super) struct Backoff {
    pub not_before: Option<Instant>,
    pub delay: Duration,
    /// Starts that failed since the last one that worked.
    pub failures_in_a_row: u32,
    /// Why the last start failed, without the "cannot start" prefix.
    pub last_error: String,
    /// The last start failed by itself (`SpawnFailed`: an error exit, a
    /// library the loader refused), not by a hang or a kill.
    pub last_refused: bool,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            not_before: None,
            delay: Duration::ZERO,
            failures_in_a_row: 0,
            last_error: String::new(),
            last_refused: false,
        }
    }
}

impl Slots {
    /// Wait until no back-off stops starts, unless it lasts beyond
    /// `deadline`: then no process can be had in time, and the error says
    /// why the last start failed.
    fn wait_out_backoff(&self, deadline: Instant) -> Result<()> {
        loop {
            let b = self.backoff.lock();
            let now = Instant::now();
            let until = match b.not_before {
                Some(t) if now < t => t,
                _ => return Ok(()),
            };
            if until > deadline {
                return Err(Error::SpawnFailed(format!(
                    "{} (not trying again for {} ms)",
                    b.last_error,
                    (until - now).as_millis()
                )));
            }
            drop(b);
            let (lock, woken) = &self.closing;
            let mut guard = lock.lock();
            while !self.is_closed() && Instant::now() < until {
                woken.wait_until(&mut guard, until);
            }
            if self.is_closed() {
                return Err(Error::Shutdown);
            }
        }
    }

    /// A started process for requests due by `deadline`, with the rules of
    /// the module notes.
    pub(super) fn start(&self, deadline: Instant) -> Result<Process> {
        let mut own_failures = 0;
        let mut killed_in_a_row = 0;
        loop {
            if self.is_closed() {
                return Err(Error::Shutdown);
            }
            self.wait_out_backoff(deadline)?;
            // A start that hangs is detected like a hung attempt, and never
            // outlasts the requests' deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let patience = self.attempt_timeout.min(left.max(Duration::from_millis(1)));
            match self.spawn_once(patience) {
                Ok(p) => return Ok(p),
                // Hung, not broken: the caller treats it as a deadline error.
                Err((e @ Error::Timeout { .. }, _)) => return Err(e),
                // Out of time: an accident still, not counted.
                Err((e, true)) if Instant::now() >= deadline => return Err(e),
                Err((e, true)) if killed_in_a_row < KILLED_STARTS_FORGIVEN => {
                    killed_in_a_row += 1;
                    bump(&self.stats.killed_starts);
                    log::warn!("{e}; killed while starting, starting another at once");
                }
                Err((e, true)) => {
                    // Killed once too often: counted toward the back-off
                    // (something may kill every start), but not as the
                    // requests' own failure: they wait while time allows.
                    self.count_failed_start();
                    killed_in_a_row = 0;
                    log::warn!("{e}; killed while starting again");
                }
                Err((e, false)) => {
                    own_failures += 1;
                    if own_failures >= 2 {
                        return Err(e);
                    }
                    log::warn!("{e}; trying once more");
                }
            }
        }
    }

    /// Why no process can be had now, if that is so: none runs, and the
    /// last start failed by itself. A request that ran out of time then
    /// gets that reason (the child's stderr) as `SpawnFailed`, not an empty
    /// `Timeout`, whether it waited for a slot or for a back-off.
    pub(super) fn starts_refused(&self) -> Option<String> {
        let b = self.backoff.lock();
        let none_running = self.stats.live_processes.load(Ordering::Relaxed) == 0;
        (b.failures_in_a_row > 0 && b.last_refused && none_running).then(|| b.last_error.clone())
    }

    /// Count a start that failed by itself toward the back-off.
    pub(super) fn count_failed_start(&self) {
        let mut b = self.backoff.lock();
        b.failures_in_a_row += 1;
        if b.failures_in_a_row >= 2 {
            Self::back_off(&mut b);
        }
    }

    /// Start a process and wait for its first answer. A failure says whether
    /// it was a kill by a signal (an accident), which is not counted toward
    /// the back-off here (`start` decides).
    fn spawn_once(&self, patience: Duration) -> Result<Process, (Error, bool)> {
        let started = Instant::now();
        let result = self
            .spawner
            .spawn()
            .map_err(|e| (e, false))
            .and_then(|mut p| match p.handshake(patience) {
                Ok(()) => Ok(p),
                Err(e) => {
                    // Ended by SIGKILL or SIGTERM without hanging. One that
                    // answered garbage was killed by the handshake itself
                    // and looks the same: the cap on forgiven kills in a row
                    // turns that into a back-off too.
                    let killed = !matches!(e, Error::Timeout { .. })
                        && matches!(p.exit_signal(), Some(libc::SIGKILL | libc::SIGTERM));
                    Err((e, killed))
                }
            });
        match result {
            Ok(p) => {
                let mut b = self.backoff.lock();
                b.not_before = None;
                b.delay = Duration::ZERO;
                b.failures_in_a_row = 0;
                drop(b);
                bump(&self.stats.spawns);
                bump(&self.stats.live_processes);
                self.stats.spawn_time_us.observe_duration(started.elapsed());
                Ok(p)
            }
            Err((e, killed)) => {
                // A handshake cut short by the requests' deadline did not
                // hang: it says nothing about the next start, nor about why
                // the last one failed.
                let cut_short =
                    matches!(e, Error::Timeout { .. }) && patience < self.attempt_timeout;
                if !cut_short {
                    let mut b = self.backoff.lock();
                    b.last_error = match &e {
                        Error::SpawnFailed(reason) => reason.clone(),
                        other => other.to_string(),
                    };
                    b.last_refused = !killed && matches!(e, Error::SpawnFailed(_));
                }
                if !killed && !cut_short {
                    self.count_failed_start();
                }
                bump(&self.stats.spawn_failures);
                Err((e, killed))
            }
        }
    }

    fn back_off(b: &mut Backoff) {
        b.delay = (b.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        b.not_before = Some(Instant::now() + b.delay);
        log::warn!(
            "{}; not starting processes for {} ms",
            b.last_error,
            b.delay.as_millis()
        );
    }
}
