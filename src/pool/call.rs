//! Calls: requests for hosts that wait in a loop of their own (a PostgreSQL
//! backend in `WaitLatchOrSocket`), and can give up on them.
//!
//! Rules, each enforced here or in the pool:
//! - A call never runs host code anywhere: its only signal is an eventfd
//!   (close-on-exec, non-blocking) written once the outcome is stored, and
//!   readable from then on (it is never read).
//! - Everything a completion touches is in the shared `CallState`: the
//!   eventfd is closed only when the call and the pool are both done with
//!   it, so a completion never writes to a descriptor number the host may
//!   have reused, and a call outlives its pool without dangling.
//! - Cancelling is deciding, under one lock, between a request not yet on a
//!   process (it is then never sent: dropped when a worker takes it, never
//!   retried), and one a process works on (that process is killed through
//!   its `Killer`, so the worker sees EOF at once; the failure is the
//!   cancel's: nobody is charged an attempt, the rest of its batch is
//!   re-sent, and the slot starts a fresh process when one is next needed).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::pg::page::Page;
use crate::process::Killer;

/// Where a cancellable request is.
enum Stage {
    /// Queued, or between attempts.
    Waiting,
    /// Sent to the process behind this killer.
    Running(Arc<Killer>),
    /// Cancelled: never sent again.
    Cancelled,
}

/// What lets a request be stopped wherever it is.
pub(crate) struct CancelToken {
    stage: Mutex<Stage>,
}

impl CancelToken {
    fn new() -> CancelToken {
        CancelToken {
            stage: Mutex::new(Stage::Waiting),
        }
    }

    /// Stop the request: kill its process if one works on it. Returns
    /// whether a process was killed.
    fn cancel(&self) -> bool {
        let mut stage = self.stage.lock();
        let killed = match &*stage {
            Stage::Running(killer) => killer.kill(),
            _ => false,
        };
        *stage = Stage::Cancelled;
        killed
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(*self.stage.lock(), Stage::Cancelled)
    }

    /// The request is about to go to the process behind `killer`; false if
    /// it was cancelled (then it must not be sent).
    pub fn enter(&self, killer: &Arc<Killer>) -> bool {
        let mut stage = self.stage.lock();
        if matches!(*stage, Stage::Cancelled) {
            return false;
        }
        *stage = Stage::Running(killer.clone());
        true
    }

    /// The process is done with the request (answered or failed). A cancel
    /// after this kills nothing.
    pub fn leave(&self) {
        let mut stage = self.stage.lock();
        if let Stage::Running(_) = *stage {
            *stage = Stage::Waiting;
        }
    }
}

/// What a call and the pool share.
pub(crate) struct CallState {
    outcome: Mutex<Option<Result<Box<Page>>>>,
    event: OwnedFd,
    pub cancel: CancelToken,
}

impl CallState {
    /// Store the outcome, then make the descriptor readable: a host woken by
    /// it finds the outcome. Runs on a worker (or the starting thread).
    pub fn complete(&self, outcome: Result<Box<Page>>) {
        *self.outcome.lock() = Some(outcome);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd that lives as
        // long as self. It cannot fail here: the counter only ever gets 1.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// A request started with [`crate::Pool::start`]. Dropping it cancels it.
pub struct Call {
    state: Arc<CallState>,
}

impl Call {
    pub(crate) fn new() -> Result<Call> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::Internal(format!(
                "cannot create the call's eventfd: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Call {
            state: Arc::new(CallState {
                outcome: Mutex::new(None),
                // SAFETY: eventfd returned a new descriptor nobody else owns.
                event: unsafe { OwnedFd::from_raw_fd(fd) },
                cancel: CancelToken::new(),
            }),
        })
    }

    pub(crate) fn state(&self) -> &Arc<CallState> {
        &self.state
    }

    /// A descriptor that becomes readable (POLLIN) once the outcome is
    /// there, and stays so. Valid while the call is.
    pub fn fd(&self) -> RawFd {
        self.state.event.as_raw_fd()
    }

    /// The outcome, if it is there (taken: a second call returns `None`).
    /// Never blocks for longer than a completion holds the lock.
    pub fn try_finish(&mut self) -> Option<Result<Box<Page>>> {
        self.state.outcome.lock().take()
    }

    /// Abandon the call: its request is stopped wherever it is (see the
    /// module notes). Returns whether a process was killed for it.
    pub fn cancel(self) -> bool {
        // Drop cancels again, which then finds nothing left to do.
        self.state.cancel.cancel()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Also after the outcome was taken: nothing runs then, nothing is
        // killed (the request left its process before completing).
        self.state.cancel.cancel();
    }
}
