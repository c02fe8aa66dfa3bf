//! Tenants (issue 28), on real pages: WAL a real server wrote for 50
//! tables, each the relation of a tenant of its own, rebuilt through one
//! pool by many threads at once and compared byte for byte with
//! PostgreSQL's archive recovery of the same WAL. While they run, the
//! pool's list of processes is read again and again: no process may ever
//! serve two keys. Then a pool of 4 processes is taken through 100 tenants
//! in turn: each new one retires the least recently used.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walredo::datadir::read_page;
use walredo::pool::TenantKey;
use walredo::wal::uses::{block_uses_as, last_run, record_refs, Use};
use walredo::wal::WalRecord;
use walredo::{Config, PageTag, Pool, PAGE_SIZE};
use walredo_testkit::cluster::{record_workload, WAL_KEEPING_SETTINGS};
use walredo_testkit::harness::*;

const TENANTS: usize = 50;

/// A tenant's page: where it starts and what PostgreSQL's recovery made of
/// it.
struct Case {
    tag: PageTag,
    base: Option<Box<[u8; PAGE_SIZE]>>,
    /// Its records in the WAL, in order.
    uses: Vec<Use>,
    expected: Box<[u8; PAGE_SIZE]>,
}

struct Tenants {
    records: Vec<WalRecord>,
    /// Tenant *i*'s pages: those of table t*i*.
    cases: Vec<Vec<Case>>,
}

/// 50 tables of a few pages each (inserts, updates, deletes, a vacuum: heap
/// and visibility-map pages), written by a real server; each table's pages
/// as rebuild requests from their last initializing record.
fn tenants_wal(tmp: &std::path::Path) -> Tenants {
    let mut workload = String::new();
    for t in 0..TENANTS {
        workload.push_str(&format!(
            "CREATE TABLE t{t} (a int, b int, c bigint);\n\
             INSERT INTO t{t} SELECT g, g * {t}, g FROM generate_series(1, 1500 + 20 * {t}) g;\n\
             UPDATE t{t} SET b = b + 1 WHERE a % 7 = {m};\n\
             DELETE FROM t{t} WHERE a % 11 = 0;\n\
             VACUUM t{t};\n\
             INSERT INTO t{t} VALUES ({t}, {t}, {t});\n",
            m = t % 7
        ));
    }
    // After a checkpoint, each table's first page changed again: its record
    // carries the page's image (full_page_writes), the request for it is
    // answered in-process.
    workload.push_str("CHECKPOINT;\n");
    for t in 0..TENANTS {
        workload.push_str(&format!("UPDATE t{t} SET c = c + 1 WHERE a = 1;\n"));
    }
    let rec = record_workload(tmp, &[], WAL_KEEPING_SETTINGS, &|c| {
        c.psql(&workload);
    });
    let records = rec.records();
    let blocks = block_uses_as(records.iter().map(|r| &r.data[..]), record_format()).unwrap();
    // The tables' relations, in the order they were created.
    let mut by_rel: BTreeMap<u32, Vec<Case>> = BTreeMap::new();
    for (tag, uses) in &blocks {
        if tag.rel.relnode < 16384 {
            continue;
        }
        let run = last_run(uses);
        if run[0].removal.is_some() {
            continue;
        }
        let base = if run[0].initializes {
            None
        } else {
            match read_page(&rec.base, tag).unwrap() {
                Some(p) => Some(p),
                None => continue,
            }
        };
        let Some(expected) = read_page(&rec.expected, tag).unwrap() else {
            continue;
        };
        by_rel.entry(tag.rel.relnode).or_default().push(Case {
            tag: *tag,
            base,
            uses: run.to_vec(),
            expected,
        });
    }
    let cases: Vec<Vec<Case>> = by_rel.into_values().collect();
    assert_eq!(cases.len(), TENANTS, "one relation per table");
    Tenants { records, cases }
}

fn key_of(tenant: usize) -> Vec<u8> {
    format!("tenant-{tenant}").into_bytes()
}

