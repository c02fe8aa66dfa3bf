//! Who owns what a template leaves: a template killed while its pool is
//! idle is reaped at once (no zombie of the host until the next request),
//! and its processes do not die with it; and descriptors that another
//! thread's fork (no exec) copies from the host hide neither a start nor a
//! dead process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use walredo::{Config, Pool, SpawnMode};
use walredo_testkit::harness::*;
use walredo_testkit::install::{children_of, is_alive, is_template, state_of};

/// Our live template processes.
fn templates() -> Vec<u32> {
    children_of(std::process::id())
        .into_iter()
        .filter(|&(pid, state)| state != 'Z' && is_template(pid))
        .map(|(pid, _)| pid)
        .collect()
}

/// Wait up to `within` until `done` holds; whether it did.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn a_template_killed_while_the_pool_is_idle_is_reaped_and_its_processes_live_on() {
    let _test = isolated_test();
    let pool = one_process_pool(false);
    pool.ping().unwrap();
    let template = match templates()[..] {
        [t] => t,
        ref ts => panic!("one template expected, found {ts:?}"),
    };
    let serving = pool.pids();
    assert_eq!(serving.len(), 1, "{serving:?}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(template as i32, libc::SIGKILL) };
    // Nobody calls the pool meanwhile: the library alone must reap it.
    assert!(
        wait_until(Duration::from_secs(10), || state_of(template).is_none()),
        "the killed template is still a process of ours (state {:?}) while the pool is idle",
        state_of(template)
    );
    // What pids() lists is alive: here the process the template had forked,
    // which does not depend on its template once started.
    for pid in pool.pids() {
        assert!(
            is_alive(pid),
            "pids() lists {pid}, which is dead (state {:?})",
            state_of(pid)
        );
    }
    assert_eq!(pool.pids(), serving, "the idle process was lost");
    pool.ping().unwrap();
}

/// A thread that forks the host without exec every `every`, each copy
/// sleeping `life` before it exits (as helpers of other code in a host do),
/// until `stop`; it reaps its own copies.
fn forking_thread(stop: &AtomicBool, every: Duration, life: Duration) -> usize {
    let mut copies: Vec<libc::pid_t> = Vec::new();
    let mut made = 0;
    let sleep = libc::timespec {
        tv_sec: life.as_secs() as libc::time_t,
        tv_nsec: life.subsec_nanos() as libc::c_long,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the copy only sleeps and exits (async-signal-safe calls).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::nanosleep(&sleep, std::ptr::null_mut());
                libc::_exit(0);
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        made += 1;
        copies.push(pid);
        copies.retain(|&p| {
            // SAFETY: reaping our own copy, without blocking.
            unsafe { libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG) == 0 }
        });
        std::thread::sleep(every);
    }
    for p in copies {
        // SAFETY: reaping our own copy.
        unsafe { libc::waitpid(p, std::ptr::null_mut(), 0) };
    }
    made
}

#[test]
fn forks_of_the_host_hide_neither_a_start_nor_a_death() {
    forks_of_the_host_hide_nothing(SpawnMode::Template);
}

#[test]
fn forks_of_the_host_hide_neither_a_direct_start_nor_a_death() {
    forks_of_the_host_hide_nothing(SpawnMode::Direct);
}

fn forks_of_the_host_hide_nothing(spawn_mode: SpawnMode) {
    let _test = isolated_test();
    // One attempt's deadline; the host's copies live longer, so a start or
    // death that is only seen once they exit costs a whole deadline.
    let timeout = Duration::from_secs(4);
    let life = Duration::from_secs(6);
    let pool = Pool::new(&Config {
        processes: 1,
        spare_process: false,
        timeout,
        spawn_mode,
        ..config()
    })
    .unwrap();
    pool.ping().unwrap();
    let stop = AtomicBool::new(false);
    let rounds = 30;
    let mut failures = Vec::new();
    let made = std::thread::scope(|s| {
        let forker = s.spawn(|| forking_thread(&stop, Duration::from_millis(15), life));
        for round in 0..rounds {
            // Every other round the template goes too: the next start is a
            // template's start (clone and exec) as well as a fork from it.
            let mut victims = pool.pids();
            if round % 2 == 0 {
                victims.extend(templates());
            }
            for pid in &victims {
                // SAFETY: signalling processes of ours.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            let started = Instant::now();
            let result = pool.ping();
            let took = started.elapsed();
            if result.is_err() || took >= timeout {
                failures.push(format!("round {round}: {result:?} after {took:?}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        forker.join().unwrap()
    });
    assert!(made > 0);
    assert!(
        failures.is_empty(),
        "{spawn_mode:?}: {} of {rounds} pings after a kill failed or took a whole deadline \
         ({timeout:?}) while the host forked {made} copies:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
