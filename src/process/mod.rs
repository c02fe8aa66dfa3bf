//! One wal-redo child process: start, pipes, I/O with a deadline, stderr,
//! kill and reap.
//!
//! Lifecycle rules, each enforced here:
//! - stdin is a pipe of which we keep the read end open too: the pipe always
//!   has a reader, so a write to a dead child's stdin never raises SIGPIPE in
//!   the host, whatever the host's signal disposition is (it fills the pipe;
//!   the death shows as EOF on stdout). A pipe, not a socketpair with
//!   `MSG_NOSIGNAL`: a socket costs about 1.5 us more per round trip.
//! - EOF says the child died only if no other process holds the write end
//!   of its stdout, and a fork of the host made by another thread (no exec)
//!   holds every descriptor the host had then: a template-forked child's
//!   ends never exist in the host (the template makes its pipes); a directly
//!   started child's do, during its start, so its death is also watched
//!   through its pidfd (`ends_were_ours`: the `poll` loop, never a blocking
//!   read, and the stderr drain).
//! - A request is written (non-blocking) before any wait. When all of it
//!   went, the answer is awaited in a blocking read of stdout, whose deadline
//!   the watchdog thread (`crate::process::watchdog`) keeps by killing a late process:
//!   a system call less than `poll` then `read`. Otherwise (a batch larger
//!   than the pipe, `blocking_wait` off, no pidfd, or a direct start) one
//!   `poll` loop
//!   writes and reads at once, so pipelined requests cannot deadlock, and
//!   ends every wait at the deadline itself.
//! - stderr is read in that loop, or right after a blocking read (no thread
//!   per child): each line goes to the `log` crate with the child's pid, and
//!   the last lines are kept for the error a failed request returns. A
//!   healthy process writes nothing there.
//! - The child is the host's own, also when the template forked it
//!   (`CLONE_PARENT`): reaped here, through its pidfd. It gets its own
//!   process group, a cleared environment, no file descriptor of ours but
//!   its three pipes, and `PR_SET_PDEATHSIG` so it dies with the host. That
//!   signal fires when the *thread* that started the child (or the template)
//!   exits, not the process: a pool therefore starts its children from its
//!   own [`Spawner`] thread, which lives exactly as long as the pool, never
//!   from a caller's thread that may exit any time.
//! - Another thread may end a process's work at any time through its
//!   [`Killer`] (a cancelled request): a kill through the pidfd, and a
//!   wake-up of the `poll` loop for where there is no pidfd.
//! - Dropping a `Process` kills it (SIGKILL to its group) and reaps it,
//!   blocking until it is gone, so no zombie is ever left behind; if the host
//!   reaped it first (ECHILD) there is nothing to wait for. Its scratch
//!   directory is removed afterwards.

pub(crate) mod account;
pub mod launch;
mod outcome;
pub mod protocol;
pub(crate) mod reaper;
pub(crate) mod safe_fs;
pub(crate) mod start;
pub(crate) mod sweeper;
pub(crate) mod template;
pub(crate) mod threads;
pub(crate) mod watchdog;

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::config::SpawnMode;
use crate::error::{Error, Result};
use crate::process::launch::Launcher;
use crate::process::template::Forked;
use crate::process::threads::{current_cpu, set_affinity};
use crate::process::watchdog::Watch;
use crate::PAGE_SIZE;

/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
/// Longest stderr line kept; the rest is cut.
const STDERR_LINE_MAX: usize = 4096;
/// How long to wait for a failing child's last words on stderr.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// `CLOSE_RANGE_CLOEXEC` from linux/close_range.h.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

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
    /// The wait was ended by [`Killer::kill`] (a cancelled request).
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

/// Our child: started by std's fork and exec (under valgrind only), or
/// known by a pidfd and reaped through it (forked by the template, or
/// started by `start::start`).
enum ChildHandle {
    Direct(Child),
    Forked(Forked),
}

impl ChildHandle {
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            ChildHandle::Direct(c) => c.try_wait(),
            ChildHandle::Forked(f) => f.try_wait(),
        }
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            ChildHandle::Direct(c) => c.wait(),
            ChildHandle::Forked(f) => f.wait(),
        }
    }
}

