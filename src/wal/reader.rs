//! Reading PostgreSQL WAL (14 to 18) segment files, in one directory or several.
//!
//! [`WalReader`] walks the segments of one timeline in a directory (normally a
//! cluster's `pg_wal`) and yields every record as its raw bytes: the complete
//! `XLogRecord`, header included, reassembled across page and segment
//! boundaries, with the record's start LSN and its end LSN exactly as
//! PostgreSQL's xlogreader computes `EndRecPtr`.
//!
//! The reader tells "the WAL ended" (iteration stops, see
//! [`WalReader::end_reason`]) apart from real problems ([`WalError`]): the end of
//! WAL is whatever PostgreSQL's own recovery would take as its end (a zeroed
//! tail, a recycled page, a torn last record, a missing next segment), while a
//! hole between present segments, unreadable files or inconsistent headers are
//! errors.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::pg::record::{
    record_crc, xl_crc, xl_info, xl_prev, xl_rmid, xl_tot_len, xl_xid, SIZE_OF_XLOG_RECORD,
    XLR_RMGR_INFO_MASK,
};
use crate::pg::record_type::XLOG_SWITCH;
use crate::pg::rmgr::RM_XLOG_ID;
use crate::pg::xlog::*;
use crate::wal::error::WalError;
use crate::wal::lsn::format_lsn;
use crate::wal::restore::RestoreCommand;
use crate::wal::segments::{Segments, Start};
use crate::wal::timeline::fetch_history;
use segment_io::{Page, PageHeader};

mod segment_io;
#[cfg(test)]
mod tests;

/// Largest record we accept (PostgreSQL's MaxAllocSize); anything bigger is
/// garbage and ends the WAL.
const MAX_RECORD_LEN: u32 = 0x3FFF_FFFF;

#[inline]
fn maxalign(x: u64) -> u64 {
    (x + 7) & !7
}

/// One WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// LSN of the first byte of the record header.
    pub start_lsn: u64,
    /// PostgreSQL's `EndRecPtr` after reading this record (for XLOG_SWITCH:
    /// the start of the next segment).
    pub end_lsn: u64,
    /// The whole record, `xl_tot_len` bytes, header included.
    pub data: Vec<u8>,
}

impl WalRecord {
    /// `xl_tot_len`.
    pub fn total_len(&self) -> u32 {
        xl_tot_len(&self.data)
    }
    /// `xl_xid`.
    pub fn xid(&self) -> u32 {
        xl_xid(&self.data)
    }
    /// `xl_prev`.
    pub fn prev_lsn(&self) -> u64 {
        xl_prev(&self.data)
    }
    /// `xl_info`.
    pub fn info(&self) -> u8 {
        xl_info(&self.data)
    }
    /// `xl_rmid`.
    pub fn rmid(&self) -> u8 {
        xl_rmid(&self.data)
    }
    /// `xl_crc`.
    pub fn crc(&self) -> u32 {
        xl_crc(&self.data)
    }
    /// Whether this is an XLOG_SWITCH record.
    pub fn is_switch(&self) -> bool {
        self.rmid() == RM_XLOG_ID && (self.info() & 0xF0) == XLOG_SWITCH
    }
}

/// How many bytes of a segment one read takes (pages are still checked one
/// by one as they are used).
pub(super) const CHUNK: u64 = 16 * XLOG_BLCKSZ;

/// Whether `lsn` can be where a record starts: 8-byte aligned, not inside a
/// page header.
fn check_start(lsn: u64, seg_size: u64) -> Result<(), WalError> {
    if lsn % 8 != 0 {
        return Err(WalError::InvalidStart {
            lsn,
            reason: "it is not 8-byte aligned".into(),
        });
    }
    let off = lsn % XLOG_BLCKSZ;
    let hdr = if lsn % seg_size < XLOG_BLCKSZ {
        SIZE_OF_XLOG_LONG_PHD
    } else {
        SIZE_OF_XLOG_SHORT_PHD
    };
    if off != 0 && off < hdr {
        return Err(WalError::InvalidStart {
            lsn,
            reason: "it points into a page header".into(),
        });
    }
    Ok(())
}

