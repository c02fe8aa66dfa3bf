//! `bench --tenants`: the rows of issue 28, measured in one run, in turns.
//!
//! - Fairness: a quiet tenant sends the short redo one request at a time,
//!   alone and while a flooding tenant's 64 threads send it in a loop; its
//!   median latency and its median wait for a process (the pool's
//!   per-tenant counter, per request) in both, and their ratio.
//! - A new tenant's first request on a full pool (4 processes, 100 tenants
//!   in turn, each one request): it retires the least recently used
//!   tenant's process and gets a fresh one; beside the exec floor
//!   (posix_spawn and wait of `postgres --version`), and a request of a
//!   tenant whose process is there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use walredo::{Config, Pool};

use crate::{exec_floor, median, us, Request};

/// The quiet tenant's requests, one at a time: each one's latency and its
/// wait for a process.
fn quiet_requests(pool: &Pool, short: &Request, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let refs = short.refs();
    let (mut latency, mut wait) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let waited_before = pool.tenant_stats(b"quiet").unwrap().wait_us;
        let t = Instant::now();
        pool.redo_keyed(b"quiet", &short.tag, short.base.as_deref(), &refs)
            .unwrap();
        latency.push(t.elapsed());
        let waited = pool.tenant_stats(b"quiet").unwrap().wait_us - waited_before;
        wait.push(Duration::from_micros(waited));
    }
    (latency, wait)
}

/// `quiet_requests` while 64 threads of the tenant "flood" send `short` in
/// a loop; also how many the flood got answered per second.
fn quiet_under_flood(
    pool: &Pool,
    short: &Request,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, f64) {
    let stop = AtomicBool::new(false);
    let flooded = std::sync::atomic::AtomicU64::new(0);
    let barrier = Barrier::new(65);
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| {
                let refs = short.refs();
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    pool.redo_keyed(b"flood", &short.tag, short.base.as_deref(), &refs)
                        .unwrap();
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        barrier.wait();
        // The flood under way first.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let before = flooded.load(Ordering::Relaxed);
        let (latency, wait) = quiet_requests(pool, short, n);
        let rate = (flooded.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        (latency, wait, rate)
    })
}

pub fn tenant_rows(
    config: &dyn Fn(usize) -> Config,
    short: &Request,
    quick: bool,
    row: &dyn Fn(&str, String, String),
) {
    let n = if quick { 300 } else { 2000 };
    let rounds = if quick { 2 } else { 3 };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Fairness, in turns: alone, flooded.
    let pool = Pool::new(&config(cpus)).unwrap();
    pool.ping().unwrap();
    let (mut alone_l, mut alone_w, mut flood_l, mut flood_w, mut rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (l, w) = quiet_requests(&pool, short, n);
        alone_l.extend(l);
        alone_w.extend(w);
        let (l, w, rate) = quiet_under_flood(&pool, short, n);
        flood_l.extend(l);
        flood_w.extend(w);
        rates.push(rate);
    }
    let (alone_l, flood_l) = (median(alone_l), median(flood_l));
    let (alone_w, flood_w) = (median(alone_w), median(flood_w));
    rates.sort_by(f64::total_cmp);
    row(
        &format!("one tenant's short redo, one at a time, alone ({cpus} processes)"),
        format!("{:.1} us", us(alone_l)),
        format!("waiting for a process: {:.1} us", us(alone_w)),
    );
    row(
        "the same while another tenant floods (64 threads in a loop)",
        format!("{:.1} us", us(flood_l)),
        format!(
            "{:.2}x alone (target at most 2x); waiting for a process: {:.1} us; \
             the flood got {:.0} req/s",
            us(flood_l) / us(alone_l),
            us(flood_w),
            rates[rates.len() / 2]
        ),
    );
    drop(pool);

    // A new tenant on a full pool, in turns with the exec floor and a
    // request of a tenant whose process is there.
    let pool = Pool::new(&Config {
        processes: 4,
        ..config(4)
    })
    .unwrap();
    let refs = short.refs();
    let postgres = walredo_testkit::cluster::bindir().join("postgres");
    let (mut floor, mut fresh, mut known) = (Vec::new(), Vec::new(), Vec::new());
    let tenants = if quick { 40 } else { 100 };
    for j in 0..tenants {
        floor.push(exec_floor(&postgres));
        let key = format!("tenant-{j}");
        let t = Instant::now();
        pool.redo_keyed(key.as_bytes(), &short.tag, short.base.as_deref(), &refs)
            .unwrap();
        fresh.push(t.elapsed());
        let t = Instant::now();
        pool.redo_keyed(key.as_bytes(), &short.tag, short.base.as_deref(), &refs)
            .unwrap();
        known.push(t.elapsed());
    }
    let stats = pool.stats();
    assert_eq!(stats.failures, 0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (floor, fresh, known) = (median(floor), median(fresh), median(known));
    row(
        "exec floor: posix_spawn + wait of postgres --version",
        format!("{:.2} ms", ms(floor)),
        "floor".into(),
    );
    row(
        &format!("a new tenant's first request, 4 processes, {tenants} tenants in turn"),
        format!("{:.2} ms", ms(fresh)),
        format!(
            "{:.2}x the exec floor; retires the least recently used tenant's process \
             ({} retired, {} started, 0 failed of {} requests)",
            ms(fresh) / ms(floor),
            stats.retirements,
            stats.spawns,
            stats.requests
        ),
    );
    row(
        "the same tenant's next request",
        format!("{:.1} us", us(known)),
        String::new(),
    );
}
