//! Trust in the scratch root, where the children's scratch directories, the
//! extension's copy and the template live.
//!
//! What the children load (the extension's copy) and start from (the
//! template) lives there, and runs before their sandbox exists, so whoever
//! can write there could run code as the children's user. The root must
//! therefore be ours alone (owned by us, not a symbolic link, writable by
//! nobody else) or it is refused: an error says what to do. It is refused
//! rather than replaced by a private one because a planted root is a sign of
//! an attack that its owner must see, and because a private root per host
//! would lose the template and stale-directory cleanup that a fixed root
//! shares between hosts. Files reused from it are checked again (ours,
//! regular, the extension byte for byte) and replaced when they are not; new
//! names in it are created exclusively, never taken over.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::safe_fs::Dir;
use super::{euid, io_error, spawn_error, unique_suffix};
use crate::error::Result;
use crate::pg::crc32c::crc32c;

/// `uid N (name)`, or `uid N` for an id without a name.
fn describe_uid(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: passwd is plain old data; getpwuid_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is passed.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: on success pw_name points to a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    format!("uid {uid} ({})", name.to_string_lossy())
}

/// Why something found in the scratch root may have been written by someone
/// else: not owned by us, or writable by its group or others.
fn foreign_writer(meta: &fs::Metadata) -> Option<String> {
    if meta.uid() != euid() {
        return Some(format!(
            "is owned by {}, not by us ({})",
            describe_uid(meta.uid()),
            describe_uid(euid())
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by its group or others (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Make the scratch root if it is missing, and accept it only if it is ours
/// alone (see the module notes): a directory, not a symbolic link, owned by
/// us, not writable by group or others. One that is not is left as it is.
pub(super) fn check_scratch_root(root: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o711).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("cannot create directory", root, e)),
    }
    // Looked at and changed through one descriptor, never through a link.
    let dir = match Dir::open(root) {
        Ok(dir) => Ok(dir),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            let meta =
                fs::symlink_metadata(root).map_err(|e| io_error("cannot look at", root, e))?;
            Err(if meta.file_type().is_symlink() {
                "is a symbolic link".to_string()
            } else {
                "is not a directory".to_string()
            })
        }
        Err(e) => return Err(io_error("cannot open", root, e)),
    };
    let why = match &dir {
        Ok(dir) => {
            let meta = dir
                .metadata()
                .map_err(|e| io_error("cannot look at", root, e))?;
            foreign_writer(&meta)
        }
        Err(why) => Some(why.clone()),
    };
    if let Some(why) = why {
        return Err(spawn_error(format!(
            "the scratch directory {path} {why}: whoever can write there could make the \
             wal-redo processes run their code. Remove it, after checking what is in it, so \
             that it is made anew (`rm -rf {path}`), or set scratch_dir to a directory owned \
             by {me}, not writable by group or others, and not a symbolic link",
            path = root.display(),
            me = describe_uid(euid()),
        )));
    }
    // Ours: the children's user needs only to pass through it (to its own
    // directory and the extension's copy). The umask may have narrowed it.
    let dir = dir.map_err(spawn_error)?;
    dir.set_owner_and_mode(None, 0o711)
        .map_err(|e| io_error("cannot set permissions of", root, e))
}

/// A new directory `<prefix><pid>-<n>` in `root`. A name already taken (left
/// by an earlier host process that had our pid) is skipped, never reused.
pub(super) fn new_dir(root: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    for _ in 0..100 {
        let dir = root.join(format!("{prefix}{}", unique_suffix()));
        match fs::DirBuilder::new().mode(mode).create(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("cannot create directory", &dir, e)),
            Ok(()) => {}
        }
        // The umask may have narrowed the mode.
        return fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map(|()| dir.clone())
            .map_err(|e| {
                let _ = fs::remove_dir(&dir);
                io_error("cannot set permissions of", &dir, e)
            });
    }
    Err(spawn_error(format!(
        "cannot find a free name for a new directory in {}: remove what is left in it",
        root.display()
    )))
}

/// Write a new file, which must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let err = |e| io_error("cannot write", path, e);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    io::Write::write_all(&mut file, bytes).map_err(err)?;
    // The umask may have narrowed the mode.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("cannot set permissions of", path, e))
}

