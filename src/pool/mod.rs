//! The pool callers use: a bounded request queue, per tenant (`queue`), and
//! worker threads in front of the process slots of `slots`.
//! A request is admitted here (counted, checked and encoded once by
//! [`crate::request`]), then handed as it is to a slot, which sends it to
//! its process; the pool counts what became of it ([`stats`]).
//!
//! - `redo` blocks. When no more callers of its tenant are inside `redo`
//!   than the processes the tenant may have, none of its tenant's requests
//!   is queued and a slot of its tenant's is free, the caller's own thread
//!   drives that slot's process: no hand-off to a worker, so the request
//!   costs only the pipe round trip (also while another tenant floods the
//!   queue: 1.3-1.5x its time alone, against 2.2-2.4x through a worker).
//!   Otherwise the request joins the queue (waiting for room when it is
//!   full: back-pressure, never unbounded memory) and the caller sleeps
//!   until a worker answers it (`handoff`). With more callers than
//!   processes, a caller that drove a process itself
//!   would move it to its own CPU and back (`follow_caller_cpu`), and leave
//!   the others to wait one round trip each; a worker writes all queued
//!   requests to its process at once and stays on its CPU.
//! - `submit` never blocks: it copies the request into the queue, or refuses
//!   it with `Busy` when the queue is full; a worker later calls the callback,
//!   exactly once, with no lock of ours held.
//! - Every request is of a tenant (`tenant`): the `_keyed` calls name it,
//!   the others are the default tenant's. A process only ever serves one
//!   tenant (`slots`), and the queue serves tenants in turn (`queue`: how,
//!   and where workers run). A worker takes a tenant's request and whatever
//!   else of that tenant's is queued (up to a batch), writes them all to a
//!   process of the tenant's, and reads the pages back in order.
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
//!   `shutdown` ends (`Queue::close`); the gate
//!   only counts the callers between admission and the queue, and `shutdown`
//!   stops the workers (who answer what is queued) once that count is 0, so
//!   nothing can enter the queue after the workers left.
//! - Every `shutdown` returns only once the pool is closed: a second one
//!   waits for the first.
//! - A shutdown on a worker thread (the last `Arc<Pool>` dropped in a
//!   callback) joins every worker but that one, which ends by itself.

pub mod call;
mod handoff;
mod queue;
pub(crate) mod slots;
pub mod stats;
pub mod tenant;
mod worker;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pg::page::Page;
use crate::pg::record::{RecordFormat, RecordRef};
pub use crate::pool::call::Call;
use crate::pool::call::CallState;
use crate::pool::handoff::{handoff, Reply};
use crate::pool::queue::{Queue, Queueable};
pub use crate::pool::slots::ProcessInfo;
use crate::pool::slots::Slots;
pub use crate::pool::stats::TenantCounters;
use crate::pool::stats::{bump, Stats, StatsSnapshot};
pub use crate::pool::tenant::{TenantKey, MAX_KEY_LEN};
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
    key: TenantKey,
    /// Its `answer`, when set, needs no process.
    request: Request,
    started: Instant,
    deadline: Instant,
    /// From arrival until a process of its tenant's took it.
    waited: Duration,
    completion: Completion,
}

