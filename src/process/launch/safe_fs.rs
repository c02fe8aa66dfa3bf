//! File operations of a root host on trees that its children's user owns or
//! will own (scratch directories, initdb's output), made through directory
//! descriptors so that no path that user can change is ever followed.
//!
//! The rule: a directory is built while only we can write it (each entry
//! created exclusively, through the descriptor of its parent, its owner set
//! through its own descriptor) and handed over last; what that user wrote is
//! read one component at a time with `O_NOFOLLOW`, and only if it is a
//! regular file of theirs with no other name (a hard link to someone else's
//! file is refused by its owner and link count).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::account::UserIds;

/// An open directory, reached without following a symbolic link at its
/// last component (the components before it are the caller's to trust).
pub(crate) struct Dir {
    file: File,
    path: PathBuf,
}

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Dir {
    /// Open the directory at `path`, which must not be a symbolic link.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        // SAFETY: c is a NUL-terminated path that outlives the call.
        let fd = cvt(unsafe { libc::open(c.as_ptr(), DIR_FLAGS) })?;
        Ok(Dir {
            // SAFETY: fd is a new descriptor that nothing else owns.
            file: unsafe { File::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// The subdirectory `name`, never what a link of that name points to.
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        let c = c_name(name)?;
        // SAFETY: the descriptor is open, c is NUL-terminated; both outlive
        // the call.
        let fd = cvt(unsafe { libc::openat(self.file.as_raw_fd(), c.as_ptr(), DIR_FLAGS) })
            .map_err(|e| self.name_link(name, e))?;
        Ok(Dir {
            // SAFETY: fd is a new descriptor that nothing else owns.
            file: unsafe { File::from_raw_fd(fd) },
            path: self.path.join(name),
        })
    }

    /// The directory that holds `rel` (plain names joined by `/`, walked one
    /// at a time with `open_dir`), and the last name.
    pub fn parent_of<'a>(&self, rel: &'a str) -> io::Result<(Dir, &'a str)> {
        let (subdirs, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let mut dir = Dir {
            file: self.file.try_clone()?,
            path: self.path.clone(),
        };
        for sub in subdirs.split('/').filter(|s| !s.is_empty()) {
            dir = dir.open_dir(sub)?;
        }
        Ok((dir, name))
    }

    /// What this directory is (its owner, mode), through its descriptor.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// Make the new subdirectory `name` (it must not exist) with `mode`,
    /// owned by `owner` when given; the umask does not narrow the mode.
    pub fn make_dir(&self, name: &str, mode: u32, owner: Option<UserIds>) -> io::Result<Dir> {
        let c = c_name(name)?;
        // SAFETY: as in open_dir.
        cvt(unsafe { libc::mkdirat(self.file.as_raw_fd(), c.as_ptr(), 0o700) })?;
        let dir = self.open_dir(name)?;
        dir.set_owner_and_mode(owner, mode)?;
        Ok(dir)
    }

    /// Write the new file `name` (it must not exist) with `bytes` and
    /// `mode`, owned by `owner` when given.
    pub fn write_new(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<UserIds>,
    ) -> io::Result<()> {
        let c = c_name(name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as in open_dir; the mode is an int as openat expects.
        let fd = cvt(unsafe { libc::openat(self.file.as_raw_fd(), c.as_ptr(), flags, 0o600) })?;
        // SAFETY: fd is a new descriptor that nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes)?;
        fchown_fchmod(&file, owner, mode)
    }

    /// Give this directory itself to `owner` (if given) with `mode`: for a
    /// tree built inside it, the last step.
    pub fn set_owner_and_mode(&self, owner: Option<UserIds>, mode: u32) -> io::Result<()> {
        fchown_fchmod(&self.file, owner, mode)
    }

    /// The content of the file `name` if it is a regular file owned by
    /// `owner`, with no other name, of at most `max` bytes. The error says
    /// what is wrong (`NotFound` when there is nothing of that name).
    pub fn read_file_of(&self, name: &str, owner: u32, max: u64) -> io::Result<Vec<u8>> {
        let c = c_name(name)?;
        let refuse = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} {why}", self.path.join(name).display()),
            )
        };
        // O_NONBLOCK: a FIFO does not block the open (and is refused below);
        // O_NOCTTY: a terminal never becomes ours.
        let flags =
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: as in open_dir.
        let fd = cvt(unsafe { libc::openat(self.file.as_raw_fd(), c.as_ptr(), flags) })
            .map_err(|e| self.name_link(name, e))?;
        // SAFETY: fd is a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(refuse("is not a regular file".into()));
        }
        if meta.uid() != owner {
            return Err(refuse(format!(
                "is owned by uid {}, not {owner}",
                meta.uid()
            )));
        }
        if meta.nlink() != 1 {
            return Err(refuse(format!("has {} names (hard links)", meta.nlink())));
        }
        if meta.len() > max {
            return Err(refuse(format!(
                "is larger than expected ({} bytes)",
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        file.take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(refuse("is larger than expected".into()));
        }
        Ok(bytes)
    }
}

impl Dir {
    /// `e`, said plainly when it is O_NOFOLLOW's refusal of a link (ELOOP,
    /// or ENOTDIR with O_DIRECTORY).
    fn name_link(&self, name: &str, e: io::Error) -> io::Error {
        if !matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
            return e;
        }
        let Ok(c) = c_name(name) else {
            return e;
        };
        // SAFETY: stat is plain old data that fstatat fills in.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open, c is NUL-terminated and st is
        // valid for writing; all outlive the call.
        let rc = unsafe {
            libc::fstatat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        let why = match st.st_mode & libc::S_IFMT {
            _ if rc != 0 => return e,
            libc::S_IFLNK => "is a symbolic link",
            libc::S_IFDIR => return e,
            _ => "is not a directory",
        };
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} {why}", self.path.join(name).display()),
        )
    }
}

fn fchown_fchmod(file: &File, owner: Option<UserIds>, mode: u32) -> io::Result<()> {
    let fd = file.as_raw_fd();
    if let Some(ids) = owner {
        // SAFETY: fd is open for the call.
        cvt(unsafe { libc::fchown(fd, ids.uid, ids.gid) })?;
    }
    // After the chown, which clears set-id bits; the umask may have narrowed
    // the mode of the create.
    // SAFETY: fd is open for the call.
    cvt(unsafe { libc::fchmod(fd, mode) })?;
    Ok(())
}