/// Reader over the records of one timeline, in one directory or in several
/// (see [`Segments`]). Files are read in place, a chunk of pages at a time,
/// and never written. A page whose header is not what this LSN needs (a
/// segment recycled or overwritten since it was listed) is looked up in the
/// next directory that has the segment; without one, the WAL ends there.
pub struct WalReader {
    segs: Arc<Segments>,
    sysid: u64,
    /// The segment being read: its number, which of its files, the file.
    cur: Option<(u64, usize, File)>,
    /// Which file of each segment was read last ([`WalReader::files_read`]).
    read_from: BTreeMap<u64, usize>,
    /// The last page whose header was checked, in the current file: the
    /// next record most often starts on it.
    last_page: Option<(u64, PageHeader)>,
    /// Bytes of the current file from `chunk_lsn` on.
    buf: Vec<u8>,
    /// How many bytes one read takes ([`CHUNK`] unless set).
    chunk: u64,
    chunk_lsn: u64,
    /// Where the next record begins (may be a page start: the header is skipped).
    next_lsn: u64,
    /// Start of the last record returned (to check `xl_prev`).
    prev_lsn: Option<u64>,
    /// No record ending after this is read, and no page at or after it.
    limit: u64,
    limit_reached: bool,
    done: bool,
    end_reason: Option<String>,
    end_damaged: bool,
    /// `xlp_magic` of the first page read: every page must have it (0 until
    /// then: any supported version's).
    magic: u16,
}

impl fmt::Debug for WalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalReader")
            .field("dirs", &self.segs.dirs)
            .field("tli", &self.segs.tli)
            .field("seg_size", &self.segs.seg_size)
            .field("sysid", &self.sysid)
            .field("next_lsn", &format_lsn(self.next_lsn))
            .field("done", &self.done)
            .finish()
    }
}

impl WalReader {
    /// Open `dir`. With `start == None` reading begins at the first record
    /// that starts in the lowest present segment (a leading continuation of a
    /// record from an earlier segment is skipped); with `Some(lsn)`, `lsn`
    /// must be a record start (such as a checkpoint's redo pointer).
    ///
    /// The timeline read is the highest one present (with `Some(lsn)`: the
    /// highest one having the segment that holds `lsn`); other timelines and
    /// other files (`*.history`, `*.partial`, `archive_status/`) are ignored.
    pub fn open(dir: &Path, start: Option<u64>) -> Result<WalReader, WalError> {
        WalReader::open_dirs(&[dir.to_path_buf()], None, start, None)
    }

    /// [`open`](Self::open) over several directories, in order (the
    /// server's `pg_wal`, then archives), on `timeline` (None: the highest
    /// present, or with `start` the highest whose history has its segment),
    /// and with `restore`, a restore command that fetches the segments none
    /// of them has, as they are needed (its cache directory is listed last),
    /// and the timeline's history file when none has it.
    pub fn open_dirs(
        dirs: &[PathBuf],
        timeline: Option<u32>,
        start: Option<u64>,
        restore: Option<Arc<RestoreCommand>>,
    ) -> Result<WalReader, WalError> {
        let mut dirs = dirs.to_vec();
        if let Some(r) = &restore {
            dirs.push(r.cache_dir().to_path_buf());
        }
        // A start whose segment only the archive has: the highest timeline
        // present, the start's segment fetched when the reader opens it.
        let list = |dirs: &[PathBuf], timeline| match Segments::list(dirs, timeline, start) {
            Err(WalError::StartNotFound { .. }) if restore.is_some() => {
                Segments::list(dirs, timeline, None)
            }
            listed => listed,
        };
        let mut segs = list(&dirs, timeline)?;
        if let Some(r) = &restore {
            if fetch_history(&dirs, segs.timeline(), r)? {
                segs = list(&dirs, Some(segs.timeline()))?;
            }
        }
        let segs = segs.with_restore(restore);
        let start = start.map_or(Start::Oldest, Start::Lsn);
        WalReader::open_segments(Arc::new(segs), start, None)
    }

    /// Open a reader over `segs` at `start`. With `system_id`, segments of
    /// another database system are passed over (another directory's copy is
    /// used) or refused.
    pub fn open_segments(
        segs: Arc<Segments>,
        start: Start,
        system_id: Option<u64>,
    ) -> Result<WalReader, WalError> {
        WalReader::open_segments_chunked(segs, start, system_id, CHUNK / XLOG_BLCKSZ)
    }

