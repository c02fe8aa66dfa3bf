//! Waiting on a 32-bit word that another process or the kernel changes:
//! `FUTEX_WAIT` and `FUTEX_WAKE` without `FUTEX_PRIVATE_FLAG`, so the word
//! may be in memory shared between processes, or the one the kernel zeroes
//! for `CLONE_CHILD_CLEARTID`. Public for the bench's shared-memory
//! transport (examples/bench.rs), which compares it with the pipes.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleep while `word` holds `value`, at most `timeout` (`None`: until
/// woken). Returns on a wake, a signal or the timeout, and at once when the
/// word no longer holds `value`: the caller checks the word again.
pub fn wait(word: &AtomicU32, value: u32, timeout: Option<Duration>) {
    let timeout = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timeout = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a futex wait on a live, aligned u32 (it returns at once if the
    // word no longer holds `value`), with a valid relative timeout or none.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            value,
            timeout,
        )
    };
}

/// Wake up to `waiters` of those sleeping in [`wait`] on `word`.
pub fn wake(word: &AtomicU32, waiters: i32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32; it reads nothing else.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, waiters) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn wait_ends_on_a_changed_word_a_wake_or_the_timeout() {
        let word = AtomicU32::new(0);
        // Not holding the value: at once, timeout or none.
        wait(&word, 1, None);
        let started = Instant::now();
        wait(&word, 0, Some(Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                word.store(1, Ordering::SeqCst);
                wake(&word, 1);
            });
            while word.load(Ordering::SeqCst) == 0 {
                wait(&word, 0, None);
            }
        });
    }
}
