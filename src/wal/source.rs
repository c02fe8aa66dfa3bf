//! A WAL source: the WAL of one cluster found in a list of directories (the
//! server's `pg_wal`, then archives), and what is asked of it page by page:
//! the records that rebuild a block as of an LSN (a replay plan), every
//! record that changes a block (its history), and the range that can be
//! read. A record changes the pages [`pages::record_pages`] names: its block
//! references, and the visibility-map pages its heap changes clear.
//!
//! A lookup must not read all of the WAL each time. Every record start that
//! begins a segment can be found from the segment alone (as
//! `XLogFindNextRecord` does), so segments are the intervals. Each segment
//! read whole leaves its index (`SegIndex`: every record starting in it by
//! the blocks it changes, and its removals); the newest one is indexed from
//! its start up to a lookup's LSN (`Partial`) and read on from there by
//! the next lookup that needs more. A plan walks the index back from the
//! segment holding its LSN to the block's starting point (a record that
//! carries an applicable full-page image of the block or initializes it),
//! reading whole the segments not indexed yet, then fetches only the block's
//! records, each checked against the index; a history does the same over
//! every readable segment. What the index cannot answer (no starting point,
//! a removal, WAL that cannot be read) is answered by the lookups that read
//! the segments themselves: a plan reads the segment holding its LSN, then
//! earlier ones, skipping those that do not touch the block and starting
//! inside the one that initializes it when that record ends at or before
//! the LSN. The segments are listed again on every lookup, so the source
//! follows the server as it writes, recycles and archives them.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::pg::record::{RecordFormat, RecordRef};
use crate::pg::record_type::record_type_name_for;
use crate::pg::rmgr::rmgr_name;
use crate::pg::xlog::SIZE_OF_XLOG_LONG_PHD;
use crate::tag::{PageTag, FSM_FORKNUM};
use crate::wal::lifetime::{self, Removal};
use crate::wal::pages;
use crate::wal::record::{self, RecordError};
use crate::wal::restore::{RestoreCommand, RestoreError};
use crate::wal::timeline::fetch_history;
use crate::wal::{format_lsn, next_record_start, Segments, Start, WalError, WalReader, WalRecord};

mod history;
mod plan;
mod slru_plan;

pub use history::HistoryEntry;
pub use plan::ReplayPlan;
pub use slru_plan::SlruPlan;

/// How often (in records) a scan asks the caller whether to stop.
const INTERRUPT_EVERY: u64 = 4096;

/// Why a question could not be answered.
#[derive(Debug)]
pub enum SourceError {
    /// The readable WAL cannot answer: no starting point for the page, or an
    /// LSN outside the readable WAL. The message says what would.
    NotFound(String),
    /// The interrupt callback asked to stop.
    Cancelled,
    /// The WAL could not be read.
    Wal(WalError),
    /// A record with a valid CRC that is not a valid record.
    Malformed { lsn: u64, error: RecordError },
    /// The WAL cannot be read at `lsn`, below the end the caller gave (a
    /// position it knows to be flushed): the WAL is damaged there.
    Corrupt { lsn: u64, end: u64, why: String },
    /// The block did not exist at the LSN: a record before it removed the
    /// block (truncation, drop) and none made it again.
    NoSuchBlock(String),
    /// The WAL never held the page: its content comes from files copied
    /// outside WAL, or its fork is not WAL-logged.
    NotInWal(String),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NotFound(m) | SourceError::NoSuchBlock(m) | SourceError::NotInWal(m) => {
                f.write_str(m)
            }
            SourceError::Cancelled => {
                f.write_str("cancelled: the interrupt callback asked to stop")
            }
            SourceError::Wal(e) => e.fmt(f),
            SourceError::Malformed { lsn, error } => {
                write!(f, "WAL record at {}: {error}", format_lsn(*lsn))
            }
            SourceError::Corrupt { lsn, end, why } => write!(
                f,
                "the WAL is damaged at {}, before {} (a position given as flushed): {why}; \
                 restore its segment from an archive",
                format_lsn(*lsn),
                format_lsn(*end)
            ),
        }
    }
}

