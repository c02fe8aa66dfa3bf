//! Talking to a child: a request is written (non-blocking) before any
//! wait. When all of it went, the answer is awaited in a blocking read of
//! stdout, whose deadline the watchdog thread (`crate::process::watchdog`)
//! keeps by killing a late process: a system call less than `poll` then
//! `read`. Otherwise (a batch larger than the pipe, `blocking_wait` off, no
//! pidfd, or a direct start) one `poll` loop writes and reads at once, so
//! pipelined requests cannot deadlock, and ends every wait at the deadline
//! itself. Another thread may end either wait through the process's
//! `Killer` (a cancelled request): a kill through the pidfd, and a wake-up
//! of the `poll` loop for where there is no pidfd.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::Process;
use crate::process::threads::current_cpu;
use crate::PAGE_SIZE;

/// After a blocking read, how many answers a silent process may give
/// before its stderr is read anyway (see `read_blocking`).
const STDERR_READ_EVERY: u32 = 16;

/// Whether the caller keeps being moved to another CPU while it waits for
/// the process pinned to its own (`Process::follow_cpu`), and so whether it
/// should hold its CPU through the wait.
///
/// A caller that sleeps in `read` is woken by the process's answer, and the
/// kernel places a woken thread on an idle CPU when the one it slept on is
/// busy: it is, the process is running there. On a quiet machine (another
/// CPU idle, and the caches' load low enough that the kernel looks for one)
/// that happens on every answer: the caller lands on the idle CPU, its
/// process follows it on the next request (`follow_cpu`), the answer moves
/// the caller back, and so on: every round trip a cross-CPU wake-up (on a
/// VM whose idle CPUs halt, several times the same-CPU round trip) and an
/// affinity change. A caller that does not sleep is not placed anywhere:
/// it yields the CPU to its process, just woken on it, and its `read`
/// finds the answer the process wrote before it stopped (if not, it sleeps
/// as before). Not always: a yield costs a system call, about 1 us a round
/// trip in `bench --short`, and on a busy CPU it lets others go first. So
/// only after 4 of the last 16 waits moved the caller (on a loaded machine
/// it moves after about 1% of them or fewer), for the next 1,024 round
/// trips; then it is tried without again.
#[derive(Debug, Default)]
pub(super) struct WaitMoves {
    /// The last waits, newest in bit 0: 1 when the caller came back on
    /// another CPU.
    history: u16,
    /// Round trips left in which to hold the CPU.
    hold: u16,
}

impl WaitMoves {
    /// Waits of the last 16 that moved the caller before it holds its CPU.
    const MOVES: u32 = 4;
    /// Round trips it holds its CPU for, once it does.
    const HOLD: u16 = 1024;

    pub(super) fn holding(&self) -> bool {
        self.hold > 0
    }

    pub(super) fn record(&mut self, moved: bool) {
        self.history = self.history << 1 | u16::from(moved);
        if self.hold > 0 {
            self.hold -= 1;
        } else if self.history.count_ones() >= Self::MOVES {
            log::debug!(
                "the caller moved off its process's CPU in {} of its last 16 waits: it holds \
                 its CPU through the next {} waits",
                self.history.count_ones(),
                Self::HOLD
            );
            self.hold = Self::HOLD;
            self.history = 0;
        }
    }
}

/// Why talking to a process failed. The process is unusable afterwards.
#[derive(Debug)]
pub enum Failure {
    /// The process closed stdout (it exited, usually after a FATAL error).
    Eof,
    /// The process closed stdin.
    BrokenPipe,
    /// The deadline passed.
    Timeout,
    /// It answered with something that cannot be a page: the stream can no
    /// longer be trusted.
    Garbage,
    /// The wait was ended by `Killer::kill` (a cancelled request).
    Stopped,
    Io(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Eof => write!(f, "the process exited (EOF on its stdout)"),
            Failure::BrokenPipe => write!(f, "the process closed its stdin (broken pipe)"),
            Failure::Timeout => write!(f, "no answer by the deadline"),
            Failure::Garbage => write!(f, "the process answered with something that is not a page"),
            Failure::Stopped => write!(f, "stopped for a cancelled request"),
            Failure::Io(e) => write!(f, "I/O error talking to the process: {e}"),
        }
    }
}

