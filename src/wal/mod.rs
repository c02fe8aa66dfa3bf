//! Reading PostgreSQL 15 WAL segment files.
//!
//! [`WalReader`] walks the segments of one timeline in a directory (normally a
//! cluster's `pg_wal`) and yields every record as its raw bytes: the complete
//! `XLogRecord`, header included, reassembled across page and segment
//! boundaries, with the record's start LSN and its end LSN exactly as
//! PostgreSQL 15's xlogreader computes `EndRecPtr`.
//!
//! The reader tells "the WAL ended" (iteration stops, see
//! [`WalReader::end_reason`]) apart from real problems ([`WalError`]): the end of
//! WAL is whatever PostgreSQL's own recovery would take as its end (a zeroed
//! tail, a recycled page, a torn last record, a missing next segment), while a
//! hole between present segments, unreadable files or inconsistent headers are
//! errors.

pub mod checksum;
pub mod crc32c;
pub mod image;
pub mod plan;
pub mod record;

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::wal::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};

/// WAL page size (XLOG_BLCKSZ).
pub const XLOG_BLCKSZ: u64 = 8192;
/// `xlp_magic` of PostgreSQL 15 WAL pages.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;
/// Size of a short page header (MAXALIGN(sizeof(XLogPageHeaderData))).
pub const SIZE_OF_XLOG_SHORT_PHD: u64 = 24;
/// Size of a long page header (MAXALIGN(sizeof(XLogLongPageHeaderData))).
pub const SIZE_OF_XLOG_LONG_PHD: u64 = 40;
/// Size of the fixed record header (XLogRecord).
pub const SIZE_OF_XLOG_RECORD: usize = 24;

/// xlp_info: the first data on the page continues a record.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// xlp_info: the page has a long header.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// xlp_info: backup blocks starting on this page are optional.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// xlp_info: replaces a missing contrecord.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All defined xlp_info bits.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// Resource manager id of the XLOG rmgr.
pub const RM_XLOG_ID: u8 = 0;
/// xl_info (high nibble) of an XLOG_SWITCH record.
pub const XLOG_SWITCH: u8 = 0x40;

/// Smallest and largest WAL segment size PostgreSQL allows.
pub const WAL_SEG_MIN_SIZE: u64 = 1024 * 1024;
pub const WAL_SEG_MAX_SIZE: u64 = 1024 * 1024 * 1024;

/// Largest record we accept (PostgreSQL's MaxAllocSize); anything bigger is
/// garbage and ends the WAL.
const MAX_RECORD_LEN: u32 = 0x3FFF_FFFF;

#[inline]
fn maxalign(x: u64) -> u64 {
    (x + 7) & !7
}

#[inline]
fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[inline]
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
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
        le_u32(&self.data, 0)
    }
    /// `xl_xid`.
    pub fn xid(&self) -> u32 {
        le_u32(&self.data, 4)
    }
    /// `xl_prev`.
    pub fn prev_lsn(&self) -> u64 {
        le_u64(&self.data, 8)
    }
    /// `xl_info`.
    pub fn info(&self) -> u8 {
        self.data[16]
    }
    /// `xl_rmid`.
    pub fn rmid(&self) -> u8 {
        self.data[17]
    }
    /// `xl_crc`.
    pub fn crc(&self) -> u32 {
        le_u32(&self.data, 20)
    }
    /// Whether this is an XLOG_SWITCH record.
    pub fn is_switch(&self) -> bool {
        self.rmid() == RM_XLOG_ID && (self.info() & 0xF0) == XLOG_SWITCH
    }
}

/// What went wrong while opening or reading WAL (as opposed to the WAL simply
/// ending, which is not an error).
#[derive(Debug)]
pub enum WalError {
    /// The WAL directory could not be listed.
    ReadDir { dir: PathBuf, source: io::Error },
    /// The directory holds no WAL segment files.
    NoSegments { dir: PathBuf },
    /// A segment file's size is not the segment size (or not a valid one).
    WrongSegmentSize {
        file: PathBuf,
        size: u64,
        expected: Option<u64>,
    },
    /// A segment is missing although later segments hold WAL.
    Gap {
        missing: String,
        next_present: String,
    },
    /// No present segment holds the requested start LSN.
    StartNotFound { lsn: u64, dir: PathBuf },
    /// The requested start LSN cannot be a record start.
    InvalidStart { lsn: u64, reason: String },
    /// Reading a segment file failed.
    Io { file: PathBuf, source: io::Error },
    /// A long page header disagrees with the files (segment or block size),
    /// or the first segment is not PostgreSQL 15 WAL at all.
    BadHeader { file: PathBuf, detail: String },
    /// A segment belongs to another database cluster.
    SystemIdMismatch {
        file: PathBuf,
        expected: u64,
        found: u64,
    },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::ReadDir { dir, source } => write!(
                f,
                "cannot read WAL directory {}: {source}; check that the path exists and is readable",
                dir.display()
            ),
            WalError::NoSegments { dir } => write!(
                f,
                "no WAL segment files (24 hex digit names) in {}; point at the cluster's pg_wal directory",
                dir.display()
            ),
            WalError::WrongSegmentSize {
                file,
                size,
                expected: Some(expected),
            } => write!(
                f,
                "WAL segment {} is {size} bytes, expected {expected}; it is truncated or foreign: restore it from the archive or remove it",
                file.display()
            ),
            WalError::WrongSegmentSize {
                file,
                size,
                expected: None,
            } => write!(
                f,
                "WAL segment {} is {size} bytes, not a valid WAL segment size (a power of two from 1 MiB to 1 GiB); it is truncated or foreign: restore it from the archive or remove it",
                file.display()
            ),
            WalError::Gap {
                missing,
                next_present,
            } => write!(
                f,
                "WAL gap: segment {missing} missing (WAL continues in {next_present}); restore {missing} from the archive"
            ),
            WalError::StartNotFound { lsn, dir } => write!(
                f,
                "start LSN {} is not in any WAL segment present in {}; restore that segment or choose a later start",
                format_lsn(*lsn),
                dir.display()
            ),
            WalError::InvalidStart { lsn, reason } => write!(
                f,
                "start LSN {} cannot be a record start: {reason}; pass a record start such as a checkpoint's redo LSN",
                format_lsn(*lsn)
            ),
            WalError::Io { file, source } => {
                write!(f, "cannot read WAL segment {}: {source}", file.display())
            }
            WalError::BadHeader { file, detail } => write!(
                f,
                "WAL segment {}: {detail}; this reader needs PostgreSQL 15 WAL with 8 KiB pages",
                file.display()
            ),
            WalError::SystemIdMismatch {
                file,
                expected,
                found,
            } => write!(
                f,
                "WAL segment {} belongs to database system {found}, not {expected}; remove files of other clusters from the directory",
                file.display()
            ),
        }
    }
}