impl Error for SourceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SourceError::Wal(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WalError> for SourceError {
    fn from(e: WalError) -> SourceError {
        SourceError::Wal(e)
    }
}

/// Fetch archived file `name` with `restore`: true when it was fetched,
/// false when the archive does not have it.
fn fetch_segment(
    restore: &RestoreCommand,
    name: &str,
    interrupt: &mut dyn FnMut() -> bool,
) -> Result<bool, SourceError> {
    match restore.fetch_interruptible(name, interrupt) {
        Ok(found) => Ok(found.is_some()),
        Err(RestoreError::Cancelled) => Err(SourceError::Cancelled),
        Err(e) => Err(SourceError::Wal(WalError::Restore(e.to_string()))),
    }
}

/// Where a record starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
}

/// A record of a segment's index that changes a block: where it starts and
/// ends, and whether replaying it needs no earlier version of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Use {
    start: u64,
    end: u64,
    initializes: bool,
}

/// A [`Use`] in 8 bytes: the record's start as an offset in its segment,
/// its length (end minus start: at most a segment, or a record of at most
/// 1 GB and its page headers, under 2^31) with [`INITIALIZES`] in the top
/// bit. An index holds one per record and block it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed {
    off: u32,
    len: u32,
}

const INITIALIZES: u32 = 1 << 31;

/// What the records that start in one segment change: by block, every
/// record, oldest first; and what they remove (rare), which a map by block
/// cannot hold.
#[derive(Debug)]
struct SegIndex {
    /// The segment's first LSN.
    base: u64,
    blocks: HashMap<PageTag, Vec<Packed>>,
    removals: Vec<(Span, Removal)>,
}

impl SegIndex {
    fn at(base: u64) -> SegIndex {
        SegIndex {
            base,
            blocks: HashMap::new(),
            removals: Vec::new(),
        }
    }

    fn unpack(&self, p: &Packed) -> Use {
        let start = self.base + u64::from(p.off);
        Use {
            start,
            end: start + u64::from(p.len & !INITIALIZES),
            initializes: p.len & INITIALIZES != 0,
        }
    }

    /// The records of the segment that change `tag`, oldest first.
    fn uses<'a>(&'a self, tag: &PageTag) -> impl DoubleEndedIterator<Item = Use> + 'a {
        self.blocks
            .get(tag)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|p| self.unpack(p))
    }

    /// The newest record of the segment that initializes `tag`.
    fn newest_init(&self, tag: &PageTag) -> Option<Span> {
        let u = self.uses(tag).rev().find(|u| u.initializes)?;
        Some(Span {
            start: u.start,
            end: u.end,
        })
    }

    /// A record that starts in the segment. (A length or offset that did
    /// not fit would give a record another start or end than the one read
    /// there, which the fetch refuses; neither can happen.)
    fn add(&mut self, span: Span, pages: &[pages::RecordPage], removals: &[Removal]) {
        self.removals.extend(removals.iter().map(|r| (span, *r)));
        let off = (span.start - self.base) as u32;
        let len = ((span.end - span.start) as u32) & !INITIALIZES;
        for p in pages {
            let flag = if p.initializes() { INITIALIZES } else { 0 };
            self.blocks.entry(p.tag).or_default().push(Packed {
                off,
                len: len | flag,
            });
        }
    }
}

/// A segment indexed from its start up to a limit (the LSN of a lookup, a
/// flushed position): the next lookup that needs more goes on from there
/// instead of reading the segment again from its start.
#[derive(Debug)]
struct Partial {
    segno: u64,
    /// Every record that starts in the segment and ends at or before this
    /// is in `index`; the next one ends after it.
    covered: u64,
    /// Where the next record starts.
    next: u64,
    /// Where the last record read starts (the next one's `xl_prev`).
    prev: Option<u64>,
    index: SegIndex,
}

