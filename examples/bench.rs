//! `make bench`: medians and ratios measured in one run on this machine,
//! printed as a Markdown table (BENCHMARKS.md holds one). Not a test: it
//! asserts nothing about speed.
//!
//!   cargo run --release --example bench [-- --quick]
//!   cargo run --release --example bench -- --profile-child   (`make profile`)
//!   cargo run --release --example bench -- --busy-chaos [--quick]   (one row)
//!   cargo run --release --example bench -- --callers [--quick]   (only the many-callers rows)
//!   cargo run --release --example bench -- --bulk [--quick] [--workload demo|pgbench|regress]   (recovery against verify of a WAL range)
//!   cargo run --release --example bench -- --short [--quick]   (only the floor, ping and short rows)
//!   cargo run --release --example bench -- --inspect [--quick]   (walredo_inspect's functions against recovery)
//!   cargo run --release --example bench -- --tenants [--quick]   (fairness between tenants, a new tenant's cost)
//!
//! `--profile-child` runs one wal-redo process under callgrind instead: the
//! same short request N and 2N times, fed from a file, so the difference is
//! the cost of N requests inside pg_walredo with start-up cancelled out.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[path = "bench/bulk.rs"]
mod bulk;
#[path = "bench/inspect.rs"]
mod inspect;
#[path = "bench/tenants.rs"]
mod tenants;

use walredo::process::futex;
use walredo::process::launch::Launcher;
use walredo::wal::record;
use walredo::wal::uses::{block_uses, Use};
use walredo::wal::WalRecord;
use walredo::{Config, PageTag, Pool, RecordRef, PAGE_SIZE};
use walredo_cli::verify::{verify, VerifyOptions};
use walredo_testkit::cluster::record_workload;
use walredo_testkit::fixtures::{Fixture as Request, EXPECT_OK};
use walredo_testkit::install::{parent_of, runs_postgres, wal_redo_processes_of};

