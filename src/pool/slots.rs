//! Process slots: a fixed number of wal-redo processes, each started on first
//! need, shared by the callers and workers of a [`crate::pool::Pool`].
//!
//! Lifecycle rules, each enforced here:
//! - A slot is held by one thread at a time, and starts its process while
//!   held: however many requests arrive at once, each slot spawns once.
//!   Threads that find every slot busy sleep on a condition variable.
//! - Processes are started by the pool's spawner thread (see
//!   [`crate::process::Spawner`]), so they die with the pool, not with
//!   whichever caller thread needed one first. A process counts as started
//!   only once it has answered a ping: one that dies at start-up (a broken
//!   binary or extension) is a spawn failure, with its stderr as the reason.
//! - A process killed by a signal while it starts (SIGKILL: an operator, the
//!   OOM killer) failed by accident: it is started again at once, without
//!   counting toward the back-off, for as long as the requests waiting for it
//!   have time (every fourth such kill in a row counts toward the back-off,
//!   so that something that kills every start cannot keep a slot spinning,
//!   but never as the requests' own failure).
//! - A start that fails by itself (an error exit, a missing binary or
//!   extension, a bad setting, garbage) will likely fail again: it is tried
//!   again once, at once. A start that hangs is not tried again at once (it
//!   already cost a whole deadline). Two such failures in a row start a
//!   back-off (100 ms doubling to 10 s) in which no process is started.
//! - A request's deadline (`Config::timeout` after it arrived) is its whole
//!   life: queueing, waiting for a slot and for a process, every attempt and
//!   retry. Past it, it gets `Timeout` (and is never sent again); an attempt
//!   is cut at the earliest deadline of its batch (the others are re-sent,
//!   nobody charged). Hang detection is separate: an attempt that gets no
//!   page for `Config::attempt_timeout()` is killed.
//! - A request waits for a process up to its deadline, through a back-off if
//!   that ends in time, instead of failing because someone else's start
//!   failed. It gets `SpawnFailed`, with the last start's error, only when no
//!   process could be had by then (or when its own two starts failed by
//!   themselves); also when it waited for a slot meanwhile, if no process
//!   runs and the last start failed by itself (`deadline_error`).
//! - Once the pool is closed, no slot is handed out (checked under the lock
//!   that `close` sets the flag under, so a slot taken before close is one
//!   `kill_all` waits for) and no process is started or request retried:
//!   what is left of a batch is answered with `Shutdown`, so closing waits
//!   at most for the attempts in flight, each bounded by its deadline.
//! - When a process fails (EOF, broken pipe, short read, hang) it is taken
//!   out of its slot, killed and reaped, and its stderr kept for the error.
//!   What happens to the request it was working on depends on how:
//!   - a crash on it (an exit of its own, SIGABRT, SIGSEGV, a PANIC, a
//!     garbage answer) is charged: it is retried once on a fresh process (the
//!     process may have been at fault), and a second crash is the request's,
//!     returned with PostgreSQL's message;
//!   - a kill from outside (the process ended by a SIGKILL or SIGTERM we did
//!     not send: an operator, the OOM killer) or a hang is not the request's
//!     fault: it is retried for as long as its deadline allows;
//!   - requests pipelined behind it are re-sent without being charged: they
//!     are never lost. A request sent again goes behind those that failed
//!     less often, so a request that hangs every process holds the others
//!     up once; but the batch is answered as a whole, when its last request
//!     is done (by that one's deadline at the latest).
//! - A call's request that is cancelled is never sent again (dropped
//!   before any send or spawn, never retried). One cancelled while a
//!   process works on it has that process killed (`crate::pool::call`);
//!   that failure charges nobody: the other requests of the batch, before
//!   or behind it, are re-sent as after any failure, and the slot starts a
//!   fresh process.
//! - A process idle for `idle_timeout` is retired (killed and reaped).
//! - Tenants (`super::tenant`): a slot is bound to a key when it is taken
//!   for one, and stays bound while it has a process: that process, its
//!   replacements after a failure included, and a spare taken from the
//!   template, only ever get that key's requests (`execute` refuses others
//!   as a bug, never sends them). A slot is taken for a key: one of its own
//!   that is idle; else, while the key has fewer slots than it may
//!   (`processes_per_tenant`; the default tenant, the unkeyed calls, may
//!   have them all), an idle slot without a process, else the least
//!   recently used idle slot of another key, whose process is retired
//!   first. A slot given back without a process is bound to nobody.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pg::page::Page;
use crate::pool::call::CancelToken;
use crate::pool::stats::{bump, ProcessStats};
use crate::pool::tenant::TenantKey;
use crate::process::launch::Launcher;
use crate::process::threads::current_cpu;
use crate::process::{Failure, Interrupted, Process, Spawner};
use crate::request::Request;
use crate::PAGE_SIZE;
use starts::Backoff;
use verdict::{crashed, page_is_sane};

