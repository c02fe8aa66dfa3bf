//! Start a program without copying the host: `clone(CLONE_VM)`, as
//! `posix_spawn` does, with the hardening a child needs before exec.
//!
//! `fork` copies the host's page tables, which costs in proportion to the
//! host's memory (tens of milliseconds for a few GB) and stalls a large
//! multi-threaded host. A `CLONE_VM` child shares the host's memory until it
//! execs instead, so it must only touch its own stack and the start-up data
//! built for it, and make raw system calls (glibc's `setuid` family, for
//! one, would signal the host's threads). Unlike `vfork`, the starting thread
//! is not suspended: it waits for the exec with a deadline, so a child
//! stopped before its exec cannot stall it; such a child is killed (through
//! its pidfd) and reaped, and only then is its stack freed.
//!
//! The wait uses no descriptor: `CLONE_CHILD_CLEARTID` makes the kernel
//! zero a word of ours and wake a futex on it when the child leaves our
//! memory (its exec, or its exit), and a step that fails writes which one
//! and its errno into our memory first. A close-on-exec pipe's EOF would
//! do the same, but another thread of the host that forks (no exec) while
//! the pipe exists copies its write end, and then EOF comes only once that
//! copy exits: a start would fail as too slow.
//!
//! Before exec the child: takes its three stdio descriptors; gets its own
//! process group; drops to the children's user; enters its directory; then
//! the hardening every child gets (`crate::process::harden`).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::futex;
use crate::process::harden::{errno, Hardening, Refused};
use crate::process::launch::UserIds;

/// The child's stack; what the steps below need is a few hundred bytes.
const STACK_SIZE: usize = 256 * 1024;

/// What to start, and how.
pub(crate) struct Spec<'a> {
    pub program: &'a Path,
    /// argv[1..].
    pub args: &'a [OsString],
    /// The whole environment, `NAME=value` each (most children get none).
    pub env: &'a [OsString],
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
    /// Which step failed (a `Step`) and its errno, written by the child
    /// before it exits; 0 while none did.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
    user: Option<UserIds>,
    hardening: Hardening,
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

/// Whether processes can be started and reaped through pidfds here
/// (`start`, templates): the host is not emulated, pidfds exist (Linux
/// 5.3) and `waitid` takes one (`P_PIDFD`, Linux 5.4; asked of a pidfd of
/// the host itself, which is nobody's child of ours: ECHILD, not EINVAL).
pub(crate) fn pidfds_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        if host_is_emulated() {
            return false;
        }
        // SAFETY: getpid has no preconditions.
        let Some(own) = crate::process::killer::open_pidfd(unsafe { libc::getpid() } as u32) else {
            return false;
        };
        reap_pidfd(&own, false);
        io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
    })
}

/// Whether a template can work here (see `pidfds_usable`).
pub(crate) fn template_possible() -> bool {
    pidfds_usable()
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
    let env = spec
        .env
        .iter()
        .map(|e| cstring(e.as_bytes()))
        .collect::<io::Result<Vec<CString>>>()?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
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
        failed_step: AtomicI32::new(0),
        failed_errno: AtomicI32::new(0),
        user: spec.user,
        hardening: Hardening::new(spec.memory_limit),
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // The stack grows down: its top, aligned to 16 bytes.
    let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    let mut pidfd: libc::c_int = -1;
    // Non-zero while the child uses our memory: the kernel zeroes it (and
    // wakes a futex on it) at the child's exec or exit.
    let in_our_memory = AtomicU32::new(1);

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
    // left our memory, below) and runs on its own stack; CLONE_PIDFD writes
    // the pidfd into `pidfd`; CLONE_CHILD_CLEARTID zeroes `in_our_memory`
    // (alive until then too).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_PIDFD | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD,
            &child_args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_void>(),
            in_our_memory.as_ptr(),
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

    let outcome = if wait_until_gone(&in_our_memory, Some(spec.timeout)) {
        match child_args.failed_step.load(Ordering::SeqCst) {
            // It exec'd (or died before it could say why; its first answer
            // will tell).
            0 => Ok(()),
            step => {
                let e =
                    io::Error::from_raw_os_error(child_args.failed_errno.load(Ordering::SeqCst));
                Err(io::Error::new(
                    e.kind(),
                    format!("the new process failed {}: {e}", step_name(step)),
                ))
            }
        }
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the new process did not exec within {:?} (stopped?)",
                spec.timeout
            ),
        ))
    };
    if outcome.is_err() {
        // Dead or stopped before its exec: kill it (a stopped process dies
        // of SIGKILL too), wait until it has left our memory, reap it.
        crate::process::killer::pidfd_signal(&pidfd, libc::SIGKILL);
        wait_until_gone(&in_our_memory, None);
        reap_pidfd(&pidfd, true);
    }
    // The child has exec'd or exited: its stack and arguments may go.
    drop(stack);
    let _ = &child_args;
    outcome.map(|()| Started { pid, pidfd })
}

/// Wait until the kernel has zeroed `word` (`CLONE_CHILD_CLEARTID`: the
/// child has exec'd or exited), at most `timeout` (`None`: as long as it
/// takes). Whether it was zeroed.
fn wait_until_gone(word: &AtomicU32, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let value = word.load(Ordering::SeqCst);
        if value == 0 {
            return true;
        }
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                Some(left)
            }
            None => None,
        };
        futex::wait(word, value, left);
    }
}

/// Reap our child behind `pidfd` (`waitid(P_PIDFD)`: never another
/// process, even once this one's pid is reused), waiting for it to exit if
/// `block`. Its wait status; `None` if it has not exited (not `block`) or
/// is not ours to reap any more (ECHILD: reaped already, by the reaper or by
/// a host that ignores SIGCHLD).
pub(crate) fn reap_pidfd(pidfd: &OwnedFd, block: bool) -> Option<libc::c_int> {
    /// `P_PIDFD` from linux/wait.h (Linux 5.4).
    const P_PIDFD: libc::idtype_t = 3;
    let options = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: siginfo_t is plain old data, filled by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a siginfo_t; the pidfd is open.
        let rc =
            unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, options) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        // SAFETY: waitid filled in a child's state (si_pid 0: none yet).
        let (pid, code, value) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return None;
        }
        // As a wait status (see waitpid(2)).
        return Some(match code {
            libc::CLD_EXITED => (value & 0xff) << 8,
            libc::CLD_DUMPED => (value & 0x7f) | 0x80,
            _ => value & 0x7f,
        });
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
    // Read by the parent once we are gone from its memory (the exit below).
    a.failed_errno.store(errno, Ordering::SeqCst);
    a.failed_step.store(step as i32, Ordering::SeqCst);
    // SAFETY: exiting the child without running anything of the host's.
    unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    127
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
        check(Step::Directory, libc::chdir(a.cwd) == 0)?;
        // After the user switch, which clears the parent-death signal.
        a.hardening.apply().map_err(|(refused, errno)| {
            let step = match refused {
                Refused::DeathSignal => Step::DeathSignal,
                Refused::ParentGone => Step::ParentGone,
                Refused::Signals => Step::Signals,
            };
            (step, errno)
        })?;
        libc::execve(a.path, a.argv, a.envp);
        Err((Step::Exec, errno()))
    }
}
