//! A child's stderr, read in the `poll` loop or right after a blocking
//! read (no thread per child): each line goes to the `log` crate with the
//! child's pid, and the last lines are kept for the error a failed request
//! returns. A healthy process writes nothing there.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::exchange::poll_fd;
use super::Process;

/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
/// Longest stderr line kept; the rest is cut.
const STDERR_LINE_MAX: usize = 4096;
/// How long to wait for a failing child's last words on stderr.
const STDERR_GRACE: Duration = Duration::from_secs(2);

impl Process {
    /// Read whatever stderr holds now, without waiting; returns whether
    /// there was anything (or EOF).
    pub(super) fn read_stderr(&mut self) -> bool {
        let Some(fd) = self.errors.as_ref().map(|f| f.as_raw_fd()) else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let mut spoke = false;
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.stderr_partial.extend_from_slice(&buf[..n as usize]);
                self.split_stderr_lines(false);
                spoke = true;
                continue;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                // EOF (or a broken pipe): the child has exited or closed it.
                self.split_stderr_lines(true);
                self.errors = None;
                return true;
            }
            return spoke;
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

    /// Read stderr until EOF or `deadline`; or, once the process is dead,
    /// until nothing is left in it: a fork of the host (another thread's)
    /// may hold the write end of a directly started process's stderr, and
    /// then EOF comes only once that copy exits.
    pub(super) fn drain_stderr(&mut self, deadline: Instant) {
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
}