mod starts;
mod verdict;

/// One request on its way to a process, and what became of it.
pub(crate) struct Job<'a> {
    /// Sent as it is: its bytes were written once, on admission.
    pub request: &'a Request,
    /// The caller's base page, when `request` leaves it out of its bytes
    /// (`Request::around_base`): sent from where it is.
    pub base: Option<&'a Page>,
    /// When it must have its answer (`Config::timeout` after it arrived).
    pub deadline: Instant,
    /// Attempts its own process crashed on (see the module notes).
    pub crashes: u8,
    /// Attempts that failed on it, whatever the cause: it is sent behind
    /// the requests that failed less often, which a hang of its does not
    /// hold up again.
    pub failures: u32,
    /// Why its last attempt failed, for the error at its deadline.
    pub last_failure: Option<Error>,
    pub outcome: Option<Result<Box<Page>>>,
    /// A call's request can be cancelled (see `crate::pool::call`).
    pub cancel: Option<&'a CancelToken>,
    /// Its tenant: only a process of that key's may get it.
    pub key: TenantKey,
}

impl<'a> Job<'a> {
    pub fn new(key: TenantKey, request: &'a Request, deadline: Instant) -> Job<'a> {
        Job {
            key,
            request,
            base: None,
            deadline,
            crashes: 0,
            failures: 0,
            last_failure: None,
            outcome: None,
            cancel: None,
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_some_and(CancelToken::is_cancelled)
    }
}

/// A slot: at most one process, and buffers reused from request to request.
#[derive(Default)]
pub(crate) struct Slot {
    process: Option<Process>,
    last_used: Option<Instant>,
    pages: Vec<u8>,
    /// Indexes of the jobs of a batch still to send.
    pending: Vec<usize>,
    /// The tenant this slot is bound to (see the module notes): whose
    /// requests it is taken for, and for whom it starts a process. `None`
    /// while it has no process and is idle.
    key: Option<TenantKey>,
    /// The tenant the process in it was started for, the only one whose
    /// requests it is ever sent (checked against this, not the binding).
    serves: Option<TenantKey>,
}

/// The slots nobody holds, and how many each tenant has, held or not.
#[derive(Default)]
struct Idle {
    slots: Vec<Slot>,
    bound: HashMap<TenantKey, usize>,
}

impl Idle {
    fn unbind(&mut self, key: &TenantKey) {
        if let Some(n) = self.bound.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.bound.remove(key);
            }
        }
    }
}

/// A live process and the tenant it serves (`Pool::processes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub key: TenantKey,
}