/// The content of `path` if only we can have written it: a regular file, not
/// a symbolic link, owned by us and writable by nobody else, of at most `max`
/// bytes. `Ok(None)` when it does not exist; `Err` says what is wrong.
pub(super) fn read_ours(path: &Path, max: u64) -> std::result::Result<Option<Vec<u8>>, String> {
    // O_NOFOLLOW: the file itself, never what a link points to; O_NONBLOCK:
    // a FIFO does not block the open (and is refused below); O_NOCTTY: a
    // terminal never becomes ours.
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err("is a symbolic link".into()),
        Err(e) => return Err(format!("cannot be opened ({e})")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be looked at ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if let Some(why) = foreign_writer(&meta) {
        return Err(why);
    }
    if meta.len() > max {
        return Err(format!("is larger than expected ({} bytes)", meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > max {
        return Err("is larger than expected".into());
    }
    Ok(Some(bytes))
}

/// Remove what is at `path`, a directory or not, never following a link.
pub(super) fn remove_path(path: &Path) {
    let _ = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Copy the extension (`bytes`, read from `src`) into the scratch root, named by its checksum, so the
/// child's user can read it wherever the original lives (e.g. under /root).
/// A file already there under that name is used only if it is ours and the
/// same byte for byte (the name is computable by anyone who can read the
/// original); otherwise a new copy replaces it.
pub(super) fn install_extension_copy(src: &Path, bytes: &[u8], root: &Path) -> Result<PathBuf> {
    let dest = root.join(format!(
        "pg_walredo-{:08x}-{}.so",
        crc32c(bytes),
        bytes.len()
    ));
    match read_ours(&dest, bytes.len() as u64) {
        Ok(Some(found)) if found == bytes => return Ok(dest),
        Ok(None) => {}
        Ok(Some(_)) => log::warn!(
            "{} differs from {}: replacing it",
            dest.display(),
            src.display()
        ),
        Err(why) => log::warn!("{} {why}: replacing it", dest.display()),
    }
    let tmp = root.join(format!("pg_walredo.tmp-{}", unique_suffix()));
    write_new(&tmp, bytes, 0o644)?;
    // Atomic, and replaces a link itself, never its target.
    fs::rename(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("cannot rename to", &dest, e)
    })?;
    Ok(dest)
}

/// Scratch directories of host processes that died without cleaning up, and
/// the System V segments of their wal-redo processes (run as `child_uid`);
/// also what such a host left half made (a staged template, an extension
/// copy before its rename).
pub(super) fn remove_stale_scratch_dirs(root: &Path, child_uid: u32) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = stale_owner_pid(&name) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive && crate::process::sysv::remove_dead_childs_segment(&entry.path(), child_uid) {
            remove_path(&entry.path());
        }
    }
}

/// The host pid in the name of something a host makes in the scratch root
/// for itself (`unique_suffix`: `<pid>-<n>` after the prefix): its
/// processes' directories, their trash, initdb runs, and the `.tmp-` names
/// of a template or extension copy before they are renamed into place.
fn stale_owner_pid(name: &OsStr) -> Option<libc::pid_t> {
    let name = name.to_str()?;
    let rest = name
        .strip_prefix("proc-")
        .or_else(|| name.strip_prefix("trash-"))
        .or_else(|| name.strip_prefix("initdb-"))
        .or_else(|| name.split_once(".tmp-").map(|(_, rest)| rest))?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_every_name_a_host_makes() {
        let owner = |n: &str| stale_owner_pid(OsStr::new(n));
        assert_eq!(owner("proc-123-4"), Some(123));
        assert_eq!(owner("trash-123-4"), Some(123));
        assert_eq!(owner("initdb-123-4"), Some(123));
        assert_eq!(owner("template-pg15-checksums-off.tmp-123-4"), Some(123));
        assert_eq!(owner("pg_walredo.tmp-123-4"), Some(123));
        // Shared by every host: never anybody's to remove.
        assert_eq!(owner("template-pg15-checksums-off"), None);
        assert_eq!(owner("pg_walredo-0df90bfb-174472.so"), None);
    }

    /// A host killed while it staged a template or copied the extension
    /// leaves both half made: the next pool removes them, and leaves a live
    /// host's alone.
    #[test]
    fn a_dead_hosts_half_made_files_are_removed() {
        let root = std::env::temp_dir().join(format!("walredo-stale-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        // A pid that is dead: a child of ours, reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        let staged = |pid: u32| root.join(format!("template-pg15-checksums-off.tmp-{pid}-0"));
        let copy = |pid: u32| root.join(format!("pg_walredo.tmp-{pid}-1"));
        for pid in [dead, live] {
            fs::create_dir_all(staged(pid).join("global")).unwrap();
            fs::write(copy(pid), b"half a copy").unwrap();
        }
        remove_stale_scratch_dirs(&root, euid());
        let dead_left = staged(dead).exists() || copy(dead).exists();
        let live_kept = staged(live).exists() && copy(live).exists();
        fs::remove_dir_all(&root).unwrap();
        assert!(!dead_left, "the dead host's half-made files were left");
        assert!(live_kept, "a live host's files were removed");
    }
}
