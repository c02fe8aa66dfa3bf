//! The pool's failure matrix, driven by a fault-injecting child
//! (testkit/src/bin/walredo-fake-child.rs): crashes, hangs, short and garbage
//! answers, stderr chatter, a child that cannot start; plus spawn
//! coalescing, pipelining behind a failure, idle retirement, shutdown and
//! back-pressure. The happy path with the real pg_walredo is in real_wal.rs
//! and the C tests.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use walredo::{Error, PageTag, Pool, PAGE_SIZE};
use walredo_testkit::harness::*;

use walredo_testkit::harness::fake::*;

/// Deadline of an attempt in these tests.
const TIMEOUT: Duration = Duration::from_millis(500);

fn redo(pool: &Pool, tag: &PageTag, n: usize) -> walredo::Result<Box<[u8; PAGE_SIZE]>> {
    let recs = synthetic_records(tag, n);
    pool.redo(tag, None, &record_refs(&recs))
}

/// The fake child's answer for a normal request: block and record count.
fn check_page(page: &[u8; PAGE_SIZE], tag: &PageTag, n: usize) {
    assert_eq!(
        u32::from_le_bytes(page[100..104].try_into().unwrap()),
        tag.blkno
    );
    assert_eq!(
        u32::from_le_bytes(page[104..108].try_into().unwrap()),
        n as u32
    );
}

/// `n` records for `tag` redone on `pool`: the page must be the fake
/// child's answer for them.
fn assert_redone(pool: &Pool, tag: &PageTag, n: usize) {
    check_page(&redo(pool, tag, n).unwrap(), tag, n);
}

#[test]
fn concurrent_first_requests_spawn_once_per_slot() {
    let _test = isolated_test();
    let pool = Arc::new(Pool::new(&fake_config(4, &[], TIMEOUT)).unwrap());
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let t = fake_tag(NORMAL, i);
                let page = redo(&pool, &t, 3).unwrap();
                check_page(&page, &t, 3);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = pool.stats();
    println!(
        "64 concurrent first requests on 4 slots: {} spawns",
        s.spawns
    );
    assert!(s.spawns >= 1 && s.spawns <= 4, "{s:?}");
    assert_eq!(s.live_processes, s.spawns);
    assert_eq!((s.requests, s.failures), (64, 0));
}

#[test]
fn a_request_that_crashes_twice_fails_with_the_message() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_config(1, &[], TIMEOUT)).unwrap();
    let (message, stderr) = redo_failure(redo(&pool, &fake_tag(CRASH, 7), 2));
    assert!(
        message.contains("FATAL:  fake crash on block 7"),
        "{message}"
    );
    assert!(stderr.contains("fake crash"), "{stderr}");
    let s = pool.stats();
    assert_stats!(s, retries: 1, process_deaths: 2, failures: 1);
    // The pool carries on.
    assert_redone(&pool, &fake_tag(NORMAL, 1), 1);
}

#[test]
fn a_crash_once_is_retried_on_a_fresh_process() {
    let _test = isolated_test();
    let (_markers, config) = marker_fake_config("crash-once", &[], TIMEOUT);
    let pool = Pool::new(&config).unwrap();
    let t = fake_tag(CRASH_ONCE, 3);
    assert_redone(&pool, &t, 4);
    let s = pool.stats();
    assert_stats!(s, retries: 1, process_deaths: 1, failures: 0, spawns: 2);
}

#[test]
fn a_hung_process_times_out_and_is_replaced() {
    let _test = isolated_test();
    // Hang detection at 100 ms, within a deadline of 200 ms: a second
    // attempt if its process starts in time, none after the deadline.
    let mut config = fake_config(1, &[], Duration::from_millis(200));
    config.attempt_timeout = Some(Duration::from_millis(100));
    let pool = Pool::new(&config).unwrap();
    let started = Instant::now();
    match redo(&pool, &fake_tag(HANG, 1), 1) {
        Err(Error::Timeout { after_ms: 200, .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = pool.stats();
    assert!((1..=2).contains(&s.timeouts), "{s:?}");
    assert_stats!(s, retries: s.timeouts - 1, process_deaths: s.timeouts);
    assert_redone(&pool, &fake_tag(NORMAL, 2), 1);
}

#[test]
fn short_and_garbage_answers_are_failures_never_pages() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_config(1, &[], TIMEOUT)).unwrap();
    let (message, _) = redo_failure(redo(&pool, &fake_tag(SHORT, 1), 1));
    assert!(message.contains("EOF"), "{message}");
    let (message, _) = redo_failure(redo(&pool, &fake_tag(GARBAGE, 1), 1));
    assert!(message.contains("not a page"), "{message}");
    assert_eq!(pool.stats().process_deaths, 4);
}

#[test]
fn stderr_chatter_does_not_block_answers() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_config(1, &[], TIMEOUT)).unwrap();
    for i in 0..200 {
        let t = fake_tag(CHATTY, i);
        assert_redone(&pool, &t, 1);
    }
    assert_eq!(pool.stats().spawns, 1);
}