    /// [`open_segments`](Self::open_segments) reading `chunk_pages` pages
    /// at a time (see [`set_chunk_pages`](Self::set_chunk_pages)).
    pub fn open_segments_chunked(
        segs: Arc<Segments>,
        start: Start,
        system_id: Option<u64>,
        chunk_pages: u64,
    ) -> Result<WalReader, WalError> {
        let mut segs = segs;
        let seg_size = segs.seg_size;
        let first_segno = match start {
            Start::Oldest => *segs.files.keys().next().expect("Segments is never empty"),
            Start::Segment(s) => s,
            Start::Lsn(lsn) => lsn / seg_size,
        };
        if !segs.contains(first_segno) && segs.can_restore() {
            Arc::make_mut(&mut segs).restore(first_segno)?;
        }
        if !segs.contains(first_segno) {
            return Err(WalError::StartNotFound {
                lsn: match start {
                    Start::Lsn(lsn) => lsn,
                    _ => first_segno * seg_size,
                },
                dirs: segs.dirs.clone(),
            });
        }
        let mut reader = WalReader {
            segs,
            sysid: system_id.unwrap_or(0),
            cur: None,
            read_from: BTreeMap::new(),
            last_page: None,
            buf: Vec::new(),
            chunk: chunk_pages.max(1) * XLOG_BLCKSZ,
            chunk_lsn: 0,
            next_lsn: 0,
            prev_lsn: None,
            limit: u64::MAX,
            limit_reached: false,
            done: false,
            end_reason: None,
            end_damaged: false,
            magic: 0,
        };

        // The first page of the start segment must be a valid long header;
        // it gives the system identifier.
        reader.open_segment(first_segno, 0, false)?;
        let seg_start = first_segno * seg_size;
        reader.fill(seg_start)?;
        let file = reader.cur_path();
        let b = reader.bytes(seg_start, SIZE_OF_XLOG_LONG_PHD as usize);
        let magic = xlp_magic(b);
        let info = xlp_info(b);
        let pageaddr = xlp_pageaddr(b);
        let sysid = xlp_sysid(b);
        if pg_version_of_magic(magic).is_none() {
            let known: Vec<String> = PG_VERSIONS
                .iter()
                .map(|(v, m)| format!("0x{m:04X} (PostgreSQL {v})"))
                .collect();
            return Err(WalError::BadHeader {
                file,
                detail: format!(
                    "first page has magic 0x{magic:04X}, expected one of {}; it is not the WAL of PostgreSQL {}, or an unused preallocated file",
                    known.join(", "),
                    supported_versions()
                ),
            });
        }
        reader.magic = magic;
        if info & XLP_LONG_HEADER == 0 || pageaddr != seg_start {
            return Err(WalError::BadHeader {
                file,
                detail: format!(
                    "first page is not the start of this segment (info 0x{info:04X}, page address {}, expected {}); the file is misnamed or a recycled segment",
                    format_lsn(pageaddr),
                    format_lsn(seg_start)
                ),
            });
        }
        if reader.sysid == 0 {
            reader.sysid = sysid;
        }
        // Checks segment and block size, and the system identifier.
        if let Page::Invalid(why) | Page::Unwritten(why) = reader.page(seg_start)? {
            return Err(WalError::BadHeader { file, detail: why });
        }

        match start {
            Start::Lsn(lsn) => {
                check_start(lsn, seg_size)?;
                reader.next_lsn = lsn;
            }
            Start::Oldest | Start::Segment(_) => {
                // Skip the tail of a record that began in an earlier segment,
                // as XLogFindNextRecord does.
                let mut page = seg_start;
                reader.next_lsn = loop {
                    match reader.page(page)? {
                        Page::Valid(h) => {
                            if h.info & XLP_FIRST_IS_CONTRECORD != 0 && h.rem_len > 0 {
                                if maxalign(u64::from(h.rem_len)) >= XLOG_BLCKSZ - h.size {
                                    page += XLOG_BLCKSZ;
                                    continue;
                                }
                                break page + h.size + maxalign(u64::from(h.rem_len));
                            }
                            break page + h.size;
                        }
                        Page::Invalid(_) | Page::Unwritten(_) | Page::Missing(_) => break page,
                    }
                };
            }
        }
        Ok(reader)
    }

    /// The timeline being read.
    pub fn timeline(&self) -> u32 {
        self.segs.tli
    }

    /// WAL segment size in bytes.
    pub fn segment_size(&self) -> u64 {
        self.segs.seg_size
    }

    /// Database system identifier from the first segment's long header.
    pub fn system_id(&self) -> u64 {
        self.sysid
    }

    /// The PostgreSQL major version that wrote this WAL (from its page magic).
    pub fn pg_version(&self) -> u32 {
        pg_version_of_magic(self.magic).expect("checked when the reader was opened")
    }

    /// Refuse WAL of another major version than `pg_version`, before any of
    /// its records reaches a process of that version.
    pub fn expect_version(&self, pg_version: u32) -> Result<(), WalError> {
        let found = self.pg_version();
        if found == pg_version {
            return Ok(());
        }
        let segno = self.next_lsn / self.segs.seg_size;
        Err(WalError::WrongVersion {
            file: self.segs.dirs[0].join(self.segs.file_name(segno)),
            found,
            expected: pg_version,
        })
    }