pub(crate) struct Slots {
    spawner: Spawner,
    idle: Mutex<Idle>,
    returned: Condvar,
    /// Called when a slot comes back: the queue's workers may serve a
    /// tenant now.
    on_return: Box<dyn Fn() + Send + Sync>,
    /// Slots one keyed tenant may have (`Config::processes_per_tenant`).
    per_tenant: usize,
    /// The live processes and their tenants.
    live: Mutex<Vec<ProcessInfo>>,
    total: usize,
    closed: AtomicBool,
    backoff: Mutex<Backoff>,
    /// Wakes those waiting out a back-off when the pool closes.
    closing: (Mutex<()>, Condvar),
    /// A request's whole life (`Config::timeout`).
    timeout: Duration,
    /// Hang detection per attempt (`Config::attempt_timeout()`).
    attempt_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// `Config::follow_caller_cpu`.
    follow_cpu: bool,
    /// What the slots count of their processes' starts, deaths and
    /// retirements and of the attempts made on them; the pool reads it.
    pub stats: ProcessStats,
    /// The PostgreSQL major version the processes run.
    pub pg_version: u32,
}

impl Slots {
    /// The slots of `config`; `on_return` is called (with no lock of
    /// theirs held) each time one is given back.
    pub fn new(config: &Config, on_return: Box<dyn Fn() + Send + Sync>) -> Result<Slots> {
        if config.processes == 0 {
            return Err(Error::InvalidArgument(
                "processes must be at least 1".into(),
            ));
        }
        if config.processes_per_tenant == 0 {
            return Err(Error::InvalidArgument(
                "processes_per_tenant must be at least 1".into(),
            ));
        }
        let launcher = Arc::new(Launcher::new(config)?);
        let pg_version = launcher.pg_version();
        Ok(Slots {
            pg_version,
            spawner: Spawner::new(launcher)?,
            idle: Mutex::new(Idle {
                slots: (0..config.processes).map(|_| Slot::default()).collect(),
                bound: HashMap::new(),
            }),
            returned: Condvar::new(),
            on_return,
            per_tenant: config.processes_per_tenant,
            live: Mutex::new(Vec::new()),
            total: config.processes,
            closed: AtomicBool::new(false),
            backoff: Mutex::new(Backoff::new()),
            closing: (Mutex::new(()), Condvar::new()),
            timeout: config.timeout,
            attempt_timeout: config.attempt_timeout(),
            idle_timeout: config.idle_timeout,
            follow_cpu: config.follow_caller_cpu,
            stats: ProcessStats::default(),
        })
    }

    /// The deadline of a request that arrived at `arrived`.
    pub fn deadline_from(&self, arrived: Instant) -> Instant {
        arrived + self.timeout
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A slot for `key` now (module notes), if there is one and the pool
    /// is open.
    pub fn try_take_for(&self, key: &TenantKey) -> Option<SlotGuard<'_>> {
        self.try_take_first(std::slice::from_ref(key))
            .map(|(_, slot)| slot)
    }

    /// A slot now for the first of `keys` that can have one, and its index.
    pub fn try_take_first(&self, keys: &[TenantKey]) -> Option<(usize, SlotGuard<'_>)> {
        let mut idle = self.idle.lock();
        if self.is_closed() {
            return None;
        }
        let (i, slot, evicted) = keys
            .iter()
            .enumerate()
            .find_map(|(i, key)| self.pick(&mut idle, key).map(|(s, e)| (i, s, e)))?;
        Some((
            i,
            SlotGuard {
                slots: self,
                slot: Some(slot),
                evicted,
            },
        ))
    }