pub struct Process {
    child: ChildHandle,
    pid: u32,
    /// The child's ends of its pipes were in the host (a direct start):
    /// its death is watched through its pidfd, not only as EOF.
    ends_were_ours: bool,
    /// Write end of the stdin pipe; `None` once closed for shutdown.
    input: Option<OwnedFd>,
    /// Our copy of the read end of the stdin pipe, never read: see the
    /// module notes (no SIGPIPE).
    _input_reader: OwnedFd,
    output: OwnedFd,
    /// Read end of stderr; `None` after EOF.
    errors: Option<OwnedFd>,
    stderr_partial: Vec<u8>,
    stderr_tail: VecDeque<String>,
    scratch: PathBuf,
    /// The user id the child runs as (the owner its SysV segment must have).
    uid: u32,
    exited: bool,
    /// How it ended, once reaped by us.
    exit_status: Option<ExitStatus>,
    /// The CPU it is pinned to, when it follows its driver (see `follow_cpu`).
    pinned_cpu: Option<usize>,
    /// The child as a pidfd, opened right after it started: a pid may be
    /// someone else's once the child is reaped (by the kernel at once when
    /// the host ignores SIGCHLD); a pidfd cannot. Shared with whoever may
    /// have to kill the process on demand (a cancelled call).
    killer: Arc<Killer>,
    /// Enforces deadlines of blocking waits; `None`: waits use `poll`.
    /// Dropped before the child is reaped (see `crate::process::watchdog`).
    watch: Option<Watch>,
    /// The watchdog killed it just after its last answer arrived (see
    /// `is_retired`).
    killed_late: bool,
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fd is open for the duration of these fcntl calls.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Process {
    /// Start one wal-redo process with a fresh scratch directory.
    pub fn spawn(launcher: &Launcher) -> Result<Process> {
        let scratch = launcher.take_scratch_dir()?;
        match Self::spawn_in(launcher, scratch.clone()) {
            Ok(p) => Ok(p),
            Err(e) => {
                let _ = fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    fn spawn_in(launcher: &Launcher, scratch: PathBuf) -> Result<Process> {
        let os_err = |what: &str, e: io::Error| Error::SpawnFailed(format!("{what}: {e}"));
        let (child, pid, pidfd, input, input_reader, output, errors) = match launcher.spawn_mode() {
            SpawnMode::Template => {
                // The template makes the pipes: the child's ends are never
                // ours, so no fork of the host can hold them (see
                // `template`).
                let (forked, pipes) = launcher.fork_from_template(&scratch)?;
                let pid = forked.pid;
                let pidfd = forked.pidfd.try_clone().ok();
                (
                    ChildHandle::Forked(forked),
                    pid,
                    pidfd,
                    pipes.stdin,
                    pipes.stdin_reader,
                    pipes.stdout,
                    pipes.stderr,
                )
            }
            SpawnMode::Direct => {
                let (input_reader, input) = new_pipe().map_err(|e| os_err("pipe", e))?;
                let child_stdin = input_reader.try_clone().map_err(|e| os_err("dup", e))?;
                let (output, child_stdout) = new_pipe().map_err(|e| os_err("pipe", e))?;
                let (errors, child_stderr) = new_pipe().map_err(|e| os_err("pipe", e))?;
                let (child, pid, pidfd) = Self::spawn_direct(
                    launcher,
                    &scratch,
                    child_stdin,
                    child_stdout,
                    child_stderr,
                )?;
                (child, pid, pidfd, input, input_reader, output, errors)
            }
        };
        // The child's ends of its pipes were ours for a while (a direct
        // start): a fork of the host made meanwhile by another thread may
        // hold them, and the child's death would not show as EOF on its
        // stdout until that copy exits. Its pidfd says so instead, in the
        // poll loop; no blocking read, which only EOF could end.
        let ends_were_ours = matches!(launcher.spawn_mode(), SpawnMode::Direct);
        let process = Process {
            child,
            pid,
            ends_were_ours,
            input: Some(input),
            _input_reader: input_reader,
            output,
            errors: Some(errors),
            stderr_partial: Vec::new(),
            stderr_tail: VecDeque::new(),
            scratch,
            uid: launcher.child_uid(),
            exited: false,
            exit_status: None,
            pinned_cpu: None,
            // The watchdog gets its own copy of the child's one pidfd.
            watch: pidfd
                .as_ref()
                .filter(|_| launcher.blocking_wait() && !ends_were_ours)
                .and_then(|fd| fd.try_clone().ok())
                .and_then(Watch::new),
            killer: Arc::new(Killer {
                pidfd,
                wake: new_eventfd(),
                fired: AtomicBool::new(false),
            }),
            killed_late: false,
        };
        // stdout stays blocking: `transact` reads it after poll says so, or
        // in a blocking read under the watchdog.
        set_nonblocking(process.input.as_ref().unwrap()).map_err(|e| os_err("fcntl", e))?;
        set_nonblocking(process.errors.as_ref().unwrap()).map_err(|e| os_err("fcntl", e))?;
        // stderr is not read during a blocking read: give it room (1 MiB, the
        // unprivileged maximum; the default 64 KiB where refused), so that
        // only a process far chattier than a failing one could fill it and
        // stall until its deadline.
        // SAFETY: fcntl on a pipe we own; failure is harmless.
        unsafe {
            libc::fcntl(
                process.errors.as_ref().unwrap().as_raw_fd(),
                libc::F_SETPIPE_SZ,
                1 << 20,
            )
        };
        // A whole batch of requests (MAX_BATCH short ones are about 270 KiB)
        // and its pages (8 KiB each) fit in the pipes, so `transact` writes
        // a batch in one call and waits in one blocking read, instead of
        // taking turns with the process through poll 64 KiB at a time.
        // Pipe memory is only taken as data is written.
        for (fd, size) in [
            (process.input.as_ref().unwrap().as_raw_fd(), 512 << 10),
            (process.output.as_raw_fd(), 256 << 10),
        ] {
            // SAFETY: fcntl on a pipe we own; failure (a user over its pipe
            // quota) leaves the default size, which works, only slower.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) };
        }
        log::debug!(
            "started wal-redo process {pid} in {}",
            process.scratch.display()
        );
        Ok(process)
    }

    /// Start the program afresh: `start::start` (`CLONE_VM`, no copy of the
    /// host; it waits for the exec without a pipe that a fork of the host
    /// could hold); or under valgrind, which allows no `CLONE_VM`, or
    /// before Linux 5.4 (no `waitid` on a pidfd), std's fork and exec. Our
    /// child, its pid and a pidfd of it.
    fn spawn_direct(
        launcher: &Launcher,
        scratch: &std::path::Path,
        child_stdin: OwnedFd,
        child_stdout: OwnedFd,
        child_stderr: OwnedFd,
    ) -> Result<(ChildHandle, u32, Option<OwnedFd>)> {
        let failed =
            |e: io::Error| Error::SpawnFailed(format!("cannot start postgres --single: {e}"));
        if start::pidfds_usable() {
            let (program, args) = launcher.direct_argv(scratch);
            let started = start::start(&start::Spec {
                program: &program,
                args: &args,
                cwd: scratch,
                stdio: [
                    child_stdin.as_raw_fd(),
                    child_stdout.as_raw_fd(),
                    child_stderr.as_raw_fd(),
                ],
                user: launcher.user(),
                memory_limit: launcher.memory_limit(),
                timeout: launcher.start_timeout(),
            })
            .map_err(failed)?;
            // Our copies of the child's ends go at return: EOF on stdout
            // means the child is gone (unless a fork of the host holds one:
            // see `ends_were_ours`).
            let pid = started.pid as u32;
            let pidfd = started.pidfd.try_clone().ok();
            return Ok((ChildHandle::Forked(Forked::ours(started)), pid, pidfd));
        }
        let mut cmd = launcher.command(scratch);
        cmd.stdin(Stdio::from(child_stdin))
            .stdout(Stdio::from(child_stdout))
            .stderr(Stdio::from(child_stderr))
            .process_group(0);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let memory_limit = launcher.memory_limit();
        let fd_bound = host_fd_bound();
        // SAFETY: the closure runs between fork and exec; harden_child calls
        // only async-signal-safe functions, allocates nothing and takes no
        // lock.
        unsafe {
            cmd.pre_exec(move || harden_child(parent, memory_limit, fd_bound, true));
        }
        // The child's ends are closed in our process when `cmd` goes away
        // (at return), so that EOF on stdout means the child is gone.
        let child = cmd.spawn().map_err(failed)?;
        let pid = child.id();
        Ok((ChildHandle::Direct(child), pid, open_pidfd(pid)))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs, without waiting: a pidfd poll (or
    /// `waitpid(WNOHANG)` for one we started ourselves). A process found
    /// gone is not waited for again.
    pub fn is_alive(&mut self) -> bool {
        if self.exited {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.exit_status = Some(status);
                self.exited = true;
                false
            }
            Err(_) => {
                self.exited = true;
                false
            }
        }
    }

    /// What kills this process from another thread (see [`Killer`]).
    pub(crate) fn killer(&self) -> &Arc<Killer> {
        &self.killer
    }

    /// Whether the process must be replaced although its last `transact`
    /// succeeded: the watchdog's kill for a deadline that passed just as the
    /// answer came in is already on its way. Nobody's request is to blame.
    pub fn is_retired(&self) -> bool {
        self.killed_late
    }

    /// The CPU `follow_cpu` pinned the process to, if any.
    pub fn pinned_cpu(&self) -> Option<usize> {
        self.pinned_cpu
    }

    /// Pin the process to the CPU the calling thread runs on now, so that the
    /// hand-offs of a round trip stay on one CPU: a cross-CPU wake-up costs
    /// ten times a same-CPU one (BENCHMARKS.md). A CPU the caller runs on is
    /// one the host allows. Costs a system call only when the CPU changes.
    ///
    /// `sched_setaffinity` takes a pid, so the pidfd says first that the
    /// child is still alive (or a zombie: not yet reaped, the pid is still
    /// its own); a child that was reaped is never pinned, nor whoever has its
    /// pid now. What remains is the window between that check and the call:
    /// the child would have to die, be reaped by the kernel (SIGCHLD ignored)
    /// and its pid be handed out again within those microseconds. Without a
    /// pidfd (Linux before 5.3) nothing is pinned.
    pub fn follow_cpu(&mut self) {
        let Some(cpu) = current_cpu() else {
            return;
        };
        if self.pinned_cpu == Some(cpu) {
            return;
        }
        let Some(pidfd) = &self.killer.pidfd else {
            return;
        };
        // Signal 0 only checks that the process still exists.
        if !pidfd_signal(pidfd, 0) {
            return;
        }
        // The pid is the child's (checked just above).
        let ok = set_affinity(self.pid as libc::pid_t, cpu).is_ok();
        if ok {
            self.pinned_cpu = Some(cpu);
        }
    }

    /// Ping a new process: it has started only once it answers. One that
    /// dies at start-up (a broken binary or extension) fails here, with its
    /// stderr.
    pub fn handshake(&mut self, timeout: Duration) -> Result<()> {
        let mut ping = Vec::new();
        crate::process::protocol::write_ping(&mut ping);
        let mut page = [0u8; PAGE_SIZE];
        let mut answered = self.transact(&ping, &mut page, timeout);
        if answered.is_ok() && self.killed_late {
            // It answered as its deadline passed, and is being killed for it.
            answered = Err(Interrupted {
                failure: Failure::Timeout,
                pages_done: 1,
            });
        }
        answered.map_err(|i| {
            let stderr = self.kill_and_collect_stderr();
            // A process that hangs (or was stopped) is a deadline error like
            // any other; one that died or spoke nonsense could not start.
            if let Failure::Timeout = i.failure {
                return Error::Timeout {
                    after_ms: timeout.as_millis() as u64,
                    stderr,
                };
            }
            Error::SpawnFailed(format!(
                "the wal-redo process {} did not start: {}{}{}",
                self.pid,
                i.failure,
                if stderr.is_empty() {
                    ""
                } else {
                    "; its stderr:\n"
                },
                stderr
            ))
        })
    }

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
        let mut deadline = Instant::now() + timeout;
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
            return self.read_blocking(response, timeout);
        }
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
                self.read_stderr();
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
        // Forward what the process said meanwhile (nothing, when healthy).
        self.read_stderr();
        outcome.map_err(|failure| Interrupted {
            failure,
            pages_done: read / PAGE_SIZE,
        })
    }

    /// Read whatever stderr holds now, without waiting.
    fn read_stderr(&mut self) {
        let Some(fd) = self.errors.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.stderr_partial.extend_from_slice(&buf[..n as usize]);
                self.split_stderr_lines(false);
                continue;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                // EOF (or a broken pipe): the child has exited or closed it.
                self.split_stderr_lines(true);
                self.errors = None;
            }
            return;
        }
    }

    fn split_stderr_lines(&mut self, at_eof: bool) {
        while let Some(pos) = self.stderr_partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.stderr_partial.drain(..=pos).collect();
            self.stderr_line(&line[..line.len() - 1]);
        }
        if at_eof && !self.stderr_partial.is_empty() {
            let line = std::mem::take(&mut self.stderr_partial);
            self.stderr_line(&line);
        }
        if self.stderr_partial.len() > STDERR_LINE_MAX {
            let line = std::mem::take(&mut self.stderr_partial);
            self.stderr_line(&line);
        }
    }