/// A [`Process::transact`] that did not complete.
#[derive(Debug)]
pub struct Interrupted {
    pub failure: Failure,
    /// Whole pages received before the failure: the requests they answer
    /// are done.
    pub pages_done: usize,
}

impl Process {
    /// Write all of `request`, and read exactly `response.len()` bytes of
    /// pages back. Writing and reading overlap, so any number of requests may
    /// be pipelined in one call. Each page is due `timeout` after the previous
    /// one (or after the start): a process that stops making progress fails
    /// the call. On failure, says how many whole pages had arrived.
    pub fn transact(
        &mut self,
        request: &[u8],
        response: &mut [u8],
        timeout: Duration,
    ) -> Result<(), Interrupted> {
        self.transact_parts(&[request], response, timeout)
    }

    /// [`Process::transact`] of the concatenation of `parts`, written as
    /// they are (one `writev`, not a copy into one buffer first).
    pub fn transact_parts(
        &mut self,
        parts: &[&[u8]],
        response: &mut [u8],
        timeout: Duration,
    ) -> Result<(), Interrupted> {
        let request_len: usize = parts.iter().map(|p| p.len()).sum();
        let mut written = 0;
        let mut read = 0;
        let interrupted = |failure, read: usize| Interrupted {
            failure,
            pages_done: read / PAGE_SIZE,
        };
        // A request usually fits in the pipe's buffer: write it before the
        // first poll, which then only waits for the answer (one system call
        // fewer per round trip).
        if let Some(input) = self.input.as_ref() {
            written = write_parts(input.as_raw_fd(), parts, 0).map_err(|f| interrupted(f, 0))?;
        }
        // All of it went: wait in a blocking read, the watchdog keeping the
        // deadline (another system call fewer).
        if written == request_len && self.watch.is_some() {
            // The process was pinned to this CPU (`follow_cpu`) and was just
            // woken here. While the caller keeps being moved off it as it
            // waits, it gives the CPU to the process instead of sleeping
            // (see `WaitMoves`).
            let cpu = current_cpu();
            let here = cpu.is_some() && self.pinned_cpu == cpu;
            if here && self.wait_moves.holding() {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            let outcome = self.read_blocking(response, timeout);
            if here {
                self.wait_moves.record(current_cpu() != cpu);
            }
            return outcome;
        }
        let mut deadline = Instant::now() + timeout;
        while written < request_len || read < response.len() {
            let now = Instant::now();
            if now >= deadline {
                return Err(interrupted(Failure::Timeout, read));
            }
            let timeout_ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;

            let Some(input) = self.input.as_ref().map(|f| f.as_raw_fd()) else {
                return Err(interrupted(Failure::BrokenPipe, read));
            };
            let mut fds = [
                poll_fd(input, written < request_len, libc::POLLOUT),
                poll_fd(self.output.as_raw_fd(), read < response.len(), libc::POLLIN),
                poll_fd(
                    self.errors.as_ref().map_or(-1, |f| f.as_raw_fd()),
                    true,
                    libc::POLLIN,
                ),
                poll_fd(
                    self.killer.wake.as_ref().map_or(-1, |f| f.as_raw_fd()),
                    true,
                    libc::POLLIN,
                ),
                // Its death, where EOF may not say it (`ends_were_ours`).
                poll_fd(
                    self.killer.pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                    self.ends_were_ours,
                    libc::POLLIN,
                ),
            ];
            // SAFETY: fds is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(interrupted(Failure::Io(e), read));
            }
            if fds[3].revents != 0 {
                return Err(interrupted(Failure::Stopped, read));
            }
            // Dead, and nothing left to read: all it wrote came before.
            if fds[4].revents != 0 && fds[1].revents == 0 {
                return Err(interrupted(Failure::Eof, read));
            }
            if fds[2].revents != 0 {
                let _ = self.read_stderr();
            }
            if fds[0].revents != 0 {
                written += write_parts(input, parts, written).map_err(|f| interrupted(f, read))?;
            }
            if fds[1].revents != 0
                && self
                    .read_answer(response, &mut read)
                    .map_err(|f| interrupted(f, read))?
            {
                deadline = Instant::now() + timeout;
            }
        }
        Ok(())
    }