const WORKLOAD: &str = r#"
CREATE TABLE narrow (a int, b int);
INSERT INTO narrow SELECT g, g FROM generate_series(1, 20000) g;
CREATE TABLE wide (id int PRIMARY KEY, v text);
INSERT INTO wide SELECT g, repeat('x', 200) FROM generate_series(1, 3000) g;
UPDATE wide SET v = repeat('y', 200) WHERE id % 3 = 0;
CREATE INDEX narrow_brin ON narrow USING brin (a);
INSERT INTO narrow SELECT g, g FROM generate_series(20001, 20050) g;
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of each cell's rates (taken an odd number of times).
fn median_rates(rates: Vec<Vec<f64>>) -> Vec<f64> {
    rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Time `f` `n` times (after a warm-up) and return the median.
fn time_each(n: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 + 1 {
        f();
    }
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// One measurement of `time_in_turns`: the caller pinned to `cpu` (or free)
/// while it runs.
type Turn<'a> = (Option<usize>, Box<dyn FnMut() + 'a>);

/// Medians of several measurements taken in turns, a block of each at a
/// time, so that a noisy machine's drift touches them all alike; and for
/// each, the share of its timed calls after which the caller was on
/// another CPU than before it (an unpinned caller's process follows it: a
/// caller that keeps moving pays a cross-CPU round trip each time).
fn time_in_turns(n: usize, turns: &mut [Turn<'_>]) -> (Vec<Duration>, Vec<f64>) {
    const BLOCK: usize = 200;
    let mut samples = vec![Vec::with_capacity(n); turns.len()];
    let mut moves = vec![0usize; turns.len()];
    for round in 0..=n.div_ceil(BLOCK) {
        for (((cpu, f), samples), moves) in turns.iter_mut().zip(&mut samples).zip(&mut moves) {
            match cpu {
                Some(cpu) => pin_to(*cpu, 0),
                None => unpin(0),
            }
            // SAFETY: sched_getcpu has no preconditions.
            let mut was = unsafe { libc::sched_getcpu() };
            for _ in 0..BLOCK {
                let t = Instant::now();
                f();
                // Round 0 warms up.
                if round > 0 {
                    samples.push(t.elapsed());
                    // SAFETY: as above.
                    let now = unsafe { libc::sched_getcpu() };
                    *moves += usize::from(now != was);
                    was = now;
                }
            }
        }
    }
    unpin(0);
    let moved = samples
        .iter()
        .zip(moves)
        .map(|(s, m)| m as f64 / s.len().max(1) as f64)
        .collect();
    (samples.into_iter().map(median).collect(), moved)
}

fn pin_to(cpu: usize, pid: libc::pid_t) {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn unpin(pid: libc::pid_t) {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The floor's other end: a child process, pinned to a CPU, that answers
/// each request of `request_len` bytes (5 for the floor) on one pipe with
/// an 8 KiB page on another.
struct PipePeer {
    child: libc::pid_t,
    request: libc::c_int,
    answer: libc::c_int,
    sent: Vec<u8>,
}

impl PipePeer {
    fn start(cpu: usize) -> PipePeer {
        PipePeer::start_with(cpu, 5)
    }

    fn start_with(cpu: usize, request_len: usize) -> PipePeer {
        let mut req = [0 as libc::c_int; 2];
        let mut resp = [0 as libc::c_int; 2];
        // SAFETY: valid arrays of two ints for pipe() to fill.
        unsafe {
            libc::pipe(req.as_mut_ptr());
            libc::pipe(resp.as_mut_ptr());
        }
        // SAFETY: the child only reads, writes and exits (async-signal-safe).
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: closing the parent's ends in the child, so that EOF comes.
            unsafe {
                libc::close(req[1]);
                libc::close(resp[0]);
            }
            pin_to(cpu, 0);
            let mut got = vec![0u8; request_len];
            let page = [7u8; PAGE_SIZE];
            loop {
                // SAFETY: valid buffers of their lengths.
                unsafe {
                    let mut n = 0;
                    while n < request_len {
                        let r = libc::read(req[0], got[n..].as_mut_ptr().cast(), request_len - n);
                        if r <= 0 {
                            libc::_exit(0);
                        }
                        n += r as usize;
                    }
                    libc::write(resp[1], page.as_ptr().cast(), PAGE_SIZE);
                }
            }
        }
        // SAFETY: closing the child's ends in the parent.
        unsafe {
            libc::close(req[0]);
            libc::close(resp[1]);
        }
        PipePeer {
            child,
            request: req[1],
            answer: resp[0],
            sent: vec![b'H'; request_len],
        }
    }

    fn round_trip(&self, page: &mut [u8; PAGE_SIZE]) {
        // SAFETY: valid buffers of their lengths.
        unsafe {
            libc::write(self.request, self.sent.as_ptr().cast(), self.sent.len());
            let mut got = 0;
            while got < PAGE_SIZE {
                let r = libc::read(
                    self.answer,
                    page[got..].as_mut_ptr().cast(),
                    PAGE_SIZE - got,
                );
                got += r.max(0) as usize;
            }
        }
    }
}

impl Drop for PipePeer {
    fn drop(&mut self) {
        // SAFETY: closing our ends ends the child; then reap it.
        unsafe {
            libc::close(self.request);
            libc::close(self.answer);
            libc::waitpid(self.child, std::ptr::null_mut(), 0);
        }
    }
}

/// The floor: a 5-byte request and an 8 KiB answer through pipes between two
/// processes, pinned to `parent_cpu` and `child_cpu`.
fn pipe_round_trip(parent_cpu: usize, child_cpu: usize, n: usize) -> Duration {
    let peer = PipePeer::start(child_cpu);
    pin_to(parent_cpu, 0);
    let mut page = [0u8; PAGE_SIZE];
    let m = time_each(n, || peer.round_trip(&mut page));
    unpin(0);
    m
}

/// The other transport: a 5-byte request and an 8 KiB answer through shared
/// memory between two processes pinned to `parent_cpu` and `child_cpu`, each
/// side waiting for the other's sequence number in a futex (`spin` false) or
/// by spinning on it (`spin` true, which keeps both CPUs busy).
fn shm_round_trip(parent_cpu: usize, child_cpu: usize, spin: bool, n: usize) -> Duration {
    use std::sync::atomic::AtomicU32;
    #[repr(C)]
    struct Area {
        request_seq: AtomicU32,
        answer_seq: AtomicU32,
        request: [u8; 64],
        page: [u8; PAGE_SIZE],
    }
    const STOP: u32 = u32::MAX;
    fn wait_while(word: &AtomicU32, value: u32, spin: bool) {
        while word.load(Ordering::Acquire) == value {
            if spin {
                std::hint::spin_loop();
            } else {
                futex::wait(word, value, None);
            }
        }
    }
    fn wake(word: &AtomicU32, spin: bool) {
        if !spin {
            futex::wake(word, 1);
        }
    }
    // SAFETY: a fresh shared anonymous mapping, zeroed by the kernel, which
    // is a valid Area (atomics and byte arrays), unmapped at the end.
    let area = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Area>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        &mut *(p as *mut Area)
    };
    // SAFETY: the child only touches the shared area and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        pin_to(child_cpu, 0);
        let page = [7u8; PAGE_SIZE];
        let mut seen = 0;
        loop {
            wait_while(&area.request_seq, seen, spin);
            seen = area.request_seq.load(Ordering::Acquire);
            if seen == STOP {
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(0) };
            }
            area.page.copy_from_slice(&page);
            area.answer_seq.store(seen, Ordering::Release);
            wake(&area.answer_seq, spin);
        }
    }
    pin_to(parent_cpu, 0);
    let mut page = [0u8; PAGE_SIZE];
    let mut seq = 0;
    let m = time_each(n, || {
        area.request[..5].copy_from_slice(b"Hxxxx");
        seq += 1;
        area.request_seq.store(seq, Ordering::Release);
        wake(&area.request_seq, spin);
        wait_while(&area.answer_seq, seq - 1, spin);
        page.copy_from_slice(&area.page);
    });
    area.request_seq.store(STOP, Ordering::Release);
    wake(&area.request_seq, spin);
    // SAFETY: reaping our child, then unmapping the area nobody uses now.
    unsafe {
        libc::waitpid(child, std::ptr::null_mut(), 0);
        libc::munmap((area as *mut Area).cast(), std::mem::size_of::<Area>());
    }
    unpin(0);
    m
}

/// Bytes a request takes on the wire.
fn request_bytes(r: &Request) -> usize {
    walredo::process::protocol::request_len(r.base.as_deref(), &r.refs())
}

