//! The pool callers use: a bounded request queue (crossbeam-channel) and
//! worker threads in front of the process slots of `slots`.
//! A request is admitted here (counted, checked and encoded once by
//! [`crate::request`]), then handed as it is to a slot, which sends it to
//! its process; the pool counts what became of it ([`stats`]).
//!
//! - `redo` blocks. When no more callers are inside `redo` than there are
//!   processes, nothing is queued and a slot is free, the caller's own
//!   thread drives that slot's process: no hand-off to a worker, so the
//!   request costs only the pipe round trip. Otherwise the request joins the
//!   queue (waiting for room when it is full: back-pressure, never unbounded
//!   memory) and the caller sleeps until a worker answers it (`handoff`).
//!   With more callers than processes, a caller that drove a process itself
//!   would move it to its own CPU and back (`follow_caller_cpu`), and leave
//!   the others to wait one round trip each; a worker writes all queued
//!   requests to its process at once and stays on its CPU.
//! - `submit` never blocks: it copies the request into the queue, or refuses
//!   it with `Busy` when the queue is full; a worker later calls the callback,
//!   exactly once, with no lock of ours held.
//! - The queue is one lane per worker (`lanes`: why, and where workers
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
use crate::pg::page::Page;
use crate::pg::record::{RecordFormat, RecordRef};
pub use crate::pool::call::Call;
use crate::pool::call::CallState;
use crate::pool::handoff::{handoff, Reply};
use crate::pool::lanes::Lanes;
use crate::pool::slots::Slots;
use crate::pool::stats::{bump, Stats, StatsSnapshot};
use crate::process::threads::{
    make_current_thread_batch, pin_current_thread, spawn_blocking_signals,
};
use crate::request::Request;
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
    /// Its `answer`, when set, needs no process.
    request: Request,
    started: Instant,
    completion: Completion,
}

struct Shared {
    /// What the pool counts of its requests (the slots count their
    /// processes' events themselves: `Slots::stats`).
    stats: Stats,
    slots: Slots,
    queue: Lanes<Queued>,
}

thread_local! {
    /// Set on the pool's worker threads: see the module notes.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
    /// The wire buffer of the last request this thread drove itself, for
    /// the next one: no allocation (and no malloc arena trimmed and grown
    /// again) per request on the fast path.
    static WIRE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
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
            stats: Stats::default(),
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
        let (slots, stats) = (&self.shared.slots, &self.shared.stats);
        // The base page is left out of the request's bytes: sent from the
        // caller's memory when this thread drives a process, copied in only
        // when the request is queued.
        let mut request = self.admit(tag, base, records, WIRE.take(), true)?;
        if let Some(page) = request.answer.take() {
            WIRE.set(request.wire);
            account(stats, started, Ok(&page));
            return Ok(page);
        }

        // The caller's own thread drives a free process, unless others wait
        // or more callers than processes are here (module notes); a worker
        // (in a callback) always does, waiting for a slot if need be: it
        // must never wait for the queue it serves.
        let deadline = slots.deadline_from(started);
        let slot = if ON_WORKER.with(Cell::get) {
            match slots.take_until(deadline) {
                Ok(Some(slot)) => Some(slot),
                outcome => {
                    bump(&stats.failures);
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
            let outcome = slot.run_one(&request, base, deadline);
            drop(slot);
            WIRE.set(request.wire);
            account(stats, started, outcome.as_ref().map(|p| &**p));
            return outcome;
        }

        request.take_base(base);
        let lane = self.shared.queue.lane_here();
        let (reply, answer) = handoff(self.shared.queue.bell(lane));
        self.enqueue(
            lane,
            Queued {
                request,
                started,
                completion: Completion::Wait(reply),
            },
            true,
        )
        .inspect_err(|_| bump(&stats.failures))?;
        // Statistics were counted by the worker (also for a request whose
        // deadline passes here: the worker answers it with its timeout, never
        // sends it): touch nothing of the pool after this point but the
        // spinning permit and, past the deadline, the state of the starts
        // for the error (a lock and a counter: a concurrent close may be
        // tearing the rest down; the pool itself lives while we are in one
        // of its methods).
        let spinning = self.shared.queue.may_spin();
        answer
            .wait(spinning.is_some(), deadline)
            .unwrap_or_else(|| Err(slots.deadline_error(String::new())))
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
        // One answered from an image is still answered on a worker thread,
        // as promised.
        let request = self.admit(tag, base, records, Vec::new(), false)?;
        self.enqueue(
            self.shared.queue.lane_here(),
            Queued {
                request,
                started,
                completion: Completion::Callback(callback),
            },
            false,
        )
        .inspect_err(|_| bump(&self.shared.stats.failures))
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
        let mut request = self.admit(tag, base, records, Vec::new(), false)?;
        if let Some(page) = request.answer.take() {
            account(&self.shared.stats, started, Ok(&page));
            call.state().complete(Ok(page));
            return Ok(call);
        }
        self.enqueue(
            self.shared.queue.lane_here(),
            Queued {
                request,
                started,
                completion: Completion::Call(call.state().clone()),
            },
            false,
        )
        .inspect_err(|_| bump(&self.shared.stats.failures))?;
        Ok(call)
    }

    /// Count a request, and check and encode it into `wire`
    /// ([`Request::new`], or [`Request::around_base`] with `around_base`)
    /// before it goes anywhere; the fast path answers it from a full-page
    /// image.
    fn admit(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
        wire: Vec<u8>,
        around_base: bool,
    ) -> Result<Request> {
        let stats = &self.shared.stats;
        bump(&stats.requests);
        let request = if self.shared.slots.is_closed() {
            Err(Error::Shutdown)
        } else {
            let format = RecordFormat::of_version(self.pg_version());
            let encode = if around_base {
                Request::around_base
            } else {
                Request::new
            };
            encode(tag, base, records, format, self.fast_path, wire)
        };
        let request = request.inspect_err(|_| bump(&stats.failures))?;
        stats.records_per_request.observe(records.len() as u64);
        stats
            .bytes_per_request
            .observe(records.iter().map(|r| r.data.len() as u64).sum());
        if request.answer.is_some() {
            bump(&stats.fast_path_pages);
        } else if request.from_image {
            bump(&stats.image_starts);
        }
        Ok(request)
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
            bump(&self.shared.stats.busy_rejections);
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
        slot.run_one(&Request::ping(), None, deadline).map(|_| ())
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
        let mut snapshot = self.shared.stats.snapshot(&self.shared.slots.stats);
        snapshot.counters.queue_depth = self.shared.queue.queued() as u64;
        snapshot
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
fn account(stats: &Stats, started: Instant, outcome: Result<&Page, &Error>) {
    match outcome {
        Ok(_) => stats.redo_time_us.observe_duration(started.elapsed()),
        // Counted as cancellations where they are dropped.
        Err(Error::Cancelled) => {}
        Err(_) => bump(&stats.failures),
    }
}