    /// One read of stdout into the unfilled tail of `response`, which starts
    /// at `*read`. Returns whether a page was completed (the next one is then
    /// due a full timeout later); an interrupted read returns false.
    fn read_answer(&self, response: &mut [u8], read: &mut usize) -> Result<bool, Failure> {
        // SAFETY: the destination is the unfilled tail of `response`.
        let n = unsafe {
            libc::read(
                self.output.as_raw_fd(),
                response[*read..].as_mut_ptr().cast(),
                response.len() - *read,
            )
        };
        match n {
            0 => Err(Failure::Eof),
            n if n > 0 => {
                let pages_before = *read / PAGE_SIZE;
                *read += n as usize;
                Ok(*read / PAGE_SIZE > pages_before)
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
                    _ => Err(Failure::Io(e)),
                }
            }
        }
    }

    /// Read `response` from stdout in blocking reads, each page due
    /// `timeout` after the previous one; the watchdog kills the process when
    /// one is late, which ends the read with EOF.
    fn read_blocking(&mut self, response: &mut [u8], timeout: Duration) -> Result<(), Interrupted> {
        let watch = self.watch.as_ref().expect("called with a watch");
        let mut read = 0;
        watch.arm(timeout);
        let outcome = loop {
            if read == response.len() {
                break Ok(());
            }
            match self.read_answer(response, &mut read) {
                Ok(true) if read < response.len() => watch.arm(timeout),
                Ok(_) => {}
                Err(Failure::Eof) if watch.fired() => break Err(Failure::Timeout),
                Err(failure) => break Err(failure),
            }
        };
        if !watch.disarm() && outcome.is_ok() {
            // Every page arrived, but the deadline passed and the kill is on
            // its way: the answers stand, the process must not serve again.
            self.killed_late = true;
        }
        // Forward what the process said meanwhile: nothing, when healthy,
        // so a silent process's stderr is read only every
        // `STDERR_READ_EVERY` answers (a system call less per round trip;
        // the pipe holds 64 KiB meanwhile, and a failure reads it all),
        // and one that spoke after every answer until it is silent again.
        self.answers_since_stderr += 1;
        if outcome.is_err() || self.stderr_spoke || self.answers_since_stderr >= STDERR_READ_EVERY {
            self.stderr_spoke = self.read_stderr();
            self.answers_since_stderr = 0;
        }
        outcome.map_err(|failure| Interrupted {
            failure,
            pages_done: read / PAGE_SIZE,
        })
    }
}

pub(super) fn poll_fd(fd: RawFd, wanted: bool, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        // A negative fd is ignored by poll.
        fd: if wanted { fd } else { -1 },
        events,
        revents: 0,
    }
}

/// Write what the pipe takes now; returns how much that was. Never raises
/// SIGPIPE: we hold a read end of the pipe (see `crate::process::child`).
/// One `writev` of the concatenation of `parts` from byte `from` on (at
/// most 64 parts at a time); 0 when the pipe is full.
fn write_parts(fd: RawFd, parts: &[&[u8]], from: usize) -> Result<usize, Failure> {
    const MAX_PARTS: usize = 64;
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_PARTS];
    let mut n_iov = 0;
    let mut skip = from;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        if n_iov == MAX_PARTS {
            break;
        }
        let rest = &part[skip..];
        skip = 0;
        iov[n_iov] = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        n_iov += 1;
    }
    if n_iov == 0 {
        return Ok(0);
    }
    loop {
        // SAFETY: the first n_iov entries of iov point into `parts`, which
        // outlive the call; writev only reads them.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), n_iov as libc::c_int) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            io::ErrorKind::BrokenPipe => return Err(Failure::BrokenPipe),
            _ => return Err(Failure::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WaitMoves;

    #[test]
    fn a_caller_holds_its_cpu_only_while_it_keeps_being_moved() {
        let mut m = WaitMoves::default();
        // Rare moves (a loaded machine): never.
        for i in 0..10_000 {
            m.record(i % 200 == 0);
            assert!(!m.holding());
        }
        // Moved at every wait (a quiet machine): from the fourth on.
        for i in 0..4 {
            assert!(!m.holding(), "wait {i}");
            m.record(true);
        }
        assert!(m.holding());
        // Then for HOLD waits, moved or not, and no longer once it stays.
        for _ in 0..WaitMoves::HOLD {
            assert!(m.holding());
            m.record(false);
        }
        assert!(!m.holding());
        for _ in 0..100 {
            m.record(false);
            assert!(!m.holding());
        }
    }
}