/// Bytes of records in a request.
fn bytes(r: &Request) -> usize {
    r.records.iter().map(|r| r.1.len()).sum()
}

/// A request on top of the page as of a run's image: `n` records after it.
fn request_after_image(
    pool: &Pool,
    records: &[WalRecord],
    blocks: &std::collections::BTreeMap<PageTag, Vec<Use>>,
    n: usize,
) -> Request {
    request_after_image_of(pool, records, blocks, n, None)
}

/// The resource manager of a record (`XLogRecord.xl_rmid`).
fn rmid(data: &[u8]) -> u8 {
    data[17]
}

/// `request_after_image`, of a page whose records are all of resource
/// manager `rm`, when given.
fn request_after_image_of(
    pool: &Pool,
    records: &[WalRecord],
    blocks: &std::collections::BTreeMap<PageTag, Vec<Use>>,
    n: usize,
    rm: Option<u8>,
) -> Request {
    // The block with the most records after an image, if none has n.
    let candidates = || {
        blocks.iter().filter(|(t, u)| {
            t.forknum == 0
                && u[0].initializes
                && u[1..].iter().all(|x| !x.initializes)
                && rm.is_none_or(|rm| u.iter().all(|x| rmid(&records[x.record].data) == rm))
        })
    };
    let (tag, uses) = candidates()
        .find(|(_, u)| u.len() > n)
        .or_else(|| candidates().max_by_key(|(_, u)| u.len()))
        .expect("a block with records after an image");
    let n = n.min(uses.len() - 1);
    let first = &records[uses[0].record];
    let base = pool
        .redo(
            tag,
            None,
            &[RecordRef {
                end_lsn: first.end_lsn,
                data: &first.data,
            }],
        )
        .unwrap();
    Request {
        tag: *tag,
        base: Some(base),
        records: uses[1..=n]
            .iter()
            .map(|u| (records[u.record].end_lsn, records[u.record].data.clone()))
            .collect(),
        expect_status: EXPECT_OK,
        expected: None,
    }
}

