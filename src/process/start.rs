//! Start a program without copying the host: `clone(CLONE_VM)`, as
//! `posix_spawn` does, with the hardening a child needs before exec.
//!
//! `fork` copies the host's page tables, which costs in proportion to the
//! host's memory (tens of milliseconds for a few GB) and stalls a large
//! multi-threaded host. A `CLONE_VM` child shares the host's memory until it
//! execs instead, so it must only touch its own stack and the start-up data
//! built for it, and make raw system calls (glibc's `setuid` family, for
//! one, would signal the host's threads). Unlike `vfork`, the starting thread
//! is not suspended: it waits on a close-on-exec pipe for the exec, with a
//! deadline, so a child stopped before its exec cannot stall it; such a child
//! is killed (through its pidfd) and reaped, and only then is its stack freed.
//!
//! Before exec the child: takes its three stdio descriptors; gets its own
//! process group; drops to the children's user; dies with the thread that
//! started it (`PR_SET_PDEATHSIG`, set after the user switch, which clears
//! it); lowers its resource limits; marks every other descriptor
//! close-on-exec; resets every signal to its default action and unblocks all.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::launch::UserIds;

/// The child's stack; what the steps below need is a few hundred bytes.
const STACK_SIZE: usize = 256 * 1024;

/// What to start, and how.
pub(crate) struct Spec<'a> {
    pub program: &'a Path,
    /// argv[1..].
    pub args: &'a [OsString],
    pub cwd: &'a Path,
    pub stdio: [RawFd; 3],
    pub user: Option<UserIds>,
    pub memory_limit: u64,
    /// How long the exec may take.
    pub timeout: Duration,
}

/// A started child: ours to reap.
pub(crate) struct Started {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

/// Everything the child reads, built before the clone.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [libc::c_int; 3],
    report: libc::c_int,
    user: Option<UserIds>,
    parent: libc::pid_t,
    memory_limit: u64,
}

/// Which step failed, reported to the parent with the errno.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Stdio = 1,
    Group,
    User,
    DeathSignal,
    ParentGone,
    Directory,
    Signals,
    Exec,
}

fn step_name(step: i32) -> &'static str {
    match step {
        1 => "taking its stdio",
        2 => "setting its process group",
        3 => "switching to its user",
        4 => "setting its parent-death signal",
        5 => "checking its parent (already gone)",
        6 => "entering its directory",
        7 => "unblocking its signals",
        _ => "exec",
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// Whether the host runs under valgrind, which knows `CLONE_VM` only for
/// threads (and ends the whole process on any other use) and has no pidfd:
/// launchers then start every process directly.
pub(crate) fn host_is_emulated() -> bool {
    static EMULATED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EMULATED.get_or_init(|| {
        std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("/vgpreload_"))
    })
}

/// Whether a template can work here: pidfds exist (for processes that are
/// not the host's children) and the host is not emulated.
pub(crate) fn template_possible() -> bool {
    // SAFETY: getpid has no preconditions.
    !host_is_emulated() && crate::process::open_pidfd(unsafe { libc::getpid() } as u32).is_some()
}

/// Start `spec.program` and wait until it has exec'd (or failed to).
/// Unsupported where the host is emulated (`host_is_emulated`).
pub(crate) fn start(spec: &Spec<'_>) -> io::Result<Started> {
    if host_is_emulated() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "clone(CLONE_VM) under valgrind",
        ));
    }
    let path = cstring(spec.program.as_os_str().as_bytes())?;
    let mut args = vec![path.clone()];
    for a in spec.args {
        args.push(cstring(a.as_bytes())?);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let cwd = cstring(spec.cwd.as_os_str().as_bytes())?;

    // Copies of the stdio descriptors above 2, so that taking them in the
    // child cannot overwrite one with another (a host may have closed its
    // own stdio).
    let mut stdio = Vec::with_capacity(3);
    for fd in spec.stdio {
        // SAFETY: F_DUPFD_CLOEXEC of a descriptor the caller keeps open.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns.
        stdio.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let (report_r, report_w) = report_pipe()?;

    let child_args = ChildArgs {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdio: [
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
        ],
        report: report_w.as_raw_fd(),
        user: spec.user,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        memory_limit: spec.memory_limit,
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down: its top, aligned to 16 bytes.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    let mut pidfd: libc::c_int = -1;

    // Every signal blocked around the clone, so that none of the host's
    // handlers can run in the child (which shares the host's memory)
    // before it has reset them to their defaults.
    // SAFETY: sigset_t is plain old data filled by sigfillset; the old mask
    // is restored below.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: child_main only reads child_args (alive until the child has
    // exec'd or is reaped, below) and runs on its own stack; CLONE_PIDFD
    // writes the pidfd into `pidfd`.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD,
            &child_args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    if pid < 0 {
        // Refused by an emulated host (valgrind knows CLONE_VM only for
        // threads): the caller may fork instead.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("clone(CLONE_VM): {clone_error}"),
        ));
    }
    // SAFETY: CLONE_PIDFD made a new descriptor nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(report_w);

    let outcome = wait_for_exec(&report_r, spec.timeout);
    if outcome.is_err() {
        // Dead or stopped before its exec: kill it (a stopped process dies
        // of SIGKILL too) and reap it; only then may its stack go.
        crate::process::pidfd_signal(&pidfd, libc::SIGKILL);
        reap(pid);
    }
    // The child has exec'd or is reaped: its stack and arguments may go.
    drop(stack);
    let _ = &child_args;
    outcome.map(|()| Started { pid, pidfd })
}

