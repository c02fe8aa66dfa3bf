//! One redo request at a time on one wal-redo process: the simplest complete
//! way to get a page. Requests are validated here, before anything is sent,
//! so malformed input never costs a process.

use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::process::launch::Launcher;
use crate::process::protocol::{self, RecordRef};
use crate::process::{Failure, Interrupted, Process};
use crate::tag::{PageTag, MAX_FORKNUM};
use crate::wal::pages::PageChange;
use crate::wal::record;
use crate::PAGE_SIZE;

pub use crate::pg::page::Page;

/// Check a request before it reaches a process: a valid tag, every record a
/// well-formed XLogRecord with a correct CRC that changes the target page
/// ([`crate::wal::pages::record_pages`]: a block reference, or a
/// visibility-map page a heap change clears or a truncation cuts into), of a
/// page resource manager ([`record::is_page_record`]) unless it is that
/// truncation, and, without a base page, a first record that initializes
/// the page. A visibility-map page its fork does not hold yet is a zero page
/// to PostgreSQL (redo initializes it): pass a zeroed base page.
/// Returns the newest record that carries an image of the page to apply, if
/// any, with that image as decoded here (see [`image_page`]): each record is
/// decoded once on the request path.
pub fn validate_request<'a>(
    tag: &PageTag,
    base: Option<&Page>,
    records: &[RecordRef<'a>],
) -> Result<Option<NewestImage<'a>>> {
    if tag.forknum > MAX_FORKNUM {
        return Err(Error::InvalidArgument(format!(
            "fork number {} is not one of 0..={MAX_FORKNUM}",
            tag.forknum
        )));
    }
    if tag.blkno >= record::MAX_BLOCK_NUMBER {
        return Err(Error::InvalidArgument(format!(
            "block number {} is not a block a relation can have (InvalidBlockNumber, or \
             MaxBlockNumber)",
            tag.blkno
        )));
    }
    if records.is_empty() && base.is_none() {
        return Err(Error::InvalidArgument(
            "a request needs a base page or at least one record".into(),
        ));
    }
    let mut prev_lsn = 0;
    let mut newest_image = None;
    for (index, rec) in records.iter().enumerate() {
        let decoded =
            record::decode(rec.data).map_err(|source| Error::MalformedRecord { index, source })?;
        let page_record = record::is_page_record(decoded.rmid, decoded.info);
        // Of a record that is not a page record only a truncation's
        // visibility-map page is ever applied; any other is refused as such.
        let pages = match crate::wal::pages::record_pages(&decoded) {
            Ok(pages) => pages,
            Err(source) if page_record => return Err(Error::MalformedRecord { index, source }),
            Err(_) => Vec::new(),
        };
        let page = pages.iter().find(|p| p.tag == *tag);
        let vm_truncation = page.is_some_and(|p| p.change == PageChange::VmTruncate);
        if !page_record && !vm_truncation {
            return Err(Error::InvalidArgument(format!(
                "record #{index} ({} record with info {:#04x}, ending at {}) is not a page \
                 record: only the page resource managers (Heap, Heap2, Btree, Hash, Gin, Gist, \
                 Sequence, SPGist, BRIN, Generic), full-page images (XLOG FPI, \
                 FPI_FOR_HINT) and, for the visibility-map page it cuts into, Storage \
                 TRUNCATE are applied",
                decoded.rmgr_name(),
                decoded.info,
                crate::wal::format_lsn(rec.end_lsn)
            )));
        }
        let Some(page) = page else {
            return Err(Error::InvalidArgument(format!(
                "record #{index} ({} record ending at {}) does not change the target page {tag} \
                 (neither a block reference nor a visibility-map page its heap changes clear)",
                decoded.rmgr_name(),
                crate::wal::format_lsn(rec.end_lsn)
            )));
        };
        if index == 0 && base.is_none() && !page.initializes() {
            return Err(Error::InvalidArgument(format!(
                "no base page given, and the first record ({} record ending at {}) does not \
                 initialize the target page {tag}",
                decoded.rmgr_name(),
                crate::wal::format_lsn(rec.end_lsn)
            )));
        }
        if rec.end_lsn <= prev_lsn || rec.end_lsn < record::SIZE_OF_XLOG_RECORD as u64 {
            return Err(Error::InvalidArgument(format!(
                "record #{index}: end LSN {} does not follow the previous record's {}",
                crate::wal::format_lsn(rec.end_lsn),
                crate::wal::format_lsn(prev_lsn)
            )));
        }
        prev_lsn = rec.end_lsn;
        let image = decoded.block_for(tag).and_then(|b| b.image);
        if let Some(image) = image.filter(|img| img.apply()) {
            newest_image = Some(NewestImage {
                index,
                end_lsn: rec.end_lsn,
                image,
            });
        }
    }
    Ok(newest_image)
}