fn child_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Run one wal-redo process (sandbox off: valgrind makes system calls of its
/// own) under callgrind on `n` copies of `req` read from a file; returns the
/// instructions counted and the profile's path.
fn callgrind_run(launcher: &Launcher, req: &Request, n: usize, out: &Path) -> (u64, PathBuf) {
    let scratch = launcher.make_scratch_dir().unwrap();
    let mut stream = Vec::new();
    let refs = req.refs();
    for _ in 0..n {
        walredo::process::protocol::write_request(
            &mut stream,
            &req.tag,
            req.base.as_deref(),
            &refs,
        );
    }
    let input = scratch.join("requests.bin");
    std::fs::write(&input, &stream).unwrap();
    let cmd = launcher.command(&scratch);
    let profile = scratch.join("callgrind.out");
    let mut vg = Command::new("valgrind");
    vg.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(&scratch)
        .env_clear()
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ids) = launcher.user() {
        vg.uid(ids.uid).gid(ids.gid);
    }
    let result = vg.output().unwrap();
    assert!(
        result.status.success(),
        "callgrind run failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(result.stdout.len(), n * PAGE_SIZE, "one page per request");
    let summary = String::from_utf8_lossy(&result.stderr)
        .lines()
        .find_map(|l| l.split("Collected : ").nth(1).map(|v| v.trim().to_string()))
        .expect("callgrind's total");
    let kept = out.join(format!("callgrind.out.{n}"));
    std::fs::copy(&profile, &kept).unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    (summary.parse().unwrap(), kept)
}

fn profile_child(config: &Config, short: &Request, work: &Path) {
    let launcher = Launcher::new(&Config {
        extra_settings: vec!["pg_walredo.sandbox=off".into()],
        ..config.clone()
    })
    .unwrap();
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/profile"));
    std::fs::create_dir_all(&out).unwrap();
    let _ = work;
    let n = 2000;
    let (one, _) = callgrind_run(&launcher, short, n, &out);
    let (two, profile) = callgrind_run(&launcher, short, 2 * n, &out);
    println!(
        "pg_walredo, short redo: {} instructions per request ({} for {n}, {} for {})",
        (two - one) / n as u64,
        one,
        two,
        2 * n
    );
    println!("profile of {} requests: {}", 2 * n, profile.display());
    let annotate = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg(&profile)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&annotate.stdout);
    for line in text.lines().take(60) {
        println!("{line}");
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2000 } else { 20000 };
    let extension = concat!(env!("CARGO_MANIFEST_DIR"), "/pg_walredo/pg_walredo.so");
    let config = |processes: usize| Config {
        extension_path: Some(extension.into()),
        processes,
        idle_timeout: None,
        ..Config::default()
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let row = |what: &str, value: String, note: String| {
        println!("| {what} | {value} | {note} |");
    };
    println!("| measurement | median | notes |\n|---|---|---|");
    if std::env::args().any(|a| a == "--bulk") {
        bulk::bulk_rows(quick, &row);
        return;
    }
    if std::env::args().any(|a| a == "--inspect") {
        inspect::inspect_rows(quick, &row);
        return;
    }
    if std::env::args().any(|a| a == "--process-life") {
        process_life_rows(&config, quick, &row);
        return;
    }

    // Floors (the same-CPU pipe floor is measured in turns with the pool,
    // below, since every ratio is taken against it).
    let other_cpu = if cpus > 1 { 1 } else { 0 };
    let cross = pipe_round_trip(0, other_cpu, n);
    row(
        "pipe round trip, 8 KiB answer, different CPUs",
        format!("{:.1} us", us(cross)),
        "floor".into(),
    );
    let shm_same = shm_round_trip(0, 0, false, n);
    let shm_spin = (cpus > 1).then(|| shm_round_trip(0, other_cpu, true, n));

    // Real WAL for the redo measurements.
    let work = std::env::temp_dir().join(format!("walredo-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    if let Some(ids) = walredo_testkit::cluster::user() {
        std::os::unix::fs::chown(&work, Some(ids.uid), Some(ids.gid)).unwrap();
    }
    let rec = record_workload(&work, &[], &["wal_keep_size = 1GB", "fsync = off"], &|c| {
        c.psql(WORKLOAD);
    });
    let records: Vec<WalRecord> = rec.records();
    let blocks = block_uses(records.iter().map(|r| &r.data[..])).unwrap();

    // Cold start: a new pool to its first page.
    let fpi = blocks
        .iter()
        .find(|(t, u)| {
            t.forknum == 0
                && record::decode(&records[u[0].record].data)
                    .ok()
                    .and_then(|d| d.block_for(t).and_then(|b| b.image))
                    .is_some_and(|i| i.apply())
        })
        .map(|(t, u)| (*t, records[u[0].record].clone()))
        .expect("a full-page image");
    let started = Instant::now();
    let pool = Pool::new(&config(1)).unwrap();
    pool.ping().unwrap();
    row(
        "cold start: new pool to first answer",
        format!("{:.1} ms", started.elapsed().as_secs_f64() * 1e3),
        "template already made".into(),
    );
    let short = request_after_image(&pool, &records, &blocks, 2);
    // The issue-25 kind: a BRIN index page and its next 2 records.
    let brin = request_after_image_of(&pool, &records, &blocks, 2, Some(17));
    let medium = request_after_image(&pool, &records, &blocks, 227);
    if std::env::args().any(|a| a == "--busy-chaos") {
        // Only the busy-machine chaos row.
        drop(pool);
        busy_machine_chaos(&config(2), &short, quick, &row);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    if std::env::args().any(|a| a == "--callers") {
        drop(pool);
        many_callers(&config, &short, quick, &row);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    if std::env::args().any(|a| a == "--tenants") {
        drop(pool);
        tenants::tenant_rows(&config, &short, quick, &row);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    if std::env::args().any(|a| a == "--profile-child") {
        drop(pool);
        profile_child(&config(1), &short, &work);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }

    // `--short`: only the floor and the rows measured in turns with it.
    let short_only = std::env::args().any(|a| a == "--short");

    // Without placement, on its own: where the scheduler leaves the two
    // ends depends on what ran before (in turns with pinned runs it often
    // finds them on one CPU), so it is measured apart.
    let (unplaced_ping, unplaced_short) = if short_only {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let unplaced = Pool::new(&Config {
            follow_caller_cpu: false,
            ..config(1)
        })
        .unwrap();
        unplaced.ping().unwrap();
        let unplaced_ping = time_each(n, || unplaced.ping().unwrap());
        let refs = short.refs();
        let unplaced_short = time_each(n, || {
            unplaced
                .redo(&short.tag, short.base.as_deref(), &refs)
                .unwrap();
        });
        (unplaced_ping, unplaced_short)
    };

    // The same-CPU floor, then the defaults against blocking_wait off and
    // against the caller pinned by hand, measured in turns.
    let polling = Pool::new(&Config {
        blocking_wait: false,
        ..config(1)
    })
    .unwrap();
    let variants = [
        (
            "the defaults (process follows the caller's CPU, blocking wait)",
            &pool,
            None,
        ),
        ("waiting in poll() (blocking_wait off)", &polling, None),
        ("the caller pinned to one CPU by hand", &pool, Some(0)),
    ];
    let short_refs = short.refs();
    let brin_refs = brin.refs();
    let peer = PipePeer::start(0);
    let mut floor_page = [0u8; PAGE_SIZE];
    // The floor with a request as long as the short redo's (its base page
    // and records): what carrying them costs by itself.
    let big_peer = PipePeer::start_with(0, request_bytes(&short));
    let mut big_page = [0u8; PAGE_SIZE];
    let mut turns: Vec<Turn> = vec![
        (Some(0), Box::new(|| peer.round_trip(&mut floor_page))),
        (Some(0), Box::new(|| big_peer.round_trip(&mut big_page))),
    ];
    for (_, p, cpu) in variants {
        p.ping().unwrap();
        turns.push((cpu, Box::new(move || p.ping().unwrap())));
    }
    for (_, p, cpu) in variants {
        let (short, refs) = (&short, &short_refs);
        turns.push((
            cpu,
            Box::new(move || {
                p.redo(&short.tag, short.base.as_deref(), refs).unwrap();
            }),
        ));
    }
    let (brin, brin_refs, pool_ref) = (&brin, &brin_refs, &pool);
    turns.push((
        None,
        Box::new(move || {
            pool_ref
                .redo(&brin.tag, brin.base.as_deref(), brin_refs)
                .unwrap();
        }),
    ));
    let (medians, moved) = time_in_turns(n, &mut turns);
    drop(turns);
    // The later child holds the earlier one's pipe ends (it was forked
    // after): it must go first, or the earlier never sees EOF.
    drop(big_peer);
    drop(peer);
    let same = medians[0];
    let big_floor = medians[1];
    let t_brin = medians[medians.len() - 1];
    let (pings, shorts) = medians[2..medians.len() - 1].split_at(variants.len());
    let (ping_moves, short_moves) = moved[2..moved.len() - 1].split_at(variants.len());
    // Where the caller is not pinned: how often it moved (see time_in_turns).
    let moves_note = |cpu: &Option<usize>, share: f64| match cpu {
        Some(_) => String::new(),
        None => format!(
            "; the caller moved CPU after {:.1}% of the calls",
            share * 100.0
        ),
    };
    row(
        "pipe round trip, 8 KiB answer, same CPU",
        format!("{:.1} us", us(same)),
        "floor: every \"x the floor\" below is against this".into(),
    );
    // A latency row with its ratio to the floor.
    let floor_row = |what: &str, t: Duration, note: &str| {
        row(
            what,
            format!("{:.1} us", us(t)),
            format!("{:.2}x the floor{note}", us(t) / us(same)),
        )
    };
    floor_row(
        &format!(
            "pipe round trip, {} B request (the short redo's bytes), 8 KiB answer, same CPU",
            request_bytes(&short)
        ),
        big_floor,
        "",
    );
    floor_row(
        "shared memory + futex round trip, 8 KiB answer, same CPU",
        shm_same,
        "",
    );
    if let Some(t) = shm_spin {
        row(
            "shared memory round trip, both sides spinning, different CPUs",
            format!("{:.2} us", us(t)),
            "keeps two CPUs busy".into(),
        );
    }
    for (((what, _, cpu), t), m) in variants.iter().zip(pings).zip(ping_moves) {
        floor_row(
            &format!("ping (H) through the pool, 1 client, {what}"),
            *t,
            &moves_note(cpu, *m),
        );
    }
    if !short_only {
        floor_row(
            "ping (H) through the pool, 1 client, no placement (follow_caller_cpu off)",
            unplaced_ping,
            " (measured apart)",
        );
    }
    for (((what, _, cpu), t), m) in variants.iter().zip(shorts).zip(short_moves) {
        floor_row(
            &format!(
                "short redo ({} records, {} B, base page), 1 client, {what}",
                short.records.len(),
                bytes(&short)
            ),
            *t,
            &moves_note(cpu, *m),
        );
    }
    floor_row(
        &format!(
            "short redo, BRIN page ({} records, {} B, base page), 1 client, the defaults",
            brin.records.len(),
            bytes(brin)
        ),
        t_brin,
        &moves_note(&None, moved[moved.len() - 1]),
    );
    if short_only {
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    floor_row(
        "short redo, 1 client, no placement (follow_caller_cpu off)",
        unplaced_short,
        " (measured apart)",
    );
    drop(polling);
    let t_short = shorts[0];
    let t_medium = time_each(n / 10, || {
        let refs = medium.refs();
        pool.redo(&medium.tag, medium.base.as_deref(), &refs)
            .unwrap();
    });
    floor_row(
        &format!(
            "medium redo, 1 client ({} records, {} B, base page)",
            medium.records.len(),
            bytes(&medium)
        ),
        t_medium,
        "",
    );
    let fpi_refs = [RecordRef {
        end_lsn: fpi.1.end_lsn,
        data: &fpi.1.data,
    }];
    let t_fpi = time_each(n, || {
        pool.redo(&fpi.0, None, &fpi_refs).unwrap();
    });
    row(
        "full-page image, 1 client (fast path, no process)",
        format!("{:.2} us", us(t_fpi)),
        format!("{:.0}x faster than the short redo", us(t_short) / us(t_fpi)),
    );

    if let Some(&pid) = pool.pids().first() {
        row(
            "RSS of one wal-redo process",
            format!("{} KiB", child_rss_kib(pid)),
            String::new(),
        );
    }
    drop(pool);

    // Throughput: clients x processes, short redo requests. Each cell is
    // the median of three slices taken in turns with the other cells of the
    // same pool, and compared with that pool's one-client rate.
    let secs = if quick { 0.3 } else { 1.0 };
    const CLIENTS: [usize; 6] = [1, 2, 4, 8, 16, 64];
    for processes in [1, 2, 4] {
        let pool = Pool::new(&config(processes)).unwrap();
        let measure = |clients: usize| throughput(&pool, &short, clients, secs / 3.0);
        let mut rates = vec![Vec::new(); CLIENTS.len()];
        for _ in 0..3 {
            for (i, clients) in CLIENTS.iter().enumerate() {
                rates[i].push(measure(*clients));
            }
        }
        let rates = median_rates(rates);
        for (clients, rate) in CLIENTS.iter().zip(&rates) {
            let n_eff = (*clients).min(processes).min(cpus) as f64;
            row(
                &format!("throughput, {clients} clients, {processes} processes"),
                format!("{:.0} req/s", rate),
                format!(
                    "{:.2}x one client on this pool (ideal up to {n_eff:.0}x)",
                    rate / rates[0]
                ),
            );
        }
        let rss: u64 = pool.pids().iter().map(|p| child_rss_kib(*p)).sum();
        row(
            &format!("RSS of the {processes}-process pool's processes"),
            format!("{rss} KiB"),
            String::new(),
        );
    }

    busy_machine_chaos(&config(2), &short, quick, &row);
    many_callers(&config, &short, quick, &row);

    // 64 concurrent first requests on a fresh pool.
    let pool = Pool::new(&config(4)).unwrap();
    let barrier = Barrier::new(64);
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| {
                let refs = short.refs();
                barrier.wait();
                pool.redo(&short.tag, short.base.as_deref(), &refs).unwrap();
            });
        }
    });
    row(
        "spawns for 64 concurrent first requests, 4 processes",
        format!("{}", pool.stats().spawns),
        String::new(),
    );
    drop(pool);

    // PostgreSQL's recovery against walredo verify on the same WAL.
    let opts = VerifyOptions {
        base: rec.base.clone(),
        wal: rec.wal_dir.clone(),
        archives: Vec::new(),
        restore_command: None,
        timeline: None,
        expected: rec.expected.clone(),
        expected_is: Default::default(),
        processes: cpus,
        end: Some(rec.target_lsn),
        config: config(cpus),
    };
    let report = verify(&opts, &|_, _| {}).unwrap();
    row(
        "PostgreSQL's archive recovery of the bench WAL",
        format!("{:.2} s", rec.recovery_time.as_secs_f64()),
        format!("{} records", records.len()),
    );
    row(
        &format!(
            "walredo rebuild of every page it touched ({} processes)",
            cpus
        ),
        format!("{:.2} s", report.elapsed.as_secs_f64()),
        format!(
            "{:.2}x PostgreSQL's time; {}",
            report.elapsed.as_secs_f64() / rec.recovery_time.as_secs_f64(),
            report.to_string().lines().last().unwrap_or("")
        ),
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_string();
    row(
        "peak RSS of the calling process",
        hwm.trim_start_matches("VmHWM:").trim().to_string(),
        String::new(),
    );
    // After the peak RSS row: it touches 2 GB.
    process_life_rows(&config, quick, &row);
    tenants::tenant_rows(&config, &short, quick, &row);
    inspect::inspect_rows(quick, &row);
    let _ = std::fs::remove_dir_all(&work);
}

/// Pids of our wal-redo processes that run PostgreSQL already (never a
/// template: killing one kills all its processes at once, not the chaos
/// this row measures).
fn wal_redo_children() -> Vec<i32> {
    wal_redo_processes_of(std::process::id())
        .into_iter()
        .filter(|&pid| runs_postgres(pid))
        .map(|pid| pid as i32)
        .collect()
}

/// Chaos on a busy machine (issue 15): two CPU-bound loops run beside 8
/// `clients` threads sending `short` back to back through `pool`
/// for `secs`: requests per second.
fn throughput(pool: &Pool, short: &Request, clients: usize, secs: f64) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let barrier = Barrier::new(clients + 1);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let refs = short.refs();
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    pool.redo(&short.tag, short.base.as_deref(), &refs).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        barrier.wait();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let rate = done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        rate
    })
}

