//! How the library starts its threads: with every signal blocked.
//!
//! A host's signal handlers must run on the host's threads: a PostgreSQL
//! backend's SIGINT handler (query cancel) touches backend state and sets
//! its latch, and the kernel delivers a process-directed signal to any
//! thread that does not block it. A thread inherits its creator's mask, so
//! the creator blocks everything around the spawn and restores its own mask
//! right after: the new thread never runs a single instruction with a signal
//! unblocked (blocking from inside the new thread would leave that window).
//! Children forked from these threads get a clean mask back before exec
//! (`harden_child`).

use std::io;
use std::thread::{Builder, JoinHandle};

/// Restores the creating thread's mask, also when unwinding.
struct RestoreMask(libc::sigset_t);

impl Drop for RestoreMask {
    fn drop(&mut self) {
        // SAFETY: a mask pthread_sigmask filled in, passed by pointer.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// `std::thread::Builder::spawn` with the new thread's signals all blocked
/// (glibc leaves out the two it keeps for itself; SIGKILL and SIGSTOP cannot
/// be blocked). The calling thread's mask is unchanged when this returns.
pub(crate) fn spawn_blocking_signals<F, T>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: sigset_t is plain old data, filled by sigfillset; the old mask
    // is written by pthread_sigmask before RestoreMask can read it.
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        RestoreMask(old)
    };
    Builder::new().name(name).spawn(f)
}

/// The CPU the calling thread runs on now, if the kernel says.
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// The CPUs the calling thread may run on, in ascending order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it
    // for its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        set
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE, the set's size.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Keep the thread or process `pid` (0: the calling thread) on `cpu`, a CPU
/// below `CPU_SETSIZE`.
pub(crate) fn set_affinity(pid: libc::pid_t, cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside
    // it (cpu is below CPU_SETSIZE); the set is passed by pointer with its
    // size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keep the calling thread on `cpu`; a failure (a CPU taken away since)
/// leaves it where the kernel puts it.
pub(crate) fn pin_current_thread(cpu: usize) {
    if let Err(e) = set_affinity(0, cpu) {
        log::debug!("cannot pin a worker to CPU {cpu}: {e}");
    }
}

/// Make the calling thread `SCHED_BATCH`: same share of the CPU, but its
/// wake-ups never preempt the thread running. A worker sleeps in `read`
/// while its process writes a batch's pages one `write` each; a normal
/// thread, woken by the first page, preempted the process at every page
/// (two context switches per request: 2.35 per request at 64 callers on
/// 2 processes, 1.25 as a batch thread, which reads the pages once the
/// process waits for more work). Unprivileged: it changes no priority.
pub(crate) fn make_current_thread_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (0) with a param
    // struct passed by pointer; SCHED_BATCH takes priority 0.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        log::debug!(
            "cannot make a worker SCHED_BATCH: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_thread_is_batch_and_the_others_are_not() {
        // SAFETY: sched_getscheduler of the calling thread has no
        // preconditions.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let batch = std::thread::spawn(move || {
            make_current_thread_batch();
            policy()
        });
        assert_eq!(batch.join().unwrap(), libc::SCHED_BATCH);
        assert_eq!(policy(), libc::SCHED_OTHER);
    }
}
