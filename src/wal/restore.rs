//! A `restore_command`, run as PostgreSQL runs it (`shell_restore.c`,
//! `RestoreArchivedFile`): a shell command that copies one archived file,
//! `%f`, to the path `%p`, for any archive a backup tool keeps (pgBackRest,
//! WAL-G, Barman, a `cp` or `gunzip` of a directory). A segment the WAL
//! sources need and no directory has is fetched with it, one at a time,
//! into a private cache directory, where the sources find it as in any
//! other directory (compressed or not: [`super::segment_file`]).
//!
//! As PostgreSQL does: the command runs through `/bin/sh -c`; `%f` is the
//! file name, `%p` the path to write, `%r` the file name too (the oldest
//! file a restartpoint still needs; walredo has none to keep), `%%` a
//! percent sign; exit status 0 with the file written is success, another
//! exit status means the archive does not have the file, and death by a
//! signal is an error. Beyond PostgreSQL: the command is killed (its whole
//! process group) past a deadline, its output kept to 4 KiB for messages,
//! and the cache holds at most a given number of files (the oldest fetched
//! are removed first).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output of the command kept for messages.
const OUTPUT_KEPT: usize = 4096;

/// A restore command and the cache its files go to.
#[derive(Debug)]
pub struct RestoreCommand {
    command: String,
    cache: PathBuf,
    timeout: Duration,
    most_cached: usize,
    /// Files fetched into the cache, oldest first.
    fetched: Mutex<VecDeque<String>>,
}

/// Why a fetch failed (not: the archive does not have the file).
#[derive(Debug)]
pub enum RestoreError {
    /// The command could not run, died of a signal or hung (killed).
    Failed(String),
    /// The caller's interrupt asked to stop: the command was killed.
    Cancelled,
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Failed(why) => f.write_str(why),
            RestoreError::Cancelled => f.write_str("cancelled while the restore command ran"),
        }
    }
}

impl std::error::Error for RestoreError {}

impl RestoreCommand {
    /// `command` with its `%` placeholders; files cached in `cache`
    /// (created, mode 0700; it should be this source's alone), at most
    /// `most_cached` of them; each run killed after `timeout`.
    pub fn new(
        command: &str,
        cache: &Path,
        timeout: Duration,
        most_cached: usize,
    ) -> Result<RestoreCommand, RestoreError> {
        if command.trim().is_empty() {
            return Err(RestoreError::Failed("the restore command is empty".into()));
        }
        fs::create_dir_all(cache)
            .and_then(|()| fs::set_permissions(cache, fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                RestoreError::Failed(format!(
                    "cannot make the restore cache {}: {e}",
                    cache.display()
                ))
            })?;
        Ok(RestoreCommand {
            command: command.to_string(),
            cache: cache.to_path_buf(),
            timeout,
            most_cached: most_cached.max(1),
            fetched: Mutex::new(VecDeque::new()),
        })
    }

    /// How many fetched files the cache keeps.
    pub fn most_cached(&self) -> usize {
        self.most_cached
    }

    /// The directory fetched files are in: a WAL source lists it last.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The command line for file `name` written to `path`.
    fn command_line(&self, name: &str, path: &Path) -> String {
        let mut out = String::new();
        let mut chars = self.command.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('f') | Some('r') => out.push_str(name),
                Some('p') => out.push_str(&path.to_string_lossy()),
                Some('%') => out.push('%'),
                // As PostgreSQL: an unknown placeholder is kept as written.
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }

    /// Fetch archived file `name` (a segment or history file name) into
    /// the cache: its path, or None when the archive does not have it (the
    /// command exited non-zero, or wrote nothing).
    pub fn fetch(&self, name: &str) -> Result<Option<PathBuf>, RestoreError> {
        self.fetch_interruptible(name, &mut || false)
    }