#[test]
fn a_child_that_cannot_start_is_reported_and_backed_off() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_config(1, &["--exit-at-start"], TIMEOUT)).unwrap();
    let m = spawn_failure(redo(&pool, &fake_tag(NORMAL, 1), 1));
    assert!(m.contains("refuses to start"), "{m}");
    // Tried twice (one failed start may be an accident), then backed off.
    let s = pool.stats();
    assert_stats!(s, spawn_failures: 2, spawns: 0, live_processes: 0);
    // The next request waits the back-off out (it ends before its deadline)
    // and tries itself: the same reason, from its own two starts.
    let m = spawn_failure(redo(&pool, &fake_tag(NORMAL, 1), 1));
    assert!(m.contains("refuses to start"), "{m}");
    assert_eq!(pool.stats().spawn_failures, 4);
    // Once the back-off outlasts a request's deadline, the request is
    // refused without a start, with the last reason.
    let mut refused = false;
    for _ in 0..4 {
        let m = spawn_failure(redo(&pool, &fake_tag(NORMAL, 1), 1));
        assert!(m.contains("refuses to start"), "{m}");
        refused |= m.contains("not trying again");
    }
    assert!(refused, "{:?}", pool.stats());
    assert_eq!(pool.stats().spawns, 0);
}

/// Collects callback outcomes: (blkno, Ok(records) or Err(error text)).
type Outcomes = Arc<Mutex<Vec<(u32, Result<u32, String>)>>>;

fn submit(pool: &Pool, t: PageTag, n: usize, outcomes: &Outcomes) -> walredo::Result<()> {
    let recs = synthetic_records(&t, n);
    let outcomes = outcomes.clone();
    pool.submit(
        &t,
        None,
        &record_refs(&recs),
        Box::new(move |result| {
            let v = result
                .map(|page| u32::from_le_bytes(page[104..108].try_into().unwrap()))
                .map_err(|e| e.to_string());
            outcomes.lock().unwrap().push((t.blkno, v));
        }),
    )
}

fn wait_for(outcomes: &Outcomes, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while outcomes.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "callbacks missing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn requests_pipelined_behind_a_failure_are_not_lost() {
    let _test = isolated_test();
    let (_markers, config) = marker_fake_config("pipelined", &[], TIMEOUT);
    let pool = Pool::new(&config).unwrap();
    let outcomes: Outcomes = Arc::default();
    for i in 0..40u32 {
        let relnode = if i == 10 || i == 25 {
            CRASH_ONCE
        } else {
            NORMAL
        };
        submit(&pool, fake_tag(relnode, i), 1 + i as usize % 3, &outcomes).unwrap();
    }
    wait_for(&outcomes, 40);
    let got = outcomes.lock().unwrap().clone();
    for (blkno, result) in &got {
        assert_eq!(result, &Ok(1 + blkno % 3), "block {blkno}");
    }
    let mut blocks: Vec<u32> = got.iter().map(|(b, _)| *b).collect();
    blocks.sort();
    assert_eq!(
        blocks,
        (0..40).collect::<Vec<_>>(),
        "each callback exactly once"
    );
    let s = pool.stats();
    assert_stats!(s, retries: 2, failures: 0, requests: 40);
}

#[test]
fn idle_processes_retire() {
    let _test = isolated_test();
    let mut config = fake_config(2, &[], TIMEOUT);
    config.idle_timeout = Some(Duration::from_millis(100));
    let pool = Pool::new(&config).unwrap();
    redo(&pool, &fake_tag(NORMAL, 1), 1).unwrap();
    assert_eq!(pool.stats().live_processes, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().live_processes > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle process was not retired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.stats().retirements, 1);
    // A retired slot starts a new process on demand.
    redo(&pool, &fake_tag(NORMAL, 2), 1).unwrap();
    assert_eq!(pool.stats().spawns, 2);
}

