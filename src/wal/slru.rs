//! Which SLRU pages and relation map files a record changes (issue 26,
//! docs/design-slru.md section 2): the non-relation pages a page server
//! must index a record under, beside the relation pages of
//! [`crate::wal::pages`]. The layouts and record formats are in
//! [`crate::pg::slru`]; see docs/slru.md for the table by record type.
//!
//! No record of these resource managers carries a block reference, so
//! everything comes from the main data, parsed here as PostgreSQL's redo
//! routines parse it (`xact.c: xact_redo` through `ParseCommitRecord` and
//! `ParseAbortRecord`, `clog.c: clog_redo`, `multixact.c: multixact_redo`,
//! `commit_ts.c: commit_ts_redo`, `relmapper.c: relmap_redo`). Main data
//! too short for what the record announces is refused
//! ([`RecordError::BadMainData`]), as for relation pages.
//!
//! Truncations are only named here ([`SlruChange::Truncate`],
//! [`SlruChange::DeleteSegments`]): which segments they remove also depends
//! on the SLRU's latest page (`SimpleLruTruncate`'s "apparent wraparound"
//! check), which a single record does not carry.

use std::fmt;

use crate::pg::bytes::{le_u32, le_u64};
use crate::pg::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};
use crate::pg::record_type::{
    XLOG_XACT_ABORT, XLOG_XACT_ABORT_PREPARED, XLOG_XACT_COMMIT, XLOG_XACT_COMMIT_PREPARED,
    XLOG_XACT_HAS_INFO, XLOG_XACT_OPMASK,
};
use crate::pg::rmgr::{
    RM_CLOG_ID, RM_COMMIT_TS_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_XACT_ID, RM_XLOG_ID,
};
use crate::pg::slru::*;
use crate::wal::record::{DecodedRecord, RecordError};

/// One of the four SLRUs walredo serves (`pg_subtrans` is not WAL-logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlruKind {
    /// `pg_xact`: 2 status bits per transaction id (`clog.c`).
    Xact,
    /// `pg_multixact/offsets`: a member offset per multixact (`multixact.c`).
    MultiXactOffsets,
    /// `pg_multixact/members`: member xids and flags (`multixact.c`).
    MultiXactMembers,
    /// `pg_commit_ts`: commit time and origin per transaction id
    /// (`commit_ts.c`).
    CommitTs,
}

impl SlruKind {
    pub const ALL: [SlruKind; 4] = [
        SlruKind::Xact,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
        SlruKind::CommitTs,
    ];

    /// The SLRU's directory in a data directory.
    pub fn dir(self) -> &'static str {
        match self {
            SlruKind::Xact => "pg_xact",
            SlruKind::MultiXactOffsets => "pg_multixact/offsets",
            SlruKind::MultiXactMembers => "pg_multixact/members",
            SlruKind::CommitTs => "pg_commit_ts",
        }
    }

    /// Entries per page ([`crate::pg::slru`]'s constants).
    pub fn entries_per_page(self) -> u64 {
        match self {
            SlruKind::Xact => CLOG_XACTS_PER_PAGE,
            SlruKind::MultiXactOffsets => MULTIXACT_OFFSETS_PER_PAGE,
            SlruKind::MultiXactMembers => MULTIXACT_MEMBERS_PER_PAGE,
            SlruKind::CommitTs => COMMIT_TS_XACTS_PER_PAGE,
        }
    }

    /// The page holding entry `id` (a transaction id, multixact id or
    /// member offset): `TransactionIdToPage`, `MultiXactIdToOffsetPage`,
    /// `MXOffsetToMemberPage`, `TransactionIdToCTsPage`.
    pub fn page_of(self, id: u32) -> SlruPage {
        SlruPage {
            kind: self,
            pageno: u64::from(id) / self.entries_per_page(),
        }
    }
}

impl fmt::Display for SlruKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// A page of an SLRU. Page numbers are 64-bit as in 17+ (`int64 pageno`);
/// with 32-bit ids every page number fits in 23 bits in 14-18.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlruPage {
    pub kind: SlruKind,
    pub pageno: u64,
}

