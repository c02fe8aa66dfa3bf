//! Calls (`Pool::start`): the outcome through a descriptor, and cancel, with
//! the fault-injecting child (testkit/src/bin/walredo-fake-child.rs): a
//! cancelled request still queued is never sent, one a process hangs on has
//! that process killed at once (the slot is free for the next request long
//! before the deadline), nothing is retried or charged for it, and requests
//! pipelined with it, before or behind, are not lost. Waits are hang
//! detectors, not timing assertions.

use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use walredo::pool::Call;
use walredo::{Config, Error, PageTag, Pool, RecordRef, PAGE_SIZE};
use walredo_testkit::harness::fake::{CRASH, HANG, NORMAL, SLOW};
use walredo_testkit::harness::*;

/// Far longer than any wait here should take; a cancel that leaves the slot
/// busy until this deadline fails the test.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Only a hang (a slot busy until the deadline) exceeds this.
const HANG_DETECTOR: Duration = Duration::from_secs(3);

fn fake_pool_config(processes: usize) -> Config {
    fake_config(processes, &[], TIMEOUT)
}

fn with_refs<T>(t: &PageTag, f: impl FnOnce(&[RecordRef<'_>]) -> T) -> T {
    let rec = synthetic_record(t, true);
    f(&[RecordRef {
        end_lsn: 0x1000,
        data: &rec,
    }])
}

fn start(pool: &Pool, t: PageTag) -> walredo::Result<Call> {
    with_refs(&t, |r| pool.start(&t, None, r))
}

fn redo(pool: &Pool, t: PageTag) -> walredo::Result<Box<[u8; PAGE_SIZE]>> {
    with_refs(&t, |r| pool.redo(&t, None, r))
}

/// A submitted request whose outcome (Ok or the error's text) goes to `tx`.
fn submit(pool: &Pool, t: PageTag, tx: &mpsc::Sender<(u32, Result<u32, String>)>) {
    let tx = tx.clone();
    with_refs(&t, |r| {
        pool.submit(
            &t,
            None,
            r,
            Box::new(move |outcome| {
                let _ = tx.send((t.blkno, outcome.map(block_of).map_err(|e| e.to_string())));
            }),
        )
    })
    .unwrap();
}

/// The block number the fake child wrote into its answer.
fn block_of(page: &[u8; PAGE_SIZE]) -> u32 {
    u32::from_le_bytes(page[100..104].try_into().unwrap())
}

fn readable(fd: RawFd, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
    n == 1 && pfd.revents & libc::POLLIN != 0
}

fn finish(mut call: Call) -> walredo::Result<Box<[u8; PAGE_SIZE]>> {
    assert!(
        readable(call.fd(), HANG_DETECTOR),
        "the call's descriptor never became readable"
    );
    let outcome = call.try_finish().expect("readable, so done");
    // Still readable once done.
    assert!(readable(call.fd(), Duration::ZERO));
    outcome
}

/// Wait until the pool's only worker has sent what it was given.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

/// A call for `t`, started and sent by the pool's only worker.
fn start_and_settle(pool: &Pool, t: PageTag) -> Call {
    let call = start(pool, t).unwrap();
    settle();
    call
}

#[test]
fn a_call_answers_through_its_descriptor() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_pool_config(2)).unwrap();
    let mut slow = start(&pool, fake_tag(SLOW, 300)).unwrap();
    assert!(!readable(slow.fd(), Duration::ZERO), "done before it ran");
    assert!(slow.try_finish().is_none());
    let calls: Vec<Call> = (0..50)
        .map(|i| start(&pool, fake_tag(NORMAL, i)).unwrap())
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(block_of(&finish(call).unwrap()), i as u32);
    }
    assert_eq!(block_of(&finish(slow).unwrap()), 300);
    let s = pool.stats();
    assert_stats!(s, failures: 0, retries: 0, cancellations: 0);
}