    /// The first directory looked in.
    pub fn dir(&self) -> &Path {
        &self.segs.dirs[0]
    }

    /// Where the next record would begin: the end LSN of the last record
    /// returned (or the start position). After the end of WAL this is the
    /// end of the valid WAL.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Check the next record's `xl_prev` against `prev` (the start of the
    /// record before it), as if that record had just been read: a reader
    /// opened where an earlier one stopped reads on as that one would have.
    pub fn expect_prev(&mut self, prev: u64) {
        self.prev_lsn = Some(prev);
    }

    /// Go to `lsn`, a record start (one an earlier reading returned), and
    /// read on from there: for fetching known records one by one. The
    /// record there has no `xl_prev` to check against (its CRC, length and
    /// page headers are checked as always); the end of the WAL, a limit
    /// reached or a damaged page earlier are forgotten.
    pub fn seek(&mut self, lsn: u64) -> Result<(), WalError> {
        check_start(lsn, self.segs.seg_size)?;
        self.next_lsn = lsn;
        self.prev_lsn = None;
        self.done = false;
        self.limit_reached = false;
        self.end_reason = None;
        self.end_damaged = false;
        Ok(())
    }

    /// Read `pages` pages at a time from now on (default 16): fewer for
    /// records fetched one by one, far apart.
    pub fn set_chunk_pages(&mut self, pages: u64) {
        self.chunk = pages.max(1) * XLOG_BLCKSZ;
    }

    /// Read no record that ends after `lsn`, and no page at or after it
    /// (WAL there may not be flushed yet): reading stops before such a
    /// record, as at the end of the WAL, with [`reached_limit`](Self::reached_limit) set.
    pub fn set_limit(&mut self, lsn: u64) {
        self.limit = lsn;
    }

    /// Whether reading stopped at the limit rather than at the end of the WAL.
    pub fn reached_limit(&self) -> bool {
        self.limit_reached
    }

    /// Why the WAL ended, once [`next_record`](Self::next_record) returned
    /// `Ok(None)`.
    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    /// Whether the WAL ended on something no writer leaves (a bad CRC,
    /// length, prev-link or page header), rather than on WAL never written
    /// (zeros, a recycled segment's older pages, a missing segment), which
    /// is how the WAL ends after its newest record. Below a position known
    /// to be flushed, such an end is damage.
    pub fn end_is_damage(&self) -> bool {
        self.end_damaged
    }

    /// The next record; `Ok(None)` at the end of the WAL. After the end or an
    /// error, always `Ok(None)`.
    /// The file each segment read so far was read from (the last one, when
    /// a segment's first file ended early and another directory's copy went
    /// on): where its records' bytes are ([`crate::wal::mapped`]).
    pub fn files_read(&self) -> Vec<(u64, PathBuf)> {
        self.read_from
            .iter()
            .map(|(&segno, &i)| (segno, self.segs.files[&segno][i].clone()))
            .collect()
    }

    pub fn next_record(&mut self) -> Result<Option<WalRecord>, WalError> {
        let mut data = Vec::new();
        Ok(self
            .next_record_into(&mut data)?
            .map(|(start_lsn, end_lsn)| WalRecord {
                start_lsn,
                end_lsn,
                data,
            }))
    }

    /// [`next_record`](Self::next_record), with the record's bytes appended
    /// to `out` instead of a vector of its own (for a caller that reads
    /// millions: one buffer for many records, no allocation each). Returns
    /// its start and end LSNs; `out` is unchanged when there is none.
    pub fn next_record_into(&mut self, out: &mut Vec<u8>) -> Result<Option<(u64, u64)>, WalError> {
        if self.done {
            return Ok(None);
        }
        let before = out.len();
        let r = self.read_record(out);
        if !matches!(r, Ok(Some(_))) {
            out.truncate(before);
            self.done = true;
        }
        r
    }

    fn end(&mut self, reason: String) -> Result<Option<(u64, u64)>, WalError> {
        self.end_reason = Some(reason);
        Ok(None)
    }

    /// The end of what can be read, on WAL that no writer leaves.
    fn damaged(&mut self, reason: String) -> Result<Option<(u64, u64)>, WalError> {
        self.end_damaged = true;
        self.end(reason)
    }

    fn stop_at_limit(&mut self) -> Result<Option<(u64, u64)>, WalError> {
        self.limit_reached = true;
        let reason = format!("reached the limit {}", format_lsn(self.limit));
        self.end(reason)
    }