impl SlruPage {
    /// The segment file holding the page (`pageno / SLRU_PAGES_PER_SEGMENT`).
    pub fn segment(&self) -> u64 {
        self.pageno / SLRU_PAGES_PER_SEGMENT
    }

    /// The page's byte offset in its segment file.
    pub fn offset_in_segment(&self) -> u64 {
        (self.pageno % SLRU_PAGES_PER_SEGMENT) * crate::PAGE_SIZE as u64
    }

    /// The segment file's path in a data directory: `<dir>/%04X`
    /// (`slru.c: SlruFileName`; `long_segment_names` is false for these
    /// SLRUs in 17 and 18).
    pub fn segment_path(&self) -> String {
        format!("{}/{:04X}", self.kind.dir(), self.segment())
    }
}

impl fmt::Display for SlruPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} page {}", self.kind, self.pageno)
    }
}

/// Which relation map file (`pg_filenode.map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RelMapFile {
    /// `global/pg_filenode.map`: the shared catalogs' map.
    Global,
    /// The map of database `dbnode`, in its directory in tablespace
    /// `spcnode`.
    Database { spcnode: u32, dbnode: u32 },
}

impl fmt::Display for RelMapFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelMapFile::Global => f.write_str("global relation map"),
            RelMapFile::Database { spcnode, dbnode } => write!(
                f,
                "relation map of database {dbnode} (tablespace {spcnode})"
            ),
        }
    }
}

/// How a record changes an SLRU or a relation map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlruChange {
    /// Entries of the page are written (status bits, commit timestamps,
    /// multixact offsets or members); the rest of the page is kept, so
    /// replay needs the page as it was.
    Set(SlruPage),
    /// The page is zeroed (the ZERO records): replay needs no earlier
    /// version of it.
    Zero(SlruPage),
    /// `SimpleLruTruncate(kind, cutoff_page)`: segments before the one
    /// holding `cutoff_page` (by the SLRU's circular page order) are
    /// removed, unless the SLRU's latest page shows an "apparent
    /// wraparound". Named, not modelled: no page content changes.
    Truncate { kind: SlruKind, cutoff_page: u64 },
    /// Segments `from_segment` up to (not including) `to_segment` are
    /// removed, wrapping after the last segment (multixact members:
    /// `multixact.c: PerformMembersTruncation`).
    DeleteSegments {
        kind: SlruKind,
        from_segment: u64,
        to_segment: u64,
    },
    /// The whole map file is written from the record (RelMap UPDATE):
    /// replay needs no earlier version ([`relmap_update`] gives the bytes).
    RelMap(RelMapFile),
    /// XLOG PARAMETER_CHANGE: commit timestamps are active (or not) for the
    /// records after it (`CommitTsParameterChange`); turning them off
    /// deletes every `pg_commit_ts` file. The next records' routing needs
    /// it (`commit_ts_active`).
    CommitTsActive(bool),
}

impl SlruChange {
    /// The SLRU page the change writes, if it writes one.
    pub fn page(&self) -> Option<SlruPage> {
        match *self {
            SlruChange::Set(p) | SlruChange::Zero(p) => Some(p),
            _ => None,
        }
    }

    /// Replaying the record needs no earlier version of what it changes.
    pub fn initializes(&self) -> bool {
        matches!(self, SlruChange::Zero(_) | SlruChange::RelMap(_))
    }

    /// Whether the change removes `page`'s segment file: a truncation
    /// before the segment of its cut-off page (`SlruMayDeleteSegment` by
    /// page number, without `SimpleLruTruncate`'s "apparent wraparound"
    /// check, which needs the SLRU's latest page), a segment range deleted
    /// (wrapping after the last segment), or, for a `pg_commit_ts` page,
    /// commit timestamps turned off (every file deleted).
    pub fn removes(&self, page: &SlruPage) -> bool {
        let segment = page.segment();
        match *self {
            SlruChange::Truncate { kind, cutoff_page } => {
                kind == page.kind && segment < cutoff_page / SLRU_PAGES_PER_SEGMENT
            }
            SlruChange::DeleteSegments {
                kind,
                from_segment,
                to_segment,
            } => {
                kind == page.kind
                    && if from_segment <= to_segment {
                        (from_segment..to_segment).contains(&segment)
                    } else {
                        segment >= from_segment || segment < to_segment
                    }
            }
            SlruChange::CommitTsActive(false) => page.kind == SlruKind::CommitTs,
            _ => false,
        }
    }
}