/// The rows of issue 15's "many callers on few processes": 1 and 2 callers
/// on 1 process, 1 to 64 on 2, each the median of five slices taken in
/// turns, with the ratios the issue's targets are stated in.
fn many_callers(
    config: &dyn Fn(usize) -> Config,
    short: &Request,
    quick: bool,
    row: &dyn Fn(&str, String, String),
) {
    let secs = if quick { 0.2 } else { 0.5 };
    // `--cell P C`: only C clients on P processes, for 10 s (for `perf`).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--cell") {
        let (processes, clients) = (args[i + 1].parse().unwrap(), args[i + 2].parse().unwrap());
        let pool = Pool::new(&config(processes)).unwrap();
        pool.ping().unwrap();
        let rate = throughput(&pool, short, clients, 10.0);
        row(
            &format!("many callers: {clients} clients, {processes} processes, 10 s"),
            format!("{rate:.0} req/s"),
            String::new(),
        );
        return;
    }
    let cells: [(usize, usize); 6] = [(1, 1), (1, 2), (2, 1), (2, 2), (2, 8), (2, 64)];
    let pools = [
        Pool::new(&config(1)).unwrap(),
        Pool::new(&config(2)).unwrap(),
    ];
    for pool in &pools {
        pool.ping().unwrap();
    }
    let mut rates = vec![Vec::new(); cells.len()];
    for _ in 0..5 {
        for (i, &(processes, clients)) in cells.iter().enumerate() {
            rates[i].push(throughput(&pools[processes - 1], short, clients, secs));
        }
    }
    let rates = median_rates(rates);
    let best = |processes: usize| {
        cells
            .iter()
            .zip(&rates)
            .filter(|((p, _), _)| *p == processes)
            .map(|(_, r)| *r)
            .fold(0.0, f64::max)
    };
    for (&(processes, clients), rate) in cells.iter().zip(&rates) {
        let one = rates[cells.iter().position(|c| *c == (processes, 1)).unwrap()];
        row(
            &format!("many callers: {clients} clients, {processes} processes"),
            format!("{rate:.0} req/s"),
            format!(
                "{:.2}x one client, {:.2}x the best of this pool",
                rate / one,
                rate / best(processes)
            ),
        );
    }
}