    /// The idle slot to hand out to `key` (module notes), and the process
    /// of another tenant's to retire for it. Among a tenant's own, one
    /// whose process is pinned to the caller's CPU if there is one (a
    /// worker placed on a CPU keeps its process there, instead of moving it
    /// back and forth with another worker's), else the last returned.
    fn pick(&self, idle: &mut Idle, key: &TenantKey) -> Option<(Slot, Option<Process>)> {
        let here = if self.follow_cpu { current_cpu() } else { None };
        let mine = |s: &Slot| s.key.as_ref() == Some(key);
        let near = here.and_then(|cpu| {
            idle.slots.iter().rposition(|s| {
                mine(s)
                    && s.process
                        .as_ref()
                        .is_some_and(|p| p.pinned_cpu() == Some(cpu))
            })
        });
        if let Some(i) = near.or_else(|| idle.slots.iter().rposition(mine)) {
            return Some((idle.slots.remove(i), None));
        }
        let limit = if key.is_default() {
            self.total
        } else {
            self.per_tenant
        };
        if idle.bound.get(key).copied().unwrap_or(0) >= limit {
            return None;
        }
        let i = match idle.slots.iter().rposition(|s| s.key.is_none()) {
            Some(i) => i,
            None => (0..idle.slots.len()).min_by_key(|&i| idle.slots[i].last_used)?,
        };
        let mut slot = idle.slots.remove(i);
        if let Some(old) = slot.key.take() {
            idle.unbind(&old);
        }
        let evicted = slot.process.take();
        slot.key = Some(*key);
        *idle.bound.entry(*key).or_default() += 1;
        Some((slot, evicted))
    }