/// The newest record of a request that carries an image of its page to
/// apply, and that image (borrowed from the record).
#[derive(Clone, Copy, Debug)]
pub struct NewestImage<'a> {
    /// Index of the record in the request.
    pub index: usize,
    pub end_lsn: u64,
    pub image: record::BlockImage<'a>,
}

/// The page after the record of `newest`: its image restored and stamped
/// with the record's end LSN, exactly as redo leaves it (redo does nothing
/// more to a restored block). `None` when the image cannot be restored here:
/// PostgreSQL then decides.
pub fn image_page(newest: &NewestImage<'_>) -> Option<Box<Page>> {
    match crate::wal::image::restore(&newest.image) {
        Ok(mut page) => {
            crate::wal::image::stamp_lsn(&mut page, newest.end_lsn);
            Some(page)
        }
        Err(e) => {
            log::warn!(
                "record ending at {}: {e}; leaving it to PostgreSQL",
                crate::wal::format_lsn(newest.end_lsn)
            );
            None
        }
    }
}

/// Turn a process failure into the caller's error, with the process's stderr.
pub(crate) fn failure_error(failure: Failure, process: &mut Process, timeout: Duration) -> Error {
    let stderr = process.kill_and_collect_stderr();
    match failure {
        Failure::Timeout => Error::Timeout {
            after_ms: timeout.as_millis() as u64,
            stderr,
        },
        other => {
            // PostgreSQL's own words are the most useful message.
            let how = match process.death_signal() {
                Some(signal) => format!("{other}, {signal}"),
                None => other.to_string(),
            };
            let message = stderr
                .lines()
                .rev()
                .find(|l| l.starts_with("FATAL:") || l.starts_with("PANIC:"))
                .map(|l| format!("{l} ({how}, pid {})", process.pid()))
                .unwrap_or_else(|| format!("{how} (pid {})", process.pid()));
            Error::RedoFailed { message, stderr }
        }
    }
}

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
    request: Vec<u8>,
}

impl Redoer {
    pub fn new(config: &Config) -> Result<Redoer> {
        Ok(Redoer {
            launcher: Launcher::new(config)?,
            process: None,
            timeout: config.timeout,
            request: Vec::new(),
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
        validate_request(tag, base, records)?;
        self.redo_validated(tag, base, records)
    }

    /// [`Redoer::redo`] for a request that passed [`validate_request`].
    pub(crate) fn redo_validated(
        &mut self,
        tag: &PageTag,
        base: Option<&Page>,
        records: &[RecordRef<'_>],
    ) -> Result<Box<Page>> {
        let mut request = std::mem::take(&mut self.request);
        request.clear();
        protocol::write_request(&mut request, tag, base, records);
        let mut page = Box::new([0u8; PAGE_SIZE]);
        let result = self.round_trip(&request, &mut page[..]);
        self.request = request;
        result.map(|()| page)
    }

    /// Ping the process (starting it if needed); it answers with a page.
    pub fn ping(&mut self) -> Result<()> {
        let mut request = Vec::new();
        protocol::write_ping(&mut request);
        let mut page = [0u8; PAGE_SIZE];
        self.round_trip(&request, &mut page)
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
                let err = failure_error(failure, &mut dead, timeout);
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
