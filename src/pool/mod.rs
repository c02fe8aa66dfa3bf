//! The pool callers use: a bounded request queue (crossbeam-channel) and
//! worker threads in front of the process slots of [`crate::pool::slots`].
//!
//! - `redo` blocks. When no more callers are inside `redo` than there are
//!   processes, nothing is queued and a slot is free, the caller's own
//!   thread drives that slot's process: no hand-off to a worker, so the
//!   request costs only the pipe round trip. Otherwise the request joins the
//!   queue (waiting for room when it is full: back-pressure, never unbounded
//!   memory) and the caller sleeps until a worker answers it ([`handoff`]).
//!   With more callers than processes, a caller that drove a process itself
//!   would move it to its own CPU and back (`follow_caller_cpu`), and leave
//!   the others to wait one round trip each; a worker writes all queued
//!   requests to its process at once and stays on its CPU.
//! - `submit` never blocks: it copies the request into the queue, or refuses
//!   it with `Busy` when the queue is full; a worker later calls the callback,
//!   exactly once, with no lock of ours held.
//! - The queue is one lane per worker ([`lanes`]: why, and where workers
//!   run). Workers take a request and whatever else is queued (up to a
//!   batch), write them all to one process, and read the pages back in
//!   order.
//! - `start` never blocks either: the request is queued like a submit's
//!   (`Busy` when full), and its outcome goes to a [`Call`] the caller polls
//!   through a descriptor (see [`call`]); a fast-path page completes it at
//!   once. Cancelling (dropping) the call stops its request wherever it is.
//! - Closing (on drop, or `shutdown`) refuses new requests, answers queued
//!   ones with `Shutdown`, joins the workers, waits for requests in flight on
//!   callers' threads, and kills and reaps every process.
//!
//! Rules that keep callbacks and closing free of deadlocks, each enforced
//! here:
//! - A worker never waits for the queue it serves: `redo` called on a worker
//!   thread (from a callback) drives a process itself, waiting for a free
//!   slot, never for a worker (which may be the caller itself).
//! - No lock is held across a wait for room in the queue, which
//!   `shutdown` ends (`Lanes::close`); the gate
//!   only counts the callers between admission and the queue, and `shutdown`
//!   stops the workers (who answer what is queued) once that count is 0, so
//!   nothing can enter the queue after the workers left.
//! - Every `shutdown` returns only once the pool is closed: a second one
//!   waits for the first.
//! - A shutdown on a worker thread (the last `Arc<Pool>` dropped in a
//!   callback) joins every worker but that one, which ends by itself.

pub mod call;
mod handoff;
mod lanes;
pub(crate) mod slots;
pub mod stats;
mod worker;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Sender};
use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::error::{Error, Result};
pub use crate::pool::call::Call;
use crate::pool::call::CallState;
use crate::pool::handoff::{handoff, Reply};
use crate::pool::lanes::Lanes;
use crate::pool::slots::Slots;
use crate::pool::stats::{bump, StatsSnapshot};
use crate::process::protocol::{self, RecordRef};
use crate::process::threads::{
    make_current_thread_batch, pin_current_thread, spawn_blocking_signals,
};
use crate::redo::{image_page, validate_request, Page};
use crate::tag::PageTag;

/// Most requests written to a process in one batch: with 64 callers on 2
/// processes, 32 gave 5-10% more than 16 (fewer switches between a worker
/// and its process per request).
const MAX_BATCH: usize = 32;

/// What to do with a result: wake a blocked caller, or call back.
pub type Callback = Box<dyn FnOnce(Result<&Page, &Error>) + Send>;

enum Completion {
    Wait(Reply),
    Callback(Callback),
    Call(Arc<CallState>),
}

impl Completion {
    fn cancelled(&self) -> bool {
        matches!(self, Completion::Call(c) if c.cancel.is_cancelled())
    }
}

struct Queued {
    tag: PageTag,
    wire: Vec<u8>,
    /// Already answered in-process (full-page image): no process needed.
    ready: Option<Box<Page>>,
    started: Instant,
    completion: Completion,
}

