//! The template process: a `postgres --single` with `pg_walredo.template =
//! on` that has done PostgreSQL's start-up up to shared memory once, and
//! forks a wal-redo process on demand (see pg_walredo/template.c). A start
//! then costs a fork of a small process and the rest of PostgreSQL's
//! start-up, whatever the size of the host, which is never forked: the
//! template itself is started by `crate::process::start` (`CLONE_VM`).
//!
//! The host asks over a `SOCK_SEQPACKET` socket (the template's stdin): the
//! new scratch directory's path. The answer is the child's pid with a pidfd
//! of it and the host's ends of the child's pipes, which the template made:
//! the child's own ends never exist in the host, so a fork of the host made
//! by another thread (no exec) cannot hold them and hide the child's death
//! (EOF on its stdout). The child is the host's own (`CLONE_PARENT`, see
//! pg_walredo/template.c): the host reaps it and learns how it ended, and it
//! neither dies with the template nor becomes an orphan when the template
//! dies first.
//!
//! Life: started lazily by the first process a launcher starts (on the
//! pool's spawner thread, so its `PR_SET_PDEATHSIG` is tied to the pool's
//! life like a directly started process's, and so is its children's, whose
//! parent is that thread too), and replaced, when it has died, at the next
//! start. A template that dies meanwhile is reaped at once by the reaper
//! thread (`crate::process::reaper`), not left a zombie until then.
//! Dropping it kills and reaps it and removes its scratch directory.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::launch::Launcher;
use crate::process::reaper;
use crate::process::start::{self, Spec};

pub(crate) struct Template {
    /// The host process that started it: a forked copy of the host has the
    /// struct too, but the template is not its own to use or kill.
    owner: libc::pid_t,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    control: OwnedFd,
    /// Its stderr (non-blocking): what it says when it cannot start.
    stderr: OwnedFd,
    scratch: PathBuf,
}

/// A wal-redo process of ours known by its pidfd: forked by the template
/// (as our child), or started directly by `start::start` (`Forked::ours`).
pub(crate) struct Forked {
    pub pid: u32,
    pub pidfd: OwnedFd,
    /// How it ended, once reaped.
    status: Option<ExitStatus>,
}