impl Error for WalError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            WalError::ReadDir { source, .. } | WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Name of a segment file: timeline, then `segno / segs_per_xlogid`, then
/// `segno % segs_per_xlogid`, each 8 uppercase hex digits.
pub fn segment_file_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = segs_per_xlogid(seg_size);
    format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
}

/// Parse a segment file name (exactly 24 uppercase hex digits) into
/// (timeline, segment number).
pub fn parse_segment_file_name(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    let (tli, hi, lo) = split_segment_name(name)?;
    let per = segs_per_xlogid(seg_size);
    if u64::from(lo) >= per {
        return None;
    }
    Some((tli, u64::from(hi) * per + u64::from(lo)))
}

fn segs_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

fn split_segment_name(name: &str) -> Option<(u32, u32, u32)> {
    let b = name.as_bytes();
    if b.len() != 24 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    let part = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
    Some((part(0..8)?, part(8..16)?, part(16..24)?))
}

/// Format an LSN the way PostgreSQL does (`%X/%X`), e.g. `0/16B3748`.
/// Where the record after one ending at `end_lsn` starts: PostgreSQL's end
/// LSN stays at a page boundary, but the next record comes after that page's
/// header (a long one at a segment start). This is also what
/// `pg_current_wal_insert_lsn()` reports after the record.
pub fn next_record_start(end_lsn: u64, seg_size: u64) -> u64 {
    if end_lsn % XLOG_BLCKSZ != 0 {
        end_lsn
    } else if end_lsn % seg_size == 0 {
        end_lsn + SIZE_OF_XLOG_LONG_PHD
    } else {
        end_lsn + SIZE_OF_XLOG_SHORT_PHD
    }
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parse an LSN in `%X/%X` form (1 to 8 hex digits on each side, either case).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let ok = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|c| c.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return None;
    }
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// A validated page header.
#[derive(Clone, Copy, Debug)]
struct PageHeader {
    size: u64,
    info: u16,
    rem_len: u32,
}

/// Outcome of looking at the page header at some LSN.
enum Page {
    Valid(PageHeader),
    /// The page is not valid WAL at this position: the WAL ends here.
    Invalid(String),
    /// The segment holding the page is absent (and nothing follows it).
    Missing(String),
}

/// Reader over the records of one timeline in a WAL directory.
pub struct WalReader {
    dir: PathBuf,
    tli: u32,
    seg_size: u64,
    sysid: u64,
    /// Present segments of the chosen timeline: segno -> path.
    segments: BTreeMap<u64, PathBuf>,
    /// Segment currently held in `buf`.
    cur_segno: Option<u64>,
    buf: Vec<u8>,
    /// Where the next record begins (may be a page start: the header is skipped).
    next_lsn: u64,
    /// Start of the last record returned (to check `xl_prev`).
    prev_lsn: Option<u64>,
    done: bool,
    end_reason: Option<String>,
}