    fn stderr_line(&mut self, raw: &[u8]) {
        let mut line = String::from_utf8_lossy(raw).into_owned();
        if line.len() > STDERR_LINE_MAX {
            let mut cut = STDERR_LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let level = if ["FATAL:", "PANIC:", "ERROR:"]
            .iter()
            .any(|p| line.starts_with(p))
        {
            log::Level::Error
        } else if line.starts_with("WARNING:") {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(target: "walredo::process", level, "wal-redo process {}: {}", self.pid, line);
        if self.stderr_tail.len() == STDERR_TAIL_LINES {
            self.stderr_tail.pop_front();
        }
        self.stderr_tail.push_back(line);
    }

    /// Kill a failed child and return its last lines on stderr. Killing
    /// first loses nothing: a child that failed by itself wrote its message
    /// before it closed its pipes, and once it is dead stderr reaches EOF at
    /// once, instead of never for a hung or confused one.
    pub fn kill_and_collect_stderr(&mut self) -> String {
        self.kill();
        self.drain_stderr(Instant::now() + STDERR_GRACE);
        self.watch = None;
        if !self.exited {
            // Dead or dying: reaping is quick, and tells how it ended.
            if let Ok(status) = self.child.wait() {
                self.exit_status = Some(status);
            }
            self.exited = true;
        }
        self.stderr_tail()
    }

    /// How the process ended, when that says more than its stderr: killed
    /// by a signal other than our SIGKILL.
    pub fn death_signal(&self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let signal = self.exit_status?.signal()?;
        match signal {
            libc::SIGKILL => None,
            libc::SIGSYS => Some("killed by SIGSYS: a system call its sandbox forbids".into()),
            libc::SIGABRT => Some("aborted (SIGABRT)".into()),
            other => Some(format!("killed by signal {other}")),
        }
    }

    /// The signal that ended this process, once it is reaped (after a
    /// failed `handshake`, say); `None` while it runs or if it exited.
    pub fn exit_signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.exit_status?.signal()
    }

    /// SIGKILL the child's process group, unless it was already reaped
    /// (then its pid may belong to someone else now).
    fn kill(&mut self) {
        if self.exited {
            return;
        }
        match self.child.try_wait() {
            Ok(None) => {
                // Through its pidfd, and its group (whatever it started
                // too), once it has made it: not reaped, its pid (= its
                // group id) is still its own.
                self.killer.kill_process();
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
            }
            Ok(Some(status)) => {
                self.exit_status = Some(status);
                self.exited = true;
            }
            // Reaped by the host (ECHILD).
            Err(_) => self.exited = true,
        }
    }

    /// Read stderr until EOF or `deadline`; or, once the process is dead,
    /// until nothing is left in it: a fork of the host (another thread's)
    /// may hold the write end of a directly started process's stderr, and
    /// then EOF comes only once that copy exits.
    fn drain_stderr(&mut self, deadline: Instant) {
        while let Some(fd) = self.errors.as_ref().map(|f| f.as_raw_fd()) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let pidfd = self.killer.pidfd.as_ref().map_or(-1, |f| f.as_raw_fd());
            let mut pfd = [
                poll_fd(fd, true, libc::POLLIN),
                poll_fd(pidfd, true, libc::POLLIN),
            ];
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: pfd is a valid array of two pollfds.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, ms) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return;
            }
            if pfd[0].revents != 0 {
                self.read_stderr();
            } else if pfd[1].revents != 0 {
                // Dead, and all it wrote has been read.
                return;
            }
        }
    }

    /// The last lines the process wrote to stderr, oldest first.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Ask the process to exit by closing its stdin, and wait for it (at most
    /// `timeout`, then it is killed). Returns its exit status, if it exited by
    /// itself, and everything it wrote to stderr at the end.
    pub fn shutdown(mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let deadline = Instant::now() + timeout;
        self.input = None;
        self.watch = None;
        self.drain_stderr(deadline);
        let mut status = None;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    self.exited = true;
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => {
                    // ECHILD: the host reaped it for us.
                    self.exited = true;
                    break;
                }
            }
        }
        (status, self.stderr_tail())
    }
}