/// Rebuild `case` for `key`, the one way of three that `how` picks, and
/// say what is wrong with the page, if anything.
fn rebuild(pool: &Pool, wal: &Tenants, key: &[u8], case: &Case, how: u64) -> Result<(), String> {
    let recs = record_refs(&wal.records, &case.uses);
    let base = case.base.as_deref();
    let page = match how % 3 {
        0 => pool.redo_keyed(key, &case.tag, base, &recs),
        1 => {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.submit_keyed(
                key,
                &case.tag,
                base,
                &recs,
                Box::new(move |outcome| {
                    let _ = tx.send(outcome.map(|p| Box::new(*p)).map_err(Clone::clone));
                }),
            )
            .map_err(|e| e.to_string())?;
            rx.recv().map_err(|e| e.to_string())?
        }
        _ => {
            let mut call = pool
                .start_keyed(key, &case.tag, base, &recs)
                .map_err(|e| e.to_string())?;
            loop {
                if let Some(outcome) = call.try_finish() {
                    break outcome;
                }
                let mut fd = libc::pollfd {
                    fd: call.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, the call's live descriptor.
                unsafe { libc::poll(&mut fd, 1, 1000) };
            }
        }
    }
    .map_err(|e| format!("{}: {e}", case.tag))?;
    if *page != *case.expected {
        return Err(format!("{}: differs from PostgreSQL's recovery", case.tag));
    }
    Ok(())
}

/// Every pid the pool listed, and the keys it was listed with.
#[derive(Default)]
struct Sightings {
    keys_of_pid: HashMap<u32, Vec<TenantKey>>,
    most_at_once: usize,
    looks: u64,
}

impl Sightings {
    fn look(&mut self, pool: &Pool) {
        let processes = pool.processes();
        self.most_at_once = self.most_at_once.max(processes.len());
        self.looks += 1;
        for p in processes {
            let keys = self.keys_of_pid.entry(p.pid).or_default();
            if !keys.contains(&p.key) {
                keys.push(p.key);
            }
        }
    }

    /// Pids listed with more than one key.
    fn shared(&self) -> Vec<String> {
        self.keys_of_pid
            .iter()
            .filter(|(_, keys)| keys.len() > 1)
            .map(|(pid, keys)| format!("{pid}: {keys:?}"))
            .collect()
    }
}

#[test]
fn fifty_tenants_never_share_a_process_and_every_page_is_right() {
    let _serial = isolated_test();
    init_logging();
    let tmp = TempDir::new("tenants");
    let wal = Arc::new(tenants_wal(tmp.path()));
    let pages: usize = wal.cases.iter().map(Vec::len).sum();
    println!("{TENANTS} tenants, {pages} pages");

    // Every request goes to a process (no answer from an image in-process),
    // 4 processes for 50 tenants: processes are retired for others all
    // the time, the wall between tenants is tested at every start.
    let config = Config {
        processes: 4,
        fast_path: false,
        ..config()
    };
    let pool = Arc::new(Pool::new(&config).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let sightings = Arc::new(Mutex::new(Sightings::default()));
    let watcher = {
        let (pool, done, sightings) = (pool.clone(), done.clone(), sightings.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                sightings.lock().unwrap().look(&pool);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..TENANTS).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (pool, wal, sent) = (pool.clone(), wal.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut rng = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut wrong = Vec::new();
                for _ in 0..250 {
                    let tenant = (next() % TENANTS as u64) as usize;
                    let cases = &wal.cases[tenant];
                    let case = &cases[(next() % cases.len() as u64) as usize];
                    sent[tenant].fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = rebuild(&pool, &wal, &key_of(tenant), case, next()) {
                        wrong.push(e);
                    }
                }
                wrong
            })
        })
        .collect();
    let wrong: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let sightings = sightings.lock().unwrap();
    let stats = pool.stats();
    println!(
        "2,000 requests of {TENANTS} tenants in {:.2} s: {} processes started, {} seen, \
         at most {} at once, {} looks at the list",
        took.as_secs_f64(),
        stats.spawns,
        sightings.keys_of_pid.len(),
        sightings.most_at_once,
        sightings.looks
    );
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        sightings.shared().is_empty(),
        "processes that served two tenants: {:?}",
        sightings.shared()
    );
    assert!(sightings.most_at_once <= 4);
    // More processes than slots were seen: they were retired and started
    // for other tenants, each for one.
    assert!(
        sightings.keys_of_pid.len() > 4,
        "{}",
        sightings.keys_of_pid.len()
    );

    // Per tenant: what was sent was counted, and its processes.
    let mut spawns = 0;
    for (tenant, sent) in sent.iter().enumerate() {
        let counted = pool.tenant_stats(&key_of(tenant)).unwrap();
        assert_eq!(
            counted.requests,
            sent.load(Ordering::Relaxed),
            "tenant {tenant}"
        );
        assert_eq!(counted.failures, 0, "tenant {tenant}");
        if counted.requests > 0 {
            assert!(counted.spawns >= 1, "tenant {tenant}: {counted:?}");
        }
        spawns += counted.spawns;
    }
    assert_eq!(spawns, stats.spawns);
    assert_eq!(pool.tenant_stats(&[]).unwrap().requests, 0);
    let text = pool.prometheus_text();
    assert!(
        text.contains("walredo_tenant_requests_total{tenant=\"tenant-"),
        "{text}"
    );
    assert!(
        text.contains("walredo_tenant_requests_total{tenant=\"other\"}"),
        "{text}"
    );

    drop(pool);
    assert_no_leftovers();
}