/// A commit or abort as recovery reads it (`ParseCommitRecord`,
/// `ParseAbortRecord`), as far as the SLRUs are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XactTree {
    /// Committed (COMMIT, COMMIT_PREPARED) or aborted.
    pub commit: bool,
    /// The transaction whose status changes: the record's `xl_xid`, or the
    /// two-phase xid of the prepared forms (`parsed.twophase_xid`). An abort
    /// of a subtransaction names the subtransaction.
    pub xid: u32,
    /// `xl_xact_subxacts`: its subtransactions, in record order.
    pub subxacts: Vec<u32>,
    /// `xact_time`.
    pub xact_time: i64,
    /// `xl_xact_origin.origin_timestamp`, with `XACT_XINFO_HAS_ORIGIN`.
    pub origin_timestamp: Option<i64>,
}

impl XactTree {
    /// The commit timestamp recovery records for the tree
    /// (`xact_redo_commit`): the origin's timestamp when there is one, else
    /// `xact_time`.
    pub fn commit_time(&self) -> i64 {
        self.origin_timestamp.unwrap_or(self.xact_time)
    }

    /// The transaction and its subtransactions.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.xid).chain(self.subxacts.iter().copied())
    }
}

/// Reads the main data of a record front to back.
struct Cursor<'a, 'b> {
    decoded: &'b DecodedRecord<'a>,
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a, '_> {
    fn bad(&self) -> RecordError {
        RecordError::BadMainData {
            rmgr: self.decoded.rmgr_name(),
            info: self.decoded.info,
            what: self.what,
            len: self.decoded.main_data.len(),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let d: &'a [u8] = self.decoded.main_data;
        let end = self.at.checked_add(n).ok_or_else(|| self.bad())?;
        let b = d.get(self.at..end).ok_or_else(|| self.bad())?;
        self.at = end;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(le_u32(self.bytes(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(le_u64(self.bytes(8)?, 0))
    }

    /// An `int` count of `size`-byte entries that must follow in full;
    /// a negative count is refused.
    fn count(&mut self, size: usize) -> Result<usize, RecordError> {
        let n = i32::from_le_bytes(self.u32()?.to_le_bytes());
        let n = usize::try_from(n).map_err(|_| self.bad())?;
        let left = self.decoded.main_data.len() - self.at;
        if n > left / size {
            return Err(self.bad());
        }
        Ok(n)
    }

    /// `count` entries of `size` bytes skipped.
    fn skip_counted(&mut self, size: usize) -> Result<(), RecordError> {
        let n = self.count(size)?;
        self.bytes(n * size).map(|_| ())
    }

    /// A page number of the version's width (`int` or `int64`); negative
    /// ones are refused (no SLRU has them).
    fn pageno(&mut self, format: SlruFormat) -> Result<u64, RecordError> {
        let n = if format.pageno_size() == 8 {
            i64::from_le_bytes(self.u64()?.to_le_bytes())
        } else {
            i32::from_le_bytes(self.u32()?.to_le_bytes()).into()
        };
        u64::try_from(n).map_err(|_| self.bad())
    }

    /// The main data must be exactly what was read.
    fn end(&self) -> Result<(), RecordError> {
        if self.at != self.decoded.main_data.len() {
            return Err(self.bad());
        }
        Ok(())
    }
}

fn cursor<'a, 'b>(decoded: &'b DecodedRecord<'a>, what: &'static str) -> Cursor<'a, 'b> {
    Cursor {
        decoded,
        at: 0,
        what,
    }
}

/// The commit or abort a Transaction record is (None for the other
/// Transaction records and other resource managers), parsed through the
/// origin part in `ParseCommitRecord`'s/`ParseAbortRecord`'s order with
/// `format`'s item sizes. A prepared form without its two-phase xid, a GID
/// without its NUL, or a count past the end is refused.
pub fn xact_tree(
    decoded: &DecodedRecord<'_>,
    format: SlruFormat,
) -> Result<Option<XactTree>, RecordError> {
    if decoded.rmid != RM_XACT_ID {
        return Ok(None);
    }
    let op = decoded.info & XLOG_XACT_OPMASK;
    let (commit, prepared) = match op {
        XLOG_XACT_COMMIT => (true, false),
        XLOG_XACT_COMMIT_PREPARED => (true, true),
        XLOG_XACT_ABORT => (false, false),
        XLOG_XACT_ABORT_PREPARED => (false, true),
        _ => return Ok(None),
    };
    let mut c = cursor(decoded, if commit { "commit" } else { "abort" });
    let xact_time = i64::from_le_bytes(c.u64()?.to_le_bytes());
    let xinfo = if decoded.info & XLOG_XACT_HAS_INFO != 0 {
        c.u32()?
    } else {
        0
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        c.bytes(SIZE_OF_XACT_DBINFO)?;
    }
    let mut subxacts = Vec::new();
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = c.count(4)?;
        let b = c.bytes(4 * n)?;
        subxacts = b.chunks_exact(4).map(|x| le_u32(x, 0)).collect();
    }
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        c.skip_counted(SIZE_OF_RELFILENODE)?;
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        if let Some(size) = format.stats_item_size() {
            c.skip_counted(size)?;
        }
    }
    // Only commits carry invalidations (ParseAbortRecord has no such step).
    if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        c.skip_counted(SIZE_OF_SHARED_INVAL_MESSAGE)?;
    }
    let mut twophase_xid = None;
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        twophase_xid = Some(c.u32()?);
        if xinfo & XACT_XINFO_HAS_GID != 0 {
            let rest = &decoded.main_data[c.at..];
            let nul = rest.iter().position(|&b| b == 0).ok_or_else(|| c.bad())?;
            c.bytes(nul + 1)?;
        }
    }
    let mut origin_timestamp = None;
    if xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
        let o = c.bytes(SIZE_OF_XACT_ORIGIN)?;
        origin_timestamp = Some(i64::from_le_bytes(le_u64(o, 8).to_le_bytes()));
    }
    let xid = if prepared {
        twophase_xid.ok_or_else(|| c.bad())?
    } else {
        decoded.xid
    };
    Ok(Some(XactTree {
        commit,
        xid,
        subxacts,
        xact_time,
        origin_timestamp,
    }))
}