/// What an admitted request still needs.
enum Plan {
    /// Its last record's image is the page.
    Done(Box<Page>),
    /// Send `records[from..]` on top of `base` (an image, when `from > 0`).
    Send {
        image: Option<Box<Page>>,
        from: usize,
    },
}

struct Shared {
    slots: Slots,
    queue: Lanes<Queued>,
}

thread_local! {
    /// Set on the pool's worker threads: see the module notes.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Who is between admission and the queue, and how far closing has come.
#[derive(Default)]
struct Gate {
    closing: bool,
    closed: bool,
    /// Callers inside `enqueue`.
    entering: usize,
}

pub struct Pool {
    shared: Arc<Shared>,
    /// Answer from full-page images in-process (`Config::fast_path`).
    fast_path: bool,
    processes: usize,
    /// Callers inside `redo` now.
    callers: AtomicUsize,
    gate: Mutex<Gate>,
    gate_changed: Condvar,
    /// Dropping it tells the workers to finish.
    stop: Mutex<Option<Sender<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Check the configuration and start the workers. No process starts
    /// before the first request.
    pub fn new(config: &Config) -> Result<Pool> {
        if config.queue_depth == 0 {
            return Err(Error::InvalidArgument(
                "queue_depth must be at least 1".into(),
            ));
        }
        let shared = Arc::new(Shared {
            slots: Slots::new(config)?,
            queue: Lanes::new(
                config.processes,
                config.queue_depth,
                config.follow_caller_cpu,
            ),
        });
        let (stop, stop_rx) = bounded::<()>(0);
        let mut workers = Vec::new();
        for lane in 0..config.processes {
            let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
            let worker = spawn_blocking_signals(format!("walredo-worker-{lane}"), move || {
                ON_WORKER.with(|w| w.set(true));
                if let Some(cpu) = shared.queue.worker_cpu(lane) {
                    pin_current_thread(cpu);
                }
                make_current_thread_batch();
                worker::worker(&shared, lane, &stop_rx)
            })
            .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
            workers.push(worker);
        }
        Ok(Pool {
            shared,
            fast_path: config.fast_path,
            processes: config.processes,
            callers: AtomicUsize::new(0),
            gate: Mutex::new(Gate::default()),
            gate_changed: Condvar::new(),
            stop: Mutex::new(Some(stop)),
            workers: Mutex::new(workers),
        })
    }

    /// Apply `records` (in LSN order) to `base`, or to nothing when the first
    /// record initializes the page, and return the page for `tag`.
    pub fn redo(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        /// Counts the caller out again, also when the request panics (the
        /// C ABI catches panics: the pool lives on, and would otherwise
        /// queue more than it needs to for ever).
        struct Inside<'a>(&'a AtomicUsize);
        impl Drop for Inside<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.callers.fetch_add(1, Ordering::Relaxed);
        let _inside = Inside(&self.callers);
        self.redo_counted(tag, base, records)
    }

    /// `redo`, with the caller counted in `callers`.
    fn redo_counted(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        let started = Instant::now();
        let slots = &self.shared.slots;
        let (image, from) = match self.admit(tag, base, records)? {
            Plan::Done(page) => {
                account(slots, started, Ok(&page));
                return Ok(page);
            }
            Plan::Send { image, from } => (image, from),
        };
        let base = image.as_deref().or(base);
        let records = &records[from..];

        // The caller's own thread drives a free process, unless others wait
        // or more callers than processes are here (module notes); a worker
        // (in a callback) always does, waiting for a slot if need be: it
        // must never wait for the queue it serves.
        let deadline = slots.deadline_from(started);
        let slot = if ON_WORKER.with(Cell::get) {
            match slots.take_until(deadline) {
                Ok(Some(slot)) => Some(slot),
                outcome => {
                    bump(&slots.stats.failures);
                    return Err(outcome.err().unwrap_or(slots.deadline_error(String::new())));
                }
            }
        } else if self.callers.load(Ordering::Relaxed) <= self.processes
            && self.shared.queue.is_empty()
        {
            slots.try_take()
        } else {
            None
        };
        if let Some(mut slot) = slot {
            let outcome = slot.run_one(*tag, deadline, |wire| {
                protocol::write_request(wire, tag, base, records)
            });
            drop(slot);
            account(slots, started, outcome.as_ref().map(|p| &**p));
            return outcome;
        }

        let mut wire = Vec::new();
        protocol::write_request(&mut wire, tag, base, records);
        let lane = self.shared.queue.lane_here();
        let (reply, answer) = handoff(self.shared.queue.bell(lane));
        self.enqueue(
            lane,
            Queued {
                tag: *tag,
                wire,
                ready: None,
                started,
                completion: Completion::Wait(reply),
            },
            true,
        )
        .inspect_err(|_| bump(&slots.stats.failures))?;
        // Statistics were counted by the worker (also for a request whose
        // deadline passes here: the worker answers it with its timeout, never
        // sends it): touch nothing of the pool after this point but the
        // spinning permit (a concurrent close may be tearing the rest down;
        // the pool itself lives while we are in one of its methods).
        let too_late = slots.deadline_error(String::new());
        let spinning = self.shared.queue.may_spin();
        answer
            .wait(spinning.is_some(), deadline)
            .unwrap_or(Err(too_late))
    }

    /// Queue a request without blocking; `callback` later gets the page (valid
    /// only during the call) or the error, exactly once, on a worker thread
    /// (a `SCHED_BATCH` one: see `make_current_thread_batch`).
    /// Invalid input, a full queue (`Busy`) and a closed pool are reported
    /// here instead, and the callback is then never called.
    pub fn submit(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
        callback: Callback,
    ) -> Result<()> {
        let started = Instant::now();
        let mut wire = Vec::new();
        let ready = match self.admit(tag, base, records)? {
            // Still answered on a worker thread, as promised.
            Plan::Done(page) => Some(page),
            Plan::Send { image, from } => {
                let base = image.as_deref().or(base);
                protocol::write_request(&mut wire, tag, base, &records[from..]);
                None
            }
        };
        self.enqueue(
            self.shared.queue.lane_here(),
            Queued {
                tag: *tag,
                wire,
                ready,
                started,
                completion: Completion::Callback(callback),
            },
            false,
        )
        .inspect_err(|_| bump(&self.shared.slots.stats.failures))
    }

    /// Start a request without waiting for it: checked, then queued like a
    /// submitted one (`Busy` when the queue is full), or answered at once
    /// from a full-page image. The returned [`Call`] gets the outcome;
    /// dropping it cancels the request. Inputs are copied.
    pub fn start(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Call> {
        let started = Instant::now();
        let call = Call::new()?;
        let mut wire = Vec::new();
        match self.admit(tag, base, records)? {
            Plan::Done(page) => {
                account(&self.shared.slots, started, Ok(&page));
                call.state().complete(Ok(page));
                return Ok(call);
            }
            Plan::Send { image, from } => {
                let base = image.as_deref().or(base);
                protocol::write_request(&mut wire, tag, base, &records[from..]);
            }
        }
        self.enqueue(
            self.shared.queue.lane_here(),
            Queued {
                tag: *tag,
                wire,
                ready: None,
                started,
                completion: Completion::Call(call.state().clone()),
            },
            false,
        )
        .inspect_err(|_| bump(&self.shared.slots.stats.failures))?;
        Ok(call)
    }

    /// Count a request, check it before it goes anywhere, and take the
    /// full-page-image fast path where it applies.
    fn admit(&self, tag: &PageTag, base: Option<&Page>, records: &[RecordRef<'_>]) -> Result<Plan> {
        let stats = &self.shared.slots.stats;
        bump(&stats.requests);
        let checked = if self.shared.slots.is_closed() {
            Err(Error::Shutdown)
        } else {
            validate_request(tag, base, records)
        };
        if checked.is_err() {
            bump(&stats.failures);
        }
        let newest_image = checked?;
        stats.records_per_request.observe(records.len() as u64);
        stats
            .bytes_per_request
            .observe(records.iter().map(|r| r.data.len() as u64).sum());
        let image = match newest_image {
            Some(newest) if self.fast_path => image_page(&newest).map(|page| (newest.index, page)),
            _ => None,
        };
        Ok(match image {
            Some((k, page)) if k + 1 == records.len() => {
                bump(&stats.fast_path_pages);
                Plan::Done(page)
            }
            Some((k, page)) => {
                bump(&stats.image_starts);
                Plan::Send {
                    image: Some(page),
                    from: k + 1,
                }
            }
            None => Plan::Send {
                image: None,
                from: 0,
            },
        })
    }

    fn enqueue(&self, lane: usize, item: Queued, wait_for_room: bool) -> Result<()> {
        {
            let mut gate = self.gate.lock();
            if gate.closing {
                return Err(Error::Shutdown);
            }
            gate.entering += 1;
        }
        let sent = self.send(lane, item, wait_for_room);
        let mut gate = self.gate.lock();
        gate.entering -= 1;
        if gate.entering == 0 && gate.closing {
            self.gate_changed.notify_all();
        }
        sent
    }

    /// Put an admitted request in the queue; no lock held (module notes).
    fn send(&self, lane: usize, item: Queued, wait_for_room: bool) -> Result<()> {
        let sent = self.shared.queue.push(lane, item, wait_for_room);
        if let Err(Error::Busy) = sent {
            bump(&self.shared.slots.stats.busy_rejections);
        }
        sent
    }

    /// A round trip to a process and back (`H`), on the caller's thread when
    /// a process is free: the floor under every request.
    pub fn ping(&self) -> Result<()> {
        let slots = &self.shared.slots;
        if slots.is_closed() {
            return Err(Error::Shutdown);
        }
        let mut slot = slots.take()?;
        let deadline = slots.deadline_from(Instant::now());
        slot.run_one(PageTag::default(), deadline, protocol::write_ping)
            .map(|_| ())
    }

    /// Pids of the processes running now.
    pub fn pids(&self) -> Vec<u32> {
        self.shared.slots.pids()
    }

    /// The PostgreSQL major version this pool serves (`Config::pg_version`,
    /// or the version of the `postgres` found).
    pub fn pg_version(&self) -> u32 {
        self.shared.slots.pg_version
    }

    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            queue_depth: self.shared.queue.queued() as u64,
            ..self.shared.slots.stats.snapshot()
        }
    }

    /// Refuse new requests, answer queued ones with `Shutdown`, stop the
    /// workers, wait for requests running on callers' threads, and kill and
    /// reap every process. Idempotent: a call while another one runs
    /// returns when that one is done.
    pub fn shutdown(&self) {
        {
            let mut gate = self.gate.lock();
            if gate.closing {
                while !gate.closed {
                    self.gate_changed.wait(&mut gate);
                }
                return;
            }
            gate.closing = true;
        }
        self.shared.slots.close();
        // Callers waiting for room give up; then nobody is left between
        // admission and the queue, and the workers can answer what is in it.
        self.shared.queue.close();
        {
            let mut gate = self.gate.lock();
            while gate.entering > 0 {
                self.gate_changed.wait(&mut gate);
            }
        }
        self.stop.lock().take();
        // The last reference dropped in a callback closes the pool on a
        // worker: that worker is not joined (it cannot join itself) but let
        // go; it has given its slot back, and ends by itself once the
        // callback returns (it sees the stop), holding only `shared`.
        let me = std::thread::current().id();
        for w in self.workers.lock().drain(..) {
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
        self.shared.slots.kill_all();
        self.gate.lock().closed = true;
        self.gate_changed.notify_all();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Count a finished request.
fn account(slots: &Slots, started: Instant, outcome: Result<&Page, &Error>) {
    match outcome {
        Ok(_) => slots.stats.redo_time_us.observe_duration(started.elapsed()),
        // Counted as cancellations where they are dropped.
        Err(Error::Cancelled) => {}
        Err(_) => bump(&slots.stats.failures),
    }
}
