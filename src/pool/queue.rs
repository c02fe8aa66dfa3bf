//! The queue between callers and workers: a queue per tenant, served in
//! turn, and in each tenant one lane per worker, each worker on a CPU of its
//! own.
//!
//! Tenants: a worker serves the first tenant in the ring that a process can
//! take now (one of its own is idle, or it may have one more: see
//! `Slots::try_take_for`), a batch of its requests, then puts that tenant
//! at the back of the ring. So a tenant with thousands of requests queued
//! gets one batch per turn, a tenant with one request waits at most for
//! the turns of those before it, and a tenant whose processes are all busy
//! holds no worker up: the workers serve the others meanwhile, and the
//! slot given back wakes one of them.
//!
//! Why lanes: on the small virtual machines we measure on, waking a thread
//! on another CPU costs several times a wake-up on the same CPU (a pipe
//! round trip is 55 us across CPUs, 7 us on one), and a queued request
//! costs one wake-up of its caller. So each worker is pinned to a CPU of
//! its own (its process follows it there, `follow_caller_cpu`), a caller
//! queues in the lane of the worker on the CPU it runs on, and that worker
//! takes a tenant's requests from its own lane first, and wakes them on
//! the CPU they sleep on. Each lane has the [`Bell`] its callers sleep on,
//! rung once per batch. A worker takes from the other lanes when its own
//! is empty: no request waits while a worker and a process are free.
//!
//! Rules, each enforced here:
//! - At most `depth` requests wait in all tenants together, and at most
//!   `tenant_depth` of one keyed tenant (the default tenant, the unkeyed
//!   calls, only counts toward `depth`): `push` refuses one more (`Busy`,
//!   naming the limit) or, asked to wait, waits for room; workers make
//!   room as they take requests, and `close` ends every wait for room.
//! - A request whose deadline passes while it waits is taken out and
//!   answered with its timeout by a worker ([`Next::Expired`]): it is never
//!   left waiting for a process its tenant cannot have.
//! - Requests that need no process (answered from a full-page image) are
//!   handed to a worker without a slot ([`Next::Ready`]): a tenant's turn
//!   never retires another tenant's process for them.
//! - Workers are placed only when processes follow their driver's CPU
//!   (without that the host places its threads itself): worker *i* on the
//!   *i*-th allowed CPU from the one the pool was made on (pools made on
//!   different CPUs, say in several backends, do not all pile onto CPU 0).
//! - A caller may spin for its answer only on a CPU no worker is placed
//!   on, and only as many at once as there are such CPUs: a spinner there
//!   takes no CPU a worker or process needs (`may_spin`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::pool::handoff::Bell;
use crate::pool::tenant::TenantKey;
use crate::process::threads::{allowed_cpus, current_cpu};

/// What a queued item tells the queue about itself.
pub(crate) trait Queueable {
    fn tenant(&self) -> &TenantKey;
    /// When it must have its answer.
    fn deadline(&self) -> Instant;
    /// Whether a process must answer it (one answered from a full-page
    /// image needs none).
    fn needs_process(&self) -> bool;
}

/// What a worker gets from [`Queue::next`].
pub(crate) enum Next<S> {
    /// `batch` holds requests of one tenant, and `S` is the slot to run
    /// them on.
    Batch(S),
    /// `batch` holds requests of one tenant that need no process.
    Ready,
    /// `batch` holds requests whose deadline passed while they waited.
    Expired,
    /// Nothing could be served for the idle interval.
    Idle,
    /// The pool is closing.
    Stop,
}

/// Where the workers run, and who may spin.
struct Placement {
    /// The CPU of each worker, when placed.
    worker_cpu: Vec<Option<usize>>,
    /// The lane a caller on CPU *n* queues in (callers on CPUs beyond the
    /// table: their number modulo the lanes).
    lane_of_cpu: Vec<usize>,
    /// CPUs a caller may spin on: allowed, and no worker's.
    spin_cpu: Vec<bool>,
    spin_cpus: usize,
}