/// The relation map file a RelMap UPDATE writes and its bytes (the whole
/// file: 512 bytes in 14-15, 524 from 16), checked as PostgreSQL checks a
/// map it reads (`relmapper.c: read_relmap_file`): the size `relmap_redo`
/// insists on, `RELMAPPER_FILEMAGIC`, 0 to `MAX_MAPPINGS` mappings, and the
/// CRC-32C of the bytes before `crc`. The file is the
/// global map for `GLOBALTABLESPACE_ID` (database 0), else the database's
/// (`GetDatabasePath(dbid, tsid)`); a database in the global tablespace or
/// database 0 elsewhere is refused (14 picks the file by `dbid == 0`, 15+
/// by the tablespace: refusing the mixed cases keeps them agreeing).
/// None for any other record.
pub fn relmap_update<'a>(
    decoded: &DecodedRecord<'a>,
    format: SlruFormat,
) -> Result<Option<(RelMapFile, &'a [u8])>, RecordError> {
    if decoded.rmid != RM_RELMAP_ID || decoded.rmgr_info() != XLOG_RELMAP_UPDATE {
        return Ok(None);
    }
    let mut c = cursor(decoded, "update");
    let dbid = c.u32()?;
    let tsid = c.u32()?;
    let nbytes = c.u32()?;
    let bad = |reason| RecordError::BadRelMap { reason };
    let size = format.relmap_file_size();
    if usize::try_from(nbytes).ok() != Some(size) {
        return Err(bad(
            "nbytes is not the size of a map file (sizeof(RelMapFile))",
        ));
    }
    let map = c.bytes(size)?;
    c.end()?;
    let file = match (tsid, dbid) {
        (GLOBALTABLESPACE_ID, 0) => RelMapFile::Global,
        (GLOBALTABLESPACE_ID, _) => return Err(bad("a database in the global tablespace")),
        (_, 0) => return Err(bad("database 0 outside the global tablespace")),
        (spcnode, dbnode) => RelMapFile::Database { spcnode, dbnode },
    };
    if le_u32(map, 0) != RELMAPPER_FILEMAGIC {
        return Err(bad("map file magic is not RELMAPPER_FILEMAGIC (0x592717)"));
    }
    if le_u32(map, 4) > format.relmap_max_mappings() {
        return Err(bad(
            "map file has more than MAX_MAPPINGS mappings, or a negative count",
        ));
    }
    let crc_at = format.relmap_crc_offset();
    let crc = crc32c_finish(crc32c_update(CRC32C_INIT, &map[..crc_at]));
    if crc != le_u32(map, crc_at) {
        return Err(bad("map file CRC does not match its contents"));
    }
    Ok(Some((file, map)))
}

