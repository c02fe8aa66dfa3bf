//! A fixed set of wal-redo process slots shared by any number of threads.
//!
//! A caller takes a free slot and drives its process itself, on its own
//! thread: no hand-off to a worker, so a request costs only the two wake-ups
//! of the pipe round trip. Callers that find every slot busy sleep on a
//! condition variable until one is returned. A slot starts its process on
//! first use, so however many callers arrive at once, each slot spawns once.
//!
//! Lifecycle rules enforced here:
//! - Processes are started by the pool's spawner thread (see
//!   [`crate::process::Spawner`]), so they die with the pool, not with
//!   whichever caller thread happened to need one first.
//! - A request whose process failed (EOF, broken pipe, deadline) is retried
//!   once on a fresh process: the failure may have been the process's, not
//!   the request's (killed by an operator, out of memory, an earlier request
//!   that left it broken). A second failure is the request's and is returned,
//!   with PostgreSQL's message. Invalid input is refused before any attempt.
//! - Dropping the pool kills and reaps every process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::launch::Launcher;
use crate::process::Spawner;
use crate::protocol::RecordRef;
use crate::redo::{validate_request, Page, Redoer};
use crate::tag::PageTag;

pub struct Pool {
    idle: Mutex<Vec<Redoer>>,
    slot_returned: Condvar,
    closed: AtomicBool,
    processes: usize,
    /// Dropped after the slots (field order), which hold it too.
    _spawner: Arc<Spawner>,
}

impl Pool {
    /// Check the configuration and prepare the slots. No process starts yet.
    pub fn new(config: &Config) -> Result<Pool> {
        if config.processes == 0 {
            return Err(Error::InvalidArgument(
                "processes must be at least 1".into(),
            ));
        }
        let launcher = Arc::new(Launcher::new(config)?);
        let spawner = Arc::new(Spawner::new(launcher.clone())?);
        let idle = (0..config.processes)
            .map(|_| Redoer::with_spawner(launcher.clone(), Some(spawner.clone()), config.timeout))
            .collect();
        Ok(Pool {
            idle: Mutex::new(idle),
            slot_returned: Condvar::new(),
            closed: AtomicBool::new(false),
            processes: config.processes,
            _spawner: spawner,
        })
    }

    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Apply `records` (in LSN order) to `base`, or to nothing when the first
    /// record initializes the page, and return the page for `tag`.
    pub fn redo(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        validate_request(tag, base, records)?;
        let mut slot = self.take_slot()?;
        match slot.redo_validated(tag, base, records) {
            Err(e @ (Error::RedoFailed { .. } | Error::Timeout { .. })) => {
                if self.closed.load(Ordering::Acquire) {
                    return Err(Error::Shutdown);
                }
                log::warn!("retrying {tag} on a fresh process after: {e}");
                slot.redo_validated(tag, base, records)
            }
            other => other,
        }
    }

    /// Refuse new requests from now on; requests already running finish.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.slot_returned.notify_all();
    }

    fn take_slot(&self) -> Result<SlotGuard<'_>> {
        let mut idle = self.idle.lock();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            if let Some(redoer) = idle.pop() {
                return Ok(SlotGuard {
                    pool: self,
                    redoer: Some(redoer),
                });
            }
            self.slot_returned.wait(&mut idle);
        }
    }
}

/// A slot taken from the pool; given back on drop, also when unwinding.
struct SlotGuard<'a> {
    pool: &'a Pool,
    redoer: Option<Redoer>,
}

impl std::ops::Deref for SlotGuard<'_> {
    type Target = Redoer;
    fn deref(&self) -> &Redoer {
        self.redoer.as_ref().expect("slot present until drop")
    }
}

impl std::ops::DerefMut for SlotGuard<'_> {
    fn deref_mut(&mut self) -> &mut Redoer {
        self.redoer.as_mut().expect("slot present until drop")
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(redoer) = self.redoer.take() {
            self.pool.idle.lock().push(redoer);
            self.pool.slot_returned.notify_one();
        }
    }
}
