//! The spare process (`Config::spare_process`): the pool's
//! spawner keeps one fresh process started ahead, hands it over to the slot
//! that lost its process, checks it first (a dead or stopped spare is
//! replaced without a failed request), and keeps nothing alive once the pool is idle
//! for `idle_timeout` or gone. Real PostgreSQL processes throughout.

use std::sync::Arc;
use std::time::Duration;

use walredo::process::launch::Launcher;
use walredo::process::Spawner;
use walredo::{Config, Pool};
use walredo_testkit::harness::*;
use walredo_testkit::install::{
    has_answered, is_alive, serving_processes_of, state_of, wal_redo_processes_of,
};

/// The live wal-redo processes of this test, in pid order.
fn wal_redo_processes() -> Vec<u32> {
    let mut pids = wal_redo_processes_of(std::process::id());
    pids.sort_unstable();
    pids
}

/// `spawner_for` this tree's extension, with a spare process or without.
fn spawner_with_spare(spare_process: bool) -> (Arc<Launcher>, Spawner) {
    spawner_for(Config {
        spare_process,
        ..config()
    })
}

/// A process from `spawner` that has answered its handshake.
fn ready_from(spawner: &Spawner) -> walredo::process::Process {
    let mut process = spawner.spawn().unwrap();
    process.handshake(Duration::from_secs(10)).unwrap();
    process
}

/// A launcher for `config` and a spawner on it, as a pool makes them.
fn spawner_for(config: Config) -> (Arc<Launcher>, Spawner) {
    let launcher = Arc::new(Launcher::new(&config).unwrap());
    let spawner = Spawner::new(Arc::clone(&launcher)).unwrap();
    (launcher, spawner)
}

fn kill(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a live
    // process of this test (checked by the caller just before).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    wait_until("the killed process is gone", Duration::from_secs(5), || {
        !is_alive(pid)
    });
}

/// The spare of a one-process pool: the wal-redo process that is not the
/// slot's.
fn spare_of(pool: &Pool) -> u32 {
    let mut spare = Vec::new();
    wait_until("a spare is started", Duration::from_secs(10), || {
        let slot = pool.pids();
        spare = wal_redo_processes()
            .into_iter()
            .filter(|p| !slot.contains(p))
            .collect();
        spare.len() == 1
    });
    spare[0]
}

/// After the `which` spare was replaced: two starts in all (`spawns`), and
/// no failed start, killed start or failed request charged for it.
fn assert_replaced_uncharged(pool: &Pool, which: &str) {
    let stats = pool.stats();
    assert_eq!(stats.spawns, 2, "{stats:?}");
    assert_eq!(
        (stats.spawn_failures, stats.killed_starts, stats.failures),
        (0, 0, 0),
        "the {which} spare was charged: {stats:?}"
    );
}