    /// [`fetch`](Self::fetch), asking `interrupt` every few milliseconds
    /// while the command runs whether to stop (then it is killed).
    pub fn fetch_interruptible(
        &self,
        name: &str,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<Option<PathBuf>, RestoreError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(RestoreError::Failed(format!(
                "{name:?} is not an archived file's name"
            )));
        }
        let path = self.cache.join(name);
        if path.is_file() {
            return Ok(Some(path));
        }
        let partial = self
            .cache
            .join(format!(".{name}.{}.partial", std::process::id()));
        let _ = fs::remove_file(&partial);
        let line = self.command_line(name, &partial);
        let outcome = self.run(&line, interrupt);
        let result = match outcome {
            Ok((status, _)) if status.success() && partial.is_file() => {
                fs::rename(&partial, &path).map_err(|e| {
                    RestoreError::Failed(format!("cannot move the restored {name} into place: {e}"))
                })?;
                self.keep(name);
                Ok(Some(path))
            }
            Ok((status, output)) if status.signal().is_some() => {
                Err(RestoreError::Failed(format!(
                    "restore_command {line:?} was terminated by signal {}{}",
                    status.signal().unwrap_or(0),
                    output_text(&output)
                )))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&partial);
        result
    }

    /// Remember `name` as fetched; remove the oldest beyond the limit.
    fn keep(&self, name: &str) {
        // History files are small and needed by every later listing: kept.
        if name.ends_with(".history") {
            return;
        }
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        fetched.push_back(name.to_string());
        while fetched.len() > self.most_cached {
            if let Some(old) = fetched.pop_front() {
                let _ = fs::remove_file(self.cache.join(old));
            }
        }
    }

    /// Run `line` with `/bin/sh -c` in a process group of its own: its exit
    /// status and the first bytes of its output. Killed past the timeout.
    fn run(
        &self,
        line: &str,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<(std::process::ExitStatus, Vec<u8>), RestoreError> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                RestoreError::Failed(format!("cannot run restore_command {line:?}: {e}"))
            })?;
        let pgid = child.id() as libc::pid_t;
        // Both streams drained on threads of their own (a command that
        // writes much must not block on a full pipe), the first bytes kept
        // where this thread can take them even if a drain never ends (a
        // process that left the group may hold the pipe open).
        let drain = |stream: Option<Box<dyn Read + Send>>| {
            let kept = Arc::new(Mutex::new(Vec::new()));
            let into = Arc::clone(&kept);
            let thread = std::thread::spawn(move || {
                if let Some(mut s) = stream {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let mut kept = into.lock().unwrap_or_else(|e| e.into_inner());
                        let room = OUTPUT_KEPT.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            });
            (thread, kept)
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        // Wait for the command's exit without reaping it (WNOWAIT): while
        // it is a zombie its pid, and so its group's id, cannot be reused,
        // so the group is killed (what it left running) before it is reaped.
        let exited = loop {
            // SAFETY: siginfo_t is plain data; waitid writes it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own child, with a valid siginfo_t.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pgid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            // SAFETY: si_pid is set by waitid (0 when nothing changed).
            let pid = unsafe { info.si_pid() };
            if r == 0 && pid != 0 {
                break Ok(());
            }
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(RestoreError::Failed(format!(
                    "waiting for restore_command: {e}"
                )));
            }
            if interrupt() {
                break Err(RestoreError::Cancelled);
            }
            if Instant::now() >= deadline {
                break Err(RestoreError::Failed(format!(
                    "restore_command {line:?} did not finish within {} ms: killed",
                    self.timeout.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // SAFETY: kill has no memory-safety preconditions; the group is the
        // command's own (process_group(0)) and its leader not yet reaped.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let status = child
            .wait()
            .map_err(|e| RestoreError::Failed(format!("waiting for restore_command: {e}")));
        let status = exited.and(status);
        // The drains end with the pipes; a second at most, then what they
        // have is taken and they are left to end by themselves.
        let waited = Instant::now();
        while !(out.0.is_finished() && err.0.is_finished())
            && waited.elapsed() < Duration::from_secs(1)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut output = Vec::new();
        for (_, kept) in [out, err] {
            output.extend_from_slice(&kept.lock().unwrap_or_else(|e| e.into_inner()));
        }
        output.truncate(OUTPUT_KEPT);
        status.map(|s| (s, output))
    }
}

fn output_text(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; it said: {text}")
    }
}

#[cfg(test)]
mod tests;
