//! Signal masks: every thread the library starts (workers, spawner,
//! watchdog) has every signal blocked, so a host's signal handlers (a
//! PostgreSQL backend's SIGINT for query cancel) run on the host's own
//! threads; the host thread's mask is left as it was; and children start
//! from a clean mask, although the thread that forks them blocks everything.

use std::time::Duration;

use walredo::{Config, PageTag, Pool, RecordRef};
use walredo_testkit::harness::*;

/// Signals a thread can block (`pthread_sigmask` with a full set): all of
/// 1..=64 but SIGKILL and SIGSTOP (never blockable) and 32 and 33, which
/// glibc keeps for itself (thread cancellation and set*id) and leaves out.
fn blockable() -> u64 {
    let mut mask = u64::MAX;
    for sig in [libc::SIGKILL, libc::SIGSTOP, 32, 33] {
        mask &= !(1u64 << (sig - 1));
    }
    mask
}

fn bit(sig: libc::c_int) -> u64 {
    1u64 << (sig - 1)
}

/// A hex mask line (`SigBlk:`, `SigIgn:` ...) of a /proc status file.
fn status_mask(status_path: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(status_path)
        .unwrap_or_else(|e| panic!("cannot read {status_path}: {e}"));
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status_path}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// (name, SigBlk) of every thread of this process.
fn threads() -> Vec<(String, u64)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let dir = t.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let blk = status_mask(dir.join("status").to_str()?, "SigBlk:");
            Some((name.trim().to_string(), blk))
        })
        .collect()
}

fn fake_pool_config(processes: usize) -> Config {
    fake_config(processes, &[], Duration::from_secs(5))
}

fn tag() -> PageTag {
    fake_tag(fake::NORMAL, 1)
}

fn redo_once(pool: &Pool) {
    let t = tag();
    let rec = synthetic_record(&t, true);
    let refs = [RecordRef {
        end_lsn: 0x1000,
        data: &rec,
    }];
    pool.redo(&t, None, &refs).unwrap();
}

/// The calling thread's blocked set, as the kernel sees it.
fn own_mask() -> u64 {
    status_mask("/proc/thread-self/status", "SigBlk:")
}

fn set_own_mask(mask: u64) {
    // SAFETY: a sigset_t built with sigemptyset/sigaddset, passed by pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..=64 {
            if mask & bit(sig) != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()),
            0
        );
    }
}

#[test]
fn library_threads_block_every_signal_and_the_host_thread_keeps_its_mask() {
    let _test = isolated_test();
    // A mask of the host's own, to see that it survives untouched.
    let host_mask = bit(libc::SIGUSR1) | bit(libc::SIGHUP);
    set_own_mask(host_mask);
    let pool = Pool::new(&fake_pool_config(2)).unwrap();
    // The first process starts the spawner's work and the watchdog.
    redo_once(&pool);
    let ours: Vec<(String, u64)> = threads()
        .into_iter()
        .filter(|(name, _)| name.starts_with("walredo-"))
        .collect();
    println!("library threads: {ours:x?}");
    for kind in ["walredo-worker", "walredo-spawner", "walredo-watchdo"] {
        assert!(
            ours.iter().any(|(n, _)| n.starts_with(kind)),
            "no {kind}* thread among {ours:?}"
        );
    }
    for (name, blk) in &ours {
        assert_eq!(
            blk & blockable(),
            blockable(),
            "thread {name} leaves signals unblocked: SigBlk {blk:016x}, \
             missing {:016x}",
            blockable() & !blk
        );
    }
    assert_eq!(own_mask(), host_mask, "the host thread's mask changed");
    drop(pool);
    set_own_mask(0);
}

/// The spawner forks from a thread that blocks everything; the fake child
/// (a Rust program that never touches its mask) shows what it inherited
/// through exec: nothing blocked.
#[test]
fn children_start_with_no_signal_blocked() {
    let _test = isolated_test();
    let pool = Pool::new(&fake_pool_config(1)).unwrap();
    redo_once(&pool);
    let pids = pool.pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let blk = status_mask(&format!("/proc/{}/status", pids[0]), "SigBlk:");
    assert_eq!(blk, 0, "the child starts with signals blocked: {blk:016x}");
}

/// A real wal-redo process: PostgreSQL's single-user start-up blocks what
/// it wants itself (InitStandaloneProcess: everything but the synchronous
/// signals), whatever it inherited. The synchronous ones stay deliverable;
/// SIGKILL, the only signal the library sends, always works.
#[test]
fn a_wal_redo_process_keeps_synchronous_signals_unblocked() {
    let _test = isolated_test();
    let config = Config {
        processes: 1,
        idle_timeout: None,
        ..config()
    };
    let pool = Pool::new(&config).unwrap();
    pool.ping().unwrap();
    let pids = pool.pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let status = format!("/proc/{}/status", pids[0]);
    let blk = status_mask(&status, "SigBlk:");
    println!(
        "pg_walredo {}: SigBlk {blk:016x}, SigIgn {:016x}",
        pids[0],
        status_mask(&status, "SigIgn:")
    );
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGABRT,
        libc::SIGSYS,
    ] {
        assert_eq!(blk & bit(sig), 0, "signal {sig} is blocked: {blk:016x}");
    }
}