impl fmt::Debug for WalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalReader")
            .field("dir", &self.dir)
            .field("tli", &self.tli)
            .field("seg_size", &self.seg_size)
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
        let entries = fs::read_dir(dir).map_err(|source| WalError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        // (tli, hi, lo, path)
        let mut files: Vec<(u32, u32, u32, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| WalError::ReadDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            let name = entry.file_name();
            let Some((tli, hi, lo)) = name.to_str().and_then(split_segment_name) else {
                continue;
            };
            let path = entry.path();
            // Follow symlinks; skip anything that is not a regular file.
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => files.push((tli, hi, lo, path)),
                Ok(_) => {}
                Err(source) => return Err(WalError::Io { file: path, source }),
            }
        }
        if files.is_empty() {
            return Err(WalError::NoSegments {
                dir: dir.to_path_buf(),
            });
        }
        files.sort();

        // The segment size: the size of the lowest segment of the highest
        // timeline (every segment must have it; each long header is checked
        // against it when its segment is read).
        let max_tli = files.iter().map(|f| f.0).max().unwrap();
        let probe = files.iter().find(|f| f.0 == max_tli).unwrap();
        let size = file_len(&probe.3)?;
        if !size.is_power_of_two() || !(WAL_SEG_MIN_SIZE..=WAL_SEG_MAX_SIZE).contains(&size) {
            return Err(WalError::WrongSegmentSize {
                file: probe.3.clone(),
                size,
                expected: None,
            });
        }
        let seg_size = size;
        let per = segs_per_xlogid(seg_size);
        let segno_of = |f: &(u32, u32, u32, PathBuf)| -> Option<u64> {
            (u64::from(f.2) < per).then(|| u64::from(f.1) * per + u64::from(f.2))
        };

        let (tli, start_segno) = match start {
            None => (max_tli, None),
            Some(lsn) => {
                let segno = lsn / seg_size;
                let tli = files
                    .iter()
                    .filter(|f| segno_of(f) == Some(segno))
                    .map(|f| f.0)
                    .max()
                    .ok_or_else(|| WalError::StartNotFound {
                        lsn,
                        dir: dir.to_path_buf(),
                    })?;
                (tli, Some(segno))
            }
        };
        let segments: BTreeMap<u64, PathBuf> = files
            .iter()
            .filter(|f| f.0 == tli)
            .filter_map(|f| Some((segno_of(f)?, f.3.clone())))
            .collect();
        let first_segno = match start_segno {
            Some(s) => s,
            None => match segments.keys().next() {
                Some(&s) => s,
                None => {
                    return Err(WalError::NoSegments {
                        dir: dir.to_path_buf(),
                    })
                }
            },
        };

        let mut reader = WalReader {
            dir: dir.to_path_buf(),
            tli,
            seg_size,
            sysid: 0,
            segments,
            cur_segno: None,
            buf: Vec::new(),
            next_lsn: 0,
            prev_lsn: None,
            done: false,
            end_reason: None,
        };

        // The first page of the start segment must be a valid long header;
        // it gives the system identifier.
        reader.load_segment(first_segno)?;
        let seg_start = first_segno * seg_size;
        let file = reader.segments[&first_segno].clone();
        let b = &reader.buf[..SIZE_OF_XLOG_LONG_PHD as usize];
        let magic = le_u16(b, 0);
        let info = le_u16(b, 2);
        let pageaddr = le_u64(b, 8);
        if magic != XLOG_PAGE_MAGIC {
            return Err(WalError::BadHeader {
                file,
                detail: format!(
                    "first page has magic 0x{magic:04X}, expected 0x{XLOG_PAGE_MAGIC:04X} (PostgreSQL 15); it is not PostgreSQL 15 WAL, or an unused preallocated file"
                ),
            });
        }
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
        reader.sysid = le_u64(b, 24);
        // Checks segment and block size.
        if let Page::Invalid(why) = reader.page(seg_start)? {
            return Err(WalError::BadHeader { file, detail: why });
        }

        match start {
            Some(lsn) => {
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
                reader.next_lsn = lsn;
            }
            None => {
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
                        Page::Invalid(_) | Page::Missing(_) => break page,
                    }
                };
            }
        }
        Ok(reader)
    }

    /// The timeline being read.
    pub fn timeline(&self) -> u32 {
        self.tli
    }

    /// WAL segment size in bytes.
    pub fn segment_size(&self) -> u64 {
        self.seg_size
    }

    /// Database system identifier from the first segment's long header.
    pub fn system_id(&self) -> u64 {
        self.sysid
    }

    /// The directory being read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next record would begin: the end LSN of the last record
    /// returned (or the start position). After the end of WAL this is the
    /// end of the valid WAL.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Why the WAL ended, once [`next_record`](Self::next_record) returned
    /// `Ok(None)`.
    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    /// The next record; `Ok(None)` at the end of the WAL. After the end or an
    /// error, always `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<WalRecord>, WalError> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_record();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn end(&mut self, reason: String) -> Result<Option<WalRecord>, WalError> {
        self.end_reason = Some(reason);
        Ok(None)
    }

    fn read_record(&mut self) -> Result<Option<WalRecord>, WalError> {
        let mut start = self.next_lsn;
        let page_lsn = start - start % XLOG_BLCKSZ;
        let hdr = match self.page(page_lsn)? {
            Page::Valid(h) => h,
            Page::Invalid(why) | Page::Missing(why) => return self.end(why),
        };
        let off = start % XLOG_BLCKSZ;
        if off == 0 {
            start += hdr.size;
        } else if off < hdr.size {
            return self.end(format!(
                "record start {} points into a page header",
                format_lsn(start)
            ));
        }
        if start - page_lsn == hdr.size && hdr.info & XLP_FIRST_IS_CONTRECORD != 0 {
            return self.end(format!("contrecord is requested by {}", format_lsn(start)));
        }

        let seg_size = self.seg_size;
        let seg_off = (start % seg_size) as usize;
        let page_avail = (XLOG_BLCKSZ - start % XLOG_BLCKSZ) as usize;
        // Records are 8-aligned, so at least 8 bytes (xl_tot_len) are on this page.
        let tot_len = le_u32(&self.buf, seg_off);
        if tot_len == 0 {
            return self.end(format!(
                "zero record length at {} (end of written WAL)",
                format_lsn(start)
            ));
        }
        if (tot_len as usize) < SIZE_OF_XLOG_RECORD || tot_len > MAX_RECORD_LEN {
            return self.end(format!(
                "invalid record length at {}: {tot_len}",
                format_lsn(start)
            ));
        }
        let tot = tot_len as usize;
        let (data, mut end) = if tot <= page_avail {
            (
                self.buf[seg_off..seg_off + tot].to_vec(),
                start + maxalign(tot as u64),
            )
        } else {
            let mut data = Vec::with_capacity(tot);
            data.extend_from_slice(&self.buf[seg_off..seg_off + page_avail]);
            let mut page = page_lsn + XLOG_BLCKSZ;
            loop {
                let h = match self.page(page)? {
                    Page::Valid(h) => h,
                    Page::Invalid(why) | Page::Missing(why) => {
                        return self.end(format!(
                            "record at {} is incomplete: {why}",
                            format_lsn(start)
                        ))
                    }
                };
                let remaining = tot - data.len();
                if h.info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return self.end(format!(
                        "there is no contrecord flag at {} (record at {})",
                        format_lsn(page),
                        format_lsn(start)
                    ));
                }
                if h.rem_len as usize != remaining {
                    return self.end(format!(
                        "invalid contrecord length {} (expected {remaining}) at {}",
                        h.rem_len,
                        format_lsn(page)
                    ));
                }
                let n = remaining.min((XLOG_BLCKSZ - h.size) as usize);
                let o = (page % seg_size + h.size) as usize;
                data.extend_from_slice(&self.buf[o..o + n]);
                if data.len() == tot {
                    break (data, page + h.size + maxalign(n as u64));
                }
                page += XLOG_BLCKSZ;
            }
        };

        let xl_prev = le_u64(&data, 8);
        if let Some(prev) = self.prev_lsn {
            if xl_prev != prev {
                return self.end(format!(
                    "record with incorrect prev-link {} at {} (expected {})",
                    format_lsn(xl_prev),
                    format_lsn(start),
                    format_lsn(prev)
                ));
            }
        }
        let crc = crc32c_finish(crc32c_update(
            crc32c_update(CRC32C_INIT, &data[SIZE_OF_XLOG_RECORD..]),
            &data[..20],
        ));
        if crc != le_u32(&data, 20) {
            return self.end(format!(
                "incorrect resource manager data checksum in record at {}",
                format_lsn(start)
            ));
        }
        if data[17] == RM_XLOG_ID && data[16] & 0xF0 == XLOG_SWITCH {
            // Pretend the record extends to the end of the segment.
            end = end.div_ceil(seg_size) * seg_size;
        }
        self.prev_lsn = Some(start);
        self.next_lsn = end;
        Ok(Some(WalRecord {
            start_lsn: start,
            end_lsn: end,
            data,
        }))
    }

    /// Look at the page header at `page_lsn` (a page start), loading its
    /// segment if needed.
    fn page(&mut self, page_lsn: u64) -> Result<Page, WalError> {
        let segno = page_lsn / self.seg_size;
        if self.cur_segno != Some(segno) {
            if !self.segments.contains_key(&segno) {
                self.check_gap(segno)?;
                return Ok(Page::Missing(format!(
                    "next WAL segment {} is not present",
                    segment_file_name(self.tli, segno, self.seg_size)
                )));
            }
            self.load_segment(segno)?;
        }
        let off = (page_lsn % self.seg_size) as usize;
        let b = &self.buf[off..off + SIZE_OF_XLOG_LONG_PHD as usize];
        let magic = le_u16(b, 0);
        let info = le_u16(b, 2);
        let pageaddr = le_u64(b, 8);
        let rem_len = le_u32(b, 16);
        let at = || {
            format!(
                "segment {}, offset {off}",
                segment_file_name(self.tli, segno, self.seg_size)
            )
        };
        if magic != XLOG_PAGE_MAGIC {
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
            return Ok(Page::Invalid(format!(
                "unexpected pageaddr {} in {} (recycled segment)",
                format_lsn(pageaddr),
                at()
            )));
        }
        let size = if info & XLP_LONG_HEADER != 0 {
            let file = || self.segments[&segno].clone();
            let sysid = le_u64(b, 24);
            let seg_size = le_u32(b, 32);
            let blcksz = le_u32(b, 36);
            if u64::from(seg_size) != self.seg_size {
                return Err(WalError::BadHeader {
                    file: file(),
                    detail: format!(
                        "long page header says segment size {seg_size}, but the files are {} bytes",
                        self.seg_size
                    ),
                });
            }
            if u64::from(blcksz) != XLOG_BLCKSZ {
                return Err(WalError::BadHeader {
                    file: file(),
                    detail: format!("WAL block size is {blcksz}, not {XLOG_BLCKSZ}"),
                });
            }
            if self.sysid != 0 && sysid != self.sysid {
                return Err(WalError::SystemIdMismatch {
                    file: file(),
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
    fn check_gap(&self, segno: u64) -> Result<(), WalError> {
        let Some((&next, path)) = self.segments.range(segno + 1..).next() else {
            return Ok(());
        };
        let mut head = [0u8; SIZE_OF_XLOG_LONG_PHD as usize];
        let ok = File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok();
        // A later file that is only a recycled/preallocated segment does not
        // prove that WAL continued.
        if ok && le_u16(&head, 0) == XLOG_PAGE_MAGIC && le_u64(&head, 8) == next * self.seg_size {
            return Err(WalError::Gap {
                missing: segment_file_name(self.tli, segno, self.seg_size),
                next_present: segment_file_name(self.tli, next, self.seg_size),
            });
        }
        Ok(())
    }

    fn load_segment(&mut self, segno: u64) -> Result<(), WalError> {
        let path = &self.segments[&segno];
        self.cur_segno = None;
        let io = |source| WalError::Io {
            file: path.clone(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        if size != self.seg_size {
            return Err(WalError::WrongSegmentSize {
                file: path.clone(),
                size,
                expected: Some(self.seg_size),
            });
        }
        self.buf.resize(self.seg_size as usize, 0);
        f.read_exact(&mut self.buf).map_err(io)?;
        self.cur_segno = Some(segno);
        Ok(())
    }
}

fn file_len(path: &Path) -> Result<u64, WalError> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| WalError::Io {
            file: path.to_path_buf(),
            source,
        })
}

impl Iterator for WalReader {
    type Item = Result<WalRecord, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

impl std::iter::FusedIterator for WalReader {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SEG: u64 = 1024 * 1024; // 1 MiB test segments
    const SYSID: u64 = 7_300_000_000_000_000_001;

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "walredo-wal-{}-{}-{}",
                std::process::id(),
                tag,
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Lays out WAL the way PostgreSQL's CopyXLogRecordToWAL does.
    struct Builder {
        tli: u32,
        first_segno: u64,
        buf: Vec<u8>, // starts at first_segno * SEG
        pos: u64,     // insert position (LSN)
        prev: u64,
        records: Vec<WalRecord>,
    }

    impl Builder {
        fn new(tli: u32, first_segno: u64) -> Builder {
            Builder {
                tli,
                first_segno,
                buf: Vec::new(),
                pos: first_segno * SEG,
                prev: 0,
                records: Vec::new(),
            }
        }
        fn base(&self) -> u64 {
            self.first_segno * SEG
        }
        fn at(&mut self, lsn: u64, len: usize) -> &mut [u8] {
            let o = (lsn - self.base()) as usize;
            if self.buf.len() < o + len {
                let segs = (o + len).div_ceil(SEG as usize);
                self.buf.resize(segs * SEG as usize, 0);
            }
            &mut self.buf[o..o + len]
        }
        fn page_header(&mut self, page: u64, flags: u16, rem_len: u32) -> u64 {
            let long = page % SEG == 0;
            let tli = self.tli;
            let h = self.at(page, 40);
            let info = flags | if long { XLP_LONG_HEADER } else { 0 };
            h[0..2].copy_from_slice(&XLOG_PAGE_MAGIC.to_le_bytes());
            h[2..4].copy_from_slice(&info.to_le_bytes());
            h[4..8].copy_from_slice(&tli.to_le_bytes());
            h[8..16].copy_from_slice(&page.to_le_bytes());
            h[16..20].copy_from_slice(&rem_len.to_le_bytes());
            if long {
                h[24..32].copy_from_slice(&SYSID.to_le_bytes());
                h[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                h[36..40].copy_from_slice(&(XLOG_BLCKSZ as u32).to_le_bytes());
                40
            } else {
                24
            }
        }
        /// Insert a record of `tot_len` bytes; returns (start, end) as the
        /// builder computed them (tests check against hand-computed values).
        fn record(&mut self, rmid: u8, info: u8, tot_len: usize) -> (u64, u64) {
            assert!(tot_len >= 24);
            if self.pos % XLOG_BLCKSZ == 0 {
                let p = self.pos;
                self.pos += self.page_header(p, 0, 0);
            }
            let start = self.pos;
            let mut rec = vec![0u8; tot_len];
            rec[0..4].copy_from_slice(&(tot_len as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&(start as u32 ^ 0x5555).to_le_bytes());
            rec[8..16].copy_from_slice(&self.prev.to_le_bytes());
            rec[16] = info;
            rec[17] = rmid;
            for (i, b) in rec[24..].iter_mut().enumerate() {
                *b = (i as u64).wrapping_mul(31).wrapping_add(start) as u8;
            }
            let crc = crc32c_finish(crc32c_update(
                crc32c_update(CRC32C_INIT, &rec[24..]),
                &rec[..20],
            ));
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            let mut written = 0;
            while written < tot_len {
                if self.pos % XLOG_BLCKSZ == 0 {
                    let p = self.pos;
                    self.pos +=
                        self.page_header(p, XLP_FIRST_IS_CONTRECORD, (tot_len - written) as u32);
                }
                let n = (tot_len - written).min((XLOG_BLCKSZ - self.pos % XLOG_BLCKSZ) as usize);
                let p = self.pos;
                self.at(p, n).copy_from_slice(&rec[written..written + n]);
                written += n;
                self.pos += n as u64;
            }
            self.pos = maxalign(self.pos);
            if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH && self.pos % SEG != 0 {
                // Rest of the segment: initialized pages with headers only.
                let next = self.pos.div_ceil(SEG) * SEG;
                let mut p = self.pos.div_ceil(XLOG_BLCKSZ) * XLOG_BLCKSZ;
                while p < next {
                    self.page_header(p, 0, 0);
                    p += XLOG_BLCKSZ;
                }
                self.pos = next;
            }
            self.prev = start;
            self.records.push(WalRecord {
                start_lsn: start,
                end_lsn: self.pos,
                data: rec,
            });
            (start, self.pos)
        }
        fn small(&mut self, tot_len: usize) -> (u64, u64) {
            self.record(10, 0, tot_len)
        }
        /// Write all segments touched so far.
        fn write(&mut self, dir: &Path) {
            // Make sure the segment holding `pos` exists (zero tail).
            let p = self.pos;
            self.at(p, 8);
            for (i, seg) in self.buf.chunks(SEG as usize).enumerate() {
                let segno = self.first_segno + i as u64;
                fs::write(dir.join(segment_file_name(self.tli, segno, SEG)), seg).unwrap();
            }
        }
    }

    fn seg_path(dir: &Path, tli: u32, segno: u64) -> PathBuf {
        dir.join(segment_file_name(tli, segno, SEG))
    }

    /// Read everything: (records, final error if any).
    fn read_all(dir: &Path, start: Option<u64>) -> (Vec<WalRecord>, Option<WalError>, WalReader) {
        let mut r = WalReader::open(dir, start).unwrap();
        let mut out = Vec::new();
        loop {
            match r.next_record() {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => return (out, None, r),
                Err(e) => return (out, Some(e), r),
            }
        }
    }

    fn spans(recs: &[WalRecord]) -> Vec<(u64, u64, usize)> {
        recs.iter()
            .map(|r| (r.start_lsn, r.end_lsn, r.data.len()))
            .collect()
    }

    #[test]
    fn next_record_starts_after_a_page_header() {
        assert_eq!(next_record_start(0x1000_0028, SEG), 0x1000_0028);
        assert_eq!(next_record_start(0x1000_2000, SEG), 0x1000_2018);
        assert_eq!(next_record_start(0x1010_0000, SEG), 0x1010_0028);
    }

    #[test]
    fn names_and_lsns() {
        let m16 = 16 * 1024 * 1024;
        assert_eq!(segment_file_name(1, 1, m16), "000000010000000000000001");
        assert_eq!(segment_file_name(1, 0x100, m16), "000000010000000100000000");
        assert_eq!(segment_file_name(2, 0x2FF, m16), "0000000200000002000000FF");
        assert_eq!(segment_file_name(1, 4096, SEG), "000000010000000100000000");
        assert_eq!(
            segment_file_name(0x1A, 4097, SEG),
            "0000001A0000000100000001"
        );
        assert_eq!(
            parse_segment_file_name("0000000200000002000000FF", m16),
            Some((2, 0x2FF))
        );
        assert_eq!(
            parse_segment_file_name("0000001A0000000100000001", SEG),
            Some((0x1A, 4097))
        );
        for (tli, segno, size) in [
            (1, 1, m16),
            (3, 12345, SEG),
            (7, 5, 1 << 30),
            (9, 0xFFFF, 64 << 20),
        ] {
            let n = segment_file_name(tli, segno, size);
            assert_eq!(parse_segment_file_name(&n, size), Some((tli, segno)));
        }
        // lowercase, wrong length, out-of-range low part
        assert_eq!(
            parse_segment_file_name("0000000100000000000000ff", m16),
            None
        );
        assert_eq!(
            parse_segment_file_name("00000001000000000000001", m16),
            None
        );
        assert_eq!(
            parse_segment_file_name("000000010000000000000001.partial", m16),
            None
        );
        assert_eq!(
            parse_segment_file_name("000000010000000000000100", m16),
            None
        );
        assert_eq!(format_lsn(0x16B3748), "0/16B3748");
        assert_eq!(format_lsn(0x1_0000_00A0), "1/A0");
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/a0"), Some(0x1_0000_00A0));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in [
            "",
            "/",
            "0/",
            "/1",
            "1",
            "0/123456789",
            "x/1",
            "0/1/2",
            "-1/0",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[test]
    fn many_small_records_on_one_page() {
        let d = TempDir::new("small");
        let mut b = Builder::new(1, 1);
        for _ in 0..10 {
            b.small(34);
        }
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(r.timeline(), 1);
        assert_eq!(r.segment_size(), SEG);
        assert_eq!(r.system_id(), SYSID);
        assert_eq!(recs.len(), 10);
        // first record after the 40-byte long header; each takes MAXALIGN(34) = 40
        assert_eq!((recs[0].start_lsn, recs[0].end_lsn), (0x100028, 0x100050));
        assert_eq!((recs[9].start_lsn, recs[9].end_lsn), (0x100190, 0x1001B8));
        for (i, rec) in recs.iter().enumerate() {
            assert_eq!(rec.start_lsn, 0x100028 + 40 * i as u64);
            assert_eq!(rec.end_lsn, rec.start_lsn + 40);
            assert_eq!(rec.total_len(), 34);
            assert_eq!(rec.rmid(), 10);
        }
        assert_eq!(recs, b.records);
        assert!(
            r.end_reason().unwrap().contains("zero record length"),
            "{:?}",
            r.end_reason()
        );
        assert_eq!(r.next_lsn(), 0x1001B8);
    }

    #[test]
    fn record_spanning_two_pages() {
        let d = TempDir::new("two");
        let mut b = Builder::new(1, 1);
        b.small(8200);
        b.small(30);
        b.write(&d.0);
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        // 8152 bytes on page 0, 48 after page 0x102000's 24-byte header
        assert_eq!(
            spans(&recs),
            vec![(0x100028, 0x102048, 8200), (0x102048, 0x102068, 30)]
        );
        assert_eq!(recs, b.records);
    }

    #[test]
    fn record_header_split_across_pages() {
        for (first, split_start, next_end) in [
            // 8 bytes of the next record on page 0: 40 + 8144 = 8184
            (8144usize, 0x101FF8u64, 0x102000 + 24 + 96),
            // 16 bytes on page 0: 40 + 8136 = 8176
            (8136, 0x101FF0, 0x102000 + 24 + 88),
        ] {
            let d = TempDir::new("hsplit");
            let mut b = Builder::new(1, 1);
            b.small(first);
            b.small(100);
            b.small(24);
            b.write(&d.0);
            let (recs, err, _) = read_all(&d.0, None);
            assert!(err.is_none());
            assert_eq!(
                spans(&recs),
                vec![
                    (0x100028, split_start, first),
                    (split_start, next_end, 100),
                    (next_end, next_end + 24, 24)
                ]
            );
            assert_eq!(recs, b.records);
        }
    }

    #[test]
    fn record_over_three_pages() {
        let d = TempDir::new("three");
        let mut b = Builder::new(1, 1);
        b.small(20000);
        b.small(24);
        b.write(&d.0);
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        // 8152 + 8168 on pages 0 and 1, 3680 after page 0x104000's header
        assert_eq!(
            spans(&recs),
            vec![(0x100028, 0x104E78, 20000), (0x104E78, 0x104E90, 24)]
        );
        assert_eq!(recs, b.records);
    }

    /// Record A fills segment 1 up to 0x1FFF00; B (1000 bytes) starts with 256
    /// bytes there and ends 744 bytes after segment 2's long header.
    fn segment_crossing(b: &mut Builder) {
        assert_eq!(b.small(8152 + 126 * 8168 + 7912), (0x100028, 0x1FFF00));
        b.small(1000);
        b.small(50);
    }

    #[test]
    fn record_spanning_segments() {
        let d = TempDir::new("segcross");
        let mut b = Builder::new(1, 1);
        segment_crossing(&mut b);
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(
            spans(&recs),
            vec![
                (0x100028, 0x1FFF00, 1_045_232),
                (0x1FFF00, 0x200310, 1000),
                (0x200310, 0x200348, 50)
            ]
        );
        assert_eq!(recs, b.records);
        assert_eq!(r.next_lsn(), 0x200348);
    }

    #[test]
    fn record_ending_at_page_boundary() {
        let d = TempDir::new("pgend");
        let mut b = Builder::new(1, 1);
        b.small(8152); // fills page 0 exactly
        b.small(40);
        b.small(8168 - 40 + 8168); // rest of page 1 plus all of page 2
        b.small(24);
        b.write(&d.0);
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(
            spans(&recs),
            vec![
                (0x100028, 0x102000, 8152),
                (0x102018, 0x102040, 40),
                (0x102040, 0x106000, 16296),
                (0x106018, 0x106030, 24)
            ]
        );
        assert_eq!(recs, b.records);
    }

    #[test]
    fn xlog_switch() {
        let d = TempDir::new("switch");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(60);
        b.write(&d.0);
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(
            spans(&recs),
            vec![
                (0x100028, 0x100050, 34),
                (0x100050, 0x200000, 24),
                (0x200028, 0x200068, 60)
            ]
        );
        assert!(recs[1].is_switch());
        assert_eq!(recs[2].prev_lsn(), 0x100050);
        assert_eq!(recs, b.records);
    }

    #[test]
    fn end_by_missing_next_segment() {
        // mid-record
        let d = TempDir::new("missing");
        let mut b = Builder::new(1, 1);
        segment_crossing(&mut b);
        b.write(&d.0);
        fs::remove_file(seg_path(&d.0, 1, 2)).unwrap();
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x100028, 0x1FFF00, 1_045_232)]);
        assert!(r.end_reason().unwrap().contains("000000010000000000000002"));
        assert_eq!(r.next_lsn(), 0x1FFF00);

        // at a record boundary (after a switch)
        let d = TempDir::new("missing2");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(60);
        b.write(&d.0);
        fs::remove_file(seg_path(&d.0, 1, 2)).unwrap();
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(
            spans(&recs),
            vec![(0x100028, 0x100050, 34), (0x100050, 0x200000, 24)]
        );
        assert_eq!(r.next_lsn(), 0x200000);
    }

    #[test]
    fn end_by_recycled_page() {
        // at a record boundary: page 0x102000 carries an old page address
        let d = TempDir::new("recycled");
        let mut b = Builder::new(1, 1);
        b.small(8152);
        b.small(40);
        b.at(0x102008, 8).copy_from_slice(&0x2000u64.to_le_bytes());
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x100028, 0x102000, 8152)]);
        assert!(
            r.end_reason().unwrap().contains("pageaddr"),
            "{:?}",
            r.end_reason()
        );

        // mid-record: the next segment is an old recycled file
        let d = TempDir::new("recycled2");
        let mut b = Builder::new(1, 1);
        segment_crossing(&mut b);
        b.at(0x200008, 8).copy_from_slice(&0x0u64.to_le_bytes());
        b.write(&d.0);
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x100028, 0x1FFF00, 1_045_232)]);

        // a continuation page without the contrecord flag
        let d = TempDir::new("nocont");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.small(8200);
        b.at(0x102002, 2).copy_from_slice(&0u16.to_le_bytes());
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x100028, 0x100050, 34)]);
        assert!(r.end_reason().unwrap().contains("contrecord"));

        // a zeroed (never written) page in the middle of a record
        let d = TempDir::new("zeropage");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.small(20000);
        b.at(0x104000, 8192).fill(0);
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x100028, 0x100050, 34)]);
        assert!(r.end_reason().unwrap().contains("magic"));
    }

    #[test]
    fn end_by_bad_crc() {
        let d = TempDir::new("crc");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.small(34);
        b.small(8200);
        b.small(34);
        b.at(0x102030, 1)[0] ^= 0x01; // last byte of the 8200-byte record
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(
            spans(&recs),
            vec![(0x100028, 0x100050, 34), (0x100050, 0x100078, 34)]
        );
        assert!(r.end_reason().unwrap().contains("checksum"));
        assert_eq!(r.next_lsn(), 0x100078);
    }

    #[test]
    fn gap_is_an_error() {
        let d = TempDir::new("gap");
        let mut b = Builder::new(1, 1);
        segment_crossing(&mut b);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(100); // in segment 3
        b.write(&d.0);
        fs::remove_file(seg_path(&d.0, 1, 2)).unwrap();
        let (recs, err, _) = read_all(&d.0, None);
        assert_eq!(recs.len(), 1);
        let e = err.expect("gap error");
        assert!(matches!(e, WalError::Gap { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("WAL gap: segment 000000010000000000000002 missing"),
            "{e}"
        );

        // if segment 3 is only a recycled file, the WAL simply ends
        let mut f = fs::read(seg_path(&d.0, 1, 3)).unwrap();
        f[8..16].copy_from_slice(&0x100000u64.to_le_bytes());
        fs::write(seg_path(&d.0, 1, 3), f).unwrap();
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn start_from_lsn() {
        let d = TempDir::new("start");
        let mut b = Builder::new(1, 1);
        for _ in 0..3 {
            b.small(34);
        }
        // A from 0x1000A0 to 0x1FFF00: 8032 bytes on page 0, then as in segment_crossing
        assert_eq!(b.small(8032 + 126 * 8168 + 7912), (0x1000A0, 0x1FFF00));
        assert_eq!(b.small(1000), (0x1FFF00, 0x200310));
        b.small(50);
        b.write(&d.0);
        let (recs, err, _) = read_all(&d.0, Some(0x100050));
        assert!(err.is_none());
        assert_eq!(recs[0].start_lsn, 0x100050);
        assert_eq!(recs[1].start_lsn, 0x100078);
        assert_eq!(recs, b.records[1..]);
        // starting in the second segment
        let (recs, err, _) = read_all(&d.0, Some(0x200310));
        assert!(err.is_none());
        assert_eq!(recs, b.records[5..]);

        // page-start LSN: the header is skipped
        let d2 = TempDir::new("start2");
        let mut b2 = Builder::new(1, 1);
        b2.small(8152);
        b2.small(40);
        b2.write(&d2.0);
        let (recs, _, _) = read_all(&d2.0, Some(0x102000));
        assert_eq!(spans(&recs), vec![(0x102018, 0x102040, 40)]);

        let err = |lsn| WalReader::open(&d.0, Some(lsn)).unwrap_err();
        assert!(matches!(err(0x100054), WalError::InvalidStart { .. }));
        assert!(matches!(err(0x100010), WalError::InvalidStart { .. }));
        assert!(matches!(err(0x102008), WalError::InvalidStart { .. }));
        assert!(matches!(err(0x500000), WalError::StartNotFound { .. }));
        assert!(matches!(err(0x80000), WalError::StartNotFound { .. }));
    }

    #[test]
    fn skips_leading_continuation() {
        // continuation shorter than a page
        let d = TempDir::new("lead");
        let mut b = Builder::new(1, 1);
        segment_crossing(&mut b);
        b.write(&d.0);
        fs::remove_file(seg_path(&d.0, 1, 1)).unwrap();
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x200310, 0x200348, 50)]);

        // continuation covering the whole first page of the segment
        let d = TempDir::new("lead2");
        let mut b = Builder::new(1, 1);
        b.small(8152 + 126 * 8168 + 7912);
        assert_eq!(b.small(256 + 8152 + 100), (0x1FFF00, 0x202080));
        b.small(24);
        b.write(&d.0);
        fs::remove_file(seg_path(&d.0, 1, 1)).unwrap();
        let (recs, err, _) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(0x202080, 0x202098, 24)]);
    }

    #[test]
    fn picks_highest_timeline_and_ignores_other_files() {
        let d = TempDir::new("tli");
        let mut b1 = Builder::new(1, 1);
        b1.small(34);
        b1.write(&d.0);
        let mut b2 = Builder::new(2, 2);
        b2.small(48);
        b2.small(48);
        b2.write(&d.0);
        fs::write(d.0.join("00000002.history"), "1\t0/200000\tno reason\n").unwrap();
        fs::write(d.0.join("000000010000000000000003.partial"), b"x").unwrap();
        fs::create_dir(d.0.join("archive_status")).unwrap();
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(r.timeline(), 2);
        assert_eq!(
            spans(&recs),
            vec![(0x200028, 0x200058, 48), (0x200058, 0x200088, 48)]
        );
        // a start LSN only timeline 1 has
        let (recs, _, r) = read_all(&d.0, Some(0x100028));
        assert_eq!(r.timeline(), 1);
        assert_eq!(spans(&recs), vec![(0x100028, 0x100050, 34)]);
    }

    #[test]
    fn open_errors() {
        let d = TempDir::new("errs");
        assert!(matches!(
            WalReader::open(&d.0.join("nope"), None),
            Err(WalError::ReadDir { .. })
        ));
        assert!(matches!(
            WalReader::open(&d.0, None),
            Err(WalError::NoSegments { .. })
        ));

        // wrong size of a later segment: reported when it is reached
        let mut b = Builder::new(1, 1);
        segment_crossing(&mut b);
        b.write(&d.0);
        let p2 = seg_path(&d.0, 1, 2);
        let mut f = fs::read(&p2).unwrap();
        f.truncate(SEG as usize / 2);
        fs::write(&p2, &f).unwrap();
        let (recs, err, _) = read_all(&d.0, None);
        assert_eq!(recs.len(), 1);
        assert!(matches!(err, Some(WalError::WrongSegmentSize { .. })));

        // not a valid segment size at all
        let d = TempDir::new("errs2");
        fs::write(seg_path(&d.0, 1, 1), vec![0u8; 12345]).unwrap();
        let e = WalReader::open(&d.0, None).unwrap_err();
        assert!(
            matches!(e, WalError::WrongSegmentSize { expected: None, .. }),
            "{e}"
        );

        // long header disagreeing with the file size
        let d = TempDir::new("errs3");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.at(0x100020, 4)
            .copy_from_slice(&(2 * SEG as u32).to_le_bytes());
        b.write(&d.0);
        let e = WalReader::open(&d.0, None).unwrap_err();
        assert!(matches!(e, WalError::BadHeader { .. }), "{e}");
        assert!(e.to_string().contains("segment size"), "{e}");

        // wrong block size
        let d = TempDir::new("errs4");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.at(0x100024, 4).copy_from_slice(&16384u32.to_le_bytes());
        b.write(&d.0);
        assert!(matches!(
            WalReader::open(&d.0, None),
            Err(WalError::BadHeader { .. })
        ));

        // other PostgreSQL version
        let d = TempDir::new("errs5");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.at(0x100000, 2).copy_from_slice(&0xD10Du16.to_le_bytes());
        b.write(&d.0);
        let e = WalReader::open(&d.0, None).unwrap_err();
        assert!(e.to_string().contains("magic 0xD10D"), "{e}");
    }

    #[test]
    fn iterator_stops_after_end() {
        let d = TempDir::new("iter");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.small(34);
        b.write(&d.0);
        let mut r = WalReader::open(&d.0, None).unwrap();
        let recs: Vec<WalRecord> = r.by_ref().map(Result::unwrap).collect();
        assert_eq!(recs.len(), 2);
        assert!(r.next().is_none());
        assert!(r.next_record().unwrap().is_none());
    }
}