/// How one record uses the block asked about.
#[derive(Clone, Copy, Debug)]
struct BlockUse {
    initializes: bool,
    has_image: bool,
    will_init: bool,
    /// The record removes the block (it does not exist after it).
    removal: Option<Removal>,
}

/// How a scan ended.
enum ScanEnd {
    /// A record starting after the last segment asked for was reached.
    NextSegment,
    /// The next record would end after the limit.
    Limit,
    /// The WAL ended (or stopped being readable) at `at`; `damaged`: on
    /// something no writer leaves (see [`WalReader::end_is_damage`]).
    EndOfWal { at: u64, why: String, damaged: bool },
    /// The callback asked to stop.
    Stopped,
    /// The first segment could not be opened (recycled, removed, foreign).
    Unreadable(WalError),
}

/// What a scan found besides the records it handed over.
struct Scanned {
    end: ScanEnd,
    /// End of the last record read (0: none).
    last_end: u64,
}

/// The WAL of one cluster, looked up in directories in order.
#[derive(Debug)]
pub struct WalSource {
    dirs: Vec<PathBuf>,
    /// Asked for, or the highest one found on first use (then kept).
    timeline: Option<u32>,
    /// Learnt from the first segment read; other systems' files are passed over.
    system_id: Option<u64>,
    /// The PostgreSQL major version, learnt with the system identifier.
    pg_version: Option<u32>,
    /// Segment number -> start of the first record that starts in it.
    first_starts: BTreeMap<u64, u64>,
    /// Segments read whole: every record starting in the segment, by the
    /// blocks it changes, and what the records remove.
    index: BTreeMap<u64, SegIndex>,
    /// The newest segment read from its start up to a lookup's LSN.
    partial: Option<Partial>,
    /// The highest LSN a plan was made for: flushed (the caller's word)
    /// and readable, so WAL up to it may be read (and indexed) by any later
    /// lookup.
    flushed: u64,
    records_read: u64,
    /// Fetches older segments for plans the directories cannot answer
    /// (its cache directory is the last of `dirs`).
    restore: Option<Arc<RestoreCommand>>,
    /// The timeline whose history file the restore command was asked for
    /// (once: the archive either has it or not).
    history_asked: Option<u32>,
}

impl WalSource {
    /// The PostgreSQL major version of its WAL (from the page magic), once a
    /// segment was read.
    pub fn pg_version(&self) -> Option<u32> {
        self.pg_version
    }

    /// A source over `dirs`, in order; `timeline` None: the highest found.
    /// Reads nothing yet.
    pub fn new(dirs: Vec<PathBuf>, timeline: Option<u32>) -> WalSource {
        WalSource {
            dirs,
            timeline,
            system_id: None,
            pg_version: None,
            first_starts: BTreeMap::new(),
            index: BTreeMap::new(),
            partial: None,
            flushed: 0,
            records_read: 0,
            restore: None,
            history_asked: None,
        }
    }

    /// Refuse segments of any other cluster than the one whose system
    /// identifier is `system_id` (otherwise the first segment read decides).
    pub fn expect_system(&mut self, system_id: u64) {
        if self.system_id != Some(system_id) {
            self.forget();
            self.system_id = Some(system_id);
        }
    }

    /// Let plans fetch the segments no directory has with `restore` (None:
    /// stop): its cache directory is looked in after the others.
    pub fn set_restore(&mut self, restore: Option<Arc<RestoreCommand>>) {
        if let Some(old) = self.restore.take() {
            self.dirs.retain(|d| d != old.cache_dir());
        }
        if let Some(r) = &restore {
            self.dirs.push(r.cache_dir().to_path_buf());
        }
        self.restore = restore;
    }