/// Ends the work of one process on demand, from any thread: a cancelled
/// call's request must not keep a slot busy until its deadline.
///
/// The process is killed through its pidfd, never its pid (see `watchdog`):
/// the descriptor stays open as long as a `Killer` does, and a signal to a
/// process that is gone, even reaped, is refused (ESRCH) instead of reaching
/// whoever has its pid now. Its driver then sees EOF at once, in a blocking
/// read too. Without a pidfd (Linux before 5.3, valgrind) there is no
/// blocking read either (no watchdog): the driver's `poll` loop also
/// watches `wake`, and ends the wait itself; the driver then kills its
/// process as after any failure.
pub(crate) struct Killer {
    pidfd: Option<OwnedFd>,
    /// An eventfd written by `kill`; `None` if none could be made.
    wake: Option<OwnedFd>,
    fired: AtomicBool,
}

impl Killer {
    /// Kill the process, or at least end its driver's wait. Returns false
    /// when neither is possible (no pidfd, no eventfd).
    pub fn kill(&self) -> bool {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(wake) = &self.wake {
            let one: u64 = 1;
            // SAFETY: 8 bytes from a live u64 to an eventfd we own.
            unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        if let Some(pidfd) = &self.pidfd {
            pidfd_signal(pidfd, libc::SIGKILL);
        }
        self.pidfd.is_some() || self.wake.is_some()
    }

    /// SIGKILL through the pidfd only, without marking a cancel.
    fn kill_process(&self) {
        if let Some(pidfd) = &self.pidfd {
            pidfd_signal(pidfd, libc::SIGKILL);
        }
    }

    /// Whether `kill` was called: the process must not serve again, and its
    /// failure, if any, is the cancel's.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// A close-on-exec, non-blocking eventfd; `None` if none can be made.
fn new_eventfd() -> Option<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    // SAFETY: a new descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd for our child `pid`, opened right after it started (while it
/// cannot have been reaped by us; a host ignoring SIGCHLD leaves the window
/// of a child that dies, and whose pid is reused, before this call).
fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: pidfd_open returned a new descriptor (close-on-exec) that
    // nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A wal-redo child's resource limits, set between fork and exec (only
/// getrlimit and setrlimit: async-signal-safe): a PANIC in redo calls
/// abort(), so no core files (in the scratch directory, or wherever
/// core_pattern points); a bounded address space; a bounded number of
/// open files (PostgreSQL needs a few dozen). Never above the limits the
/// host already has: lowering a hard limit is always allowed, raising it
/// is not.
///
/// # Safety
/// Only in a child about to exec: the limits are the whole process's.
pub(crate) unsafe fn set_child_limits(memory_limit: u64) {
    for (resource, limit) in [
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_AS, memory_limit),
        (libc::RLIMIT_NOFILE, 1024),
    ] {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit pointer for getrlimit to fill.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            continue;
        }
        let limit = limit.min(current.rlim_max);
        let rlim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // The kernel always allows lowering a limit; only an emulated
        // host (valgrind refuses these in a forked child) says no, and
        // then the child starts without.
        // SAFETY: a valid rlimit pointer.
        unsafe { libc::setrlimit(resource, &rlim) };
    }
}

