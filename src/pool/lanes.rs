//! The queue between callers and workers: one lane per worker, each worker
//! on a CPU of its own.
//!
//! Why lanes: on the small virtual machines we measure on, waking a thread
//! on another CPU costs several times a wake-up on the same CPU (a pipe
//! round trip is 55 us across CPUs, 7 us on one), and a queued request
//! costs one wake-up of its caller. So each worker is pinned to a CPU of
//! its own (its process follows it there, `follow_caller_cpu`), a caller
//! queues in the lane of the worker on the CPU it runs on, and that worker,
//! which answers it, wakes it on the CPU it sleeps on. Each lane has the
//! [`Bell`] its callers sleep on, rung once per batch. A worker whose lane
//! is empty takes from the others (and rings their bells): no request
//! waits while a worker is free.
//!
//! Rules, each enforced here:
//! - At most `depth` requests wait in all lanes together: `push` refuses
//!   one more (`Busy`) or, asked to wait, waits for room; workers make room
//!   as they take requests, and `close` ends every wait for room.
//! - Workers are placed only when processes follow their driver's CPU
//!   (without that the host places its threads itself): worker *i* on the
//!   *i*-th allowed CPU from the one the pool was made on (pools made on
//!   different CPUs, say in several backends, do not all pile onto CPU 0).
//! - A caller may spin for its answer only on a CPU no worker is placed
//!   on, and only as many at once as there are such CPUs: a spinner there
//!   takes no CPU a worker or process needs (`may_spin`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Select, Sender};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::pool::handoff::Bell;
use crate::process::threads::{allowed_cpus, current_cpu};

/// What a worker gets from [`Lanes::next`].
pub(crate) enum Next {
    /// `batch` holds at least one request.
    Batch,
    /// Nothing came for the idle interval.
    Idle,
    /// The pool is closing.
    Stop,
}