impl Queueable for Queued {
    fn tenant(&self) -> &TenantKey {
        &self.key
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn needs_process(&self) -> bool {
        self.request.answer.is_none()
    }
}

struct Shared {
    /// What the pool counts of its requests (the slots count their
    /// processes' events themselves, and the tenants': `Slots::stats`).
    stats: Stats,
    slots: Slots,
    queue: Arc<Queue<Queued>>,
}

thread_local! {
    /// Set on the pool's worker threads: see the module notes.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
    /// The wire buffer of the last request this thread drove itself, for
    /// the next one: no allocation (and no malloc arena trimmed and grown
    /// again) per request on the fast path.
    static WIRE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Callers inside `redo` now: the default tenant's in an atomic (no lock on
/// the unkeyed path), each keyed tenant's in a map.
#[derive(Default)]
struct Callers {
    default: AtomicUsize,
    keyed: Mutex<HashMap<TenantKey, usize>>,
}

/// A caller counted in: `count` of its tenant's were inside when it came,
/// itself included. Counted out on drop, also when the request panics (the
/// C ABI catches panics: the pool lives on, and would otherwise queue more
/// than it needs to for ever).
struct Inside<'a> {
    callers: &'a Callers,
    key: TenantKey,
    count: usize,
}

impl Callers {
    fn enter(&self, key: &TenantKey) -> Inside<'_> {
        let count = if key.is_default() {
            self.default.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            let mut keyed = self.keyed.lock();
            let n = keyed.entry(*key).or_default();
            *n += 1;
            *n
        };
        Inside {
            callers: self,
            key: *key,
            count,
        }
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        if self.key.is_default() {
            self.callers.default.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut keyed = self.callers.keyed.lock();
        if let Some(n) = keyed.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keyed.remove(&self.key);
            }
        }
    }
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
    /// `Config::processes_per_tenant`.
    processes_per_tenant: usize,
    /// Callers inside `redo` now, per tenant.
    callers: Callers,
    gate: Mutex<Gate>,
    gate_changed: Condvar,
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
        if config.tenant_queue_depth == 0 {
            return Err(Error::InvalidArgument(
                "tenant_queue_depth must be at least 1".into(),
            ));
        }
        let queue = Arc::new(Queue::new(
            config.processes,
            config.queue_depth,
            config.tenant_queue_depth,
            config.follow_caller_cpu,
        ));
        let wake = queue.clone();
        let shared = Arc::new(Shared {
            slots: Slots::new(config, Box::new(move || wake.wake_a_worker()))?,
            stats: Stats::default(),
            queue,
        });
        let mut workers = Vec::new();
        for lane in 0..config.processes {
            let shared = shared.clone();
            let worker = spawn_blocking_signals(format!("walredo-worker-{lane}"), move || {
                ON_WORKER.with(|w| w.set(true));
                if let Some(cpu) = shared.queue.worker_cpu(lane) {
                    pin_current_thread(cpu);
                }
                make_current_thread_batch();
                worker::worker(&shared, lane)
            })
            .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
            workers.push(worker);
        }
        Ok(Pool {
            shared,
            fast_path: config.fast_path,
            processes: config.processes,
            processes_per_tenant: config.processes_per_tenant,
            callers: Callers::default(),
            gate: Mutex::new(Gate::default()),
            gate_changed: Condvar::new(),
            workers: Mutex::new(workers),
        })
    }

    /// Apply `records` (in LSN order) to `base`, or to nothing when the first
    /// record initializes the page, and return the page for `tag`: the
    /// default tenant's request ([`Pool::redo_keyed`] with an empty key).
    pub fn redo(
        &self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        self.redo_keyed(&[], tag, base, records)
    }

    /// [`Pool::redo`] for the tenant `key` (at most [`MAX_KEY_LEN`] bytes):
    /// only a process started for that key ever sees it.
    pub fn redo_keyed(
        &self,
        key: &[u8],
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        let key = self.tenant_of(key)?;
        let inside = self.callers.enter(&key);
        self.redo_counted(&key, inside, tag, base, records)
    }

    /// `redo`, with the caller counted in `callers` (`inside`: how many of
    /// its tenant's are in now, itself included).
    fn redo_counted(
        &self,
        key: &TenantKey,
        inside: Inside<'_>,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        let started = Instant::now();
        let slots = &self.shared.slots;
        // The base page is left out of the request's bytes: sent from the
        // caller's memory when this thread drives a process, copied in only
        // when the request is queued.
        let mut request = self.admit(key, tag, base, records, WIRE.take(), true)?;
        if let Some(page) = request.answer.take() {
            WIRE.set(request.wire);
            account(&self.shared, key, started, Duration::ZERO, Ok(&page));
            return Ok(page);
        }

        // The caller's own thread drives a free process of its tenant's,
        // unless requests of its tenant's wait or more of its callers than
        // its processes are here (module notes); a worker (in a callback)
        // always does, waiting for a slot if need be: it must never wait
        // for the queue it serves.
        let deadline = slots.deadline_from(started);
        let slot = if ON_WORKER.with(Cell::get) {
            match slots.take_until_for(key, Some(deadline)) {
                Ok(Some(slot)) => Some(slot),
                outcome => {
                    let err = outcome.err().unwrap_or(slots.deadline_error(String::new()));
                    account(&self.shared, key, started, started.elapsed(), Err(&err));
                    return Err(err);
                }
            }
        } else if inside.count <= self.processes_of(key)
            && (self.shared.queue.is_empty() || !self.shared.queue.has_waiting(key))
        {
            slots.try_take_for(key)
        } else {
            None
        };
        if let Some(mut slot) = slot {
            let waited = started.elapsed();
            let outcome = slot.run_one(&request, base, deadline);
            drop(slot);
            WIRE.set(request.wire);
            account(
                &self.shared,
                key,
                started,
                waited,
                outcome.as_ref().map(|p| &**p),
            );
            return outcome;
        }

        request.take_base(base);
        let lane = self.shared.queue.lane_here();
        let (reply, answer) = handoff(self.shared.queue.bell(lane));
        self.enqueue(lane, key, request, started, Completion::Wait(reply), true)?;
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
        self.submit_keyed(&[], tag, base, records, callback)
    }

    /// [`Pool::submit`] for the tenant `key` (see [`Pool::redo_keyed`]).
    pub fn submit_keyed(
        &self,
        key: &[u8],
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
        callback: Callback,
    ) -> Result<()> {
        let started = Instant::now();
        let key = self.tenant_of(key)?;
        // One answered from an image is still answered on a worker thread,
        // as promised.
        let request = self.admit(&key, tag, base, records, Vec::new(), false)?;
        let lane = self.shared.queue.lane_here();
        let completion = Completion::Callback(callback);
        self.enqueue(lane, &key, request, started, completion, false)
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
        self.start_keyed(&[], tag, base, records)
    }

    /// [`Pool::start`] for the tenant `key` (see [`Pool::redo_keyed`]).
    pub fn start_keyed(
        &self,
        key: &[u8],
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Call> {
        let started = Instant::now();
        let key = self.tenant_of(key)?;
        let call = Call::new()?;
        let mut request = self.admit(&key, tag, base, records, Vec::new(), false)?;
        if let Some(page) = request.answer.take() {
            account(&self.shared, &key, started, Duration::ZERO, Ok(&page));
            call.state().complete(Ok(page));
            return Ok(call);
        }
        let lane = self.shared.queue.lane_here();
        let completion = Completion::Call(call.state().clone());
        self.enqueue(lane, &key, request, started, completion, false)?;
        Ok(call)
    }

    /// The tenant of a request; a key too long refuses the request.
    fn tenant_of(&self, key: &[u8]) -> Result<TenantKey> {
        TenantKey::new(key).inspect_err(|_| {
            bump(&self.shared.stats.requests);
            self.refused(&TenantKey::DEFAULT);
        })
    }

    /// The processes `key` may have at once.
    fn processes_of(&self, key: &TenantKey) -> usize {
        if key.is_default() {
            self.processes
        } else {
            self.processes_per_tenant.min(self.processes)
        }
    }

    /// Count a request refused before it was queued.
    fn refused(&self, key: &TenantKey) {
        bump(&self.shared.stats.failures);
        self.shared
            .slots
            .stats
            .tenants
            .answered(key, false, Duration::ZERO);
    }

    /// Count a request, and check and encode it into `wire`
    /// ([`Request::new`], or [`Request::around_base`] with `around_base`)
    /// before it goes anywhere; the fast path answers it from a full-page
    /// image.
    fn admit(
        &self,
        key: &TenantKey,
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
        let request = request.inspect_err(|_| self.refused(key))?;
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

    /// Queue an admitted request of `key` that arrived at `started`, in
    /// `lane` (waiting for room, or `Busy`); a refusal counts as the
    /// request's failure.
    fn enqueue(
        &self,
        lane: usize,
        key: &TenantKey,
        request: Request,
        started: Instant,
        completion: Completion,
        wait_for_room: bool,
    ) -> Result<()> {
        let item = Queued {
            key: *key,
            request,
            started,
            deadline: self.shared.slots.deadline_from(started),
            waited: Duration::ZERO,
            completion,
        };
        self.gated_send(lane, item, wait_for_room)
            .inspect_err(|_| self.refused(key))
    }

    /// Send `item` through the gate (module notes).
    fn gated_send(&self, lane: usize, item: Queued, wait_for_room: bool) -> Result<()> {
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
        if let Err(Error::Busy(_)) = sent {
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
        let mut slot = slots.take_for(&TenantKey::DEFAULT)?;
        let deadline = slots.deadline_from(Instant::now());
        slot.run_one(&Request::ping(), None, deadline).map(|_| ())
    }

    /// Pids of the processes running now (the template and the spare
    /// aside).
    pub fn pids(&self) -> Vec<u32> {
        self.processes().iter().map(|p| p.pid).collect()
    }

    /// The processes running now and the tenant each serves (the template
    /// and the spare, which serve nobody yet, aside).
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.shared.slots.processes()
    }

    /// What the pool counted of the tenant `key` (zeros for one it never
    /// saw; it counts the 4,096 busiest one by one).
    pub fn tenant_stats(&self, key: &[u8]) -> Result<TenantCounters> {
        Ok(self.shared.slots.stats.tenants.get(&TenantKey::new(key)?))
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

    /// The pool's counters in Prometheus text, the tenants' families too
    /// (the busiest by name, the rest as `tenant="other"`).
    pub fn prometheus_text(&self) -> String {
        let mut text = self.stats().prometheus_text();
        self.shared.slots.stats.tenants.prometheus_text(&mut text);
        text
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
        self.shared.queue.stop();
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

/// Count a finished request of `key` that waited `waited` for a process.
fn account(
    shared: &Shared,
    key: &TenantKey,
    started: Instant,
    waited: Duration,
    outcome: Result<&Page, &Error>,
) {
    let stats = &shared.stats;
    match outcome {
        Ok(_) => stats.redo_time_us.observe_duration(started.elapsed()),
        // Counted as cancellations where they are dropped.
        Err(Error::Cancelled) => {}
        Err(_) => bump(&stats.failures),
    }
    let failed = outcome.is_err() && !matches!(outcome, Err(Error::Cancelled));
    shared.slots.stats.tenants.answered(key, !failed, waited);
}
