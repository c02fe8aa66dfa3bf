//! The account a root host's wal-redo processes run as: `walredo` unless
//! `run_as_user` names another, made on first need when missing. Never the
//! account of the machine's PostgreSQL server: where the sandbox has no
//! Landlock, a hijacked process reaches what its account can
//! (docs/sandbox.md, "The account").

use std::ffi::CString;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A user id and group id to run children as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

/// The account a root host's children run as unless `run_as_user` names
/// another: one of their own, never the account of the machine's PostgreSQL
/// server (a hijacked child would act as that server wherever its sandbox
/// falls short). Made on first need when missing (`ensure_system_account`).
pub const CHILD_ACCOUNT: &str = "walredo";

/// The ids of `user` when the caller is root (children must not run as root),
/// `None` otherwise. The default account is created if it is missing; any
/// other must exist.
pub fn unprivileged_user(user: &str) -> Result<Option<UserIds>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let ids = match lookup_user(user) {
        Err(_) if user == CHILD_ACCOUNT => {
            ensure_system_account(user)?;
            lookup_user(user)?
        }
        found => found?,
    };
    if ids.uid == 0 {
        return Err(Error::InvalidArgument(format!(
            "run_as_user {user:?} is root; PostgreSQL refuses to run as root"
        )));
    }
    Ok(Some(ids))
}

/// The command that makes `name` a system account of its own: its own
/// group, no login shell, no home (a home nobody can write: /nonexistent).
fn useradd_args(name: &str) -> [&str; 8] {
    [
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
}

/// Make `name` a system account (`useradd_args`) unless it exists; needs
/// root. Two hosts may race: the loser's useradd fails, the account is
/// there all the same.
#[doc(hidden)]
pub fn ensure_system_account(name: &str) -> Result<()> {
    if lookup_user(name).is_ok() {
        return Ok(());
    }
    let command = format!("useradd {}", useradd_args(name).join(" "));
    let out = Command::new("/usr/sbin/useradd")
        .args(useradd_args(name))
        .env_clear()
        .stdin(Stdio::null())
        .output();
    if lookup_user(name).is_ok() {
        log::info!("created the system account {name:?} for wal-redo processes");
        return Ok(());
    }
    let why = match out {
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    Err(spawn_error(format!(
        "user {name:?} does not exist and could not be created ({why}); wal-redo processes \
         cannot run as root: create it with `{command}` (`make install` does), or set \
         run_as_user to another unprivileged account that no server uses"
    )))
}

fn lookup_user(user: &str) -> Result<UserIds> {
    let name = CString::new(user)
        .map_err(|_| Error::InvalidArgument(format!("run_as_user {user:?} contains a NUL byte")))?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: passwd is plain old data; getpwnam_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(spawn_error(format!(
            "user {user:?} does not exist; wal-redo processes cannot run as root: create it \
             with `useradd {}`, or set run_as_user",
            useradd_args(user).join(" ")
        )));
    }
    Ok(UserIds {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

fn spawn_error(msg: impl Into<String>) -> Error {
    Error::SpawnFailed(msg.into())
}