#[test]
fn a_full_pool_retires_the_least_recently_used_tenants_process() {
    let _serial = isolated_test();
    init_logging();
    let tmp = TempDir::new("tenants-lru");
    let wal = tenants_wal(tmp.path());
    let config = Config {
        processes: 4,
        fast_path: false,
        ..config()
    };
    let pool = Pool::new(&config).unwrap();
    let keys_alive = |pool: &Pool| {
        let mut keys: Vec<Vec<u8>> = pool
            .processes()
            .iter()
            .map(|p| p.key.as_bytes().to_vec())
            .collect();
        keys.sort();
        keys
    };
    // 100 tenants in turn (tenant j on table j % 50), one request each:
    // after each, the processes alive are those of the last four.
    for j in 0..100 {
        let cases = &wal.cases[j % TENANTS];
        rebuild(&pool, &wal, &key_of(j), &cases[j % cases.len()], 0).unwrap();
        let mut last: Vec<Vec<u8>> = (j.saturating_sub(3)..=j).map(key_of).collect();
        last.sort();
        assert_eq!(keys_alive(&pool), last, "after tenant {j}");
    }
    // Least recently used, not first started: tenant 96 used again, a new
    // one retires tenant 97's process.
    let cases = &wal.cases[96 % TENANTS];
    rebuild(&pool, &wal, &key_of(96), &cases[0], 0).unwrap();
    rebuild(&pool, &wal, &key_of(100), &cases[0], 0).unwrap();
    let mut last: Vec<Vec<u8>> = [96, 98, 99, 100].map(key_of).to_vec();
    last.sort();
    assert_eq!(keys_alive(&pool), last);
    let stats = pool.stats();
    assert_eq!(stats.spawns, 101);
    assert_eq!(stats.retirements, 97);
    assert_eq!(stats.failures, 0);
    drop(pool);
    assert_no_leftovers();
}

