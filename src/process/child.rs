//! One wal-redo child ([`Process`]): its start (forked by the template, or
//! started directly), its pipes, its life and its end. Talking to it is in
//! `exchange`, its stderr in `stderr`; the design is in docs/processes.md.
//!
//! - We keep a read end of its stdin pipe open: the pipe always has a
//!   reader, so a write to a dead child's stdin never raises SIGPIPE in the
//!   host, whatever its signal disposition (it fills the pipe; the death
//!   shows as EOF on stdout). A pipe, not a socketpair with `MSG_NOSIGNAL`:
//!   a socket costs about 1.5 us more per round trip.
//! - EOF says the child died only if no other process holds the write end
//!   of its stdout, and a fork of the host made by another thread (no exec)
//!   holds every descriptor the host had then: a template-forked child's
//!   ends never exist in the host (the template makes its pipes); a directly
//!   started child's do, during its start, so its death is also watched
//!   through its pidfd (`ends_were_ours`).
//! - The child is the host's own, also when the template forked it
//!   (`CLONE_PARENT`): reaped here, through its pidfd. It gets its own
//!   process group, a cleared environment, no file descriptor of ours but
//!   its three pipes (`harden`). Dropping a `Process` kills it (SIGKILL to
//!   its group) and reaps it, blocking until it is gone, so no zombie is
//!   ever left behind; then its System V segment and scratch directory go.

mod exchange;
mod stderr;

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::SpawnMode;
use crate::error::{Error, Result};
use crate::process::harden::{harden_child, Hardening};
use crate::process::killer::{open_pidfd, pidfd_signal, Killer};
use crate::process::launch::Launcher;
use crate::process::start;
use crate::process::sweeper;
use crate::process::sysv::remove_sysv_segment;
use crate::process::template::Forked;
use crate::process::threads::{current_cpu, set_affinity};
use crate::process::watchdog::Watch;
use crate::PAGE_SIZE;

pub use exchange::{Failure, Interrupted};

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
    /// Answers read in blocking reads since stderr was last read, and
    /// whether that read found anything (see `read_blocking`).
    answers_since_stderr: u32,
    stderr_spoke: bool,
    scratch: PathBuf,
    /// The user id the child runs as (the owner its SysV segment must have).
    uid: u32,
    exited: bool,
    /// How it ended, once reaped by us.
    exit_status: Option<ExitStatus>,
    /// The CPU it is pinned to, when it follows its driver (see `follow_cpu`).
    pinned_cpu: Option<usize>,
    /// Whether its driver keeps being moved off that CPU as it waits.
    wait_moves: exchange::WaitMoves,
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
            answers_since_stderr: 0,
            stderr_spoke: false,
            scratch,
            uid: launcher.child_uid(),
            exited: false,
            exit_status: None,
            pinned_cpu: None,
            wait_moves: Default::default(),
            // The watchdog gets its own copy of the child's one pidfd.
            watch: pidfd
                .as_ref()
                .filter(|_| launcher.blocking_wait() && !ends_were_ours)
                .and_then(|fd| fd.try_clone().ok())
                .and_then(Watch::new),
            killer: Arc::new(Killer::new(pidfd)),
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
        let failed = |e: io::Error| {
            // Not exec'd within the start timeout (the requests' deadline,
            // cut short on a busy host): a deadline error, as for the
            // template (`template::start_timeout`), not a broken install.
            if e.kind() == io::ErrorKind::TimedOut {
                return Error::Timeout {
                    after_ms: launcher.start_timeout().as_millis() as u64,
                    stderr: String::new(),
                };
            }
            Error::SpawnFailed(format!("cannot start postgres --single: {e}"))
        };
        if start::pidfds_usable() {
            let (program, args) = launcher.direct_argv(scratch);
            let env = launcher.direct_env();
            let started = start::start(&start::Spec {
                program: &program,
                args: &args,
                env: &env,
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
        let hardening = Hardening::new(launcher.memory_limit());
        // SAFETY: the closure runs between fork and exec; harden_child calls
        // only async-signal-safe functions, allocates nothing and takes no
        // lock.
        unsafe {
            cmd.pre_exec(move || harden_child(&hardening));
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

impl Drop for Process {
    fn drop(&mut self) {
        // What it said since stderr was last read (`read_blocking`).
        if self.answers_since_stderr > 0 {
            let _ = self.read_stderr();
        }
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