/// clients of a 2-process pool while another thread SIGKILLs a random
/// wal-redo process every 30-130 ms, for a bounded time. Every request must
/// come back: the right page, or an error (counted by kind); a wrong page
/// or a lost request is reported as such.
fn busy_machine_chaos(
    config: &Config,
    short: &Request,
    quick: bool,
    row: &dyn Fn(&str, String, String),
) {
    use walredo::Error;
    let secs = if quick { 2.0 } else { 10.0 };
    let config = Config {
        timeout: Duration::from_secs(1),
        ..config.clone()
    };
    let pool = Pool::new(&config).unwrap();
    let refs = short.refs();
    let expected = pool.redo(&short.tag, short.base.as_deref(), &refs).unwrap();
    let stop = AtomicBool::new(false);
    let counts: [AtomicU64; 7] = Default::default();
    // Indexes into `counts`.
    const ASKED: usize = 0;
    const RIGHT: usize = 1;
    const WRONG: usize = 2;
    const SPAWN: usize = 3;
    const DEADLINE: usize = 4;
    const REDO: usize = 5;
    const OTHER: usize = 6;
    let kills = AtomicU64::new(0);
    // Every request's wait, from each client (microseconds).
    let waits = parking_lot::Mutex::new(Vec::<u64>::new());
    let before = pool.stats();
    std::thread::scope(|s| {
        // Bounded CPU-bound loops: they end with the run.
        for _ in 0..2 {
            s.spawn(|| {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                }
            });
        }
        for _ in 0..8 {
            s.spawn(|| {
                let refs = short.refs();
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    counts[ASKED].fetch_add(1, Ordering::Relaxed);
                    let asked = Instant::now();
                    let outcome = pool.redo(&short.tag, short.base.as_deref(), &refs);
                    mine.push(asked.elapsed().as_micros() as u64);
                    let kind = match outcome {
                        Ok(page) if page == expected => RIGHT,
                        Ok(_) => WRONG,
                        Err(Error::SpawnFailed(_)) => SPAWN,
                        Err(Error::Timeout { .. }) => DEADLINE,
                        Err(Error::RedoFailed { .. }) => REDO,
                        Err(_) => OTHER,
                    };
                    counts[kind].fetch_add(1, Ordering::Relaxed);
                }
                waits.lock().extend(mine);
            });
        }
        s.spawn(|| {
            let mut seed = 12345u64;
            while !stop.load(Ordering::Relaxed) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis(30 + (seed >> 33) % 100));
                let pids = wal_redo_children();
                if pids.is_empty() || stop.load(Ordering::Relaxed) {
                    continue;
                }
                let victim = pids[(seed >> 40) as usize % pids.len()];
                // SAFETY: kill has no memory-safety preconditions; the pid is
                // a child of ours that is not reaped.
                if unsafe { libc::kill(victim, libc::SIGKILL) } == 0 {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let after = pool.stats();
    drop(pool);
    let get = |i: usize| counts[i].load(Ordering::Relaxed);
    let answered: u64 = (1..7).map(get).sum();
    let failed = get(SPAWN) + get(DEADLINE) + get(REDO) + get(OTHER);
    let mut waits = waits.into_inner();
    waits.sort_unstable();
    let at = |q: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    row(
        &format!(
            "busy-machine chaos: 8 clients, 2 processes, 2 CPU-bound loops beside, kill -9 every 30-130 ms for {secs:.0} s"
        ),
        format!("{failed} of {} failed", get(ASKED)),
        format!(
            "{:.2}%; {} kills, {} killed starts restarted; spawn failed {}, deadline {}, failed twice {}, other {}; {} wrong, {} lost; wait p50 {} us, p99 {} us, p99.9 {} us",
            100.0 * failed as f64 / get(ASKED).max(1) as f64,
            kills.load(Ordering::Relaxed),
            after.killed_starts - before.killed_starts,
            get(SPAWN),
            get(DEADLINE),
            get(REDO),
            get(OTHER),
            get(WRONG),
            get(ASKED) - answered,
            at(0.5),
            at(0.99),
            at(0.999),
        ),
    );
}

/// `smaps_rollup`'s `Rss` and `Pss` of `pid`, in KiB.
fn rss_pss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// The parent of `pid` (the template, for a forked process).
/// Kill the pool's one process and wait until it is gone; then the time
/// until a request is answered again (a request that finds the process
/// dead fails its attempt and is retried on a new one, or fails: then the
/// next one is timed too).
fn respawn_after_kill(pool: &Pool) -> Duration {
    pool.ping().unwrap();
    let pid = pool.pids()[0];
    // SAFETY: pidfd_open and poll have no memory-safety preconditions; the
    // pid is the pool's live process.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as libc::c_int;
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        if fd >= 0 {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut pfd, 1, 5000);
            libc::close(fd);
        }
    }
    let started = Instant::now();
    while pool.ping().is_err() {}
    started.elapsed()
}

