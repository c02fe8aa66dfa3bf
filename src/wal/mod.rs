//! Reading PostgreSQL WAL (15 to 18) segment files, in one directory or several.
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

pub mod checksum;
pub mod crc32c;
pub mod image;
pub mod lifetime;
pub mod pages;
pub mod plan;
pub mod record;
pub mod source;
pub mod timeline;

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::wal::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};
use crate::wal::timeline::History;

/// WAL page size (XLOG_BLCKSZ).
pub const XLOG_BLCKSZ: u64 = 8192;
/// `xlp_magic` of PostgreSQL 15 WAL pages.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;

/// The PostgreSQL major versions whose WAL this library reads and redoes,
/// with each one's `XLOG_PAGE_MAGIC` (access/xlog_internal.h). Every major
/// release changes the magic; the record format itself (record, block and
/// image headers, resource manager ids) is the same from 15 to 18.
pub const PG_VERSIONS: [(u32, u16); 4] = [(15, 0xD110), (16, 0xD113), (17, 0xD116), (18, 0xD118)];

/// `xlp_magic` of WAL pages written by PostgreSQL `pg_version`.
pub fn xlog_page_magic(pg_version: u32) -> Option<u16> {
    PG_VERSIONS
        .iter()
        .find(|(v, _)| *v == pg_version)
        .map(|(_, m)| *m)
}

/// The PostgreSQL major version that writes WAL pages with this magic.
pub fn pg_version_of_magic(magic: u16) -> Option<u32> {
    PG_VERSIONS
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(v, _)| *v)
}

