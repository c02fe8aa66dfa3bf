//! How a [`WalReader`] reads its input: segment files opened (the right copy
//! of each), read a chunk at a time, and every page header checked.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::pg::xlog::*;
use crate::wal::error::WalError;
use crate::wal::lsn::format_lsn;
use crate::wal::reader::WalReader;

/// A validated page header.
#[derive(Clone, Copy, Debug)]
pub(super) struct PageHeader {
    pub(super) size: u64,
    pub(super) info: u16,
    pub(super) rem_len: u32,
}

/// Outcome of looking at the page header at some LSN.
pub(super) enum Page {
    Valid(PageHeader),
    /// The page is not valid WAL at this position: the WAL ends here, on
    /// something no writer leaves (damage, below a flushed position).
    Invalid(String),
    /// The page was never written for this position (zeros, or a recycled
    /// segment's older page): the WAL ends here as it normally does.
    Unwritten(String),
    /// The segment holding the page is absent (and nothing follows it).
    Missing(String),
}

impl WalReader {
    /// `len` bytes at `lsn`, which [`fill`](Self::fill) made present.
    pub(super) fn bytes(&self, lsn: u64, len: usize) -> &[u8] {
        let at = (lsn - self.chunk_lsn) as usize;
        &self.buf[at..at + len]
    }

    pub(super) fn cur_path(&self) -> PathBuf {
        let (segno, i, _) = self.cur.as_ref().expect("a segment is open");
        self.segs.files[segno][*i].clone()
    }

    /// Look at the page header at `page_lsn` (a page start), reading its
    /// page if needed. A page that is not what this LSN needs sends the
    /// reader to the segment's next file, if another directory has one.
    pub(super) fn page(&mut self, page_lsn: u64) -> Result<Page, WalError> {
        // Most records start on the page the previous one did.
        if let Some((lsn, header)) = self.last_page {
            if lsn == page_lsn {
                return Ok(Page::Valid(header));
            }
        }
        let segno = page_lsn / self.segs.seg_size;
        if self.cur.as_ref().map(|c| c.0) != Some(segno) {
            if !self.segs.contains(segno) && self.segs.can_restore() {
                Arc::make_mut(&mut self.segs).restore(segno)?;
            }
            if !self.segs.contains(segno) {
                self.check_gap(segno)?;
                return Ok(Page::Missing(format!(
                    "next WAL segment {} is not present",
                    self.segs.file_name(segno)
                )));
            }
            self.open_segment(segno, 0, false)?;
        }
        loop {
            self.fill(page_lsn)?;
            match self.check_page(page_lsn)? {
                page @ (Page::Invalid(_) | Page::Unwritten(_)) => {
                    let next = self.cur.as_ref().map_or(0, |c| c.1 + 1);
                    if !self.open_segment(segno, next, true)? {
                        return Ok(page);
                    }
                }
                page => {
                    if let Page::Valid(header) = page {
                        self.last_page = Some((page_lsn, header));
                    }
                    return Ok(page);
                }
            }
        }
    }

    /// Validate the header of the page at `page_lsn`, present in the buffer.
    pub(super) fn check_page(&self, page_lsn: u64) -> Result<Page, WalError> {
        let seg_size = self.segs.seg_size;
        let segno = page_lsn / seg_size;
        let off = page_lsn % seg_size;
        let b = self.bytes(page_lsn, SIZE_OF_XLOG_LONG_PHD as usize);
        let magic = xlp_magic(b);
        let info = xlp_info(b);
        let pageaddr = xlp_pageaddr(b);
        let rem_len = xlp_rem_len(b);
        let at = || format!("segment {}, offset {off}", self.segs.file_name(segno));
        if magic == 0 {
            return Ok(Page::Unwritten(format!(
                "invalid magic number 0000 in {}",
                at()
            )));
        }
        if magic != self.magic {
            return Ok(Page::Invalid(format!(
                "invalid magic number {magic:04X} in {}",
                at()
            )));
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Ok(Page::Invalid(format!(
                "invalid info bits {info:04X} in {}",
                at()
            )));
        }
        if pageaddr != page_lsn {
            return Ok(Page::Unwritten(format!(
                "unexpected pageaddr {} in {} (recycled segment)",
                format_lsn(pageaddr),
                at()
            )));
        }
        let size = if info & XLP_LONG_HEADER != 0 {
            let sysid = xlp_sysid(b);
            let file_seg_size = xlp_seg_size(b);
            let blcksz = xlp_xlog_blcksz(b);
            if u64::from(file_seg_size) != seg_size {
                return Err(WalError::BadHeader {
                    file: self.cur_path(),
                    detail: format!(
                        "long page header says segment size {file_seg_size}, but the files are {seg_size} bytes"
                    ),
                });
            }
            if u64::from(blcksz) != XLOG_BLCKSZ {
                return Err(WalError::BadHeader {
                    file: self.cur_path(),
                    detail: format!("WAL block size is {blcksz}, not {XLOG_BLCKSZ}"),
                });
            }
            if self.sysid != 0 && sysid != self.sysid {
                return Err(WalError::SystemIdMismatch {
                    file: self.cur_path(),
                    expected: self.sysid,
                    found: sysid,
                });
            }
            SIZE_OF_XLOG_LONG_PHD
        } else {
            if off == 0 {
                return Ok(Page::Invalid(format!(
                    "no long page header at the start of {}",
                    at()
                )));
            }
            SIZE_OF_XLOG_SHORT_PHD
        };
        Ok(Page::Valid(PageHeader {
            size,
            info,
            rem_len,
        }))
    }