impl Placement {
    fn new(workers: usize, place: bool) -> Placement {
        let allowed = if place { allowed_cpus() } else { Vec::new() };
        if allowed.is_empty() {
            return Placement {
                worker_cpu: vec![None; workers],
                lane_of_cpu: Vec::new(),
                spin_cpu: Vec::new(),
                spin_cpus: 0,
            };
        }
        let start = current_cpu()
            .and_then(|c| allowed.iter().position(|&a| a == c))
            .unwrap_or(0);
        let worker_cpu: Vec<Option<usize>> = (0..workers)
            .map(|i| Some(allowed[(start + i) % allowed.len()]))
            .collect();
        let top = allowed.iter().max().map_or(0, |m| m + 1);
        let lane_of_cpu = (0..top)
            .map(|cpu| {
                worker_cpu
                    .iter()
                    .position(|w| *w == Some(cpu))
                    .unwrap_or(cpu % workers)
            })
            .collect();
        let spin_cpu: Vec<bool> = (0..top)
            .map(|cpu| allowed.contains(&cpu) && !worker_cpu.contains(&Some(cpu)))
            .collect();
        let spin_cpus = spin_cpu.iter().filter(|s| **s).count();
        Placement {
            worker_cpu,
            lane_of_cpu,
            spin_cpu,
            spin_cpus,
        }
    }
}

/// One tenant's waiting requests, a lane per worker.
struct Tenant<T> {
    lanes: Vec<VecDeque<T>>,
    len: usize,
}

struct State<T> {
    /// Tenants with requests waiting (and no others).
    tenants: HashMap<TenantKey, Tenant<T>>,
    /// The same tenants, in the order they are to be served.
    ring: VecDeque<TenantKey>,
    /// No more waits for room.
    closed: bool,
    /// The workers are to leave.
    stopping: bool,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// Workers wait here for a request they can serve.
    work: Condvar,
    /// Callers wait here for room.
    room: Condvar,
    lanes: usize,
    bells: Vec<Arc<Bell>>,
    placement: Placement,
    depth: usize,
    tenant_depth: usize,
    /// Requests waiting, all tenants together (changed under `state`; read
    /// without it).
    queued: AtomicUsize,
    spinners: AtomicUsize,
}