/// With a fake child that sleeps 300 ms per request (`SLOW`): a tenant at
/// its limit of one process waits for it, up to its deadline, and never
/// takes the pool's other slot; another tenant meanwhile is served at once
/// there, not behind the first tenant's queue.
#[test]
fn a_tenant_waits_for_its_own_process_and_holds_nobody_up() {
    use walredo_testkit::harness::fake::SLOW;
    let _serial = isolated_test();
    init_logging();
    let config = Config {
        processes_per_tenant: 1,
        // No hang detection before the deadline: 300 ms is slow, not hung.
        attempt_timeout: Some(Duration::from_millis(500)),
        ..fake_config(2, &[], Duration::from_millis(500))
    };
    let pool = Arc::new(Pool::new(&config).unwrap());
    let slow = fake_tag(SLOW, 300);
    let redo = |pool: &Pool, key: &[u8], tag: &PageTag| {
        let recs = synthetic_records(tag, 1);
        let started = Instant::now();
        let refs = walredo_testkit::harness::record_refs(&recs);
        let outcome = pool.redo_keyed(key, tag, None, &refs);
        (outcome, started.elapsed())
    };
    let (a1, a2) = std::thread::scope(|s| {
        let a1 = s.spawn(|| redo(&pool, b"a", &slow));
        std::thread::sleep(Duration::from_millis(50));
        let a2 = s.spawn(|| redo(&pool, b"a", &slow));
        std::thread::sleep(Duration::from_millis(50));
        // Tenant b, while a's process works and a's second request waits.
        let (b, b_took) = redo(&pool, b"b", &fake_tag(1, 7));
        assert!(b.is_ok(), "{b:?}");
        assert!(b_took < Duration::from_millis(200), "b waited {b_took:?}");
        let keys: Vec<Vec<u8>> = pool
            .processes()
            .iter()
            .map(|p| p.key.as_bytes().to_vec())
            .collect();
        assert_eq!(keys.iter().filter(|k| *k == b"a").count(), 1, "{keys:?}");
        (a1.join().unwrap(), a2.join().unwrap())
    });
    assert!(a1.0.is_ok(), "{:?}", a1.0);
    // It waited for its own process (busy with the first for some 250 ms),
    // whose 300 ms then took it past its deadline: a timeout, though the
    // pool's other slot (b's, idle) was free all along, where it would
    // have been done by 400 ms.
    assert!(
        matches!(a2.0, Err(walredo::Error::Timeout { .. })),
        "{:?}",
        a2.0
    );
    assert!(a2.1 >= Duration::from_millis(450), "{:?}", a2.1);
    // Counted once a worker took the late request out of the queue.
    wait_until(
        "a's late request to be counted",
        Duration::from_secs(5),
        || pool.tenant_stats(b"a").unwrap().requests == 2,
    );
    let a = pool.tenant_stats(b"a").unwrap();
    assert_eq!((a.requests, a.failures, a.spawns), (2, 1, 1));
    assert!(a.wait_us >= 200_000, "{a:?}");
    drop(pool);
    assert_no_leftovers();
}

/// A request answered from a full-page image needs no process: submitted
/// for a new tenant on a full pool, it is answered without retiring the
/// idle process of another tenant's.
#[test]
fn an_image_answer_retires_nobody() {
    let _serial = isolated_test();
    init_logging();
    let tmp = TempDir::new("tenants-image");
    let wal = tenants_wal(tmp.path());
    let pool = Pool::new(&Config {
        processes: 1,
        ..config()
    })
    .unwrap();
    let last_has_image = |case: &Case| {
        let last = &wal.records[case.uses.last().unwrap().record];
        walredo::wal::record::decode(&last.data)
            .ok()
            .and_then(|d| d.block_for(&case.tag).and_then(|b| b.image))
            .is_some_and(|i| i.apply())
    };
    let cases = || wal.cases.iter().flatten();
    let with_process = cases().find(|c| !last_has_image(c)).unwrap();
    let from_image = cases()
        .find(|c| last_has_image(c))
        .expect("a page whose last record has its image");
    rebuild(&pool, &wal, b"a", with_process, 0).unwrap();
    let serving = pool.processes();
    assert_eq!(serving.len(), 1);
    for how in [1, 1, 1] {
        // Submitted: queued, answered by a worker.
        rebuild(&pool, &wal, b"b", from_image, how).unwrap();
    }
    assert_eq!(pool.processes(), serving, "a's process was retired");
    let stats = pool.stats();
    assert_eq!((stats.retirements, stats.spawns), (0, 1));
    assert_eq!(stats.fast_path_pages, 3);
    drop(pool);
    assert_no_leftovers();
}