/// Every SLRU page and relation map a decoded record of PostgreSQL
/// `format` changes, each once (empty for records of other resource
/// managers). `commit_ts_active` says whether commit timestamps are active
/// at this point of recovery (`commitTsShared->commitTsActive`: the base's
/// `pg_control` setting, then each XLOG PARAMETER_CHANGE), which a commit
/// record does not carry.
///
/// - Transaction COMMIT, COMMIT_PREPARED, ABORT, ABORT_PREPARED:
///   [`SlruChange::Set`] of the `pg_xact` page of the transaction and of
///   each subtransaction, then (commits, `commit_ts_active`) of their
///   `pg_commit_ts` pages.
/// - CLOG ZEROPAGE, CommitTs ZEROPAGE, MultiXact ZERO_OFF_PAGE and
///   ZERO_MEM_PAGE: [`SlruChange::Zero`] of the page.
/// - CLOG and CommitTs TRUNCATE: [`SlruChange::Truncate`] at the record's
///   page.
/// - MultiXact CREATE_ID: `Set` of the offsets page of the multixact and of
///   the next one (`mid + 1`, skipping 0: the minors that write the next
///   offset write it there, the others leave that page as it is), and of
///   the members page of each member offset, wrapping at 2^32.
/// - MultiXact TRUNCATE_ID: [`SlruChange::DeleteSegments`] of members
///   segments, then `Truncate` of offsets at the page of the multixact
///   before `endTruncOff` (`PerformOffsetsTruncation`).
/// - RelMap UPDATE: [`SlruChange::RelMap`], checked ([`relmap_update`]).
/// - XLOG PARAMETER_CHANGE: [`SlruChange::CommitTsActive`] with the
///   record's `track_commit_timestamp`.
pub fn slru_changes(
    decoded: &DecodedRecord<'_>,
    format: SlruFormat,
    commit_ts_active: bool,
) -> Result<Vec<SlruChange>, RecordError> {
    let mut out = Vec::new();
    match decoded.rmid {
        RM_XACT_ID => {
            if let Some(tree) = xact_tree(decoded, format)? {
                add_pages(&mut out, SlruKind::Xact, tree.ids());
                if tree.commit && commit_ts_active {
                    add_pages(&mut out, SlruKind::CommitTs, tree.ids());
                }
            }
        }
        RM_CLOG_ID | RM_COMMIT_TS_ID => {
            let (kind, what, truncate_size) = if decoded.rmid == RM_CLOG_ID {
                (SlruKind::Xact, "clog", format.clog_truncate_size())
            } else {
                (
                    SlruKind::CommitTs,
                    "commit_ts",
                    format.commit_ts_truncate_size(),
                )
            };
            let mut c = cursor(decoded, what);
            // CLOG_ZEROPAGE == COMMIT_TS_ZEROPAGE, CLOG_TRUNCATE == COMMIT_TS_TRUNCATE.
            match decoded.rmgr_info() {
                CLOG_ZEROPAGE => {
                    let pageno = c.pageno(format)?;
                    c.end()?;
                    out.push(SlruChange::Zero(SlruPage { kind, pageno }));
                }
                CLOG_TRUNCATE => {
                    if decoded.main_data.len() != truncate_size {
                        return Err(c.bad());
                    }
                    let cutoff_page = c.pageno(format)?;
                    out.push(SlruChange::Truncate { kind, cutoff_page });
                }
                _ => {}
            }
        }
        RM_MULTIXACT_ID => multixact_changes(decoded, format, &mut out)?,
        RM_RELMAP_ID => {
            if let Some((file, _)) = relmap_update(decoded, format)? {
                out.push(SlruChange::RelMap(file));
            }
        }
        RM_XLOG_ID if decoded.rmgr_info() == XLOG_PARAMETER_CHANGE => {
            let mut c = cursor(decoded, "parameter change");
            if decoded.main_data.len() != SIZE_OF_PARAMETER_CHANGE {
                return Err(c.bad());
            }
            let flag = c.bytes(PARAMETER_CHANGE_TRACK_COMMIT_TS_AT + 1)?;
            out.push(SlruChange::CommitTsActive(
                flag[PARAMETER_CHANGE_TRACK_COMMIT_TS_AT] != 0,
            ));
        }
        _ => {}
    }
    Ok(out)
}