/// A caller's permission to spin; gives it back when dropped.
pub(crate) struct Spinning<'a>(&'a AtomicUsize);

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Queueable> Queue<T> {
    /// `workers` lanes with room for `depth` requests in all and
    /// `tenant_depth` of one keyed tenant; the workers are placed on CPUs
    /// when `place`.
    pub fn new(workers: usize, depth: usize, tenant_depth: usize, place: bool) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                tenants: HashMap::new(),
                ring: VecDeque::new(),
                closed: false,
                stopping: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            lanes: workers,
            bells: (0..workers).map(|_| Arc::default()).collect(),
            placement: Placement::new(workers, place),
            depth,
            tenant_depth,
            queued: AtomicUsize::new(0),
            spinners: AtomicUsize::new(0),
        }
    }

    /// The CPU worker `lane` is to run on, if it is placed.
    pub fn worker_cpu(&self, lane: usize) -> Option<usize> {
        self.placement.worker_cpu[lane]
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.queued() == 0
    }

    /// The lane of the CPU the caller runs on.
    pub fn lane_here(&self) -> usize {
        let cpu = current_cpu().unwrap_or(0);
        self.placement
            .lane_of_cpu
            .get(cpu)
            .copied()
            .unwrap_or(cpu % self.lanes)
    }

    /// The bell the callers of `lane` sleep on.
    pub fn bell(&self, lane: usize) -> &Arc<Bell> {
        &self.bells[lane]
    }

    /// Whether requests of `key` wait.
    pub fn has_waiting(&self, key: &TenantKey) -> bool {
        self.state.lock().tenants.contains_key(key)
    }

    /// Which limit, if any, keeps one more request of `key` out.
    fn full(&self, state: &State<T>, key: &TenantKey) -> Option<String> {
        if self.queued() >= self.depth {
            return Some(format!(
                "the wal-redo request queue is full (queue_depth {})",
                self.depth
            ));
        }
        let mine = state.tenants.get(key).map_or(0, |t| t.len);
        (!key.is_default() && mine >= self.tenant_depth).then(|| {
            format!(
                "tenant {key} has as many requests queued as it may \
                 (tenant_queue_depth {})",
                self.tenant_depth
            )
        })
    }

    /// Queue `item` in `lane` of its tenant: `Busy` when a limit is
    /// reached (or, with `wait_for_room`, once there is room), `Shutdown`
    /// once closed.
    pub fn push(&self, lane: usize, item: T, wait_for_room: bool) -> Result<()> {
        let key = *item.tenant();
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err(Error::Shutdown);
            }
            match self.full(&state, &key) {
                None => break,
                Some(limit) if !wait_for_room => return Err(Error::Busy(limit)),
                Some(_) => self.room.wait(&mut state),
            }
        }
        let state = &mut *state;
        let lanes = self.lanes;
        let tenant = state.tenants.entry(key).or_insert_with(|| Tenant {
            lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            len: 0,
        });
        if tenant.len == 0 {
            state.ring.push_back(key);
        }
        tenant.lanes[lane].push_back(item);
        tenant.len += 1;
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.work.notify_one();
        Ok(())
    }

    /// End every wait for room (with `Shutdown`); the pool's gate sees to
    /// it that no request is pushed after the workers stopped.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_all();
    }

    /// Tell the workers to leave (after `close`): each answers what is
    /// left ([`Queue::drain`]).
    pub fn stop(&self) {
        self.state.lock().stopping = true;
        self.work.notify_all();
    }

    /// A slot came back: a waiting worker may now serve a tenant, if any
    /// request waits (else nobody is woken: a slot comes back after every
    /// request). Under the lock, so a worker between its look at the slots
    /// and its wait cannot miss it. A request it would miss was counted in
    /// `queued` before that worker's look at the slots (under `state`),
    /// which came before this slot came back (under the slots' lock), which
    /// came before this read.
    pub fn wake_a_worker(&self) {
        if self.queued() == 0 {
            return;
        }
        let _state = self.state.lock();
        self.work.notify_one();
    }

    /// The next batch for the worker of `lane`: up to `max` requests of the
    /// first tenant in turn that `take_slot` finds a slot for (given the
    /// waiting tenants in order, it returns the index of the one it took a
    /// slot for, and the slot), from the worker's lane first. Waits up to
    /// `idle` when no tenant can be served, and answers the requests whose
    /// deadline passes meanwhile ([`Next::Expired`]).
    pub fn next<S>(
        &self,
        lane: usize,
        batch: &mut Vec<T>,
        max: usize,
        idle: Duration,
        mut take_slot: impl FnMut(&[TenantKey]) -> Option<(usize, S)>,
    ) -> Next<S> {
        let waited_until = Instant::now() + idle;
        let mut state = self.state.lock();
        loop {
            if state.stopping {
                return Next::Stop;
            }
            // The first tenant in turn whose next request needs no process.
            let ready = state.ring.iter().position(|key| {
                let tenant = &state.tenants[key];
                !tenant.lanes[self.lane_of(tenant, lane)]
                    .front()
                    .expect("a tenant's first lane with requests")
                    .needs_process()
            });
            if let Some(i) = ready {
                self.take_batch(&mut state, i, lane, batch, max, |item| {
                    !item.needs_process()
                });
                return Next::Ready;
            }
            if let Some((i, slot)) = take_slot(state.ring.make_contiguous()) {
                self.take_batch(&mut state, i, lane, batch, max, |_| true);
                return Next::Batch(slot);
            }
            let now = Instant::now();
            if self.take_expired(&mut state, batch, now) {
                return Next::Expired;
            }
            let wake = self
                .earliest_deadline(&state)
                .map_or(waited_until, |d| d.min(waited_until));
            if now >= waited_until {
                return Next::Idle;
            }
            self.work.wait_until(&mut state, wake);
        }
    }

    /// The lane of `tenant` a worker of `lane` takes from: its own, else
    /// the next with requests.
    fn lane_of(&self, tenant: &Tenant<T>, lane: usize) -> usize {
        (0..self.lanes)
            .map(|k| (lane + k) % self.lanes)
            .find(|&l| !tenant.lanes[l].is_empty())
            .expect("a tenant of the ring has requests")
    }

    /// Move up to `max` requests of the `i`-th tenant of the ring into
    /// `batch`, from the start of its lane for a worker of `lane`, as long
    /// as `fits` says so, and put the tenant at the back of the ring.
    fn take_batch(
        &self,
        state: &mut State<T>,
        i: usize,
        lane: usize,
        batch: &mut Vec<T>,
        max: usize,
        fits: impl Fn(&T) -> bool,
    ) {
        let key = state.ring.remove(i).expect("an index of the ring");
        let tenant = state.tenants.get_mut(&key).expect("a tenant of the ring");
        let l = self.lane_of(tenant, lane);
        let from = &mut tenant.lanes[l];
        let n = from.iter().take(max).take_while(|item| fits(item)).count();
        batch.extend(from.drain(..n));
        tenant.len -= n;
        if tenant.len == 0 {
            state.tenants.remove(&key);
        } else {
            state.ring.push_back(key);
        }
        self.made_room(n);
        // Another worker may serve the next tenant meanwhile.
        if !state.ring.is_empty() {
            self.work.notify_one();
        }
    }

    /// Take out every waiting request whose deadline passed.
    fn take_expired(&self, state: &mut State<T>, into: &mut Vec<T>, now: Instant) -> bool {
        let before = into.len();
        for tenant in state.tenants.values_mut() {
            for lane in &mut tenant.lanes {
                while lane.front().is_some_and(|t| t.deadline() <= now) {
                    into.extend(lane.pop_front());
                    tenant.len -= 1;
                }
            }
        }
        let n = into.len() - before;
        if n > 0 {
            state.tenants.retain(|_, t| t.len > 0);
            let tenants = &state.tenants;
            state.ring.retain(|k| tenants.contains_key(k));
            self.made_room(n);
        }
        n > 0
    }

    /// The earliest deadline of a waiting request (each lane is in the
    /// order of arrival, so of their first ones).
    fn earliest_deadline(&self, state: &State<T>) -> Option<Instant> {
        state
            .tenants
            .values()
            .flat_map(|t| {
                t.lanes
                    .iter()
                    .filter_map(|l| l.front().map(|i| i.deadline()))
            })
            .min()
    }

    /// Everything still waiting, for a closing worker to answer.
    pub fn drain(&self) -> Vec<T> {
        let mut state = self.state.lock();
        let left: Vec<T> = state
            .tenants
            .drain()
            .flat_map(|(_, t)| t.lanes.into_iter().flatten())
            .collect();
        state.ring.clear();
        self.made_room(left.len());
        left
    }

    /// `n` requests left the queue (under `state`).
    fn made_room(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.room.notify_all();
        }
    }

    /// Whether a caller waiting for its answer may spin (see the module
    /// notes): `Some` while it may, and it must keep the value while it
    /// does.
    pub fn may_spin(&self) -> Option<Spinning<'_>> {
        let cpu = current_cpu()?;
        if !self.placement.spin_cpu.get(cpu).copied().unwrap_or(false) {
            return None;
        }
        let spinning = Spinning(&self.spinners);
        // Counted first, so the guard gives it back either way.
        let before = self.spinners.fetch_add(1, Ordering::Relaxed);
        (before < self.placement.spin_cpus).then_some(spinning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued request in these tests: its tenant, a number, a deadline.
    #[derive(Debug, PartialEq)]
    struct Item(TenantKey, u32, Instant);

    impl Queueable for Item {
        fn tenant(&self) -> &TenantKey {
            &self.0
        }
        fn deadline(&self) -> Instant {
            self.2
        }
        /// In these tests, numbers from 1000 need none.
        fn needs_process(&self) -> bool {
            self.1 < 1000
        }
    }

    fn key(k: &str) -> TenantKey {
        TenantKey::new(k.as_bytes()).unwrap()
    }

    fn item(k: &str, n: u32) -> Item {
        Item(key(k), n, Instant::now() + Duration::from_secs(60))
    }

    /// The numbers of the next batch, a slot taken for any tenant.
    fn next_batch(queue: &Queue<Item>, lane: usize, max: usize) -> Vec<u32> {
        let mut batch = Vec::new();
        match queue.next(lane, &mut batch, max, Duration::ZERO, |_| Some((0, ()))) {
            Next::Batch(()) => batch.iter().map(|i| i.1).collect(),
            _ => panic!("no batch"),
        }
    }

    #[test]
    fn tenants_are_served_in_turn() {
        let queue: Queue<Item> = Queue::new(1, 100, 100, false);
        for n in 0..10 {
            queue.push(0, item("flood", n), false).unwrap();
        }
        queue.push(0, item("one", 100), false).unwrap();
        queue.push(0, item("two", 200), false).unwrap();
        assert_eq!(next_batch(&queue, 0, 4), [0, 1, 2, 3]);
        // The flooding tenant went to the back: the others come first.
        assert_eq!(next_batch(&queue, 0, 4), [100]);
        queue.push(0, item("one", 101), false).unwrap();
        assert_eq!(next_batch(&queue, 0, 4), [200]);
        assert_eq!(next_batch(&queue, 0, 4), [4, 5, 6, 7]);
        assert_eq!(next_batch(&queue, 0, 4), [101]);
        assert_eq!(next_batch(&queue, 0, 4), [8, 9]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_tenant_without_a_slot_holds_nobody_up() {
        let queue: Queue<Item> = Queue::new(1, 100, 100, false);
        queue.push(0, item("busy", 1), false).unwrap();
        queue.push(0, item("free", 2), false).unwrap();
        let mut batch = Vec::new();
        let next = queue.next(0, &mut batch, 8, Duration::ZERO, |ring| {
            ring.iter().position(|k| *k == key("free")).map(|i| (i, ()))
        });
        assert!(matches!(next, Next::Batch(())));
        assert_eq!(batch, [item("free", 2)].map(|i| Item(i.0, i.1, batch[0].2)));
        // Nothing it can serve: it waits its idle interval, and says so.
        batch.clear();
        let started = Instant::now();
        let next = queue.next(0, &mut batch, 8, Duration::from_millis(20), |_| {
            None::<(usize, ())>
        });
        assert!(matches!(next, Next::Idle));
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(queue.queued(), 1);
    }

    #[test]
    fn requests_that_need_no_process_are_handed_over_without_a_slot() {
        let queue: Queue<Item> = Queue::new(1, 100, 100, false);
        queue.push(0, item("a", 1), false).unwrap();
        queue.push(0, item("b", 1000), false).unwrap();
        queue.push(0, item("b", 1001), false).unwrap();
        queue.push(0, item("b", 2), false).unwrap();
        queue.push(0, item("b", 1002), false).unwrap();
        let mut batch = Vec::new();
        let no_slot = |_: &[TenantKey]| -> Option<(usize, ())> { panic!("no slot wanted") };
        // b's first two, up to the one that needs a process, though a is
        // first in turn (it has no slot).
        assert!(matches!(
            queue.next(0, &mut batch, 8, Duration::ZERO, no_slot),
            Next::Ready
        ));
        assert_eq!(batch.iter().map(|i| i.1).collect::<Vec<_>>(), [1000, 1001]);
        // Then a slot: a's and b's in turn, b's all the rest.
        assert_eq!(next_batch(&queue, 0, 8), [1]);
        assert_eq!(next_batch(&queue, 0, 8), [2, 1002]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_request_past_its_deadline_leaves_the_queue() {
        let queue: Queue<Item> = Queue::new(2, 100, 100, false);
        let soon = Instant::now() + Duration::from_millis(20);
        queue.push(1, Item(key("a"), 1, soon), false).unwrap();
        queue.push(1, item("a", 2), false).unwrap();
        let mut batch = Vec::new();
        let next = queue.next(0, &mut batch, 8, Duration::from_secs(5), |_| {
            None::<(usize, ())>
        });
        assert!(matches!(next, Next::Expired));
        assert!(Instant::now() >= soon);
        assert_eq!(batch.iter().map(|i| i.1).collect::<Vec<_>>(), [1]);
        assert_eq!(queue.queued(), 1);
    }

    #[test]
    fn limits_say_which_was_hit() {
        let queue: Queue<Item> = Queue::new(3, 4, 2, false);
        queue.push(0, item("a", 1), false).unwrap();
        queue.push(1, item("a", 2), false).unwrap();
        match queue.push(2, item("a", 3), false) {
            Err(Error::Busy(m)) => assert!(m.contains("tenant_queue_depth 2"), "{m}"),
            other => panic!("{other:?}"),
        }
        // The default tenant only counts toward the pool's limit.
        queue.push(0, item("", 4), false).unwrap();
        queue.push(0, item("", 5), false).unwrap();
        match queue.push(0, item("b", 6), false) {
            Err(Error::Busy(m)) => assert!(m.contains("queue_depth 4"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A worker takes a tenant's requests from its own lane first.
        assert_eq!(next_batch(&queue, 1, 8), [2]);
        assert_eq!(next_batch(&queue, 1, 8), [4, 5]);
        assert_eq!(next_batch(&queue, 1, 8), [1]);
    }

    #[test]
    fn a_waiter_for_room_gets_it_or_shutdown() {
        let queue: Arc<Queue<Item>> = Arc::new(Queue::new(1, 1, 1, false));
        queue.push(0, item("a", 1), false).unwrap();
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.push(0, item("a", 2), true))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(queue.drain().len(), 1);
        waiter.join().unwrap().unwrap();
        assert_eq!(queue.queued(), 1);
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.push(0, item("b", 3), true))
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.close();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Shutdown)));
    }

    #[test]
    fn stop_ends_a_workers_wait() {
        let queue: Arc<Queue<Item>> = Arc::new(Queue::new(2, 4, 4, false));
        let worker = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let next = queue.next(0, &mut Vec::new(), 8, Duration::from_secs(30), |_| {
                    None::<(usize, ())>
                });
                matches!(next, Next::Stop)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.stop();
        assert!(worker.join().unwrap());
    }

    #[test]
    fn placed_workers_get_cpus_of_their_own_and_nobody_spins_on_them() {
        let placement = Placement::new(2, true);
        let allowed = allowed_cpus();
        for (lane, cpu) in placement.worker_cpu.iter().enumerate() {
            let cpu = cpu.expect("placed");
            assert!(allowed.contains(&cpu));
            assert!(!placement.spin_cpu[cpu]);
            if allowed.len() >= 2 {
                assert_eq!(placement.lane_of_cpu[cpu], lane);
            }
        }
        assert_eq!(
            placement.spin_cpus,
            allowed.len().saturating_sub(2),
            "{allowed:?}"
        );
        let unplaced = Placement::new(2, false);
        assert_eq!(unplaced.worker_cpu, [None, None]);
        assert_eq!(unplaced.spin_cpus, 0);
    }
}