    /// `segno` is absent: an error if a later segment holds WAL that belongs
    /// there (a real hole), otherwise the WAL simply ends.
    pub(super) fn check_gap(&self, segno: u64) -> Result<(), WalError> {
        let Some(&next) = self.segs.files.range(segno + 1..).next().map(|(s, _)| s) else {
            return Ok(());
        };
        // A later file that is only a recycled/preallocated segment does not
        // prove that WAL continued.
        if self.segs.holds_wal(next) {
            return Err(WalError::Gap {
                missing: self.segs.file_name(segno),
                next_present: self.segs.file_name(next),
            });
        }
        Ok(())
    }

    /// Whether a long page header is the start of segment `segno` of this
    /// system.
    pub(super) fn is_segment_start(&self, head: &[u8], segno: u64) -> bool {
        let magic = xlp_magic(head);
        (magic == self.magic || (self.magic == 0 && pg_version_of_magic(magic).is_some()))
            && xlp_info(head) & XLP_LONG_HEADER != 0
            && xlp_pageaddr(head) == segno * self.segs.seg_size
            && (self.sysid == 0 || xlp_sysid(head) == self.sysid)
            && u64::from(xlp_seg_size(head)) == self.segs.seg_size
            && u64::from(xlp_xlog_blcksz(head)) == XLOG_BLCKSZ
    }

    /// Open segment `segno` from its files `from` on: the first whose long
    /// page header is this segment's. Without one, `valid_only` leaves the
    /// current file in place and returns false; otherwise the first file
    /// that could be read is taken (its pages then tell what is wrong).
    pub(super) fn open_segment(
        &mut self,
        segno: u64,
        from: usize,
        valid_only: bool,
    ) -> Result<bool, WalError> {
        let segs = Arc::clone(&self.segs);
        let paths = &segs.files[&segno];
        let mut usable: Option<(usize, File)> = None;
        let mut error: Option<WalError> = None;
        for (i, path) in paths.iter().enumerate().skip(from) {
            let io = |source| WalError::Io {
                file: path.clone(),
                source,
            };
            let f = match crate::wal::segment_file::open(path) {
                Ok(f) => f,
                // Removed (or recycled under another name) since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    error.get_or_insert(io(e));
                    continue;
                }
            };
            let size = match f.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    error.get_or_insert(io(e));
                    continue;
                }
            };
            if size != segs.seg_size {
                error.get_or_insert(WalError::WrongSegmentSize {
                    file: path.clone(),
                    size,
                    expected: Some(segs.seg_size),
                });
                continue;
            }
            let mut head = [0u8; SIZE_OF_XLOG_LONG_PHD as usize];
            if let Err(e) = f.read_exact_at(&mut head, 0) {
                error.get_or_insert(io(e));
                continue;
            }
            if self.is_segment_start(&head, segno) {
                usable = Some((i, f));
                break;
            }
            if usable.is_none() && !valid_only {
                usable = Some((i, f));
            }
        }
        match usable {
            Some((i, f)) => {
                self.cur = Some((segno, i, f));
                self.read_from.insert(segno, i);
                self.buf.clear();
                self.last_page = None;
                Ok(true)
            }
            None if valid_only => Ok(false),
            None => Err(error.unwrap_or_else(|| WalError::Removed {
                segment: segs.file_name(segno),
                dirs: segs.dirs.clone(),
            })),
        }
    }

    /// Make the page at `page_lsn` of the open segment present in the buffer.
    pub(super) fn fill(&mut self, page_lsn: u64) -> Result<(), WalError> {
        let end = self.chunk_lsn + self.buf.len() as u64;
        if page_lsn >= self.chunk_lsn && page_lsn + XLOG_BLCKSZ <= end {
            return Ok(());
        }
        let seg_size = self.segs.seg_size;
        let off = page_lsn % seg_size;
        let len = self.chunk.min(seg_size - off) as usize;
        let path = self.cur_path();
        let (_, _, f) = self.cur.as_ref().expect("a segment is open");
        self.buf.resize(len, 0);
        let mut got = 0;
        while got < len {
            match f.read_at(&mut self.buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.buf.clear();
                    return Err(WalError::Io { file: path, source });
                }
            }
        }
        // Truncated since it was opened: what is missing reads as zeros,
        // which no page header passes.
        self.buf[got..].fill(0);
        self.chunk_lsn = page_lsn;
        Ok(())
    }
}