#[test]
fn shutdown_answers_queued_requests_and_refuses_new_ones() {
    let _test = isolated_test();
    let config = fake_config(1, &[], Duration::from_secs(5));
    let pool = Pool::new(&config).unwrap();
    let outcomes: Outcomes = Arc::default();
    submit(&pool, fake_tag(SLOW, 300), 1, &outcomes).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // the worker has it
    for i in 0..5 {
        submit(&pool, fake_tag(NORMAL, i), 1, &outcomes).unwrap();
    }
    pool.shutdown();
    let got = outcomes.lock().unwrap().clone();
    assert_eq!(got.len(), 6, "every callback ran, once: {got:?}");
    assert_eq!(got.iter().filter(|(_, r)| r.is_ok()).count(), 1, "{got:?}");
    assert!(got
        .iter()
        .filter(|(_, r)| r.is_err())
        .all(|(_, r)| r.as_ref().unwrap_err().contains("shut down")));
    assert!(matches!(
        redo(&pool, &fake_tag(NORMAL, 9), 1),
        Err(Error::Shutdown)
    ));
    assert!(matches!(
        submit(&pool, fake_tag(NORMAL, 9), 1, &outcomes),
        Err(Error::Shutdown)
    ));
    assert_eq!(pool.stats().live_processes, 0);
}

#[test]
fn a_full_queue_refuses_submissions_as_busy() {
    let _test = isolated_test();
    let mut config = fake_config(1, &[], TIMEOUT);
    config.queue_depth = 2;
    config.timeout = Duration::from_secs(5);
    let pool = Pool::new(&config).unwrap();
    let outcomes: Outcomes = Arc::default();
    submit(&pool, fake_tag(SLOW, 400), 1, &outcomes).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // the worker has it
    submit(&pool, fake_tag(NORMAL, 1), 1, &outcomes).unwrap();
    submit(&pool, fake_tag(NORMAL, 2), 1, &outcomes).unwrap();
    assert!(matches!(
        submit(&pool, fake_tag(NORMAL, 3), 1, &outcomes),
        Err(Error::Busy(_))
    ));
    // A blocking caller waits for room instead.
    assert_redone(&pool, &fake_tag(NORMAL, 4), 1);
    wait_for(&outcomes, 3);
    let s = pool.stats();
    assert_stats!(s, busy_rejections: 1, queue_depth: 0);
}

#[test]
fn metrics_text_counts_what_happened() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_config(1, &[], TIMEOUT)).unwrap();
    for i in 0..5 {
        redo(&pool, &fake_tag(NORMAL, i), 2).unwrap();
    }
    let text = pool.stats().prometheus_text();
    assert!(text.contains("walredo_requests_total 5\n"), "{text}");
    assert!(text.contains("walredo_spawns_total 1\n"), "{text}");
    assert!(text.contains("walredo_redo_seconds_count 5\n"), "{text}");
    assert!(
        text.contains("walredo_records_per_request_sum 10\n"),
        "{text}"
    );
}

/// The scheduling policy of each of this process's threads, by name
/// (field 41 of /proc/self/task/TID/stat).
fn thread_policies() -> Vec<(String, i32)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let (name, fields) = walredo_testkit::install::read_stat(&t.path().join("stat"))?;
            Some((name, fields.get(41 - 3)?.parse().ok()?))
        })
        .collect()
}

/// Workers are SCHED_BATCH (a worker woken by its process's first page
/// must not preempt it: BENCHMARKS.md), and nothing else is: not the
/// spawner or watchdog, not the host's threads.
#[test]
fn workers_are_batch_threads_and_nobody_else_is() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_config(2, &[], Duration::from_secs(5))).unwrap();
    let tag = fake_tag(NORMAL, 1);
    redo(&pool, &tag, 1).unwrap();
    // Each worker sets its policy when it first runs: on a loaded machine
    // the idle one may not have run yet.
    wait_until(
        "both workers are SCHED_BATCH",
        Duration::from_secs(5),
        || {
            thread_policies()
                .iter()
                .filter(|(n, p)| n.starts_with("walredo-worker") && *p == libc::SCHED_BATCH)
                .count()
                == 2
        },
    );
    let threads = thread_policies();
    println!("threads and policies: {threads:?}");
    let workers: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("walredo-worker"))
        .collect();
    assert_eq!(workers.len(), 2, "{threads:?}");
    for (name, policy) in &threads {
        let want = if name.starts_with("walredo-worker") {
            libc::SCHED_BATCH
        } else {
            libc::SCHED_OTHER
        };
        assert_eq!(*policy, want, "thread {name}: {threads:?}");
    }
}