/// Push `Set` of the `kind` page of each id not already in `out`. Ids come
/// in runs on one page (subtransactions are in xid order), so only the
/// last page is looked at before the whole list.
fn add_pages(out: &mut Vec<SlruChange>, kind: SlruKind, ids: impl Iterator<Item = u32>) {
    let mut last = None;
    for id in ids {
        let page = kind.page_of(id);
        if last == Some(page) {
            continue;
        }
        last = Some(page);
        push_set(out, page);
    }
}

fn push_set(out: &mut Vec<SlruChange>, page: SlruPage) {
    let change = SlruChange::Set(page);
    if !out.contains(&change) {
        out.push(change);
    }
}

fn multixact_changes(
    decoded: &DecodedRecord<'_>,
    format: SlruFormat,
    out: &mut Vec<SlruChange>,
) -> Result<(), RecordError> {
    match decoded.rmgr_info() {
        op @ (XLOG_MULTIXACT_ZERO_OFF_PAGE | XLOG_MULTIXACT_ZERO_MEM_PAGE) => {
            let mut c = cursor(decoded, "zero page");
            let pageno = c.pageno(format)?;
            c.end()?;
            let kind = if op == XLOG_MULTIXACT_ZERO_OFF_PAGE {
                SlruKind::MultiXactOffsets
            } else {
                SlruKind::MultiXactMembers
            };
            out.push(SlruChange::Zero(SlruPage { kind, pageno }));
        }
        XLOG_MULTIXACT_CREATE_ID => {
            let create = multixact_create(decoded)?;
            push_set(out, SlruKind::MultiXactOffsets.page_of(create.mid));
            push_set(
                out,
                SlruKind::MultiXactOffsets.page_of(next_multixact(create.mid)),
            );
            for page in member_pages(create.moff, create.nmembers().into()) {
                push_set(out, page);
            }
        }
        XLOG_MULTIXACT_TRUNCATE_ID => {
            let mut c = cursor(decoded, "truncate");
            if decoded.main_data.len() != SIZE_OF_MULTIXACT_TRUNCATE {
                return Err(c.bad());
            }
            let _oldest_multi_db = c.u32()?;
            let _start_trunc_off = c.u32()?;
            let end_trunc_off = c.u32()?;
            let start_trunc_memb = c.u32()?;
            let end_trunc_memb = c.u32()?;
            let segment =
                |off: u32| SlruKind::MultiXactMembers.page_of(off).pageno / SLRU_PAGES_PER_SEGMENT;
            out.push(SlruChange::DeleteSegments {
                kind: SlruKind::MultiXactMembers,
                from_segment: segment(start_trunc_memb),
                to_segment: segment(end_trunc_memb),
            });
            out.push(SlruChange::Truncate {
                kind: SlruKind::MultiXactOffsets,
                cutoff_page: SlruKind::MultiXactOffsets
                    .page_of(previous_multixact(end_trunc_off))
                    .pageno,
            });
        }
        _ => {}
    }
    Ok(())
}