/// A process stuck on a call's request (the fake child hangs as a stopped
/// wal-redo process would): cancel kills it, and the next request on the
/// same one-process pool is answered at once, not after the 10 s deadline.
#[test]
fn cancel_of_a_hung_request_frees_the_slot_at_once() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_pool_config(1)).unwrap();
    let call = start_and_settle(&pool, fake_tag(HANG, 1));
    let cancelled = Instant::now();
    assert!(call.cancel(), "no process was killed for the cancel");
    let cancel_took = cancelled.elapsed();
    let page = redo(&pool, fake_tag(NORMAL, 2)).unwrap();
    let next_page = cancelled.elapsed();
    println!("cancel took {cancel_took:?}; cancel to the next page: {next_page:?}");
    assert_eq!(block_of(&page), 2);
    assert!(
        next_page < HANG_DETECTOR,
        "the slot stayed busy: {next_page:?}"
    );
    let s = pool.stats();
    assert_eq!(
        (s.failures, s.retries, s.timeouts, s.process_deaths),
        (0, 0, 0, 0),
        "the cancel was charged to someone: {s:?}"
    );
    assert_stats!(s, cancellations: 1, cancel_kills: 1, spawns: 2);
}

/// A cancelled request still in the queue never reaches a process: this
/// one would crash its process, and nothing crashes.
#[test]
fn a_cancelled_queued_request_is_never_sent() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_pool_config(1)).unwrap();
    let (tx, rx) = mpsc::channel();
    submit(&pool, fake_tag(SLOW, 300), &tx);
    settle(); // the worker is busy with it
    let doomed = start(&pool, fake_tag(CRASH, 1)).unwrap();
    submit(&pool, fake_tag(NORMAL, 2), &tx);
    assert!(!doomed.cancel(), "a queued request has no process to kill");
    let mut got: Vec<_> = (0..2).map(|_| rx.recv_timeout(TIMEOUT).unwrap()).collect();
    got.sort();
    assert_eq!(got, [(2, Ok(2)), (300, Ok(300))]);
    let s = pool.stats();
    assert_stats!(s, process_deaths: 0, retries: 0, failures: 0, spawns: 1);
    assert_stats!(s, cancellations: 1, cancel_kills: 0);
}

/// One batch on a one-process pool: [`first`, the call (`call`), NORMAL 3],
/// sent while the process works on a SLOW 200 before it. The call is
/// cancelled 150 ms after SLOW 200 is answered; the cancel must kill the
/// process and charge nobody. The outcomes of `first` and NORMAL 3, each
/// awaited for up to `wait`, sorted.
fn cancel_in_a_batch(
    first: PageTag,
    call: PageTag,
    wait: Duration,
) -> Vec<(u32, Result<u32, String>)> {
    let pool = Pool::new(&fake_pool_config(1)).unwrap();
    let (tx, rx) = mpsc::channel();
    submit(&pool, fake_tag(SLOW, 200), &tx);
    settle();
    submit(&pool, first, &tx);
    let call = start(&pool, call).unwrap();
    submit(&pool, fake_tag(NORMAL, 3), &tx);
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), (200, Ok(200)));
    settle(); // the process is on `first` or the call
    let cancelled = Instant::now();
    assert!(call.cancel());
    // Outcomes are handed out once the batch is over.
    let mut got: Vec<_> = (0..2).map(|_| rx.recv_timeout(wait).unwrap()).collect();
    println!("cancel to the pages around it: {:?}", cancelled.elapsed());
    got.sort();
    let s = pool.stats();
    assert_stats!(s, failures: 0, retries: 0, process_deaths: 0);
    assert_stats!(s, cancellations: 1, cancel_kills: 1);
    got
}