/// "15, 16, 17 or 18", for messages.
pub fn supported_versions() -> String {
    let v: Vec<String> = PG_VERSIONS.iter().map(|(v, _)| v.to_string()).collect();
    format!("{} or {}", v[..v.len() - 1].join(", "), v[v.len() - 1])
}
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
    /// The directories hold no WAL segment files (of the timeline asked for).
    NoSegments {
        dirs: Vec<PathBuf>,
        timeline: Option<u32>,
    },
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
    StartNotFound { lsn: u64, dirs: Vec<PathBuf> },
    /// A segment listed a moment ago is in none of the directories any more:
    /// the server removed or recycled it while it was being read.
    Removed { segment: String, dirs: Vec<PathBuf> },
    /// The requested start LSN cannot be a record start.
    InvalidStart { lsn: u64, reason: String },
    /// Reading a segment file failed.
    Io { file: PathBuf, source: io::Error },
    /// A long page header disagrees with the files (segment or block size),
    /// or the first segment is not PostgreSQL WAL at all.
    BadHeader { file: PathBuf, detail: String },
    /// The WAL is of another PostgreSQL major version than the one asked for.
    WrongVersion {
        file: PathBuf,
        found: u32,
        expected: u32,
    },
    /// A segment belongs to another database cluster.
    SystemIdMismatch {
        file: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A timeline history file cannot be parsed.
    BadHistory { file: PathBuf, detail: String },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::WrongVersion {
                file,
                found,
                expected,
            } => write!(
                f,
                "{} is PostgreSQL {found} WAL, but PostgreSQL {expected} is asked for: redo it with a pool of pg_version {found} (PostgreSQL {found}'s binaries and its pg_walredo)",
                file.display()
            ),
            WalError::ReadDir { dir, source } => write!(
                f,
                "cannot read WAL directory {}: {source}; check that the path exists and is readable",
                dir.display()
            ),
            WalError::NoSegments {
                dirs,
                timeline: None,
            } => write!(
                f,
                "no WAL segment files (24 hex digit names) in {}; point at the cluster's pg_wal directory",
                show_dirs(dirs)
            ),
            WalError::NoSegments {
                dirs,
                timeline: Some(tli),
            } => write!(
                f,
                "no WAL segment files of timeline {tli} in {}; pass timeline 0 for the highest one present",
                show_dirs(dirs)
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
            WalError::StartNotFound { lsn, dirs } => write!(
                f,
                "start LSN {} is not in any WAL segment present in {}; restore that segment or choose a later start",
                format_lsn(*lsn),
                show_dirs(dirs)
            ),
            WalError::Removed { segment, dirs } => write!(
                f,
                "WAL segment {segment} was removed from {} while it was being read (the server \
                 recycles segments it no longer needs): a larger wal_keep_size keeps them longer, \
                 an archive directory keeps them for good",
                show_dirs(dirs)
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
                "WAL segment {}: {detail}; this reader needs PostgreSQL 15 to 18 WAL with 8 KiB pages",
                file.display()
            ),
            WalError::BadHistory { file, detail } => write!(
                f,
                "timeline history file {}: {detail}; restore it from the archive",
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

/// Directories for a message: `a, b and c`.
fn show_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    match names.split_last() {
        None => "no directory".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
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

/// Format an LSN the way PostgreSQL does (`%X/%X`), e.g. `0/16B3748`.
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
    /// The page is not valid WAL at this position: the WAL ends here, on
    /// something no writer leaves (damage, below a flushed position).
    Invalid(String),
    /// The page was never written for this position (zeros, or a recycled
    /// segment's older page): the WAL ends here as it normally does.
    Unwritten(String),
    /// The segment holding the page is absent (and nothing follows it).
    Missing(String),
}

/// Where a reader begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first record that starts in the lowest segment present.
    Oldest,
    /// The first record that starts in this segment: the tail of a record
    /// from the previous segment is skipped, as `XLogFindNextRecord` does.
    Segment(u64),
    /// This LSN, which must be a record start (such as a checkpoint's redo
    /// pointer).
    Lsn(u64),
}

/// The segment files of one target timeline and its ancestors (see
/// [`timeline`]: each segment from the timeline current at its end), looked
/// up in a list of directories (the server's `pg_wal`, then archives): for
/// each segment, every directory that has a file of its name, in the order
/// of the list. Listing reads no WAL; which file of a segment is read is
/// decided when it is opened (the first one whose long page header is that
/// segment's).
#[derive(Clone, Debug)]
pub struct Segments {
    dirs: Vec<PathBuf>,
    tli: u32,
    history: History,
    seg_size: u64,
    files: BTreeMap<u64, Vec<PathBuf>>,
}

impl Segments {
    /// List `dirs`. The target timeline is `timeline`, or the highest one
    /// present (with `start_lsn`: the highest one whose history has the
    /// segment that holds it); its history file is followed, and other
    /// timelines' files and other files (`*.partial`, `archive_status/`) are
    /// ignored. The segment size is the size of the
    /// lowest segment file of that timeline with a valid size.
    pub fn list(
        dirs: &[PathBuf],
        timeline: Option<u32>,
        start_lsn: Option<u64>,
    ) -> Result<Segments, WalError> {
        // (tli, hi, lo, directory index, path, size)
        let mut files: Vec<(u32, u32, u32, usize, PathBuf, u64)> = Vec::new();
        for (d, dir) in dirs.iter().enumerate() {
            let entries = fs::read_dir(dir).map_err(|source| WalError::ReadDir {
                dir: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| WalError::ReadDir {
                    dir: dir.clone(),
                    source,
                })?;
                let name = entry.file_name();
                let Some((tli, hi, lo)) = name.to_str().and_then(split_segment_name) else {
                    continue;
                };
                let path = entry.path();
                // Follow symlinks; skip anything that is not a regular file,
                // and files removed since the listing. The size is taken
                // now: a second look could find the file gone (a checkpoint
                // removing the oldest segments).
                match fs::metadata(&path) {
                    Ok(m) if m.is_file() => files.push((tli, hi, lo, d, path, m.len())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(WalError::Io { file: path, source }),
                }
            }
        }
        let no_segments = || WalError::NoSegments {
            dirs: dirs.to_vec(),
            timeline,
        };
        files.sort();
        let size_tli = match timeline {
            Some(t) => t,
            None => files.iter().map(|f| f.0).max().ok_or_else(no_segments)?,
        };
        // The size of the lowest file of the timeline that has a valid one (a
        // truncated copy in one directory may have a good one in another).
        let valid = |size: &u64| {
            size.is_power_of_two() && (WAL_SEG_MIN_SIZE..=WAL_SEG_MAX_SIZE).contains(size)
        };
        let mut first_bad = None;
        let mut seg_size = None;
        for f in files.iter().filter(|f| f.0 == size_tli) {
            let size = f.5;
            if valid(&size) {
                seg_size = Some(size);
                break;
            }
            first_bad.get_or_insert((f.4.clone(), size));
        }
        let seg_size = match (seg_size, first_bad) {
            (Some(size), _) => size,
            (None, Some((file, size))) => {
                return Err(WalError::WrongSegmentSize {
                    file,
                    size,
                    expected: None,
                })
            }
            (None, None) => return Err(no_segments()),
        };
        let per = segs_per_xlogid(seg_size);
        let segno_of = |f: &(u32, u32, u32, usize, PathBuf, u64)| -> Option<u64> {
            (u64::from(f.2) < per).then(|| u64::from(f.1) * per + u64::from(f.2))
        };
        let history = match (timeline, start_lsn) {
            (Some(t), _) => History::read(dirs, t)?,
            (None, None) => History::read(dirs, size_tli)?,
            (None, Some(lsn)) => {
                let segno = lsn / seg_size;
                let has = |tli: u32| {
                    files
                        .iter()
                        .any(|f| f.0 == tli && segno_of(f) == Some(segno))
                };
                let tlis = files.iter().map(|f| f.0).rev();
                History::newest_reaching(dirs, tlis, segno, seg_size, has)?.ok_or_else(|| {
                    WalError::StartNotFound {
                        lsn,
                        dirs: dirs.to_vec(),
                    }
                })?
            }
        };
        let tli = history.target();
        let mut by_segno: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for f in &files {
            if let Some(segno) = segno_of(f) {
                if f.0 == history.timeline_of_segment(segno, seg_size) {
                    by_segno.entry(segno).or_default().push(f.4.clone());
                }
            }
        }
        if by_segno.is_empty() {
            return Err(no_segments());
        }
        Ok(Segments {
            dirs: dirs.to_vec(),
            tli,
            history,
            seg_size,
            files: by_segno,
        })
    }

    pub fn timeline(&self) -> u32 {
        self.tli
    }

    pub fn segment_size(&self) -> u64 {
        self.seg_size
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The segment numbers present, ascending.
    pub fn present(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.files.keys().copied()
    }

    pub fn contains(&self, segno: u64) -> bool {
        self.files.contains_key(&segno)
    }

    /// Whether a file of segment `segno` begins with that segment's long
    /// page header (rather than being a file recycled for future use).
    pub fn holds_wal(&self, segno: u64) -> bool {
        self.files.get(&segno).is_some_and(|paths| {
            paths.iter().any(|p| {
                let mut head = [0u8; SIZE_OF_XLOG_LONG_PHD as usize];
                File::open(p)
                    .and_then(|f| f.read_exact_at(&mut head, 0))
                    .is_ok()
                    && pg_version_of_magic(le_u16(&head, 0)).is_some()
                    && le_u64(&head, 8) == segno * self.seg_size
            })
        })
    }

    /// The PostgreSQL major version whose page magic segment `segno`'s first
    /// page has, if it is present and has a known one.
    pub fn pg_version(&self, segno: u64) -> Option<u32> {
        self.files.get(&segno)?.iter().find_map(|p| {
            let mut head = [0u8; 2];
            File::open(p)
                .and_then(|f| f.read_exact_at(&mut head, 0))
                .ok()?;
            pg_version_of_magic(le_u16(&head, 0))
        })
    }

    /// The file name of segment `segno`: of the timeline current at its end.
    pub fn file_name(&self, segno: u64) -> String {
        let tli = self.history.timeline_of_segment(segno, self.seg_size);
        segment_file_name(tli, segno, self.seg_size)
    }
}

/// How many bytes of a segment one read takes (pages are still checked one
/// by one as they are used).
const CHUNK: u64 = 16 * XLOG_BLCKSZ;

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
    /// Bytes of the current file from `chunk_lsn` on.
    buf: Vec<u8>,
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
        let segs = Segments::list(&[dir.to_path_buf()], None, start)?;
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
        let seg_size = segs.seg_size;
        let first_segno = match start {
            Start::Oldest => *segs.files.keys().next().expect("Segments is never empty"),
            Start::Segment(s) => s,
            Start::Lsn(lsn) => lsn / seg_size,
        };
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
            buf: Vec::new(),
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
        let magic = le_u16(b, 0);
        let info = le_u16(b, 2);
        let pageaddr = le_u64(b, 8);
        let sysid = le_u64(b, 24);
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

    /// The end of what can be read, on WAL that no writer leaves.
    fn damaged(&mut self, reason: String) -> Result<Option<WalRecord>, WalError> {
        self.end_damaged = true;
        self.end(reason)
    }

    fn stop_at_limit(&mut self) -> Result<Option<WalRecord>, WalError> {
        self.limit_reached = true;
        let reason = format!("reached the limit {}", format_lsn(self.limit));
        self.end(reason)
    }

    fn read_record(&mut self) -> Result<Option<WalRecord>, WalError> {
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
        let tot_len = le_u32(self.bytes(start, 4), 0);
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
        let (data, mut end) = if tot <= page_avail {
            (
                self.bytes(start, tot).to_vec(),
                start + maxalign(tot as u64),
            )
        } else {
            let mut data = Vec::with_capacity(tot);
            data.extend_from_slice(self.bytes(start, page_avail));
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
                let remaining = tot - data.len();
                if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The record was abandoned at a crash and new WAL
                    // written over its rest: the WAL goes on at this page
                    // (as xlogreader restarts there).
                    self.next_lsn = page;
                    return self.read_record();
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
                data.extend_from_slice(self.bytes(page + h.size, n));
                if data.len() == tot {
                    break (data, page + h.size + maxalign(n as u64));
                }
                page += XLOG_BLCKSZ;
            }
        };

        let xl_prev = le_u64(&data, 8);
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
        let crc = crc32c_finish(crc32c_update(
            crc32c_update(CRC32C_INIT, &data[SIZE_OF_XLOG_RECORD..]),
            &data[..20],
        ));
        if crc != le_u32(&data, 20) {
            return self.damaged(format!(
                "incorrect resource manager data checksum in record at {}",
                format_lsn(start)
            ));
        }
        if data[17] == RM_XLOG_ID && data[16] & 0xF0 == XLOG_SWITCH {
            // Pretend the record extends to the end of the segment.
            end = end.div_ceil(self.segs.seg_size) * self.segs.seg_size;
        }
        if end > self.limit {
            return self.stop_at_limit();
        }
        self.prev_lsn = Some(start);
        self.next_lsn = end;
        Ok(Some(WalRecord {
            start_lsn: start,
            end_lsn: end,
            data,
        }))
    }

    /// `len` bytes at `lsn`, which [`fill`](Self::fill) made present.
    fn bytes(&self, lsn: u64, len: usize) -> &[u8] {
        let at = (lsn - self.chunk_lsn) as usize;
        &self.buf[at..at + len]
    }

    fn cur_path(&self) -> PathBuf {
        let (segno, i, _) = self.cur.as_ref().expect("a segment is open");
        self.segs.files[segno][*i].clone()
    }

    /// Look at the page header at `page_lsn` (a page start), reading its
    /// page if needed. A page that is not what this LSN needs sends the
    /// reader to the segment's next file, if another directory has one.
    fn page(&mut self, page_lsn: u64) -> Result<Page, WalError> {
        let segno = page_lsn / self.segs.seg_size;
        if self.cur.as_ref().map(|c| c.0) != Some(segno) {
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
                page => return Ok(page),
            }
        }
    }

    /// Validate the header of the page at `page_lsn`, present in the buffer.
    fn check_page(&self, page_lsn: u64) -> Result<Page, WalError> {
        let seg_size = self.segs.seg_size;
        let segno = page_lsn / seg_size;
        let off = page_lsn % seg_size;
        let b = self.bytes(page_lsn, SIZE_OF_XLOG_LONG_PHD as usize);
        let magic = le_u16(b, 0);
        let info = le_u16(b, 2);
        let pageaddr = le_u64(b, 8);
        let rem_len = le_u32(b, 16);
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
            let sysid = le_u64(b, 24);
            let file_seg_size = le_u32(b, 32);
            let blcksz = le_u32(b, 36);
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
    fn check_gap(&self, segno: u64) -> Result<(), WalError> {
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
    fn is_segment_start(&self, head: &[u8], segno: u64) -> bool {
        let magic = le_u16(head, 0);
        (magic == self.magic || (self.magic == 0 && pg_version_of_magic(magic).is_some()))
            && le_u16(head, 2) & XLP_LONG_HEADER != 0
            && le_u64(head, 8) == segno * self.segs.seg_size
            && (self.sysid == 0 || le_u64(head, 24) == self.sysid)
            && u64::from(le_u32(head, 32)) == self.segs.seg_size
            && u64::from(le_u32(head, 36)) == XLOG_BLCKSZ
    }

    /// Open segment `segno` from its files `from` on: the first whose long
    /// page header is this segment's. Without one, `valid_only` leaves the
    /// current file in place and returns false; otherwise the first file
    /// that could be read is taken (its pages then tell what is wrong).
    fn open_segment(
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
            let f = match File::open(path) {
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
                self.buf.clear();
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
    fn fill(&mut self, page_lsn: u64) -> Result<(), WalError> {
        let end = self.chunk_lsn + self.buf.len() as u64;
        if page_lsn >= self.chunk_lsn && page_lsn + XLOG_BLCKSZ <= end {
            return Ok(());
        }
        let seg_size = self.segs.seg_size;
        let off = page_lsn % seg_size;
        let len = CHUNK.min(seg_size - off) as usize;
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
        drain(WalReader::open(dir, start).unwrap())
    }

    /// Every record until the end or an error: (records, the error, the reader).
    fn drain(mut r: WalReader) -> (Vec<WalRecord>, Option<WalError>, WalReader) {
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
        assert!(r.end_is_damage());
        assert_eq!(r.next_lsn(), 0x100078);
    }

    #[test]
    fn overwritten_contrecord_is_skipped() {
        // A record abandoned at a crash past its first page; the next page
        // flagged XLP_FIRST_IS_OVERWRITE_CONTRECORD goes on with new WAL
        // whose prev-link is the record before it (PostgreSQL 15+).
        let d = TempDir::new("overwrite");
        let mut b = Builder::new(1, 1);
        let (a, _) = b.small(34);
        b.small(9000);
        let page = 0x102000;
        b.at(page, XLOG_BLCKSZ as usize).fill(0);
        (b.pos, b.prev) = (page, a);
        let (c, c_end) = b.small(40);
        b.at(page + 2, 2)
            .copy_from_slice(&XLP_FIRST_IS_OVERWRITE_CONTRECORD.to_le_bytes());
        b.write(&d.0);
        let (recs, err, r) = read_all(&d.0, None);
        assert!(err.is_none());
        assert_eq!(spans(&recs), vec![(a, 0x100050, 34), (c, c_end, 40)]);
        assert!(!r.end_is_damage(), "{:?}", r.end_reason());
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
        // Timeline 2 left timeline 1 at the start of segment 1: timeline 1's
        // file of it is not on timeline 2's history (tests/wal_paths.rs
        // follows a real switch).
        fs::write(d.0.join("00000002.history"), "1\t0/100000\tno reason\n").unwrap();
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

        // PostgreSQL 17 WAL: read as such (every page has 17's magic), and
        // refused where 15 is asked for; a page of 15 in it is invalid.
        let d = TempDir::new("errs6");
        let mut b = Builder::new(1, 1);
        let (start, _) = b.small(34);
        b.small(9000);
        for page in (0..b.buf.len() as u64).step_by(XLOG_BLCKSZ as usize) {
            b.at(0x100000 + page, 2)
                .copy_from_slice(&xlog_page_magic(17).unwrap().to_le_bytes());
        }
        b.write(&d.0);
        let r = WalReader::open(&d.0, None).unwrap();
        assert_eq!(r.pg_version(), 17);
        r.expect_version(17).unwrap();
        let e = r.expect_version(15).unwrap_err();
        assert!(
            matches!(
                e,
                WalError::WrongVersion {
                    found: 17,
                    expected: 15,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("PostgreSQL 17 WAL"), "{e}");
        assert_eq!(r.map(|r| r.unwrap().start_lsn).next(), Some(start));
        b.at(0x102000, 2)
            .copy_from_slice(&XLOG_PAGE_MAGIC.to_le_bytes());
        b.write(&d.0);
        let mut r = WalReader::open(&d.0, None).unwrap();
        assert!(r.next().unwrap().is_ok());
        assert!(r.next().is_none());
        assert!(
            r.end_reason().unwrap().contains("magic"),
            "{:?}",
            r.end_reason()
        );
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

    fn read_dirs(
        dirs: &[&Path],
        start: Start,
        limit: Option<u64>,
    ) -> (Vec<WalRecord>, Option<WalError>, WalReader) {
        let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
        let segs = Segments::list(&dirs, None, None).unwrap();
        let mut r = WalReader::open_segments(Arc::new(segs), start, None).unwrap();
        if let Some(l) = limit {
            r.set_limit(l);
        }
        drain(r)
    }

    /// Three segments: a record crossing from 1 into 2, a switch in 2, records in 3.
    fn three_segments(b: &mut Builder) {
        segment_crossing(b);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(100);
        b.small(100);
    }

    #[test]
    fn segments_split_between_directories() {
        let all = TempDir::new("split-all");
        let wal = TempDir::new("split-wal");
        let arch = TempDir::new("split-arch");
        let mut b = Builder::new(1, 1);
        three_segments(&mut b);
        b.write(&all.0);
        b.write(&wal.0);
        // The archive has 1 and 2; pg_wal only 3.
        for s in [1, 2] {
            fs::rename(seg_path(&wal.0, 1, s), seg_path(&arch.0, 1, s)).unwrap();
        }
        let (recs, err, _) = read_dirs(&[&wal.0, &arch.0], Start::Oldest, None);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(recs, b.records);
        // Starting in a segment skips the record that continues into it.
        let (recs, _, _) = read_dirs(&[&wal.0, &arch.0], Start::Segment(2), None);
        assert_eq!(recs, b.records[2..]);
    }

    #[test]
    fn recycled_or_overwritten_file_is_looked_up_in_the_next_directory() {
        let wal = TempDir::new("recyc-wal");
        let arch = TempDir::new("recyc-arch");
        let mut b = Builder::new(1, 1);
        three_segments(&mut b);
        b.write(&wal.0);
        b.write(&arch.0);
        // Segment 2 in pg_wal: recycled, overwritten from its start...
        let p2 = seg_path(&wal.0, 1, 2);
        let mut f = fs::read(&p2).unwrap();
        f[8..16].copy_from_slice(&(7 * SEG).to_le_bytes());
        fs::write(&p2, &f).unwrap();
        let (recs, err, _) = read_dirs(&[&wal.0, &arch.0], Start::Oldest, None);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(recs, b.records);
        fs::copy(seg_path(&arch.0, 1, 2), &p2).unwrap();
        // Segment 1 only from its third page on (overwritten while it was
        // read): the long record crossing it comes from the archive.
        let p1 = seg_path(&wal.0, 1, 1);
        let mut f = fs::read(&p1).unwrap();
        f[2 * 8192 + 8..2 * 8192 + 16].copy_from_slice(&0u64.to_le_bytes());
        fs::write(&p1, &f).unwrap();
        let (recs, err, _) = read_dirs(&[&wal.0, &arch.0], Start::Oldest, None);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(recs, b.records);
        // Without the archive, the WAL ends at the bad page.
        let (recs, err, r) = read_dirs(&[&wal.0], Start::Oldest, None);
        assert!(err.is_none());
        assert!(recs.len() < b.records.len());
        assert!(
            r.end_reason().unwrap().contains("pageaddr"),
            "{:?}",
            r.end_reason()
        );
        // A truncated file in pg_wal: the archive's copy is read.
        fs::write(&p1, &f[..SEG as usize / 2]).unwrap();
        let (recs, err, _) = read_dirs(&[&wal.0, &arch.0], Start::Oldest, None);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(recs, b.records);
    }

    #[test]
    fn removed_after_listing_is_a_clear_error() {
        let wal = TempDir::new("removed");
        let mut b = Builder::new(1, 1);
        three_segments(&mut b);
        b.write(&wal.0);
        let segs = Segments::list(std::slice::from_ref(&wal.0), None, None).unwrap();
        let mut r = WalReader::open_segments(Arc::new(segs), Start::Oldest, None).unwrap();
        fs::remove_file(seg_path(&wal.0, 1, 2)).unwrap();
        assert!(r.next_record().unwrap().is_some());
        let e = r.next_record().unwrap_err();
        assert!(matches!(e, WalError::Removed { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("000000010000000000000002 was removed"),
            "{e}"
        );
        assert!(e.to_string().contains("wal_keep_size"), "{e}");
    }

    #[test]
    fn limit_stops_before_a_record_ending_after_it() {
        let d = TempDir::new("limit");
        let mut b = Builder::new(1, 1);
        for _ in 0..3 {
            b.small(34);
        }
        b.write(&d.0);
        // Limit inside the third record: two are read.
        let (recs, err, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x100078 + 8));
        assert!(err.is_none());
        assert_eq!(recs, b.records[..2]);
        assert!(r.reached_limit());
        // Limit exactly at a record end: it is read.
        let (recs, _, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x100078));
        assert_eq!(recs, b.records[..2]);
        assert!(r.reached_limit());
        // Past the end: the WAL ends first.
        let (recs, _, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x200000));
        assert_eq!(recs, b.records);
        assert!(!r.reached_limit());
        // A record crossing pages is not read past the limit.
        let d = TempDir::new("limit2");
        let mut b = Builder::new(1, 1);
        b.small(34);
        b.small(20000);
        b.write(&d.0);
        let (recs, _, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x102000));
        assert_eq!(recs, b.records[..1]);
        assert!(r.reached_limit());
    }
}