/// A MultiXact CREATE_ID record's main data (`xl_multixact_create`).
pub struct MultiXactCreate<'a> {
    pub mid: u32,
    pub moff: u32,
    /// `nmembers` members of 8 bytes: xid, then status (`MultiXactMember`).
    pub members: &'a [u8],
}

impl MultiXactCreate<'_> {
    pub fn nmembers(&self) -> u32 {
        (self.members.len() / SIZE_OF_MULTIXACT_MEMBER) as u32
    }
}

/// The main data of a MultiXact CREATE_ID record: exactly the header and
/// its members, each member's status a `MultiXactStatus` (0 to
/// `MultiXactStatusUpdate`, 5: `RecordNewMultiXact` asserts it, and a
/// larger one would spill into the other members' flag bytes).
pub fn multixact_create<'a>(
    decoded: &DecodedRecord<'a>,
) -> Result<MultiXactCreate<'a>, RecordError> {
    let mut c = cursor(decoded, "create");
    let mid = c.u32()?;
    let moff = c.u32()?;
    let nmembers = c.count(SIZE_OF_MULTIXACT_MEMBER)?;
    let members = c.bytes(nmembers * SIZE_OF_MULTIXACT_MEMBER)?;
    c.end()?;
    if members
        .chunks_exact(SIZE_OF_MULTIXACT_MEMBER)
        .any(|m| le_u32(m, 4) > MULTIXACT_STATUS_UPDATE)
    {
        return Err(c.bad());
    }
    Ok(MultiXactCreate { mid, moff, members })
}

/// The multixact after `mid`, skipping 0 (`RecordNewMultiXact`: "next =
/// multi + 1; if (next < FirstMultiXactId) next = FirstMultiXactId").
pub fn next_multixact(mid: u32) -> u32 {
    mid.wrapping_add(1).max(FIRST_MULTIXACT_ID)
}

/// The multixact before `mid`, skipping 0 (`PreviousMultiXactId`).
pub fn previous_multixact(mid: u32) -> u32 {
    if mid == FIRST_MULTIXACT_ID {
        u32::MAX
    } else {
        mid.wrapping_sub(1)
    }
}

/// The members pages of offsets `moff .. moff + n - 1`, modulo 2^32 (the
/// last page, 2625285, holds 1036 members and is followed by page 0), in
/// order, each once per pass.
pub fn member_pages(moff: u32, n: u64) -> Vec<SlruPage> {
    let per_page = MULTIXACT_MEMBERS_PER_PAGE;
    let mut pages: Vec<SlruPage> = Vec::new();
    let mut off = u64::from(moff);
    let mut left = n;
    while left > 0 {
        let page = SlruPage {
            kind: SlruKind::MultiXactMembers,
            pageno: off / per_page,
        };
        if !pages.contains(&page) {
            pages.push(page);
        }
        // Up to the end of the page or of the offset space, whichever is first.
        let room = (per_page - off % per_page).min((1 << 32) - off);
        let step = room.min(left);
        left -= step;
        off = (off + step) % (1 << 32);
    }
    pages
}

mod apply;
mod replay;
pub use apply::{apply_to_slru_page, rebuild_slru_page};
pub use replay::{SlruRemoval, SlruReplay};

#[cfg(test)]
mod tests;