    /// A slot for `key`, waiting for one if need be; fails once the pool
    /// closes.
    pub fn take_for(&self, key: &TenantKey) -> Result<SlotGuard<'_>> {
        self.take_until_for(key, None)
            .map(|slot| slot.expect("no deadline"))
    }

    /// [`Slots::take_for`], waiting no later than `deadline`: `None` then.
    pub fn take_until_for(
        &self,
        key: &TenantKey,
        deadline: Option<Instant>,
    ) -> Result<Option<SlotGuard<'_>>> {
        let mut idle = self.idle.lock();
        loop {
            if self.is_closed() {
                return Err(Error::Shutdown);
            }
            if let Some((slot, evicted)) = self.pick(&mut idle, key) {
                return Ok(Some(SlotGuard {
                    slots: self,
                    slot: Some(slot),
                    evicted,
                }));
            }
            match deadline {
                None => self.returned.wait(&mut idle),
                Some(d) => {
                    if self.returned.wait_until(&mut idle, d).timed_out() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Retire the idle process of another tenant's slot taken for a new
    /// one (killed and reaped here).
    fn retire(&self, evicted: Process) {
        log::debug!(
            "retiring wal-redo process {} for another tenant",
            evicted.pid()
        );
        bump(&self.stats.retirements);
        self.forget(&evicted);
    }

    /// The error of a request whose deadline passed: `SpawnFailed` with
    /// the last start's reason when no process could be started (see
    /// `starts_refused`) and the request has no process's stderr of its own.
    pub fn deadline_error(&self, stderr: String) -> Error {
        if stderr.is_empty() {
            if let Some(reason) = self.starts_refused() {
                return Error::SpawnFailed(format!(
                    "{reason} (no process could be started by the request's deadline)"
                ));
            }
        }
        Error::Timeout {
            after_ms: self.timeout.as_millis() as u64,
            stderr,
        }
    }

    /// The live processes (busy or not) and the tenant each serves.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.live.lock().clone()
    }

    /// A process just put in a slot of `key`'s.
    fn register(&self, process: &Process, key: &TenantKey) {
        self.live.lock().push(ProcessInfo {
            pid: process.pid(),
            key: *key,
        });
        self.stats.tenants.spawned(key);
    }

    /// A process taken out of its slot, to be killed and reaped.
    fn forget(&self, process: &Process) {
        self.live.lock().retain(|p| p.pid != process.pid());
        self.stats.live_processes.fetch_sub(1, Ordering::Relaxed);
    }

    /// Stop handing out slots; wake everyone waiting for one. The flag is
    /// set under the lock slots are taken under: see the module notes.
    pub fn close(&self) {
        let guard = self.idle.lock();
        self.closed.store(true, Ordering::Release);
        self.returned.notify_all();
        drop(guard);
        let _closing = self.closing.0.lock();
        self.closing.1.notify_all();
    }

    /// Wait until every slot is back (requests in flight end by their
    /// deadline), then kill and reap every process.
    pub fn kill_all(&self) {
        let mut idle = self.idle.lock();
        while idle.slots.len() < self.total {
            self.returned.wait(&mut idle);
        }
        let dying: Vec<Process> = idle
            .slots
            .iter_mut()
            .filter_map(|s| s.process.take())
            .collect();
        idle.slots.iter_mut().for_each(|s| s.key = None);
        idle.bound.clear();
        drop(idle);
        dying.iter().for_each(|p| self.forget(p));
        drop(dying);
        // The template and the next process's directory too: no process
        // starts after this (the pool is closed).
        self.spawner.release();
    }

    /// Retire processes idle for longer than `idle_timeout`.
    pub fn retire_idle(&self) {
        let Some(limit) = self.idle_timeout else {
            return;
        };
        let mut idle = self.idle.lock();
        let mut retired = Vec::new();
        let mut unbound = Vec::new();
        for slot in &mut idle.slots {
            if slot.process.is_some() && slot.last_used.is_some_and(|t| t.elapsed() >= limit) {
                retired.extend(slot.process.take());
                unbound.extend(slot.key.take());
            }
        }
        unbound.iter().for_each(|key| idle.unbind(key));
        drop(idle);
        for p in &retired {
            log::debug!("retiring idle wal-redo process {}", p.pid());
            bump(&self.stats.retirements);
            self.forget(p);
        }
        // Killed and reaped here, outside the lock.
        drop(retired);
    }

    /// How long workers may sleep before idle processes are due to retire.
    pub fn retire_interval(&self) -> Duration {
        self.idle_timeout.map_or(Duration::from_secs(3600), |t| {
            (t / 2).max(Duration::from_millis(10))
        })
    }

    /// A failed attempt of `job`. One its own process crashed on
    /// (`crashed`) is charged: the second is final (then it gets `err`).
    /// Others (a process killed from outside, a hang) are retried while
    /// its deadline allows (`execute` ends it then). A cancelled job is not
    /// retried either.
    fn failed_attempt(&self, job: &mut Job<'_>, err: Error, crashed: bool) {
        job.failures += 1;
        if job.is_cancelled() {
            job.outcome = Some(Err(Error::Cancelled));
            return;
        }
        if crashed {
            job.crashes += 1;
            if job.crashes >= 2 {
                job.outcome = Some(Err(err));
                return;
            }
        }
        job.last_failure = Some(err);
        if Instant::now() >= job.deadline {
            job.outcome = Some(Err(self.past_deadline(job)));
            return;
        }
        bump(&self.stats.retries);
        log::warn!(
            "retrying {} on a fresh process after: {}",
            job.request.tag,
            job.last_failure.as_ref().expect("just set")
        );
    }

    /// What a job gets when its deadline passed before its answer came.
    fn past_deadline(&self, job: &mut Job<'_>) -> Error {
        self.deadline_error(match job.last_failure.take() {
            Some(Error::Timeout { stderr, .. }) => stderr,
            Some(other) => format!("last attempt: {other}"),
            None => String::new(),
        })
    }
}

/// A slot taken from the pool; given back on drop, also when unwinding.
pub(crate) struct SlotGuard<'a> {
    slots: &'a Slots,
    slot: Option<Slot>,
    /// The process of another tenant's that this slot had, to retire once
    /// no lock is held (the slot may be taken under the queue's lock).
    evicted: Option<Process>,
}

