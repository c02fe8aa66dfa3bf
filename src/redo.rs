//! One redo request at a time on one wal-redo process: the simplest complete
//! way to get a page. Requests are checked and encoded by
//! [`crate::request`], before anything is sent, so malformed input never
//! costs a process.

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::pg::page::Page;
use crate::pg::record::{RecordFormat, RecordRef};
use crate::process::launch::Launcher;
use crate::process::{Interrupted, Process};
use crate::request::Request;
use crate::tag::PageTag;
use crate::PAGE_SIZE;

/// One wal-redo process, driven by one thread: started on first use and
/// restarted after a failure, with no retry. For tests and tools; services
/// use a [`crate::Pool`].
///
/// The process is started on the calling thread, so it dies when that thread
/// exits (`PR_SET_PDEATHSIG`): keep a `Redoer` on one long-lived thread.
pub struct Redoer {
    launcher: Launcher,
    process: Option<Process>,
    timeout: Duration,
    /// The last request's wire buffer, reused.
    wire: Vec<u8>,
}

impl Redoer {
    pub fn new(config: &Config) -> Result<Redoer> {
        Ok(Redoer {
            launcher: Launcher::new(config)?,
            process: None,
            timeout: config.timeout,
            wire: Vec::new(),
        })
    }

    fn process(&mut self) -> Result<&mut Process> {
        if self.process.is_none() {
            self.process = Some(Process::spawn(&self.launcher)?);
        }
        Ok(self.process.as_mut().expect("just started"))
    }

    /// Pid of the current process, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Apply `records` (in LSN order) to `base` (or to nothing, when the first
    /// record initializes the page) and return the page for `tag`.
    pub fn redo(
        &mut self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        // No fast path: every request goes to the process.
        let wire = std::mem::take(&mut self.wire);
        let format = RecordFormat::of_version(self.launcher.pg_version());
        let request = Request::new(tag, base, records, format, false, wire)?;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        let sent = self.round_trip(&request.wire, &mut page[..]);
        self.wire = request.wire;
        sent.map(|()| page)
    }

    /// Ping the process (starting it if needed); it answers with a page.
    pub fn ping(&mut self) -> Result<()> {
        let mut page = [0u8; PAGE_SIZE];
        self.round_trip(&Request::ping().wire, &mut page)
    }

    fn round_trip(&mut self, request: &[u8], response: &mut [u8]) -> Result<()> {
        let timeout = self.timeout;
        let process = self.process()?;
        match process.transact(request, response, timeout) {
            Ok(()) => {
                if process.is_retired() {
                    // Killed and reaped here; the answer stands.
                    self.process = None;
                }
                Ok(())
            }
            Err(Interrupted { failure, .. }) => {
                let mut dead = self.process.take().expect("process in use");
                let err = dead.failure_error(failure, timeout);
                // Dropping it kills and reaps it and removes its scratch dir.
                drop(dead);
                Err(err)
            }
        }
    }

    /// Stop the process gracefully (closing its stdin) and return what it
    /// wrote to stderr on the way out, e.g. the verification summary.
    pub fn shutdown(&mut self) -> String {
        match self.process.take() {
            Some(p) => p.shutdown(Duration::from_secs(10)).1,
            None => String::new(),
        }
    }
}