    /// Read the next record, appending its bytes to `out`; its start and end.
    fn read_record(&mut self, out: &mut Vec<u8>) -> Result<Option<(u64, u64)>, WalError> {
        let mut start = self.next_lsn;
        if start >= self.limit {
            return self.stop_at_limit();
        }
        let page_lsn = start - start % XLOG_BLCKSZ;
        let hdr = match self.page(page_lsn)? {
            Page::Valid(h) => h,
            Page::Unwritten(why) | Page::Missing(why) => return self.end(why),
            Page::Invalid(why) => return self.damaged(why),
        };
        let off = start % XLOG_BLCKSZ;
        if off == 0 {
            start += hdr.size;
        } else if off < hdr.size {
            return self.damaged(format!(
                "record start {} points into a page header",
                format_lsn(start)
            ));
        }
        if start - page_lsn == hdr.size && hdr.info & XLP_FIRST_IS_CONTRECORD != 0 {
            return self.damaged(format!("contrecord is requested by {}", format_lsn(start)));
        }

        let page_avail = (XLOG_BLCKSZ - start % XLOG_BLCKSZ) as usize;
        // Records are 8-aligned, so at least 8 bytes (xl_tot_len) are on this page.
        let tot_len = xl_tot_len(self.bytes(start, 4));
        if tot_len == 0 {
            return self.end(format!(
                "zero record length at {} (end of written WAL)",
                format_lsn(start)
            ));
        }
        if (tot_len as usize) < SIZE_OF_XLOG_RECORD || tot_len > MAX_RECORD_LEN {
            return self.damaged(format!(
                "invalid record length at {}: {tot_len}",
                format_lsn(start)
            ));
        }
        // It ends at least this far: past the limit, it is not read.
        if start.saturating_add(u64::from(tot_len)) > self.limit {
            return self.stop_at_limit();
        }
        let tot = tot_len as usize;
        let base = out.len();
        let mut end = if tot <= page_avail {
            out.extend_from_slice(self.bytes(start, tot));
            start + maxalign(tot as u64)
        } else {
            out.reserve(tot);
            out.extend_from_slice(self.bytes(start, page_avail));
            let mut page = page_lsn + XLOG_BLCKSZ;
            loop {
                if page >= self.limit {
                    return self.stop_at_limit();
                }
                let h = match self.page(page)? {
                    Page::Valid(h) => h,
                    Page::Unwritten(why) | Page::Missing(why) => {
                        return self.end(format!(
                            "record at {} is incomplete: {why}",
                            format_lsn(start)
                        ))
                    }
                    Page::Invalid(why) => {
                        return self.damaged(format!(
                            "record at {} is incomplete: {why}",
                            format_lsn(start)
                        ))
                    }
                };
                let remaining = tot - (out.len() - base);
                if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The record was abandoned at a crash and new WAL
                    // written over its rest: the WAL goes on at this page
                    // (as xlogreader restarts there).
                    self.next_lsn = page;
                    out.truncate(base);
                    return self.read_record(out);
                }
                if h.info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return self.damaged(format!(
                        "there is no contrecord flag at {} (record at {})",
                        format_lsn(page),
                        format_lsn(start)
                    ));
                }
                if h.rem_len as usize != remaining {
                    return self.damaged(format!(
                        "invalid contrecord length {} (expected {remaining}) at {}",
                        h.rem_len,
                        format_lsn(page)
                    ));
                }
                let n = remaining.min((XLOG_BLCKSZ - h.size) as usize);
                out.extend_from_slice(self.bytes(page + h.size, n));
                if out.len() - base == tot {
                    break page + h.size + maxalign(n as u64);
                }
                page += XLOG_BLCKSZ;
            }
        };

        let data = &out[base..];
        let xl_prev = xl_prev(data);
        if let Some(prev) = self.prev_lsn {
            if xl_prev != prev {
                return self.damaged(format!(
                    "record with incorrect prev-link {} at {} (expected {})",
                    format_lsn(xl_prev),
                    format_lsn(start),
                    format_lsn(prev)
                ));
            }
        }
        if record_crc(data) != xl_crc(data) {
            return self.damaged(format!(
                "incorrect resource manager data checksum in record at {}",
                format_lsn(start)
            ));
        }
        if xl_rmid(data) == RM_XLOG_ID && xl_info(data) & XLR_RMGR_INFO_MASK == XLOG_SWITCH {
            // Pretend the record extends to the end of the segment.
            end = end.div_ceil(self.segs.seg_size) * self.segs.seg_size;
        }
        if end > self.limit {
            return self.stop_at_limit();
        }
        self.prev_lsn = Some(start);
        self.next_lsn = end;
        Ok(Some((start, end)))
    }
}

impl Iterator for WalReader {
    type Item = Result<WalRecord, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
impl std::iter::FusedIterator for WalReader {}