#[derive(Default)]
struct Room {
    closed: bool,
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

pub(crate) struct Lanes<T> {
    senders: Vec<Sender<T>>,
    receivers: Vec<Receiver<T>>,
    bells: Vec<Arc<Bell>>,
    placement: Placement,
    depth: usize,
    /// Requests in all lanes (reserved before they are sent).
    queued: AtomicUsize,
    room: Mutex<Room>,
    room_freed: Condvar,
    /// Callers waiting for room (changed under `room`).
    waiting_for_room: AtomicUsize,
    spinners: AtomicUsize,
}

/// A caller's permission to spin; gives it back when dropped.
pub(crate) struct Spinning<'a>(&'a AtomicUsize);

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Lanes<T> {
    /// `workers` lanes with room for `depth` requests in all; the workers
    /// are placed on CPUs when `place`.
    pub fn new(workers: usize, depth: usize, place: bool) -> Lanes<T> {
        let (senders, receivers) = (0..workers).map(|_| unbounded()).unzip();
        Lanes {
            senders,
            receivers,
            bells: (0..workers).map(|_| Arc::default()).collect(),
            placement: Placement::new(workers, place),
            depth,
            queued: AtomicUsize::new(0),
            room: Mutex::new(Room::default()),
            room_freed: Condvar::new(),
            waiting_for_room: AtomicUsize::new(0),
            spinners: AtomicUsize::new(0),
        }
    }

    /// The CPU worker `lane` is to run on, if it is placed.
    pub fn worker_cpu(&self, lane: usize) -> Option<usize> {
        self.placement.worker_cpu[lane]
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.queued() == 0
    }

    fn reserve(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::SeqCst) < self.depth {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::SeqCst);
        false
    }

    /// The lane of the CPU the caller runs on.
    pub fn lane_here(&self) -> usize {
        let cpu = current_cpu().unwrap_or(0);
        self.placement
            .lane_of_cpu
            .get(cpu)
            .copied()
            .unwrap_or(cpu % self.senders.len())
    }

    /// The bell the callers of `lane` sleep on.
    pub fn bell(&self, lane: usize) -> &Arc<Bell> {
        &self.bells[lane]
    }

    /// Queue `item` in `lane`: `Busy` when all lanes together are full
    /// (or, with `wait_for_room`, once there is room), `Shutdown` once
    /// closed.
    pub fn push(&self, lane: usize, item: T, wait_for_room: bool) -> Result<()> {
        if !self.reserve() {
            if !wait_for_room {
                return Err(Error::Busy);
            }
            let mut room = self.room.lock();
            loop {
                if room.closed {
                    return Err(Error::Shutdown);
                }
                // Counted before the check: a worker that makes room after
                // it sees this waiter and wakes it.
                self.waiting_for_room.fetch_add(1, Ordering::SeqCst);
                let reserved = self.reserve();
                if !reserved {
                    self.room_freed.wait(&mut room);
                }
                self.waiting_for_room.fetch_sub(1, Ordering::SeqCst);
                if reserved {
                    break;
                }
            }
        }
        // The receivers live as long as the senders (both are ours).
        self.senders[lane].send(item).map_err(|_| Error::Shutdown)
    }

    /// End every wait for room (with `Shutdown`); the pool's gate sees to
    /// it that no request is pushed after the workers stopped.
    pub fn close(&self) {
        self.room.lock().closed = true;
        self.room_freed.notify_all();
    }

    /// The next batch for the worker of `lane`: up to `max` requests of one
    /// lane, its own if it has any. Waits for the first for up to
    /// `idle`, or until `stop` is disconnected.
    pub fn next(
        &self,
        lane: usize,
        batch: &mut Vec<T>,
        max: usize,
        stop: &Receiver<()>,
        idle: Duration,
    ) -> Next {
        let mut from = lane;
        if batch.is_empty() {
            match self.take_one(lane) {
                Some((l, item)) => {
                    from = l;
                    batch.push(item);
                }
                None => {
                    let mut select = Select::new();
                    for rx in &self.receivers {
                        select.recv(rx);
                    }
                    let stop_index = select.recv(stop);
                    let op = match select.select_timeout(idle) {
                        Ok(op) => op,
                        Err(_) => return Next::Idle,
                    };
                    let index = op.index();
                    if index == stop_index {
                        let _ = op.recv(stop);
                        return Next::Stop;
                    }
                    match op.recv(&self.receivers[index]) {
                        Ok(item) => {
                            from = index;
                            batch.push(item);
                        }
                        Err(_) => return Next::Stop,
                    }
                }
            }
        }
        // The rest from the same lane: a worker that takes from another
        // lane takes a batch, not one request at a time.
        while batch.len() < max {
            match self.receivers[from].try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        self.made_room(batch.len());
        Next::Batch
    }

    /// What is left in `lane`, for a closing worker to answer.
    pub fn drain(&self, lane: usize) -> Vec<T> {
        let left: Vec<T> = self.receivers[lane].try_iter().collect();
        self.made_room(left.len());
        left
    }

    /// One request and its lane, from `lane` first, then from the others
    /// in turn.
    fn take_one(&self, lane: usize) -> Option<(usize, T)> {
        let n = self.receivers.len();
        (0..n).find_map(|k| {
            let l = (lane + k) % n;
            self.receivers[l].try_recv().ok().map(|item| (l, item))
        })
    }

    fn made_room(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.queued.fetch_sub(n, Ordering::SeqCst);
        if self.waiting_for_room.load(Ordering::SeqCst) > 0 {
            let _room = self.room.lock();
            self.room_freed.notify_all();
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

    #[test]
    fn room_is_shared_by_the_lanes() {
        let lanes: Lanes<u32> = Lanes::new(3, 2, false);
        lanes.push(0, 1, false).unwrap();
        lanes.push(1, 2, false).unwrap();
        assert!(matches!(lanes.push(2, 3, false), Err(Error::Busy)));
        assert_eq!(lanes.queued(), 2);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let mut batch = Vec::new();
        // Any worker gets them, whichever lane they are in, a lane at a
        // time.
        for expected in [1, 2] {
            assert!(matches!(
                lanes.next(2, &mut batch, 8, &stop, Duration::ZERO),
                Next::Batch
            ));
            assert_eq!(batch, [expected]);
            batch.clear();
        }
        assert!(lanes.is_empty());
        assert!(matches!(
            lanes.next(0, &mut Vec::new(), 8, &stop, Duration::from_millis(1)),
            Next::Idle
        ));
    }

    #[test]
    fn a_waiter_for_room_gets_it_or_shutdown() {
        let lanes: Arc<Lanes<u32>> = Arc::new(Lanes::new(1, 1, false));
        lanes.push(0, 1, false).unwrap();
        let waiter = {
            let lanes = lanes.clone();
            std::thread::spawn(move || lanes.push(0, 2, true))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(lanes.drain(0), [1]);
        waiter.join().unwrap().unwrap();
        assert_eq!(lanes.queued(), 1);
        let waiter = {
            let lanes = lanes.clone();
            std::thread::spawn(move || lanes.push(0, 3, true))
        };
        std::thread::sleep(Duration::from_millis(20));
        lanes.close();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Shutdown)));
    }

    #[test]
    fn stop_ends_a_workers_wait() {
        let lanes: Lanes<u32> = Lanes::new(2, 4, false);
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        drop(stop_tx);
        assert!(matches!(
            lanes.next(0, &mut Vec::new(), 8, &stop, Duration::from_secs(5)),
            Next::Stop
        ));
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