/// Send `signal` (0: only check that the process exists) to the process
/// behind `pidfd`; whether it was delivered. Never by pid: a pidfd cannot
/// name a process that took a reaped child's pid.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) -> bool {
    // SAFETY: a pidfd the caller owns, open for the call; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

/// Where the fallback of `harden_child` stops: the host's RLIMIT_NOFILE
/// soft limit, read before fork (no `sysconf` in the child, and the child
/// lowers the limit). A descriptor can be open at or above it only if the
/// host lowered its limit after opening it: such a one is not covered.
fn host_fd_bound() -> libc::c_int {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return 65536;
    }
    current.rlim_cur.min(libc::c_int::MAX as libc::rlim_t) as libc::c_int
}

/// What a new child does between fork and exec: no signal blocked, die with `parent`, no
/// descriptor of the host's beyond its three pipes, resource limits. Call it
/// only in a forked child: it uses only async-signal-safe functions and
/// allocates nothing. `try_close_range` is false only in a test, to take the
/// fallback of kernels without `CLOSE_RANGE_CLOEXEC` (before 5.11), which
/// marks descriptors one by one from 3 up to `fd_bound`.
fn harden_child(
    parent: libc::pid_t,
    memory_limit: u64,
    fd_bound: libc::c_int,
    try_close_range: bool,
) -> io::Result<()> {
    // SAFETY: sigemptyset, pthread_sigmask, prctl, getppid, getrlimit,
    // setrlimit, syscall, fcntl and _exit are async-signal-safe and get valid
    // arguments.
    unsafe {
        // The forking thread blocks every signal (`threads`); a program
        // expects to start with none blocked, as from a shell. std clears
        // the mask too, but the child must not depend on that.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before prctl: then nobody would
        // ever kill us.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        // Descriptors the host opened without O_CLOEXEC must not leak into
        // the child; 0, 1 and 2 are already our pipes. Marked, not closed:
        // std reports a failed exec through a descriptor of its own. Before
        // RLIMIT_NOFILE is lowered below, so that nothing of the host's
        // lies beyond what the fallback reaches.
        let marked = try_close_range
            && libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ) == 0;
        if !marked {
            for fd in 3..fd_bound {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        set_child_limits(memory_limit);
    }
    Ok(())
}

fn poll_fd(fd: RawFd, wanted: bool, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        // A negative fd is ignored by poll.
        fd: if wanted { fd } else { -1 },
        events,
        revents: 0,
    }
}

/// Write what the pipe takes now; returns how much that was. Never raises
/// SIGPIPE: we hold a read end of the pipe (see the module notes).
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

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        self.watch = None;
        if !self.exited {
            // Reaping blocks, but only for as long as the kernel takes to
            // tear down a SIGKILLed process: never leave a zombie. ECHILD
            // (the host reaped it) ends the wait at once.
            let _ = self.child.wait();
        }
        remove_sysv_segment(&self.scratch, self.pid, self.uid);
        // Off the path of whoever waits for the next process.
        sweeper::sweep(&self.scratch);
    }
}

/// A thread that starts processes on behalf of others, so that their
/// `PR_SET_PDEATHSIG` is tied to this thread, which lives as long as its
/// owner (see the module notes).
///
/// It also keeps one spare (`Config::spare_process`): a fresh process,
/// started ahead and never used by anyone, handed over at once to the next
/// job, after which the next spare is started once no job has come for
/// `SPARE_SETTLE`. A spare is
/// checked before it is handed over: alive, and it answers a ping within
/// `SPARE_PING` (a dead, stopped or hung one is dropped and a fresh process
/// started instead, which is no failed start); the first is started
/// only after the first start that succeeded (a pool that never served
/// starts nothing), and it is dropped (killed, reaped, its directory removed)
/// when `idle_timeout` passes without a job, and with the spawner. The
/// spare's start-up runs while it waits, so the handshake that follows the
/// hand-over finds it ready.
pub struct Spawner {
    launcher: Arc<Launcher>,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The spare's pid, 0 when there is none (for tests).
    spare_pid: Arc<AtomicU32>,
}