/// Wait until the report pipe reaches EOF (the exec closed it) or says
/// which step failed.
fn wait_for_exec(report: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the new process did not exec within {timeout:?} (stopped?)"),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: report.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0i32; 2];
        // SAFETY: reading into a live buffer of its size.
        let got = unsafe { libc::read(report.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if got == 8 {
            let e = io::Error::from_raw_os_error(buf[1]);
            return Err(io::Error::new(
                e.kind(),
                format!("the new process failed {}: {e}", step_name(buf[0])),
            ));
        }
        // EOF: it exec'd (or died before it could say why; its first
        // answer will tell).
        return Ok(());
    }
}

fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reap our child `pid`; ECHILD (the host reaped it) ends the wait too.
pub(crate) fn reap(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: a valid pointer to an int for the status.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Some(status);
        }
        if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// The child, between clone and exec. Shares the host's memory: reads only
/// its `ChildArgs`, writes only its own stack (and errno, which is the
/// starting thread's: that thread is in `poll` meanwhile, and reads errno
/// only when its own call failed), makes only raw system calls.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the parent keeps the ChildArgs alive until we exec or are
    // reaped.
    let a = unsafe { &*(arg as *const ChildArgs) };
    let (step, errno) = match child_steps(a) {
        Ok(()) => (Step::Exec, 0),
        Err(failed) => failed,
    };
    let report = [step as i32, errno];
    // SAFETY: writing 8 bytes of a live array to our report pipe, then
    // exiting the child without running anything of the host's.
    unsafe {
        libc::write(a.report, report.as_ptr().cast(), 8);
        libc::syscall(libc::SYS_exit_group, 127);
    }
    127
}

fn errno() -> i32 {
    // SAFETY: errno of this thread (see child_main).
    unsafe { *libc::__errno_location() }
}

fn check(step: Step, ok: bool) -> Result<(), (Step, i32)> {
    if ok {
        Ok(())
    } else {
        Err((step, errno()))
    }
}

fn child_steps(a: &ChildArgs) -> Result<(), (Step, i32)> {
    // SAFETY: every call below is a thin wrapper of one system call (no
    // lock, no allocation, no thread-wide state of glibc's), with valid
    // arguments; see child_main.
    unsafe {
        // Signals first: while every signal is still blocked, no handler
        // of the host's may remain (the table is the child's own copy).
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            // glibc's own signals (SIGCANCEL, SIGSETXID) are refused: fine.
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        for (i, &fd) in a.stdio.iter().enumerate() {
            check(
                Step::Stdio,
                libc::dup2(fd, i as libc::c_int) == i as libc::c_int,
            )?;
        }
        check(Step::Group, libc::setpgid(0, 0) == 0)?;
        if let Some(ids) = a.user {
            check(
                Step::User,
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0,
            )?;
            check(
                Step::User,
                libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) == 0,
            )?;
            check(
                Step::User,
                libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) == 0,
            )?;
        }
        // After the user switch, which clears it.
        check(
            Step::DeathSignal,
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == 0,
        )?;
        if libc::getppid() != a.parent {
            return Err((Step::ParentGone, libc::ESRCH));
        }
        // Before RLIMIT_NOFILE is lowered: nothing of the host's beyond it.
        let marked = libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            super::CLOSE_RANGE_CLOEXEC,
        ) == 0;
        if !marked {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let bound = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 20) as libc::c_int
            } else {
                65536
            };
            for fd in 3..bound {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        super::set_child_limits(a.memory_limit);
        check(Step::Directory, libc::chdir(a.cwd) == 0)?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(
            Step::Signals,
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &none as *const libc::sigset_t,
                std::ptr::null_mut::<libc::sigset_t>(),
                8usize,
            ) == 0,
        )?;
        libc::execve(a.path, a.argv, a.envp);
        Err((Step::Exec, errno()))
    }
}