#[test]
fn after_a_kill_the_replacement_is_the_spare() {
    let _test = isolated_test();
    let pool = one_process_pool(true);
    // A pool that never served starts nothing.
    assert!(wal_redo_processes().is_empty());
    pool.ping().unwrap();
    let first = pool.pids();
    assert_eq!(first.len(), 1);
    let spare = spare_of(&pool);
    assert!(is_alive(spare));
    // What tests that see a host's processes only from outside tell them
    // apart by (testkit `serving_processes_of`): the spare has answered
    // nothing yet.
    assert!(has_answered(first[0]) && !has_answered(spare));
    assert_eq!(serving_processes_of(std::process::id()), first);

    kill(first[0]);
    pool.ping().unwrap();
    assert_eq!(
        pool.pids(),
        vec![spare],
        "the replacement is not the spare that ran before the kill"
    );
    assert!(has_answered(spare));
    let stats = pool.stats();
    assert_eq!(stats.spawns, 2, "{stats:?}");
    assert_eq!(stats.spawn_failures, 0, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
    // And the next spare is another fresh process.
    let next = spare_of(&pool);
    assert!(next != spare && next != first[0]);
    drop(pool);
    assert!(!is_alive(next), "the spare outlived its pool");
}

#[test]
fn a_dead_spare_is_replaced_without_a_failed_request() {
    let _test = isolated_test();
    let pool = one_process_pool(true);
    pool.ping().unwrap();
    let first = pool.pids()[0];
    let spare = spare_of(&pool);
    kill(spare);
    kill(first);
    pool.ping().unwrap();
    let now = pool.pids();
    assert_eq!(now.len(), 1);
    assert!(now[0] != spare && now[0] != first, "{now:?}");
    assert_replaced_uncharged(&pool, "dead");
    // A new spare follows.
    let next = spare_of(&pool);
    assert!(next != now[0]);
}

/// A stopped spare (SIGSTOP) is alive to a liveness check, but would fail
/// its slot's handshake by the pool's deadline: at its hand-over it fails a
/// short ping instead, is killed and reaped, and a fresh process serves.
#[test]
fn a_stopped_spare_is_replaced_not_handed_over() {
    let _test = isolated_test();
    let pool = Pool::new(&Config {
        processes: 1,
        spare_process: true,
        // Without the check, the request fails by this deadline.
        timeout: Duration::from_secs(3),
        ..config()
    })
    .unwrap();
    pool.ping().unwrap();
    let first = pool.pids()[0];
    let spare = spare_of(&pool);
    // SAFETY: kill has no memory-safety preconditions; the pid is the
    // spare, alive (found just above) and not reaped: only the pool's
    // spawner hands it over or drops it, and it does neither meanwhile.
    unsafe { libc::kill(spare as libc::pid_t, libc::SIGSTOP) };
    wait_until("the spare is stopped", Duration::from_secs(5), || {
        state_of(spare) == Some('T')
    });
    kill(first);
    pool.ping()
        .expect("an answer from a fresh process, not the stopped spare");
    let now = pool.pids();
    assert_eq!(now.len(), 1);
    assert!(now[0] != spare && now[0] != first, "{now:?}");
    wait_until("the stopped spare is gone", Duration::from_secs(5), || {
        !is_alive(spare)
    });
    assert_replaced_uncharged(&pool, "stopped");
    // A new spare follows, and it serves when the next kill comes.
    let next = spare_of(&pool);
    kill(now[0]);
    pool.ping().unwrap();
    assert_eq!(pool.pids(), vec![next]);
}

/// `Pool::shutdown` drops the spare (and the template) while the pool
/// itself still exists: nothing of it is left although nobody has dropped
/// it yet (a C host may keep a shut-down pool for a long time).
#[test]
fn shutdown_drops_the_spare() {
    let _test = isolated_test();
    let pool = Pool::new(&Config {
        processes: 1,
        ..config()
    })
    .unwrap();
    pool.ping().unwrap();
    // On by default.
    let spare = spare_of(&pool);
    pool.shutdown();
    assert!(!is_alive(spare), "the spare outlived the pool's shutdown");
    assert_eq!(wal_redo_processes(), Vec::<u32>::new());
    assert_no_leftovers();
    drop(pool);
}

/// The scratch directory of `pid`, once it has gone into it: a forked
/// process starts in its template's and writes its own pid file there.
fn scratch_of(pid: u32) -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::new();
    wait_until(
        "the process runs in its own directory",
        Duration::from_secs(10),
        || {
            dir = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            std::fs::read_to_string(dir.join("postmaster.pid"))
                .is_ok_and(|f| f.lines().next() == Some(format!("-{pid}").as_str()))
        },
    );
    dir
}

fn wait_for_spare(spawner: &Spawner) -> u32 {
    wait_until("a spare is started", Duration::from_secs(10), || {
        spawner.spare_pid().is_some()
    });
    spawner.spare_pid().unwrap()
}

#[test]
fn the_spare_is_dropped_after_idle_timeout_and_with_the_spawner() {
    let _test = isolated_test();
    let idle = Duration::from_millis(300);
    let (_launcher, spawner) = spawner_for(Config {
        idle_timeout: Some(idle),
        spare_process: true,
        ..config()
    });
    assert_eq!(spawner.spare_pid(), None, "a spare before the first start");

    let _a = ready_from(&spawner);
    let spare = wait_for_spare(&spawner);
    assert!(is_alive(spare));
    let scratch = scratch_of(spare);
    // Idle: gone, with its directory, within a few idle_timeouts.
    wait_until("the idle spare is dropped", idle * 10, || {
        spawner.spare_pid().is_none() && !is_alive(spare)
    });
    wait_until("the idle spare's directory is removed", idle * 10, || {
        !scratch.exists()
    });
    // It stays gone until the next start, which starts a new one.
    std::thread::sleep(idle * 2);
    assert_eq!(spawner.spare_pid(), None);
    let _b = ready_from(&spawner);
    let second = wait_for_spare(&spawner);
    assert!(second != spare && is_alive(second));

    drop(spawner);
    assert!(!is_alive(second), "the spare outlived its spawner");
}

#[test]
fn the_spare_can_be_turned_off() {
    let _test = isolated_test();
    let (_launcher, spawner) = spawner_with_spare(false);
    let a = ready_from(&spawner);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(spawner.spare_pid(), None);
    assert_eq!(wal_redo_processes(), vec![a.pid()]);
}

/// `Spawner::close` (for a pool's shutdown): the spare is killed and reaped
/// before it returns, and none is started afterwards; starts still work.
#[test]
fn close_drops_the_spare_and_starts_no_more() {
    let _test = isolated_test();
    let (_launcher, spawner) = spawner_with_spare(true);
    let a = ready_from(&spawner);
    let spare = wait_for_spare(&spawner);
    spawner.close();
    assert_eq!(spawner.spare_pid(), None);
    assert!(!is_alive(spare), "the spare outlived close");
    let b = ready_from(&spawner);
    assert_ne!(b.pid(), spare);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(spawner.spare_pid(), None, "a spare after close");
    assert_eq!(wal_redo_processes(), {
        let mut v = vec![a.pid(), b.pid()];
        v.sort_unstable();
        v
    });
}