impl Spawner {
    pub fn new(launcher: Arc<Launcher>) -> Result<Spawner> {
        let (jobs, rx) = bounded::<Job>(0);
        let ours = launcher.clone();
        let spare_pid = Arc::new(AtomicU32::new(0));
        let shown_pid = Arc::clone(&spare_pid);
        let thread = threads::spawn_blocking_signals("walredo-spawner".into(), move || {
            let mut spare: Option<Process> = None;
            // A spare is due (after a start that succeeded), to be started
            // once no job came for `SPARE_SETTLE`.
            let mut spare_due = false;
            // After `close`: no spare any more.
            let mut closed = false;
            loop {
                let job = match (&spare, launcher.idle_timeout()) {
                    _ if spare_due => rx.recv_timeout(SPARE_SETTLE),
                    (Some(_), Some(idle)) => rx.recv_timeout(idle),
                    _ => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                let reply = match job {
                    Ok(Job::Start(reply)) => reply,
                    Ok(Job::Sync) => continue,
                    Ok(Job::Close) => {
                        closed = true;
                        spare_due = false;
                        shown_pid.store(0, Ordering::Relaxed);
                        spare = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) if spare_due => {
                        spare_due = false;
                        // A failed start of the spare is not reported: the
                        // next job starts its own process and gets that error.
                        spare = Process::spawn(&launcher).ok();
                        if let Some(p) = &spare {
                            shown_pid.store(p.pid(), Ordering::Relaxed);
                        }
                        launcher.prepare_scratch_dir();
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: an idle pool keeps no process alive for this.
                        shown_pid.store(0, Ordering::Relaxed);
                        spare = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                shown_pid.store(0, Ordering::Relaxed);
                // A spare that is dead or does not answer is dropped here
                // (killed, reaped, its directory removed) and a fresh
                // process started: nobody is charged.
                let ready = spare
                    .take()
                    .and_then(|mut p| ready_to_hand_over(&mut p).then_some(p));
                let process = match ready {
                    Some(p) => Ok(p),
                    None => Process::spawn(&launcher),
                };
                spare_due = process.is_ok() && launcher.spare_process() && !closed;
                // The requester may have given up; then the process is
                // dropped here, which kills and reaps it.
                let _ = reply.send(process);
                // The next start's directory, while nobody waits.
                launcher.prepare_scratch_dir();
            }
            shown_pid.store(0, Ordering::Relaxed);
            // `spare` is dropped here, on this thread: killed and reaped.
        })
        .map_err(|e| Error::SpawnFailed(format!("cannot start the spawner thread: {e}")))?;
        Ok(Spawner {
            launcher: ours,
            jobs: Some(jobs),
            thread: Some(thread),
            spare_pid,
        })
    }

    /// Give up what the launcher made ahead of need (see
    /// `Launcher::release`); for a pool that has shut down.
    pub fn release(&self) {
        self.close();
        self.launcher.release();
    }

    /// Start a process on the spawner thread and hand it over.
    pub fn spawn(&self) -> Result<Process> {
        let (reply, answer) = bounded(1);
        let gone = || Error::Internal("the spawner thread is gone".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Job::Start(reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Kill and reap the spare, if any, and start no more (for a pool that
    /// shuts down: nothing of it may outlive its shutdown). Starts asked for
    /// afterwards are still served. Returns once the spare is gone.
    pub fn close(&self) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Close);
            // The thread takes one job at a time: once it takes the next,
            // the spare is gone.
            let _ = jobs.send(Job::Sync);
        }
    }

    /// The pid of the spare process waiting now, if any (for tests).
    pub fn spare_pid(&self) -> Option<u32> {
        Some(self.spare_pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the spawner thread is asked to do.
enum Job {
    /// Hand over a process (the spare, or a new one) on this channel.
    Start(Sender<Result<Process>>),
    /// Drop the spare and keep none from now on.
    Close,
    /// Nothing: taken only once the jobs before it are done.
    Sync,
}

/// How long a spare may take to answer the ping at its hand-over. One that
/// waited is ready and answers in microseconds; one started moments ago
/// answers once its start-up is done (a few milliseconds, more on a loaded
/// machine). One that was stopped (SIGSTOP) or hangs never does: it would
/// pass a liveness check, and then fail its slot's handshake by the pool's
/// deadline.
const SPARE_PING: Duration = Duration::from_millis(100);

/// Whether a spare can be handed over: alive, and it answers a ping within
/// `SPARE_PING`. One that cannot is killed and reaped (by the handshake).
fn ready_to_hand_over(spare: &mut Process) -> bool {
    if !spare.is_alive() {
        return false;
    }
    match spare.handshake(SPARE_PING) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "the spare process {} is not handed over ({e}); starting another",
                spare.pid()
            );
            false
        }
    }
}

/// How long the spawner waits after a hand-over before it starts the next
/// spare: the process just handed over is doing its handshake and first
/// request then, and on a small machine the spare's start-up (a fork in the
/// template, then about a millisecond of PostgreSQL's start-up) would take
/// the CPU from it. A job that comes meanwhile gets a fresh process.
const SPARE_SETTLE: Duration = Duration::from_millis(5);

/// Longest `postmaster.pid` read; PostgreSQL's is a few hundred bytes.
const PID_FILE_MAX: u64 = 4096;

/// Remove the System V shared memory segment a dead PostgreSQL process left.
///
/// PostgreSQL always creates a small SysV segment (an interlock beside its
/// anonymous shared memory) and removes it only on a clean exit. A process
/// that was killed or PANICked leaves it, and they pile up until `shmget`
/// fails. Its key and id are on line 7 of `postmaster.pid`.
///
/// That file is the child's, which may have been hijacked, so it names a
/// segment only as a hint: the segment is removed only if the dead child
/// (`pid`, running as `uid`) created it and still owns it, it still has the
/// key named, and nobody is attached. The file is read only if it is a
/// regular file (never through a link: a host running as root could read
/// anything) of at most `PID_FILE_MAX` bytes.
fn remove_sysv_segment(scratch: &std::path::Path, pid: u32, uid: u32) {
    let Some(pidfile) = read_pid_file(&scratch.join("postmaster.pid")) else {
        return;
    };
    let Some(line) = pidfile.lines().nth(6).filter(|l| !l.trim().is_empty()) else {
        // Killed between creating its segment and naming it there.
        remove_unnamed_segment(scratch, pid, uid);
        return;
    };
    let mut fields = line.split_whitespace().map(str::parse::<i64>);
    let (Some(Ok(key)), Some(Ok(shmid))) = (fields.next(), fields.next()) else {
        return;
    };
    let Ok(shmid) = libc::c_int::try_from(shmid) else {
        return;
    };
    remove_childs_segment(shmid, key, pid, uid);
}

/// Remove segment `shmid` if it still has `key`, the dead child (`pid`,
/// running as `uid`) created it and still owns it, and nobody is attached;
/// whether it did.
fn remove_childs_segment(shmid: libc::c_int, key: i64, pid: u32, uid: u32) -> bool {
    // SAFETY: shmid_ds is plain old data that IPC_STAT fills in.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a shmid_ds for IPC_STAT to fill.
    if unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } != 0 {
        return false; // already gone
    }
    let made_by_child = i64::from(ds.shm_cpid) == i64::from(pid)
        && ds.shm_perm.cuid == uid
        && ds.shm_perm.uid == uid;
    if !made_by_child || i64::from(ds.shm_perm.__key) != key || ds.shm_nattch != 0 {
        return false; // not the one our process made, or still in use
    }
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) == 0 }
}

/// Remove the segment of a dead child that died between `shmget` and
/// writing the segment's key to `postmaster.pid` (a kill during start-up:
/// rare, but a chaos run of thousands of kills hits it). PostgreSQL takes
/// the key from the data directory's inode number, counting up past keys
/// in use, so the first keys from there are probed; only a segment the dead
/// child (`pid`, as `uid`) created, with nobody attached, is removed.
fn remove_unnamed_segment(scratch: &std::path::Path, pid: u32, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    const KEY_PROBES: libc::key_t = 16;
    let Ok(meta) = fs::symlink_metadata(scratch) else {
        return;
    };
    let first_key = meta.ino() as libc::key_t;
    for i in 0..KEY_PROBES {
        let key = first_key.wrapping_add(i);
        if key == libc::IPC_PRIVATE {
            continue;
        }
        // SAFETY: shmget with size 0 and no flags only looks a key up.
        let shmid = unsafe { libc::shmget(key, 0, 0) };
        if shmid >= 0 && remove_childs_segment(shmid, i64::from(key), pid, uid) {
            return;
        }
    }
}

/// Remove the System V segment of a wal-redo process whose host died before
/// it could reap it (and so remove the segment itself, above): called for
/// each stale scratch directory before it is removed.
///
/// The dead host can no longer say which pid its child had; the child's
/// `postmaster.pid` can, but is untrusted, so it is believed only as far as
/// it can be checked: the pid it names is dead, the segment was created by
/// that pid as the children's user (`uid`) and nobody is attached to it
/// (`remove_sysv_segment`), and its key is one PostgreSQL derives from this
/// very directory (its inode number, counted up past keys already taken).
/// A child killed with its host before it named its segment there (the
/// lock file is written first) is found by those keys alone.
///
/// The host died a moment ago, perhaps: its child, killed with it
/// (`PR_SET_PDEATHSIG`), may still be exiting. Such a child (its working
/// directory is `scratch`) is waited for, briefly. Returns false when the
/// directory must stay because its process still runs.
pub(crate) fn remove_dead_childs_segment(scratch: &std::path::Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    /// How far PostgreSQL counts up from the inode number looking for a
    /// free key; in practice it takes the first.
    const KEY_PROBES: i64 = 1000;
    /// How long a child that is still exiting is waited for.
    const EXIT_WAIT: Duration = Duration::from_millis(500);
    let Some(pidfile) = read_pid_file(&scratch.join("postmaster.pid")) else {
        return true;
    };
    // A single-user backend writes its pid negated.
    let Some(pid) = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .and_then(|p| libc::pid_t::try_from(p.unsigned_abs()).ok())
        .filter(|&p| p > 0)
    else {
        return true;
    };
    let waited = Instant::now();
    while still_runs_in(pid, scratch, uid) {
        if waited.elapsed() > EXIT_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(key) = pidfile
        .lines()
        .nth(6)
        .and_then(|l| l.split_whitespace().next()?.parse::<i64>().ok())
    else {
        // Killed with its host between creating its segment and naming it
        // here: found by the directory's inode, if the dead pid made it.
        remove_sysv_segment(scratch, pid as u32, uid);
        return true;
    };
    let Ok(meta) = fs::symlink_metadata(scratch) else {
        return true;
    };
    // key_t is an int: PostgreSQL starts from the inode number cut to it.
    let first_key = i64::from(meta.ino() as libc::key_t);
    if (first_key..first_key + KEY_PROBES).contains(&key) {
        remove_sysv_segment(scratch, pid as u32, uid);
    }
    true
}

/// Whether process `pid` exists and works in `dir` (a wal-redo process runs
/// in its scratch directory); a pid that is gone, or now someone else's,
/// does not.
///
/// A wal-redo process is non-dumpable (pg_walredo's sandbox.c): a host that
/// is not root, and so runs its processes as itself (`uid`), may not read
/// their working directory. Such a process of that account may be the one
/// that worked in `dir`, so it counts as still running (the directory stays
/// for a later clean-up); a process of another account is not ours.
fn still_runs_in(pid: libc::pid_t, dir: &std::path::Path, uid: u32) -> bool {
    match fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd == dir,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => real_uid_of(pid) == Some(uid),
        // Gone: not one of our children any more.
        Err(_) => false,
    }
}

/// The real uid of process `pid` (`/proc/<pid>/status` stays readable when
/// the process is not dumpable).
fn real_uid_of(pid: libc::pid_t) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().next()?.parse().ok()
}