/// Our ends of a forked process's pipes, made by the template.
pub(crate) struct Pipes {
    /// Its stdin, to write; and a copy of its read end that we never read
    /// (see `crate::process::child`: no SIGPIPE).
    pub stdin: OwnedFd,
    pub stdin_reader: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn spawn_error(msg: impl Into<String>) -> Error {
    Error::SpawnFailed(msg.into())
}

/// A start that the deadline (`timeout`, which covers starting a process
/// too) ended: a timeout, as for a process that hangs, not a failure to
/// start (nothing is wrong with the installation).
fn start_timeout(timeout: Duration) -> Error {
    Error::Timeout {
        after_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        stderr: String::new(),
    }
}

fn os_error(what: &str) -> Error {
    spawn_error(format!("{what}: {}", io::Error::last_os_error()))
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass a new descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Template {
    /// Start a template for `launcher`'s processes.
    pub fn start(launcher: &Launcher) -> Result<Template> {
        let scratch = launcher.make_scratch_dir()?;
        match Self::start_in(launcher, &scratch) {
            Ok(t) => Ok(t),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    fn start_in(launcher: &Launcher, scratch: &Path) -> Result<Template> {
        let (program, args) = launcher
            .template_argv(scratch)
            .ok_or_else(|| Error::Internal("no template for a custom child program".into()))?;
        let mut pair = [0 as RawFd; 2];
        // SAFETY: pair is a valid array of two ints for socketpair to fill.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        } != 0
        {
            return Err(os_error("socketpair"));
        }
        let (control, theirs) = (owned(pair[0]), owned(pair[1]));
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(os_error("pipe"));
        }
        let (stderr, their_stderr) = (owned(fds[0]), owned(fds[1]));
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| spawn_error(format!("cannot open /dev/null: {e}")))?;
        let spec = Spec {
            program: &program,
            args: &args,
            env: &[],
            cwd: scratch,
            stdio: [
                theirs.as_raw_fd(),
                null.as_raw_fd(),
                their_stderr.as_raw_fd(),
            ],
            user: launcher.user(),
            memory_limit: launcher.memory_limit(),
            timeout: launcher.start_timeout(),
        };
        let started = start::start(&spec).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                return start_timeout(spec.timeout);
            }
            spawn_error(format!(
                "cannot start the template process {}: {e}",
                program.display()
            ))
        })?;
        log::debug!(
            "started template process {} in {}",
            started.pid,
            scratch.display()
        );
        // Reaped as soon as it dies, even while nobody asks it for anything.
        reaper::reap_when_dead(started.pid, &started.pidfd);
        Ok(Template {
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
            pid: started.pid,
            pidfd: started.pidfd,
            control,
            stderr,
            scratch: scratch.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Whether it is still running (not exited, reaped or not).
    pub fn is_alive(&self) -> bool {
        !exited(&self.pidfd, Duration::ZERO)
    }

    /// Whether this process started it (and not a host it was forked from).
    pub fn is_ours(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.owner == unsafe { libc::getpid() }
    }

    /// Fork a wal-redo process on `scratch` (a new scratch directory). An
    /// error means the template is unusable (dead, hung or confused): drop
    /// it.
    pub fn fork(&self, scratch: &Path, timeout: Duration) -> Result<(Forked, Pipes)> {
        self.send(scratch)
            .map_err(|e| self.failed(&format!("cannot ask the template for a process: {e}")))?;
        let (pid, fds) = self.receive(timeout).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                return start_timeout(timeout);
            }
            self.failed(&format!("no process from the template: {e}"))
        })?;
        if pid <= 0 {
            return Err(spawn_error(format!(
                "the template could not fork a process: {}",
                io::Error::from_raw_os_error(-pid)
            )));
        }
        let Ok([pidfd, stdin, stdin_reader, stdout, stderr]) = <[OwnedFd; 5]>::try_from(fds) else {
            return Err(self.failed("the template's answer has not the five descriptors"));
        };
        Ok((
            Forked {
                pid: pid as u32,
                pidfd,
                status: None,
            },
            Pipes {
                stdin,
                stdin_reader,
                stdout,
                stderr,
            },
        ))
    }

    fn send(&self, scratch: &Path) -> io::Result<()> {
        let path = scratch.as_os_str().as_bytes();
        loop {
            // SAFETY: sending the bytes of a live slice.
            let n = unsafe {
                libc::send(
                    self.control.as_raw_fd(),
                    path.as_ptr().cast(),
                    path.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn receive(&self, timeout: Duration) -> io::Result<(i32, Vec<OwnedFd>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
            }
            // Its pidfd too: a fork of the host (another thread's, no exec)
            // may hold the template's end of the socket, and then its death
            // would not show as EOF here.
            let mut pfds =
                [self.control.as_raw_fd(), self.pidfd.as_raw_fd()].map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: a valid array of two pollfds.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                continue;
            }
            if pfds[0].revents == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the template exited",
                ));
            }
            let mut pid: i32 = 0;
            let mut iov = libc::iovec {
                iov_base: (&mut pid as *mut i32).cast(),
                iov_len: 4,
            };
            let mut buf = [0u64; 8];
            let mut fds = Vec::new();
            // SAFETY: msghdr is plain old data; recvmsg fills at most the
            // buffers given; CMSG_* walk what it filled in.
            let got = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = buf.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&buf);
                let got = libc::recvmsg(
                    self.control.as_raw_fd(),
                    &mut msg,
                    libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
                );
                if got > 0 {
                    let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                    while !cmsg.is_null() {
                        if (*cmsg).cmsg_level == libc::SOL_SOCKET
                            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                        {
                            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                            let len = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                            for i in 0..len / std::mem::size_of::<RawFd>() {
                                fds.push(owned(data.add(i).read_unaligned()));
                            }
                        }
                        cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                    }
                }
                got
            };
            if got < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the template exited",
                ));
            }
            if got != 4 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a short answer"));
            }
            return Ok((pid, fds));
        }
    }

    /// Log what the template wrote to stderr since the last look (nothing,
    /// when healthy), so that its pipe never fills and stalls it.
    pub fn forward_stderr(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a live buffer of its size.
            let n =
                unsafe { libc::read(self.stderr.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            for line in String::from_utf8_lossy(&buf[..n as usize]).lines() {
                log::warn!(target: "walredo::process", "template process {}: {line}", self.pid);
            }
        }
    }

    /// An error for a failed fork request, with what the template said.
    fn failed(&self, what: &str) -> Error {
        // A template that exits (a bad setting, a missing library) has
        // written why by the time its socket closes.
        let mut said = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a live buffer of its size.
            let n =
                unsafe { libc::read(self.stderr.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || said.len() > 64 * 1024 {
                break;
            }
            said.extend_from_slice(&buf[..n as usize]);
        }
        let said = String::from_utf8_lossy(&said);
        let said = said.trim();
        if said.is_empty() {
            spawn_error(format!("{what} (template process {})", self.pid))
        } else {
            spawn_error(format!(
                "{what} (template process {}); its stderr:\n{said}",
                self.pid
            ))
        }
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        if !self.is_ours() {
            // The host we were forked from still uses it.
            return;
        }
        crate::process::killer::pidfd_signal(&self.pidfd, libc::SIGKILL);
        // The reaper may have reaped it already: then ECHILD at once.
        start::reap_pidfd(&self.pidfd, true);
        reaper::forget(self.pid);
        if let Err(e) = std::fs::remove_dir_all(&self.scratch) {
            log::warn!(
                "cannot remove the template's scratch directory {}: {e}",
                self.scratch.display()
            );
        }
    }
}

/// Whether the process behind `pidfd` has exited, waiting up to `wait`.
fn exited(pidfd: &OwnedFd, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return n != 0;
    }
}

impl Forked {
    /// A process the host started itself (`start::start`): ours to reap
    /// through its pidfd as well.
    pub fn ours(started: start::Started) -> Forked {
        Forked {
            pid: started.pid as u32,
            pidfd: started.pidfd,
            status: None,
        }
    }

    /// Its status if it has exited (and reaped it then), without waiting.
    /// ECHILD (the host reaped it behind our back) is an error, as for
    /// `std::process::Child`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        if !exited(&self.pidfd, Duration::ZERO) {
            return Ok(None);
        }
        self.wait().map(Some)
    }

    /// Wait until it has exited, reap it; its status.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match start::reap_pidfd(&self.pidfd, true) {
            Some(raw) => {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                Ok(status)
            }
            None => Err(io::Error::from_raw_os_error(libc::ECHILD)),
        }
    }
}