impl SlotGuard<'_> {
    /// Run one request on this slot's process; `base` is the page it was
    /// made with (sent from where it is when the request leaves it out).
    pub fn run_one(
        &mut self,
        request: &Request,
        base: Option<&Page>,
        deadline: Instant,
    ) -> Result<Box<Page>> {
        let key = self.slot.as_ref().and_then(|s| s.key);
        let mut job = [Job {
            base,
            ..Job::new(key.expect("a held slot is bound"), request, deadline)
        }];
        self.execute(&mut job);
        let [job] = job;
        job.outcome.expect("every job gets an outcome")
    }

    /// Run `jobs` on this slot's process, pipelined, with the retry rules of
    /// the module notes; every job gets an outcome. A cancelled job is never
    /// sent again, and a process killed for a cancel charges nobody.
    pub fn execute(&mut self, jobs: &mut [Job<'_>]) {
        let slots = self.slots;
        if let Some(p) = self.evicted.take() {
            slots.retire(p);
        }
        let slot = self.slot.as_mut().expect("slot present until drop");
        let key = slot.key.expect("a slot is bound to a key while held");
        let mut pending = std::mem::take(&mut slot.pending);
        loop {
            // What is left to send: not answered, not cancelled, not past
            // its deadline.
            pending.clear();
            let now = Instant::now();
            for (i, job) in jobs.iter_mut().enumerate() {
                if job.outcome.is_some() {
                    continue;
                }
                if job.is_cancelled() {
                    job.outcome = Some(Err(Error::Cancelled));
                    continue;
                }
                if now >= job.deadline {
                    job.outcome = Some(Err(slots.past_deadline(job)));
                    continue;
                }
                pending.push(i);
            }
            pending.sort_by_key(|&i| jobs[i].failures);
            let Some(&first) = pending.first() else {
                break;
            };
            if slot.process.is_none() {
                // No start, and so no retry, once closing: see the module notes.
                if slots.is_closed() {
                    for &i in &pending {
                        jobs[i].outcome = Some(Err(Error::Shutdown));
                    }
                    break;
                }
                // They wait for a process while the last of them has time;
                // those whose deadline passes meanwhile get their timeout
                // above.
                let latest = pending.iter().map(|&i| jobs[i].deadline).max();
                match slots.start(latest.expect("pending is not empty")) {
                    Ok(p) => {
                        slots.register(&p, &key);
                        slot.process = Some(p);
                        slot.serves = Some(key);
                        // The start took time: the deadlines are checked
                        // again from now, and a job whose deadline passed
                        // meanwhile gets its timeout instead of being sent
                        // (sent, a fast redo could answer it past its
                        // deadline within the attempt's 1 ms minimum).
                        continue;
                    }
                    // A new process that hung: an attempt of the first job
                    // failed, as if the process had hung on the job itself
                    // (not a crash: tried again while its deadline allows).
                    Err(e @ Error::Timeout { .. }) => {
                        bump(&slots.stats.timeouts);
                        slots.failed_attempt(&mut jobs[first], e, false);
                        continue;
                    }
                    Err(e) => {
                        for &i in &pending {
                            jobs[i].outcome = Some(Err(e.clone()));
                        }
                        break;
                    }
                }
            }
            let process = slot.process.as_mut().expect("just started");
            // From here a cancel kills this process; one that came since the
            // check above keeps its job out of the batch. The tenants' wall
            // (module notes): a request of another key than the one the
            // process was started for is never sent to it.
            let killer = process.killer().clone();
            let mut k = 0;
            while k < pending.len() {
                let job = &mut jobs[pending[k]];
                if slot.serves != Some(job.key) {
                    job.outcome = Some(Err(Error::Internal(format!(
                        "a request of tenant {} reached a process of tenant {}",
                        job.key,
                        slot.serves.map_or("none".into(), |k| k.to_string())
                    ))));
                    pending.remove(k);
                } else if job.cancel.is_some_and(|t| !t.enter(&killer)) {
                    job.outcome = Some(Err(Error::Cancelled));
                    pending.remove(k);
                } else {
                    k += 1;
                }
            }
            if pending.is_empty() {
                continue;
            }
            if slots.follow_cpu {
                process.follow_cpu();
            }
            // One write per batch, each request sent from where it is, its
            // base page too when the caller's (a lone request without
            // allocating the list).
            let one: [&[u8]; 3];
            let many: Vec<&[u8]>;
            let parts: &[&[u8]] = if let [i] = pending[..] {
                one = jobs[i].request.parts(jobs[i].base);
                &one
            } else {
                many = pending
                    .iter()
                    .flat_map(|&i| jobs[i].request.parts(jobs[i].base))
                    .filter(|p| !p.is_empty())
                    .collect();
                &many
            };
            slot.pages.resize(pending.len() * PAGE_SIZE, 0);
            // Hang detection, but never past the earliest deadline of the
            // batch (a process killed for it charges nobody: the others are
            // re-sent).
            let earliest = pending.iter().map(|&i| jobs[i].deadline).min();
            // From `now`, a moment ago when no process was started since
            // (then it was read again): one clock read less.
            let left = earliest.map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
            let attempt = slots
                .attempt_timeout
                .min(left.max(Duration::from_millis(1)));
            let mut result = process.transact_parts(parts, &mut slot.pages, attempt);
            slot.last_used = Some(Instant::now());
            for &i in &pending {
                if let Some(t) = jobs[i].cancel {
                    t.leave();
                }
            }
            // After every leave: a cancel that killed did so before it.
            let killed_for_cancel = killer.fired();
            let mut done = match &result {
                Ok(()) => pending.len(),
                Err(i) => i.pages_done.min(pending.len()),
            };
            // Never hand out a page that cannot be one.
            if let Some(bad) =
                (0..done).find(|&i| !page_is_sane(&slot.pages[i * PAGE_SIZE..][..PAGE_SIZE]))
            {
                done = bad;
                result = Err(Interrupted {
                    failure: Failure::Garbage,
                    pages_done: bad,
                });
            }
            for (k, &i) in pending[..done].iter().enumerate() {
                // Copied without zeroing first (Box::new([0; _]) would).
                let page: Box<Page> = slot.pages[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]
                    .to_vec()
                    .into_boxed_slice()
                    .try_into()
                    .expect("a page-sized slice");
                jobs[i].outcome = Some(Ok(page));
            }
            if killed_for_cancel {
                // Whatever the process did, its failure (or its next one) is
                // the cancel's: replaced, nobody charged, the rest re-sent.
                if let Some(p) = slot.process.take() {
                    slots.forget(&p);
                }
                bump(&slots.stats.cancel_kills);
                continue;
            }
            let Err(Interrupted { failure, .. }) = result else {
                if process.is_retired() {
                    // Answered, but killed for a deadline that passed as the
                    // answer arrived: replaced, nobody charged.
                    if let Some(p) = slot.process.take() {
                        slots.forget(&p);
                    }
                    bump(&slots.stats.process_deaths);
                }
                break;
            };
            let mut dead = slot.process.take().expect("process in use");
            bump(&slots.stats.process_deaths);
            slots.forget(&dead);
            if matches!(failure, Failure::Timeout) {
                bump(&slots.stats.timeouts);
            }
            let crashed = crashed(&failure, &mut dead);
            let err = dead.failure_error(failure, attempt);
            // Killed and reaped here; its scratch directory goes with it.
            drop(dead);
            // The job the process failed on has an attempt failed; those
            // behind it are re-sent as they are.
            if let Some(&failed) = pending.get(done) {
                slots.failed_attempt(&mut jobs[failed], err, crashed);
            }
        }
        slot.pending = pending;
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.evicted.take() {
            self.slots.retire(p);
        }
        if let Some(mut slot) = self.slot.take() {
            let mut idle = self.slots.idle.lock();
            if slot.process.is_none() {
                if let Some(key) = slot.key.take() {
                    idle.unbind(&key);
                }
            }
            idle.slots.push(slot);
            drop(idle);
            // All: a waiter of another tenant may not be able to use it,
            // and after close kill_all may be among them.
            self.slots.returned.notify_all();
            (self.slots.on_return)();
        }
    }
}