/// The content of a regular file at `path`, not a link to one (O_NOFOLLOW),
/// of at most `PID_FILE_MAX` bytes; `None` for anything else. O_NONBLOCK: a
/// FIFO must not block the open; O_NOCTTY: a terminal never becomes ours.
fn read_pid_file(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(PID_FILE_MAX + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > PID_FILE_MAX {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A scratch directory whose process (dead now) made a System V
    /// segment with PostgreSQL's key but was killed before it named the
    /// segment in `postmaster.pid`: the directory, the segment's id and the
    /// dead pid.
    fn unnamed_segment_of_a_dead_child(name: &str) -> (PathBuf, libc::c_int, libc::pid_t) {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("walredo-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let key = fs::metadata(&dir).unwrap().ino() as libc::key_t;
        // SAFETY: the child only calls shmget and _exit, both
        // async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let ok = libc::shmget(key, 56, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) >= 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0, "the child could not make its segment");
        // SAFETY: a key lookup.
        let shmid = unsafe { libc::shmget(key, 0, 0) };
        assert!(shmid >= 0);
        (dir, shmid, pid)
    }

    /// The lock file as PostgreSQL has it before the segment line, naming
    /// `pid` (negated, as a single-user backend writes it).
    fn write_unnamed_pid_file(dir: &Path, pid: libc::pid_t) {
        fs::write(
            dir.join("postmaster.pid"),
            format!("-{pid}\n{}\n0\n\n\n\n", dir.display()),
        )
        .unwrap();
    }

    /// Whether segment `shmid` still exists (removed here if so, and the
    /// directory with it, before the caller's assertion).
    fn still_there_then_clean(dir: &Path, shmid: libc::c_int) -> bool {
        // SAFETY: shmid_ds is plain old data; IPC_STAT fills it in.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a shmid_ds for IPC_STAT.
        let there = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } == 0;
        if there {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        let _ = fs::remove_dir_all(dir);
        there
    }

    /// A child killed after `shmget` but before its key reached
    /// `postmaster.pid`: its host still finds the segment (by the
    /// directory's inode) and removes it, and leaves someone else's alone.
    #[test]
    fn a_segment_not_yet_named_in_the_pid_file_is_removed() {
        let (dir, shmid, pid) = unnamed_segment_of_a_dead_child("unnamed");
        write_unnamed_pid_file(&dir, pid);
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        // Another pid: not its segment.
        remove_sysv_segment(&dir, pid as u32 + 1, uid);
        // SAFETY: shmid_ds is plain old data; IPC_STAT fills it in.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a shmid_ds for IPC_STAT.
        let kept = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } == 0;
        remove_sysv_segment(&dir, pid as u32, uid);
        let left = still_there_then_clean(&dir, shmid);
        assert!(kept, "removed a stranger's");
        assert!(!left, "the unnamed segment was left behind");
    }

    /// The same child, killed together with its host: the next pool's
    /// clean-up of the dead host's scratch directory removes the segment
    /// (before, it needed the key in `postmaster.pid`), but not when the
    /// lock file names a pid that did not make it.
    #[test]
    fn a_dead_hosts_unnamed_segment_is_removed_by_the_next_pool() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let (dir, shmid, pid) = unnamed_segment_of_a_dead_child("dead-host-unnamed");
        write_unnamed_pid_file(&dir, pid + 1);
        assert!(remove_dead_childs_segment(&dir, uid));
        assert!(
            still_there_then_clean(&dir, shmid),
            "removed a segment the named pid did not make"
        );
        let (dir, shmid, pid) = unnamed_segment_of_a_dead_child("dead-host-unnamed");
        write_unnamed_pid_file(&dir, pid);
        assert!(remove_dead_childs_segment(&dir, uid));
        assert!(
            !still_there_then_clean(&dir, shmid),
            "the dead host's unnamed segment was left behind"
        );
    }

    /// A descriptor the host opened without O_CLOEXEC, numbered above the
    /// child's RLIMIT_NOFILE (1024), through the fallback of old kernels:
    /// not open in the child after exec.
    #[test]
    fn the_fallback_keeps_high_host_descriptors_out_of_the_child() {
        const HIGH: libc::c_int = 1500;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid rlimit pointers; raising the soft limit up to the
        // hard one is always allowed.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            if lim.rlim_cur <= HIGH as libc::rlim_t {
                assert!(lim.rlim_max > HIGH as libc::rlim_t, "hard limit too low");
                lim.rlim_cur = lim.rlim_max.min(4096);
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            }
        }
        let null = fs::File::open("/dev/null").unwrap();
        // SAFETY: dup2 of an open descriptor; dup2 never sets O_CLOEXEC.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), HIGH) }, HIGH);
        let parent = std::process::id() as libc::pid_t;
        let bound = host_fd_bound();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", &format!("test ! -e /proc/self/fd/{HIGH}")]);
        // SAFETY: harden_child is async-signal-safe (see there).
        unsafe { cmd.pre_exec(move || harden_child(parent, 4 << 30, bound, false)) };
        let status = cmd.status().unwrap();
        // SAFETY: closing the descriptor made above.
        unsafe { libc::close(HIGH) };
        assert!(
            status.success(),
            "fd {HIGH} leaked into the child: {status}"
        );
    }

    /// A host that is not root cannot read a non-dumpable process's working
    /// directory (EACCES): one of its own account still counts as running
    /// (its scratch directory must stay), one of another account does not.
    /// The host is a thread that dropped to `nobody` (a raw setresuid
    /// changes only the calling thread); the process is `sleep` as `nobody`
    /// from a copy it may execute but not read, which makes it non-dumpable
    /// as pg_walredo's prctl does. Root only.
    #[test]
    fn a_non_dumpable_child_hidden_from_a_host_that_is_not_root_still_runs() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("walredo-undumpable-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let sleep = dir.join("sleep");
        fs::copy("/bin/sleep", &sleep).unwrap();
        fs::set_permissions(&sleep, fs::Permissions::from_mode(0o711)).unwrap();
        let mut child = std::process::Command::new(&sleep)
            .arg("60")
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Wait for the exec (the working directory then names the copy's).
        let exe = dir.join("sleep");
        while fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() != Some(exe.as_path()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (dir2, own) = (dir.clone(), std::process::id() as libc::pid_t);
        let seen = std::thread::spawn(move || {
            // SAFETY: setresuid on this thread only (the raw system call);
            // the thread ends right after.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) };
            assert_eq!(r, 0);
            let hidden = fs::read_link(format!("/proc/{pid}/cwd")).map_err(|e| e.kind());
            (
                hidden,
                still_runs_in(pid, &dir2, NOBODY),
                still_runs_in(pid, &dir2, NOBODY + 1),
                still_runs_in(own, &dir2, NOBODY),
            )
        })
        .join()
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            seen.0,
            Err(std::io::ErrorKind::PermissionDenied),
            "the process is dumpable"
        );
        assert!(seen.1, "a live child of the host's account counted as gone");
        assert!(!seen.2, "another account's process counted as ours");
        assert!(!seen.3, "root's process counted as the host's");
    }
}