    /// Records read so far, by every lookup (for tests and measurements).
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// Bytes the index holds (the segments' records by block), approximately.
    pub fn index_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(PageTag, Vec<Packed>)>() + 1;
        let of = |m: &SegIndex| {
            m.blocks.capacity() * entry
                + m.blocks
                    .values()
                    .map(|v| v.capacity() * std::mem::size_of::<Packed>())
                    .sum::<usize>()
                + m.removals.capacity() * std::mem::size_of::<(Span, Removal)>()
                + 64
        };
        self.index.values().map(of).sum::<usize>()
            + self.partial.as_ref().map_or(0, |p| of(&p.index))
            + self.first_starts.len() * 48
    }

    /// Forget everything learnt about the segments (the WAL read does not
    /// match it): the next lookups read them again.
    fn forget(&mut self) {
        self.index.clear();
        self.partial = None;
        self.first_starts.clear();
    }

    fn list(&mut self) -> Result<Arc<Segments>, SourceError> {
        let mut segs = Segments::list(&self.dirs, self.timeline, None)?;
        if self.fetch_history(segs.timeline())? {
            segs = Segments::list(&self.dirs, Some(segs.timeline()), None)?;
        }
        self.timeline = Some(segs.timeline());
        // What is gone from every directory cannot be read again.
        self.index.retain(|s, _| segs.contains(*s));
        self.first_starts.retain(|s, _| segs.contains(*s));
        if self
            .partial
            .as_ref()
            .is_some_and(|p| !segs.contains(p.segno))
        {
            self.partial = None;
        }
        Ok(Arc::new(segs))
    }

    /// With a restore command, fetch timeline `tli`'s history file when no
    /// directory has it ([`fetch_history`]), once per timeline. True when it
    /// was fetched.
    fn fetch_history(&mut self, tli: u32) -> Result<bool, SourceError> {
        let Some(restore) = self.restore.clone() else {
            return Ok(false);
        };
        if self.history_asked == Some(tli) {
            return Ok(false);
        }
        self.history_asked = Some(tli);
        Ok(fetch_history(&self.dirs, tli, &restore)?)
    }

    /// The segment a restore command should fetch to reach further back
    /// from `segno`: `segno` itself when the present run below it ends
    /// earlier (or nothing is present), else the one before the run's
    /// oldest; None when the run begins at segment 0.
    fn segment_to_fetch(segs: &Segments, segno: u64) -> Option<u64> {
        match Self::run_below(segs, segno) {
            Some((_, top)) if top < segno => Some(segno),
            Some((low, _)) => low.checked_sub(1),
            None => Some(segno),
        }
    }

    /// The unbroken run of present segments that ends with the highest one
    /// at or below `segno`.
    fn run_below(segs: &Segments, segno: u64) -> Option<(u64, u64)> {
        let top = segs.present().rev().find(|&s| s <= segno)?;
        let mut low = top;
        while low > 0 && segs.contains(low - 1) {
            low -= 1;
        }
        Some((low, top))
    }

    /// Read the records that start in segments `first..=last` (from `start`,
    /// the first segment's first record or a record start in it) and end at
    /// or before `limit`, with one reader. With `tag`, `found` gets each
    /// record that changes it, and may stop the scan by returning false.
    /// Segments read whole get their index; one read from its start up to
    /// `limit` is kept as the partial one. `resume`: the partial segment,
    /// read on from its next record (`start` is `Start::Lsn` of it).
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &mut self,
        segs: &Arc<Segments>,
        start: Start,
        last: u64,
        limit: u64,
        tag: Option<&PageTag>,
        interrupt: &mut dyn FnMut() -> bool,
        found: &mut dyn FnMut(WalRecord, BlockUse) -> bool,
        resume: Option<Partial>,
    ) -> Result<Scanned, SourceError> {
        let seg_size = segs.segment_size();
        let (mut cur, mut whole) = match start {
            Start::Segment(s) => (s, true),
            Start::Lsn(lsn) => (lsn / seg_size, false),
            Start::Oldest => unreachable!("scans start in a given segment"),
        };
        let mut index = SegIndex::at(cur * seg_size);
        let mut first_of_segment = whole;
        let mut prev_start = None;
        if let Some(p) = resume {
            debug_assert_eq!(start, Start::Lsn(p.next));
            cur = p.segno;
            whole = true;
            index = p.index;
            prev_start = p.prev;
        }
        let mut reader = match WalReader::open_segments(Arc::clone(segs), start, self.system_id) {
            Ok(r) => r,
            Err(e @ (WalError::BadHeader { .. } | WalError::Removed { .. })) => {
                return Ok(Scanned {
                    end: ScanEnd::Unreadable(e),
                    last_end: 0,
                })
            }
            Err(e) => return Err(e.into()),
        };
        self.system_id = Some(reader.system_id());
        self.pg_version = Some(reader.pg_version());
        let format = RecordFormat::of_version(reader.pg_version());
        reader.set_limit(limit);
        if let Some(prev) = prev_start {
            reader.expect_prev(prev);
        }
        let mut last_end = 0;
        let mut n: u64 = 0;
        loop {
            n += 1;
            if n % INTERRUPT_EVERY == 0 && interrupt() {
                return Err(SourceError::Cancelled);
            }
            let Some(rec) = reader.next_record()? else {
                let end = if reader.reached_limit() {
                    if whole {
                        let next = reader.next_lsn();
                        // The next record starts in a later segment: every
                        // record of this one was read.
                        let next_seg = next / seg_size;
                        if next_seg > cur {
                            let now = SegIndex::at(next_seg * seg_size);
                            self.index.insert(cur, std::mem::replace(&mut index, now));
                            for empty in cur + 1..next_seg {
                                self.index.insert(empty, SegIndex::at(empty * seg_size));
                            }
                        }
                        let seg = next_seg.max(cur);
                        if !self.index.contains_key(&seg)
                            && self
                                .partial
                                .as_ref()
                                .is_none_or(|p| (p.covered, p.segno) <= (limit, seg))
                        {
                            self.partial = Some(Partial {
                                segno: seg,
                                covered: limit,
                                next,
                                prev: prev_start,
                                index: std::mem::replace(&mut index, SegIndex::at(0)),
                            });
                        }
                    }
                    ScanEnd::Limit
                } else {
                    ScanEnd::EndOfWal {
                        at: reader.next_lsn(),
                        why: reader.end_reason().unwrap_or("end of WAL").to_string(),
                        damaged: reader.end_is_damage(),
                    }
                };
                return Ok(Scanned { end, last_end });
            };
            self.records_read += 1;
            let seg = rec.start_lsn / seg_size;
            if seg != cur {
                // Everything that starts in `cur` was read.
                if whole {
                    let now = SegIndex::at(seg * seg_size);
                    self.index.insert(cur, std::mem::replace(&mut index, now));
                    for empty in cur + 1..seg {
                        self.index.insert(empty, SegIndex::at(empty * seg_size));
                    }
                    if self.partial.as_ref().is_some_and(|p| p.segno < seg) {
                        self.partial = None;
                    }
                }
                whole = true;
                first_of_segment = true;
                cur = seg;
                if seg > last {
                    return Ok(Scanned {
                        end: ScanEnd::NextSegment,
                        last_end,
                    });
                }
            }
            if first_of_segment {
                if seg == rec.start_lsn / seg_size {
                    self.first_starts.entry(seg).or_insert(rec.start_lsn);
                }
                first_of_segment = false;
            }
            last_end = rec.end_lsn;
            prev_start = Some(rec.start_lsn);
            let block = {
                let decoded =
                    record::decode_unchecked_crc_as(&rec.data, format).map_err(|error| {
                        SourceError::Malformed {
                            lsn: rec.start_lsn,
                            error,
                        }
                    })?;
                let malformed = |error| SourceError::Malformed {
                    lsn: rec.start_lsn,
                    error,
                };
                let pages = pages::record_pages(&decoded).map_err(malformed)?;
                let removals = lifetime::removals(&decoded).map_err(malformed)?;
                if whole {
                    let span = Span {
                        start: rec.start_lsn,
                        end: rec.end_lsn,
                    };
                    index.add(span, &pages, &removals);
                }
                tag.and_then(|t| {
                    let removal = removals.iter().find(|r| r.covers(t)).copied();
                    match pages.iter().find(|p| p.tag == *t) {
                        Some(p) => Some(BlockUse {
                            initializes: p.initializes(),
                            has_image: p.has_image(),
                            will_init: p.will_init(),
                            removal: None,
                        }),
                        None => removal.map(|r| BlockUse {
                            initializes: false,
                            has_image: false,
                            will_init: false,
                            removal: Some(r),
                        }),
                    }
                })
            };
            if let Some(b) = block {
                if !found(rec, b) {
                    return Ok(Scanned {
                        end: ScanEnd::Stopped,
                        last_end,
                    });
                }
            }
        }
    }

    /// The start of the first record of the lowest readable segment of the
    /// run `low..=top`, and that segment.
    fn oldest_start(
        &mut self,
        segs: &Arc<Segments>,
        low: u64,
        top: u64,
        limit: u64,
    ) -> Result<Option<(u64, u64)>, SourceError> {
        for s in low..=top {
            if let Some(&start) = self.first_starts.get(&s) {
                return Ok(Some((s, start)));
            }
            let mut reader =
                match WalReader::open_segments(Arc::clone(segs), Start::Segment(s), self.system_id)
                {
                    Ok(r) => r,
                    Err(WalError::BadHeader { .. } | WalError::Removed { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
            self.system_id = Some(reader.system_id());
            reader.set_limit(limit);
            match reader.next_record()? {
                Some(rec) if rec.start_lsn / segs.segment_size() == s => {
                    self.first_starts.insert(s, rec.start_lsn);
                    return Ok(Some((s, rec.start_lsn)));
                }
                // Its first record ends after the limit: it starts here.
                None if reader.reached_limit() => return Ok(Some((s, reader.next_lsn()))),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The oldest record start and the newest record end that can be read
    /// now, with nothing read past `end_lsn`.
    pub fn bounds(&mut self, end_lsn: u64) -> Result<(u64, u64), SourceError> {
        let segs = self.list()?;
        let seg_size = segs.segment_size();
        let none = |dirs: &[PathBuf]| {
            SourceError::NotFound(format!(
                "no WAL record that ends at or before {} can be read in {}",
                format_lsn(end_lsn),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        let Some((low, top)) = Self::run_below(&segs, last_segment(end_lsn, seg_size)) else {
            return Err(none(&self.dirs));
        };
        let Some((low, oldest)) = self.oldest_start(&segs, low, top, end_lsn)? else {
            return Err(none(&self.dirs));
        };
        // The newest end: the last record of the highest segment with one.
        for s in (low..=top).rev() {
            let scanned = self.scan(
                &segs,
                Start::Segment(s),
                s,
                end_lsn,
                None,
                &mut || false,
                &mut |_, _| true,
                None,
            )?;
            if scanned.last_end != 0 {
                return Ok((oldest, scanned.last_end));
            }
        }
        Err(none(&self.dirs))
    }

    /// The readable range for messages: "0/1000028 to 0/5A3B2C8".
    fn range_text(&mut self, end_lsn: u64) -> String {
        match self.bounds(end_lsn) {
            Ok((a, b)) => format!("{} to {}", format_lsn(a), format_lsn(b)),
            Err(e) => format!("none: {e}"),
        }
    }
}

/// The newest segment in which a record that ends at or before `lsn` can
/// start: at a segment's start, or inside its long page header, no record
/// of that segment has ended yet (after `pg_switch_wal()` the flush LSN is
/// there, and the next file may be absent, recycled or zero-filled).
fn last_segment(lsn: u64, seg_size: u64) -> u64 {
    lsn.saturating_sub(SIZE_OF_XLOG_LONG_PHD + 1) / seg_size
}

/// Whether a segment after `segno`, up to `top`, begins with its own long
/// page header (real WAL, not a file recycled for future use).
fn later_wal_exists(segs: &Segments, segno: u64, top: u64) -> bool {
    (segno + 1..=top).any(|s| segs.holds_wal(s))
}