/// The exec floor: posix_spawn and wait of `postgres --version`, the
/// least a process started afresh costs.
fn exec_floor(postgres: &Path) -> Duration {
    let t = Instant::now();
    let ok = Command::new(postgres)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    t.elapsed()
}

/// Rows of issue 15: a request's wait after its process was killed, in
/// both spawn modes, against the exec floor (posix_spawn and wait of
/// `postgres --version`), in a small host and with 2 GB touched in it;
/// cold start of a pool in both modes; the template's memory.
fn process_life_rows(
    config: &dyn Fn(usize) -> Config,
    quick: bool,
    row: &dyn Fn(&str, String, String),
) {
    use walredo::SpawnMode;
    let rounds = if quick { 15 } else { 40 };
    // The rows without a spare (`spare_process` off) are kept for
    // comparison with "template + spare", the default configuration.
    let mode = |m: SpawnMode| Config {
        spawn_mode: m,
        spare_process: false,
        ..config(1)
    };
    let postgres = PathBuf::from("/usr/lib/postgresql/15/bin/postgres");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    // Cold start, in turns.
    let (mut cold_t, mut cold_d) = (Vec::new(), Vec::new());
    for _ in 0..rounds.min(10) {
        for (m, out) in [
            (SpawnMode::Template, &mut cold_t),
            (SpawnMode::Direct, &mut cold_d),
        ] {
            let t = Instant::now();
            let pool = Pool::new(&mode(m)).unwrap();
            pool.ping().unwrap();
            out.push(t.elapsed());
        }
    }
    let (cold_t, cold_d) = (median(cold_t), median(cold_d));

    // The default spawn settings: template, spare on.
    let spare = Pool::new(&config(1)).unwrap();
    let template = Pool::new(&mode(SpawnMode::Template)).unwrap();
    let direct = Pool::new(&mode(SpawnMode::Direct)).unwrap();
    let measure = |label: &str| {
        let (mut floor, mut s, mut t, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            floor.push(exec_floor(&postgres));
            s.push(respawn_after_kill(&spare));
            t.push(respawn_after_kill(&template));
            d.push(respawn_after_kill(&direct));
        }
        let (floor, s, t, d) = (median(floor), median(s), median(t), median(d));
        row(
            &format!("exec floor: posix_spawn + wait of postgres --version, {label}"),
            format!("{:.2} ms", ms(floor)),
            "floor".into(),
        );
        row(
            &format!("request after its process was killed, template + spare, {label}"),
            format!("{:.2} ms", ms(s)),
            format!(
                "{:.2}x the exec floor (target at most 0.25x); default spawn settings (template, spare_process=on)",
                ms(s) / ms(floor)
            ),
        );
        row(
            &format!("request after its process was killed, template, no spare, {label}"),
            format!("{:.2} ms", ms(t)),
            format!("{:.2}x the exec floor", ms(t) / ms(floor)),
        );
        row(
            &format!("request after its process was killed, direct, no spare, {label}"),
            format!("{:.2} ms", ms(d)),
            format!("{:.2}x the exec floor", ms(d) / ms(floor)),
        );
    };
    measure("small host");
    {
        // 2 GB touched in the host: fork copies its page tables, CLONE_VM
        // and the template do not.
        let mut ballast = vec![0u8; 2 << 30];
        for i in (0..ballast.len()).step_by(4096) {
            ballast[i] = 1;
        }
        measure("2 GB touched in the host");
        std::hint::black_box(&ballast);
    }
    row(
        "cold start: new pool to first answer, template spawn",
        format!("{:.1} ms", ms(cold_t)),
        format!(
            "template started, then its first fork; {:.2}x the direct one",
            ms(cold_t) / ms(cold_d)
        ),
    );
    row(
        "cold start: new pool to first answer, direct spawn",
        format!("{:.1} ms", ms(cold_d)),
        String::new(),
    );

    // Memory: the template, and a forked process against a direct one.
    template.ping().unwrap();
    direct.ping().unwrap();
    let child = template.pids()[0];
    if let Some(tpid) = parent_of(child) {
        let (rss, pss) = rss_pss_kib(tpid);
        row(
            "template process memory (one per pool)",
            format!("RSS {rss} KiB, PSS {pss} KiB"),
            "smaps_rollup".into(),
        );
    }
    // The spare: the wal-redo process of the spare pool's template that is
    // not its slot's.
    spare.ping().unwrap();
    let slot = spare.pids()[0];
    if let Some(tpid) = parent_of(slot) {
        let started = Instant::now();
        let spare_pid = loop {
            let found = wal_redo_children()
                .into_iter()
                .map(|p| p as u32)
                .find(|&p| p != slot && parent_of(p) == Some(tpid));
            if found.is_some() || started.elapsed() > Duration::from_secs(5) {
                break found;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(sp) = spare_pid {
            // Its start-up is done by now (as in the rounds above).
            std::thread::sleep(Duration::from_millis(50));
            let (rss, pss) = rss_pss_kib(sp);
            row(
                "spare process memory (one per pool, spare_process=on)",
                format!("RSS {rss} KiB, PSS {pss} KiB"),
                "an idle forked process that never served".into(),
            );
        }
    }
    let (crss, cpss) = rss_pss_kib(child);
    let (drss, dpss) = rss_pss_kib(direct.pids()[0]);
    row(
        "idle wal-redo process memory, forked vs direct",
        format!("RSS {crss} / {drss} KiB, PSS {cpss} / {dpss} KiB"),
        "forked shares the template's copy-on-write pages".into(),
    );
}