/// One batch: [NORMAL 1, HANG (the call), NORMAL 3]. The process answers
/// the first and hangs on the call; the cancel kills it; the first keeps its
/// page and the third is re-sent on a fresh process, uncharged.
#[test]
fn a_request_pipelined_behind_a_cancelled_one_is_re_sent() {
    let _test = isolated_test();
    let got = cancel_in_a_batch(fake_tag(NORMAL, 1), fake_tag(HANG, 2), HANG_DETECTOR);
    assert_eq!(got, [(1, Ok(1)), (3, Ok(3))]);
}

/// One batch: [SLOW 600, the call (NORMAL), NORMAL 3]. The cancel comes
/// while the process still works on the first request, which is killed with
/// it: it is re-sent, uncharged, and so is the one behind.
#[test]
fn a_request_pipelined_before_a_cancelled_one_is_re_sent() {
    let _test = isolated_test();
    let got = cancel_in_a_batch(fake_tag(SLOW, 600), fake_tag(NORMAL, 2), TIMEOUT);
    assert_eq!(got, [(3, Ok(3)), (600, Ok(600))]);
}

/// Cancel right after start, many times, racing the worker at every stage
/// (queued, being sent, answered, completed), then once after completion:
/// the pool stays whole, nobody is charged, every process killed for a
/// cancel is replaced and reaped.
#[test]
fn cancels_racing_completion_leave_the_pool_whole() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_pool_config(2)).unwrap();
    for i in 0..300 {
        let call = start(&pool, fake_tag(NORMAL, i)).unwrap();
        match i % 4 {
            1 => std::thread::yield_now(),
            2 => std::thread::sleep(Duration::from_micros(50)),
            3 => std::thread::sleep(Duration::from_micros(500)),
            _ => {}
        }
        call.cancel();
    }
    let done = start(&pool, fake_tag(NORMAL, 7)).unwrap();
    let done_fd = done.fd();
    assert!(readable(done_fd, HANG_DETECTOR));
    assert!(!done.cancel(), "a finished request has no process to kill");
    assert_eq!(block_of(&redo(&pool, fake_tag(NORMAL, 8)).unwrap()), 8);
    let s = pool.stats();
    println!(
        "300 cancels: {} requests dropped or stopped, {} processes killed",
        s.cancellations, s.cancel_kills
    );
    assert_stats!(s, failures: 0, retries: 0, process_deaths: 0, timeouts: 0);
    assert_eq!(s.spawns, s.cancel_kills + s.live_processes, "{s:?}");
}

/// Calls outlive their pool: one queued when the pool shuts down gets
/// `Shutdown` (its descriptor readable), one in flight its page; a cancel
/// after the pool is gone is harmless; a call on a closed pool is refused.
#[test]
fn calls_outlive_their_pool() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_pool_config(1)).unwrap();
    let running = start_and_settle(&pool, fake_tag(SLOW, 300));
    let queued = start(&pool, fake_tag(NORMAL, 1)).unwrap();
    let abandoned = start(&pool, fake_tag(NORMAL, 2)).unwrap();
    pool.shutdown();
    assert!(matches!(
        start(&pool, fake_tag(NORMAL, 3)),
        Err(Error::Shutdown)
    ));
    drop(pool);
    assert_eq!(block_of(&finish(running).unwrap()), 300);
    assert_eq!(finish(queued).unwrap_err(), Error::Shutdown);
    assert!(!abandoned.cancel());
}

#[test]
fn a_full_queue_refuses_a_call() {
    let _test = isolated_test();
    let mut config = fake_pool_config(1);
    config.queue_depth = 1;
    let pool = Pool::new(&config).unwrap();
    let busy = start_and_settle(&pool, fake_tag(SLOW, 300));
    let queued = start(&pool, fake_tag(NORMAL, 1)).unwrap();
    assert!(matches!(
        start(&pool, fake_tag(NORMAL, 2)),
        Err(Error::Busy(_))
    ));
    assert_eq!(block_of(&finish(busy).unwrap()), 300);
    assert_eq!(block_of(&finish(queued).unwrap()), 1);
}
