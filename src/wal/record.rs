//! Decoding raw PostgreSQL WAL records (one format from 15 to 18) (`XLogRecord`), little-endian.
//!
//! [`decode`] checks a record the way PostgreSQL 15's `ValidXLogRecord` and
//! `DecodeXLogRecord` (xlogreader.c) do, and returns a zero-copy view of its
//! block references and main data. It is the gate that keeps malformed input
//! away from the wal-redo processes, so it never panics, whatever the input.
//!
//! A few checks are stricter than PostgreSQL's: fork numbers above
//! `MAX_FORKNUM`, block numbers `InvalidBlockNumber` (0xFFFFFFFF, which no
//! buffer can have, and which a wal-redo process would take for `P_NEW`) and
//! `MaxBlockNumber` (0xFFFFFFFE: a relation holding it would have
//! `InvalidBlockNumber` blocks, so a wal-redo process cannot reserve it),
//! images whose hole runs past the end of the page, uncompressed
//! images whose length plus hole is not a whole page, compressed images of a
//! page or more, and images that name more than one compression method are
//! all rejected.

use std::fmt;

use crate::tag::{PageTag, RelFileNode, MAX_FORKNUM};
use crate::wal::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};
use crate::PAGE_SIZE;

/// Size of the fixed `XLogRecord` header.
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// Offset of `xl_crc` within the header; the CRC covers the header up to here.
const XL_CRC_OFFSET: usize = 20;

/// Bits of `xl_info` that belong to the WAL machinery.
pub const XLR_INFO_MASK: u8 = 0x0F;
/// Bits of `xl_info` that the resource manager may use.
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
/// The record changes relation files in a way the block references don't show.
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;
/// Full-page images are included to check redo consistency.
pub const XLR_CHECK_CONSISTENCY: u8 = 0x02;

/// Highest block id of a block reference.
pub const XLR_MAX_BLOCK_ID: u8 = 32;
/// Main data follows, length in one byte.
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
/// Main data follows, length in four bytes.
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
/// Replication origin id follows.
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// Top-level transaction id follows.
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

/// `fork_flags` bits.
pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
pub const BKPBLOCK_SAME_REL: u8 = 0x80;

/// `bimg_info` bits.
pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
pub const BKPIMAGE_APPLY: u8 = 0x02;
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;
const BKPIMAGE_COMPRESS_MASK: u8 =
    BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;

const BLCKSZ: u32 = PAGE_SIZE as u32;

/// PostgreSQL's `InvalidBlockNumber`, never the number of a real block.
pub const INVALID_BLOCK_NUMBER: u32 = u32::MAX;
/// PostgreSQL's `MaxBlockNumber`: a relation that had it would have
/// `InvalidBlockNumber` blocks, so redo requests refuse it too.
pub const MAX_BLOCK_NUMBER: u32 = u32::MAX - 1;

/// Why a record was rejected. Offsets are byte offsets from the start of the
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The buffer cannot even hold the fixed header.
    TooShort { len: usize },
    /// `xl_tot_len` disagrees with the buffer length.
    LengthMismatch { tot_len: u32, buf_len: usize },
    /// `xl_crc` disagrees with the CRC of the record.
    BadCrc { expected: u32, computed: u32 },
    /// The headers end in the middle of a field. `block` is the block
    /// reference being read, if any; `what` names the field.
    TruncatedHeader {
        block: Option<u8>,
        what: &'static str,
        offset: usize,
    },
    /// A block id that is neither a block reference nor a known special id.
    InvalidBlockId { block_id: u8, offset: usize },
    /// Block ids must be strictly increasing.
    OutOfOrderBlockId { block_id: u8, previous: u8 },
    /// Fork number above `MAX_FORKNUM`.
    InvalidFork { block: u8, forknum: u8 },
    /// Block number `InvalidBlockNumber` (0xFFFFFFFF) or `MaxBlockNumber`.
    InvalidBlockNumber { block: u8, blkno: u32 },
    /// `BKPBLOCK_HAS_DATA` set, but `data_length` is 0.
    HasDataWithoutData { block: u8 },
    /// `BKPBLOCK_HAS_DATA` not set, but `data_length` is not 0.
    DataWithoutHasData { block: u8, data_len: u16 },
    /// An inconsistent block image header.
    BadImage {
        block: u8,
        reason: &'static str,
        bimg_len: u16,
        hole_offset: u16,
        /// Signed: an uncompressed image longer than a page gives a negative hole.
        hole_length: i64,
        bimg_info: u8,
    },
    /// `BKPBLOCK_SAME_REL` on the first block reference with a relation.
    SameRelWithoutPrevious { block: u8 },
    /// The headers declare more payload than the record holds.
    TruncatedPayload { declared: u64, available: usize },
    /// The record holds more payload than the headers declare.
    TrailingBytes { declared: u64, available: usize },
    /// A heap or Storage record's main data is too short (or, for a
    /// truncation, not of its size) for the fields redo reads.
    BadMainData {
        rmgr: &'static str,
        info: u8,
        what: &'static str,
        len: usize,
    },
    /// A heap record lacks the block reference its redo reads.
    MissingBlock {
        rmgr: &'static str,
        info: u8,
        what: &'static str,
        block: u8,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RecordError::*;
        match self {
            TooShort { len } => write!(
                f,
                "record too short: {len} bytes, the header alone is {SIZE_OF_XLOG_RECORD}"
            ),
            LengthMismatch { tot_len, buf_len } => write!(
                f,
                "record length mismatch: xl_tot_len is {tot_len}, buffer holds {buf_len} bytes"
            ),
            BadCrc { expected, computed } => write!(
                f,
                "record CRC mismatch: header says {expected:#010x}, computed {computed:#010x}"
            ),
            TruncatedHeader {
                block: Some(b),
                what,
                offset,
            } => write!(f, "block {b}: truncated {what} at offset {offset}"),
            TruncatedHeader {
                block: None,
                what,
                offset,
            } => write!(f, "truncated {what} at offset {offset}"),
            InvalidBlockId { block_id, offset } => {
                write!(f, "invalid block_id {block_id} at offset {offset}")
            }
            OutOfOrderBlockId { block_id, previous } => write!(
                f,
                "out-of-order block_id {block_id} (follows block_id {previous})"
            ),
            InvalidFork { block, forknum } => write!(
                f,
                "block {block}: invalid fork number {forknum} (max {MAX_FORKNUM})"
            ),
            InvalidBlockNumber { block, blkno } => write!(
                f,
                "block {block}: invalid block number {blkno} (no relation reaches {MAX_BLOCK_NUMBER})"
            ),
            HasDataWithoutData { block } => write!(
                f,
                "block {block}: BKPBLOCK_HAS_DATA set, but no data included"
            ),
            DataWithoutHasData { block, data_len } => write!(
                f,
                "block {block}: BKPBLOCK_HAS_DATA not set, but data length is {data_len}"
            ),
            BadImage {
                block,
                reason,
                bimg_len,
                hole_offset,
                hole_length,
                bimg_info,
            } => write!(
                f,
                "block {block}: {reason} (block image length {bimg_len}, hole offset \
                 {hole_offset}, hole length {hole_length}, bimg_info {bimg_info:#04x})"
            ),
            SameRelWithoutPrevious { block } => write!(
                f,
                "block {block}: BKPBLOCK_SAME_REL set but no previous rel"
            ),
            TruncatedPayload {
                declared,
                available,
            } => write!(
                f,
                "record truncated: headers declare {declared} payload bytes, \
                 only {available} remain"
            ),
            TrailingBytes {
                declared,
                available,
            } => write!(
                f,
                "record has trailing bytes: headers declare {declared} payload bytes, \
                 {available} remain"
            ),
            BadMainData {
                rmgr,
                info,
                what,
                len,
            } => write!(
                f,
                "{rmgr} {what} record (info {info:#04x}): main data of {len} bytes is too short \
                 for its fields, or not of their size"
            ),
            MissingBlock {
                rmgr,
                info,
                what,
                block,
            } => write!(
                f,
                "{rmgr} {what} record (info {info:#04x}) has no block reference {block}, which \
                 its redo reads"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

/// How a full-page image is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Pglz,
    Lz4,
    Zstd,
}

/// A full-page image carried by a block reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockImage<'a> {
    /// The `bimg_len` stored bytes: the page without its hole, possibly
    /// compressed.
    pub data: &'a [u8],
    pub hole_offset: u16,
    /// Length of the hole (0 without one); at most `PAGE_SIZE`.
    pub hole_length: u16,
    pub bimg_info: u8,
}

impl BlockImage<'_> {
    /// Whether redo restores this image (`BKPIMAGE_APPLY`), rather than it
    /// being only for consistency checking.
    pub fn apply(&self) -> bool {
        self.bimg_info & BKPIMAGE_APPLY != 0
    }

    /// Whether the image has a hole (`BKPIMAGE_HAS_HOLE`).
    pub fn has_hole(&self) -> bool {
        self.bimg_info & BKPIMAGE_HAS_HOLE != 0
    }

    /// The compression method, as PostgreSQL's `RestoreBlockImage` picks it.
    pub fn compression(&self) -> Compression {
        if self.bimg_info & BKPIMAGE_COMPRESS_PGLZ != 0 {
            Compression::Pglz
        } else if self.bimg_info & BKPIMAGE_COMPRESS_LZ4 != 0 {
            Compression::Lz4
        } else if self.bimg_info & BKPIMAGE_COMPRESS_ZSTD != 0 {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn is_compressed(&self) -> bool {
        self.bimg_info & BKPIMAGE_COMPRESS_MASK != 0
    }
}

/// One block reference of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef<'a> {
    pub id: u8,
    pub tag: PageTag,
    /// `BKPBLOCK_WILL_INIT`: redo initializes the page from scratch.
    pub will_init: bool,
    /// `BKPBLOCK_HAS_DATA`.
    pub has_data: bool,
    /// Block data (empty unless `has_data`).
    pub data: &'a [u8],
    pub image: Option<BlockImage<'a>>,
}

impl BlockRef<'_> {
    /// Whether replaying this block needs no earlier version of the page:
    /// the redo routine initializes it, or a full-page image is applied.
    pub fn initializes_page(&self) -> bool {
        self.will_init || self.image.is_some_and(|i| i.apply())
    }
}

/// A decoded record: the header fields and zero-copy views of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub tot_len: u32,
    pub xid: u32,
    pub prev: u64,
    pub info: u8,
    pub rmid: u8,
    pub crc: u32,
    pub blocks: Vec<BlockRef<'a>>,
    pub main_data: &'a [u8],
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
}

impl<'a> DecodedRecord<'a> {
    /// The first block reference to `tag`, if any.
    pub fn block_for(&self, tag: &PageTag) -> Option<&BlockRef<'a>> {
        self.blocks.iter().find(|b| b.tag == *tag)
    }

    /// `XLR_CHECK_CONSISTENCY`.
    pub fn check_consistency(&self) -> bool {
        self.info & XLR_CHECK_CONSISTENCY != 0
    }

    /// `XLR_SPECIAL_REL_UPDATE`.
    pub fn special_rel_update(&self) -> bool {
        self.info & XLR_SPECIAL_REL_UPDATE != 0
    }

    /// The resource manager's bits of `xl_info`.
    pub fn rmgr_info(&self) -> u8 {
        self.info & XLR_RMGR_INFO_MASK
    }

    /// The resource manager's name.
    pub fn rmgr_name(&self) -> &'static str {
        rmgr_name(self.rmid)
    }

    /// Whether the record references `tag` and replaying it needs no earlier
    /// version of the page (`BKPBLOCK_WILL_INIT`, or an image with
    /// `BKPIMAGE_APPLY`).
    pub fn initializes(&self, tag: &PageTag) -> bool {
        self.block_for(tag).is_some_and(|b| b.initializes_page())
    }
}

/// Name of one of PostgreSQL 15's built-in resource managers.
pub fn rmgr_name(rmid: u8) -> &'static str {
    match rmid {
        0 => "XLOG",
        1 => "Transaction",
        2 => "Storage",
        3 => "CLOG",
        4 => "Database",
        5 => "Tablespace",
        6 => "MultiXact",
        7 => "RelMap",
        8 => "Standby",
        9 => "Heap2",
        10 => "Heap",
        11 => "Btree",
        12 => "Hash",
        13 => "Gin",
        14 => "Gist",
        15 => "Sequence",
        16 => "SPGist",
        17 => "BRIN",
        18 => "CommitTs",
        19 => "ReplicationOrigin",
        20 => "Generic",
        21 => "LogicalMessage",
        128..=255 => "custom",
        _ => "unknown",
    }
}

/// `record_type_name` for WAL of PostgreSQL `pg_version`: the names 17
/// gave to Heap2's prune records (0x10 to 0x30 were PRUNE, VACUUM and
/// FREEZE_PAGE up to 16) and XLOG's CHECKPOINT_REDO (new in 17). Nothing else
/// differs from 15 to 18 (the ids and the other names are the same).
pub fn record_type_name_for(pg_version: u32, rmid: u8, info: u8) -> Option<&'static str> {
    let op = info & XLR_RMGR_INFO_MASK;
    if pg_version >= 17 {
        match (rmid, op) {
            (0, 0xE0) => return Some("CHECKPOINT_REDO"),
            (9, 0x10) => return Some("PRUNE_ON_ACCESS"),
            (9, 0x20) => return Some("PRUNE_VACUUM_SCAN"),
            (9, 0x30) => return Some("PRUNE_VACUUM_CLEANUP"),
            _ => {}
        }
    }
    record_type_name(rmid, info)
}

/// The record type as pg_waldump names it (the first word of its `desc:`,
/// from each resource manager's `rm_identify` in PostgreSQL 15), or None
/// where pg_waldump prints `UNKNOWN`.
pub fn record_type_name(rmid: u8, info: u8) -> Option<&'static str> {
    let op = info & XLR_RMGR_INFO_MASK;
    // Names by the value of `op` (index op >> 4), "" where none.
    const HEAP: [&str; 16] = [
        "INSERT",
        "DELETE",
        "UPDATE",
        "TRUNCATE",
        "HOT_UPDATE",
        "HEAP_CONFIRM",
        "LOCK",
        "INPLACE",
        "INSERT+INIT",
        "",
        "UPDATE+INIT",
        "",
        "HOT_UPDATE+INIT",
        "",
        "",
        "",
    ];
    const HEAP2: [&str; 16] = [
        "REWRITE",
        "PRUNE",
        "VACUUM",
        "FREEZE_PAGE",
        "VISIBLE",
        "MULTI_INSERT",
        "LOCK_UPDATED",
        "NEW_CID",
        "",
        "",
        "",
        "",
        "",
        "MULTI_INSERT+INIT",
        "",
        "",
    ];
    const BTREE: [&str; 16] = [
        "INSERT_LEAF",
        "INSERT_UPPER",
        "INSERT_META",
        "SPLIT_L",
        "SPLIT_R",
        "INSERT_POST",
        "DEDUP",
        "DELETE",
        "UNLINK_PAGE",
        "UNLINK_PAGE_META",
        "NEWROOT",
        "MARK_PAGE_HALFDEAD",
        "VACUUM",
        "REUSE_PAGE",
        "META_CLEANUP",
        "",
    ];
    const HASH: [&str; 16] = [
        "INIT_META_PAGE",
        "INIT_BITMAP_PAGE",
        "INSERT",
        "ADD_OVFL_PAGE",
        "SPLIT_ALLOCATE_PAGE",
        "SPLIT_PAGE",
        "SPLIT_COMPLETE",
        "MOVE_PAGE_CONTENTS",
        "SQUEEZE_PAGE",
        "DELETE",
        "SPLIT_CLEANUP",
        "UPDATE_META_PAGE",
        "VACUUM_ONE_PAGE",
        "",
        "",
        "",
    ];
    const GIN: [&str; 16] = [
        "",
        "CREATE_PTREE",
        "INSERT",
        "SPLIT",
        "VACUUM_PAGE",
        "DELETE_PAGE",
        "UPDATE_META_PAGE",
        "INSERT_LISTPAGE",
        "DELETE_LISTPAGE",
        "VACUUM_DATA_LEAF_PAGE",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    const GIST: [&str; 16] = [
        "PAGE_UPDATE",
        "DELETE",
        "PAGE_REUSE",
        "PAGE_SPLIT",
        "",
        "",
        "PAGE_DELETE",
        "ASSIGN_LSN",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    const SPGIST: [&str; 16] = [
        "",
        "ADD_LEAF",
        "MOVE_LEAFS",
        "ADD_NODE",
        "SPLIT_TUPLE",
        "PICKSPLIT",
        "VACUUM_LEAF",
        "VACUUM_ROOT",
        "VACUUM_REDIRECT",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    const BRIN: [&str; 16] = [
        "CREATE_INDEX",
        "INSERT",
        "UPDATE",
        "SAMEPAGE_UPDATE",
        "REVMAP_EXTEND",
        "DESUMMARIZE",
        "",
        "",
        "",
        "INSERT+INIT",
        "UPDATE+INIT",
        "",
        "",
        "",
        "",
        "",
    ];
    const XLOG: [&str; 16] = [
        "CHECKPOINT_SHUTDOWN",
        "CHECKPOINT_ONLINE",
        "NOOP",
        "NEXTOID",
        "SWITCH",
        "BACKUP_END",
        "PARAMETER_CHANGE",
        "RESTORE_POINT",
        "FPW_CHANGE",
        "END_OF_RECOVERY",
        "FPI_FOR_HINT",
        "FPI",
        "",
        "OVERWRITE_CONTRECORD",
        "",
        "",
    ];
    const XACT: [&str; 8] = [
        "COMMIT",
        "PREPARE",
        "ABORT",
        "COMMIT_PREPARED",
        "ABORT_PREPARED",
        "ASSIGNMENT",
        "INVALIDATION",
        "",
    ];
    const STORAGE: [&str; 3] = ["", "CREATE", "TRUNCATE"];
    const CLOG: [&str; 2] = ["ZEROPAGE", "TRUNCATE"];
    const DATABASE: [&str; 3] = ["CREATE_FILE_COPY", "CREATE_WAL_LOG", "DROP"];
    const TABLESPACE: [&str; 2] = ["CREATE", "DROP"];
    const MULTIXACT: [&str; 4] = ["ZERO_OFF_PAGE", "ZERO_MEM_PAGE", "CREATE_ID", "TRUNCATE_ID"];
    const RELMAP: [&str; 1] = ["UPDATE"];
    const STANDBY: [&str; 3] = ["LOCK", "RUNNING_XACTS", "INVALIDATIONS"];
    const SEQUENCE: [&str; 1] = ["LOG"];
    const ORIGIN: [&str; 2] = ["SET", "DROP"];
    const MESSAGE: [&str; 1] = ["MESSAGE"];
    let i = usize::from(op >> 4);
    let name = match rmid {
        0 => XLOG[i],
        // Transaction records keep a flag (XLOG_XACT_HAS_INFO) in the top bit.
        1 => XACT[i & 7],
        2 => STORAGE.get(i).copied().unwrap_or(""),
        3 => CLOG.get(i).copied().unwrap_or(""),
        4 => DATABASE.get(i).copied().unwrap_or(""),
        5 => TABLESPACE.get(i).copied().unwrap_or(""),
        6 => MULTIXACT.get(i).copied().unwrap_or(""),
        7 => RELMAP.get(i).copied().unwrap_or(""),
        8 => STANDBY.get(i).copied().unwrap_or(""),
        9 => HEAP2[i],
        10 => HEAP[i],
        11 => BTREE[i],
        12 => HASH[i],
        13 => GIN[i],
        14 => GIST[i],
        15 => SEQUENCE.get(i).copied().unwrap_or(""),
        16 => SPGIST[i],
        17 => BRIN[i],
        // CommitTs (whose names are CLOG's) and ReplicationOrigin look at
        // all of xl_info, the WAL machinery's bits included.
        18 if info & XLR_INFO_MASK == 0 => CLOG.get(i).copied().unwrap_or(""),
        19 if info & XLR_INFO_MASK == 0 => ORIGIN.get(i).copied().unwrap_or(""),
        20 => "Generic",
        21 => MESSAGE.get(i).copied().unwrap_or(""),
        _ => "",
    };
    (!name.is_empty()).then_some(name)
}

/// Whether a record of this resource manager (`rmid`, `xl_info`) only
/// changes pages, so that replaying it for one page touches nothing else:
/// heap (but Heap2's REWRITE, which writes logical rewrite mapping files),
/// btree, hash, GIN, GiST, sequence, SP-GiST, BRIN, generic WAL, and the
/// XLOG full-page image records (FPI, FPI_FOR_HINT). Records of the others
/// (commits, database and tablespace changes, checkpoints, ...) never carry
/// block references in real WAL; with a forged one, their redo would act on
/// the whole wal-redo process.
pub fn is_page_record(rmid: u8, info: u8) -> bool {
    const XLOG_FPI_FOR_HINT: u8 = 0xA0;
    const XLOG_FPI: u8 = 0xB0;
    const XLOG_HEAP_OPMASK: u8 = 0x70;
    const XLOG_HEAP2_REWRITE: u8 = 0x00;
    match rmid {
        10..=17 | 20 => true,
        9 => info & XLOG_HEAP_OPMASK != XLOG_HEAP2_REWRITE,
        0 => matches!(info & !XLR_INFO_MASK, XLOG_FPI | XLOG_FPI_FOR_HINT),
        _ => false,
    }
}

/// The CRC PostgreSQL computes for a record: payload after the header, then
/// the header up to `xl_crc`. `buf` must hold at least the header.
fn record_crc(buf: &[u8]) -> u32 {
    let body = buf.get(SIZE_OF_XLOG_RECORD..).unwrap_or(&[]);
    let head = buf.get(..XL_CRC_OFFSET).unwrap_or(&[]);
    crc32c_finish(crc32c_update(crc32c_update(CRC32C_INIT, body), head))
}

/// Decode `buf`, which must hold exactly one record, verifying its CRC.
pub fn decode(buf: &[u8]) -> Result<DecodedRecord<'_>, RecordError> {
    decode_inner(buf, true)
}

/// Like [`decode`], without verifying the CRC.
pub fn decode_unchecked_crc(buf: &[u8]) -> Result<DecodedRecord<'_>, RecordError> {
    decode_inner(buf, false)
}

/// Reads little-endian fields from the header area of a record.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(
        &mut self,
        block: Option<u8>,
        what: &'static str,
    ) -> Result<[u8; N], RecordError> {
        let end = self.pos.checked_add(N);
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                let mut out = [0u8; N];
                out.copy_from_slice(s);
                self.pos += N;
                Ok(out)
            }
            None => Err(RecordError::TruncatedHeader {
                block,
                what,
                offset: self.pos,
            }),
        }
    }
    fn u8(&mut self, block: Option<u8>, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take::<1>(block, what)?[0])
    }
    fn u16(&mut self, block: Option<u8>, what: &'static str) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.take(block, what)?))
    }
    fn u32(&mut self, block: Option<u8>, what: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.take(block, what)?))
    }
    fn u64(&mut self, block: Option<u8>, what: &'static str) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.take(block, what)?))
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    /// The next `len` bytes, if there are that many.
    fn slice(&mut self, len: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(s)
    }
}

/// A block reference's header, before its payload is located.
struct BlockHeader {
    id: u8,
    tag: PageTag,
    fork_flags: u8,
    data_len: u16,
    /// (bimg_len, hole_offset, hole_length, bimg_info)
    image: Option<(u16, u16, u16, u8)>,
}

fn decode_inner(buf: &[u8], check_crc: bool) -> Result<DecodedRecord<'_>, RecordError> {
    if buf.len() < SIZE_OF_XLOG_RECORD {
        return Err(RecordError::TooShort { len: buf.len() });
    }
    let mut r = Reader { buf, pos: 0 };
    let tot_len = r.u32(None, "record header")?;
    let xid = r.u32(None, "record header")?;
    let prev = r.u64(None, "record header")?;
    let info = r.u8(None, "record header")?;
    let rmid = r.u8(None, "record header")?;
    r.take::<2>(None, "record header")?;
    let crc = r.u32(None, "record header")?;
    // Also rejects xl_tot_len < SIZE_OF_XLOG_RECORD, as the buffer is longer.
    if usize::try_from(tot_len).ok() != Some(buf.len()) {
        return Err(RecordError::LengthMismatch {
            tot_len,
            buf_len: buf.len(),
        });
    }
    if check_crc {
        let computed = record_crc(buf);
        if computed != crc {
            return Err(RecordError::BadCrc {
                expected: crc,
                computed,
            });
        }
    }

    // Headers, exactly as DecodeXLogRecord walks them: keep reading while the
    // bytes left exceed the payload declared so far.
    let mut headers: Vec<BlockHeader> = Vec::new();
    let mut datatotal: u64 = 0;
    let mut main_data_len: u32 = 0;
    let mut origin = None;
    let mut toplevel_xid = None;
    let mut last_rel: Option<RelFileNode> = None;
    while r.remaining() as u64 > datatotal {
        let id_offset = r.pos;
        let block_id = r.u8(None, "block_id")?;
        match block_id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_data_len = r.u8(None, "main data length")?.into();
                datatotal += u64::from(main_data_len);
                break; // main data is always last
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_data_len = r.u32(None, "main data length")?;
                datatotal += u64::from(main_data_len);
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                origin = Some(r.u16(None, "replication origin")?);
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                toplevel_xid = Some(r.u32(None, "toplevel xid")?);
            }
            0..=XLR_MAX_BLOCK_ID => {
                let b = Some(block_id);
                if let Some(prev_hdr) = headers.last() {
                    if block_id <= prev_hdr.id {
                        return Err(RecordError::OutOfOrderBlockId {
                            block_id,
                            previous: prev_hdr.id,
                        });
                    }
                }
                let fork_flags = r.u8(b, "block header")?;
                let data_len = r.u16(b, "block header")?;
                let forknum = fork_flags & BKPBLOCK_FORK_MASK;
                if forknum > MAX_FORKNUM {
                    return Err(RecordError::InvalidFork {
                        block: block_id,
                        forknum,
                    });
                }
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data && data_len == 0 {
                    return Err(RecordError::HasDataWithoutData { block: block_id });
                }
                if !has_data && data_len != 0 {
                    return Err(RecordError::DataWithoutHasData {
                        block: block_id,
                        data_len,
                    });
                }
                datatotal += u64::from(data_len);

                let image = if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let img = read_image_header(&mut r, block_id)?;
                    datatotal += u64::from(img.0);
                    Some(img)
                } else {
                    None
                };

                let rel = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let spcnode = r.u32(b, "RelFileNode")?;
                    let dbnode = r.u32(b, "RelFileNode")?;
                    let relnode = r.u32(b, "RelFileNode")?;
                    let rel = RelFileNode {
                        spcnode,
                        dbnode,
                        relnode,
                    };
                    last_rel = Some(rel);
                    rel
                } else {
                    last_rel.ok_or(RecordError::SameRelWithoutPrevious { block: block_id })?
                };
                let blkno = r.u32(b, "block number")?;
                if blkno >= MAX_BLOCK_NUMBER {
                    return Err(RecordError::InvalidBlockNumber {
                        block: block_id,
                        blkno,
                    });
                }
                headers.push(BlockHeader {
                    id: block_id,
                    tag: PageTag {
                        rel,
                        forknum,
                        blkno,
                    },
                    fork_flags,
                    data_len,
                    image,
                });
            }
            _ => {
                return Err(RecordError::InvalidBlockId {
                    block_id,
                    offset: id_offset,
                })
            }
        }
    }

    let available = r.remaining();
    if (available as u64) < datatotal {
        return Err(RecordError::TruncatedPayload {
            declared: datatotal,
            available,
        });
    }
    if (available as u64) > datatotal {
        return Err(RecordError::TrailingBytes {
            declared: datatotal,
            available,
        });
    }

    // Payloads, in order: per block the image then the data, then main data.
    let truncated = || RecordError::TruncatedPayload {
        declared: datatotal,
        available,
    };
    let mut blocks = Vec::with_capacity(headers.len());
    for h in headers {
        let image = match h.image {
            Some((bimg_len, hole_offset, hole_length, bimg_info)) => Some(BlockImage {
                data: r.slice(bimg_len.into()).ok_or_else(truncated)?,
                hole_offset,
                hole_length,
                bimg_info,
            }),
            None => None,
        };
        let data = r.slice(h.data_len.into()).ok_or_else(truncated)?;
        blocks.push(BlockRef {
            id: h.id,
            tag: h.tag,
            will_init: h.fork_flags & BKPBLOCK_WILL_INIT != 0,
            has_data: h.fork_flags & BKPBLOCK_HAS_DATA != 0,
            data,
            image,
        });
    }
    let main_len = usize::try_from(main_data_len).map_err(|_| truncated())?;
    let main_data = r.slice(main_len).ok_or_else(truncated)?;

    Ok(DecodedRecord {
        tot_len,
        xid,
        prev,
        info,
        rmid,
        crc,
        blocks,
        main_data,
        origin,
        toplevel_xid,
    })
}

/// Read and validate an `XLogRecordBlockImageHeader` (plus the compressed
/// hole length, if any). Returns (bimg_len, hole_offset, hole_length, bimg_info).
fn read_image_header(r: &mut Reader<'_>, block: u8) -> Result<(u16, u16, u16, u8), RecordError> {
    let b = Some(block);
    let bimg_len = r.u16(b, "block image header")?;
    let hole_offset = r.u16(b, "block image header")?;
    let bimg_info = r.u8(b, "block image header")?;
    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
    let compressed = bimg_info & BKPIMAGE_COMPRESS_MASK != 0;
    // Computed wide: for an uncompressed image, BLCKSZ - bimg_len may be negative.
    let hole_length: i64 = if has_hole && compressed {
        r.u16(b, "block image compression header")?.into()
    } else if has_hole {
        i64::from(BLCKSZ) - i64::from(bimg_len)
    } else {
        0
    };
    let bad = |reason: &'static str| RecordError::BadImage {
        block,
        reason,
        bimg_len,
        hole_offset,
        hole_length,
        bimg_info,
    };
    if has_hole && (hole_offset == 0 || hole_length <= 0 || u32::from(bimg_len) == BLCKSZ) {
        return Err(bad(
            "BKPIMAGE_HAS_HOLE set, but hole offset, hole length or block image length invalid",
        ));
    }
    if !has_hole && (hole_offset != 0 || hole_length != 0) {
        return Err(bad(
            "BKPIMAGE_HAS_HOLE not set, but hole offset or length not zero",
        ));
    }
    if compressed && u32::from(bimg_len) >= BLCKSZ {
        return Err(bad(
            "BKPIMAGE_COMPRESSED set, but block image length is not below the page size",
        ));
    }
    if !has_hole && !compressed && u32::from(bimg_len) != BLCKSZ {
        return Err(bad("neither BKPIMAGE_HAS_HOLE nor BKPIMAGE_COMPRESSED set, but block image length is not the page size"));
    }
    if i64::from(hole_offset) + hole_length > i64::from(BLCKSZ) {
        return Err(bad("hole extends past the end of the page"));
    }
    if !compressed && i64::from(bimg_len) + hole_length != i64::from(BLCKSZ) {
        return Err(bad(
            "block image length plus hole length is not the page size",
        ));
    }
    if (bimg_info & BKPIMAGE_COMPRESS_MASK).count_ones() > 1 {
        return Err(bad("more than one compression method set"));
    }
    // 0 <= hole_length <= BLCKSZ here, so it fits in u16.
    let hole_length = u16::try_from(hole_length).map_err(|_| bad("hole length out of range"))?;
    Ok((bimg_len, hole_offset, hole_length, bimg_info))
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_type_names_follow_the_version() {
        assert_eq!(record_type_name_for(15, 9, 0x10), Some("PRUNE"));
        assert_eq!(record_type_name_for(16, 9, 0x30), Some("FREEZE_PAGE"));
        assert_eq!(record_type_name_for(17, 9, 0x10), Some("PRUNE_ON_ACCESS"));
        assert_eq!(
            record_type_name_for(18, 9, 0x30 | 0x02),
            Some("PRUNE_VACUUM_CLEANUP")
        );
        assert_eq!(record_type_name_for(17, 0, 0xE0), Some("CHECKPOINT_REDO"));
        assert_eq!(
            record_type_name_for(18, 10, 0x00),
            record_type_name(10, 0x00)
        );
    }

    use super::*;
    use crate::tag::{FSM_FORKNUM, INIT_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};

    const REL_A: RelFileNode = RelFileNode {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
    };
    const REL_B: RelFileNode = RelFileNode {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16390,
    };

    #[derive(Clone)]
    struct TImage {
        data: Vec<u8>,
        hole_offset: u16,
        /// Written only when the image has a hole and is compressed.
        hole_length: u16,
        info: u8,
    }

    #[derive(Clone)]
    struct TBlock {
        id: u8,
        fork: u8,
        will_init: bool,
        /// None: BKPBLOCK_SAME_REL.
        rel: Option<RelFileNode>,
        blkno: u32,
        data: Vec<u8>,
        image: Option<TImage>,
    }

    fn blk(id: u8, rel: Option<RelFileNode>, blkno: u32, data: &[u8]) -> TBlock {
        TBlock {
            id,
            fork: MAIN_FORKNUM,
            will_init: false,
            rel,
            blkno,
            data: data.to_vec(),
            image: None,
        }
    }

    /// An uncompressed image of a page with a hole at [off, off+len).
    fn holed_image(off: u16, len: u16, apply: bool) -> TImage {
        TImage {
            data: (0..PAGE_SIZE - len as usize).map(|i| i as u8).collect(),
            hole_offset: off,
            hole_length: 0,
            info: BKPIMAGE_HAS_HOLE | if apply { BKPIMAGE_APPLY } else { 0 },
        }
    }

    #[derive(Clone, Default)]
    struct RecBuilder {
        xid: u32,
        prev: u64,
        info: u8,
        rmid: u8,
        blocks: Vec<TBlock>,
        origin: Option<u16>,
        toplevel: Option<u32>,
        main: Vec<u8>,
        force_long: bool,
    }

    impl RecBuilder {
        fn new() -> Self {
            RecBuilder {
                xid: 742,
                prev: 0x0000_0001_0200_0028,
                info: 0x10,
                rmid: 10,
                ..Default::default()
            }
        }

        /// Header bytes (after the fixed header) and payload bytes.
        fn parts(&self) -> (Vec<u8>, Vec<u8>) {
            let mut h = Vec::new();
            let mut p = Vec::new();
            for b in &self.blocks {
                let mut flags = b.fork;
                if b.image.is_some() {
                    flags |= BKPBLOCK_HAS_IMAGE;
                }
                if !b.data.is_empty() {
                    flags |= BKPBLOCK_HAS_DATA;
                }
                if b.will_init {
                    flags |= BKPBLOCK_WILL_INIT;
                }
                if b.rel.is_none() {
                    flags |= BKPBLOCK_SAME_REL;
                }
                h.push(b.id);
                h.push(flags);
                h.extend_from_slice(&(b.data.len() as u16).to_le_bytes());
                if let Some(img) = &b.image {
                    h.extend_from_slice(&(img.data.len() as u16).to_le_bytes());
                    h.extend_from_slice(&img.hole_offset.to_le_bytes());
                    h.push(img.info);
                    if img.info & BKPIMAGE_HAS_HOLE != 0 && img.info & BKPIMAGE_COMPRESS_MASK != 0 {
                        h.extend_from_slice(&img.hole_length.to_le_bytes());
                    }
                    p.extend_from_slice(&img.data);
                }
                if let Some(rel) = b.rel {
                    h.extend_from_slice(&rel.spcnode.to_le_bytes());
                    h.extend_from_slice(&rel.dbnode.to_le_bytes());
                    h.extend_from_slice(&rel.relnode.to_le_bytes());
                }
                h.extend_from_slice(&b.blkno.to_le_bytes());
                p.extend_from_slice(&b.data);
            }
            if let Some(o) = self.origin {
                h.push(XLR_BLOCK_ID_ORIGIN);
                h.extend_from_slice(&o.to_le_bytes());
            }
            if let Some(x) = self.toplevel {
                h.push(XLR_BLOCK_ID_TOPLEVEL_XID);
                h.extend_from_slice(&x.to_le_bytes());
            }
            if !self.main.is_empty() || self.force_long {
                if self.main.len() < 256 && !self.force_long {
                    h.push(XLR_BLOCK_ID_DATA_SHORT);
                    h.push(self.main.len() as u8);
                } else {
                    h.push(XLR_BLOCK_ID_DATA_LONG);
                    h.extend_from_slice(&(self.main.len() as u32).to_le_bytes());
                }
                p.extend_from_slice(&self.main);
            }
            (h, p)
        }

        fn build(&self) -> Vec<u8> {
            let (h, p) = self.parts();
            assemble(self, &h, &p)
        }
    }

    /// Fixed header + `headers` + `payload`, with tot_len and CRC filled in.
    fn assemble(b: &RecBuilder, headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; SIZE_OF_XLOG_RECORD];
        buf[4..8].copy_from_slice(&b.xid.to_le_bytes());
        buf[8..16].copy_from_slice(&b.prev.to_le_bytes());
        buf[16] = b.info;
        buf[17] = b.rmid;
        buf.extend_from_slice(headers);
        buf.extend_from_slice(payload);
        reseal(&mut buf);
        buf
    }

    /// Set xl_tot_len to the buffer length and recompute the CRC.
    fn reseal(buf: &mut [u8]) {
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = record_crc(buf);
        buf[20..24].copy_from_slice(&crc.to_le_bytes());
    }

    fn resealed(buf: &[u8]) -> Vec<u8> {
        let mut v = buf.to_vec();
        reseal(&mut v);
        v
    }

    fn check_round_trip(b: &RecBuilder) {
        let buf = b.build();
        let rec = decode(&buf).unwrap_or_else(|e| panic!("decode failed: {e}"));
        assert_eq!(rec.tot_len as usize, buf.len());
        assert_eq!(rec.xid, b.xid);
        assert_eq!(rec.prev, b.prev);
        assert_eq!(rec.info, b.info);
        assert_eq!(rec.rmid, b.rmid);
        assert_eq!(rec.origin, b.origin);
        assert_eq!(rec.toplevel_xid, b.toplevel);
        assert_eq!(rec.main_data, &b.main[..]);
        assert_eq!(rec.blocks.len(), b.blocks.len());
        let mut last_rel = None;
        for (got, want) in rec.blocks.iter().zip(&b.blocks) {
            let rel = want.rel.or(last_rel).unwrap();
            last_rel = Some(rel);
            assert_eq!(got.id, want.id);
            assert_eq!(
                got.tag,
                PageTag {
                    rel,
                    forknum: want.fork,
                    blkno: want.blkno
                }
            );
            assert_eq!(got.will_init, want.will_init);
            assert_eq!(got.has_data, !want.data.is_empty());
            assert_eq!(got.data, &want.data[..]);
            match (&got.image, &want.image) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    assert_eq!(g.data, &w.data[..]);
                    assert_eq!(g.hole_offset, w.hole_offset);
                    assert_eq!(g.bimg_info, w.info);
                    let want_hole = if w.info & BKPIMAGE_HAS_HOLE == 0 {
                        0
                    } else if w.info & BKPIMAGE_COMPRESS_MASK != 0 {
                        w.hole_length
                    } else {
                        (PAGE_SIZE - w.data.len()) as u16
                    };
                    assert_eq!(g.hole_length, want_hole);
                }
                _ => panic!("image presence differs for block {}", want.id),
            }
        }
        assert_eq!(decode_unchecked_crc(&buf), Ok(rec));
    }

    /// A record with several blocks, images, same-rel, origin and main data.
    fn rich() -> RecBuilder {
        let mut b = RecBuilder::new();
        let mut b0 = blk(0, Some(REL_A), 7, b"tuple data");
        b0.image = Some(holed_image(200, 3000, true));
        let mut b1 = blk(1, None, 8, b"");
        b1.will_init = true;
        let mut b3 = blk(3, Some(REL_B), 0, &[9; 300]);
        b3.fork = VISIBILITYMAP_FORKNUM;
        b3.image = Some(TImage {
            data: vec![0x5A; 1234],
            hole_offset: 100,
            hole_length: 4000,
            info: BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_LZ4,
        });
        b.blocks = vec![b0, b1, b3];
        b.origin = Some(3);
        b.toplevel = Some(700);
        b.main = b"main data".to_vec();
        b
    }

    #[test]
    fn round_trips() {
        // Empty record: header only.
        check_round_trip(&RecBuilder::new());
        // Main data only, short and long forms.
        let mut b = RecBuilder::new();
        b.main = vec![1, 2, 3];
        check_round_trip(&b);
        b.force_long = true;
        check_round_trip(&b);
        b.main = (0..1000).map(|i| i as u8).collect();
        b.force_long = false;
        check_round_trip(&b);
        // Zero-length main data in the long form.
        b.main.clear();
        b.force_long = true;
        check_round_trip(&b);
        // One block with data and no main data.
        let mut b = RecBuilder::new();
        b.blocks = vec![blk(0, Some(REL_A), 1, b"abc")];
        check_round_trip(&b);
        // A full page image without hole, every fork, block id 32.
        let mut b = RecBuilder::new();
        let mut b0 = blk(5, Some(REL_A), 1, b"");
        b0.fork = FSM_FORKNUM;
        b0.image = Some(TImage {
            data: vec![7; PAGE_SIZE],
            hole_offset: 0,
            hole_length: 0,
            info: BKPIMAGE_APPLY,
        });
        let mut b1 = blk(32, None, 2, b"x");
        b1.fork = INIT_FORKNUM;
        b.blocks = vec![b0, b1];
        b.toplevel = Some(1);
        check_round_trip(&b);
        // Compressed images without a hole, each method.
        for (m, c) in [
            (BKPIMAGE_COMPRESS_PGLZ, Compression::Pglz),
            (BKPIMAGE_COMPRESS_LZ4, Compression::Lz4),
            (BKPIMAGE_COMPRESS_ZSTD, Compression::Zstd),
        ] {
            let mut b = RecBuilder::new();
            let mut b0 = blk(0, Some(REL_B), 9, b"");
            b0.image = Some(TImage {
                data: vec![3; 100],
                hole_offset: 0,
                hole_length: 0,
                info: m | BKPIMAGE_APPLY,
            });
            b.blocks = vec![b0];
            check_round_trip(&b);
            let buf = b.build();
            let rec = decode(&buf).unwrap();
            let img = rec.blocks[0].image.unwrap();
            assert!(img.is_compressed());
            assert_eq!(img.compression(), c);
        }
        check_round_trip(&rich());
    }

    #[test]
    fn accessors() {
        let mut b = rich();
        b.info = 0x30 | XLR_CHECK_CONSISTENCY;
        let buf = b.build();
        let rec = decode(&buf).unwrap();
        assert!(rec.check_consistency());
        assert!(!rec.special_rel_update());
        assert_eq!(rec.rmgr_info(), 0x30);
        assert_eq!(rec.rmgr_name(), "Heap");
        let t0 = PageTag {
            rel: REL_A,
            forknum: MAIN_FORKNUM,
            blkno: 7,
        };
        let t1 = PageTag { blkno: 8, ..t0 };
        let t3 = PageTag {
            rel: REL_B,
            forknum: VISIBILITYMAP_FORKNUM,
            blkno: 0,
        };
        assert_eq!(rec.block_for(&t0).unwrap().id, 0);
        assert_eq!(rec.block_for(&t1).unwrap().id, 1);
        assert_eq!(rec.block_for(&t3).unwrap().id, 3);
        assert!(rec.block_for(&PageTag { blkno: 99, ..t0 }).is_none());
        assert!(rec.initializes(&t0)); // image with APPLY
        assert!(rec.initializes(&t1)); // WILL_INIT
        assert!(!rec.initializes(&t3)); // image without APPLY
        assert!(!rec.initializes(&PageTag { blkno: 99, ..t0 }));
        let img = rec.blocks[0].image.unwrap();
        assert!(img.apply() && img.has_hole() && !img.is_compressed());
        assert_eq!(img.compression(), Compression::None);
        assert_eq!((img.hole_offset, img.hole_length), (200, 3000));

        assert_eq!(rmgr_name(0), "XLOG");
        assert_eq!(rmgr_name(9), "Heap2");
        assert_eq!(rmgr_name(21), "LogicalMessage");
        assert_eq!(rmgr_name(22), "unknown");
        assert_eq!(rmgr_name(127), "unknown");
        assert_eq!(rmgr_name(128), "custom");
        assert_eq!(rmgr_name(255), "custom");
    }

    #[test]
    fn header_level_errors() {
        for len in 0..SIZE_OF_XLOG_RECORD {
            assert_eq!(decode(&vec![0; len]), Err(RecordError::TooShort { len }));
        }
        let buf = rich().build();
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer),
            Err(RecordError::LengthMismatch {
                tot_len: buf.len() as u32,
                buf_len: buf.len() + 1
            })
        );
        let mut small = buf.clone();
        small[0..4].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(
            decode(&small),
            Err(RecordError::LengthMismatch { tot_len: 10, .. })
        ));
        // Corrupt a payload byte, then a header byte covered by the CRC.
        for pos in [buf.len() - 1, 30, 16, 4] {
            let mut bad = buf.clone();
            bad[pos] ^= 0x40;
            let err = decode(&bad).unwrap_err();
            match err {
                RecordError::BadCrc { expected, computed } => {
                    assert_eq!(
                        expected,
                        u32::from_le_bytes(buf[20..24].try_into().unwrap())
                    );
                    assert_ne!(expected, computed);
                    assert!(err
                        .to_string()
                        .starts_with("record CRC mismatch: header says 0x"));
                }
                e => panic!("expected BadCrc, got {e:?}"),
            }
        }
        // The padding bytes 18..20 are covered by the CRC too.
        let mut pad = buf.clone();
        pad[18] = 1;
        assert!(matches!(decode(&pad), Err(RecordError::BadCrc { .. })));
        let mut crc = buf.clone();
        crc[21] ^= 1;
        assert!(matches!(decode(&crc), Err(RecordError::BadCrc { .. })));
        assert!(decode_unchecked_crc(&crc).is_ok());
    }

    /// One block with an uncompressed holed image, no SAME_REL, 4 data bytes.
    /// Header offsets: block_id 24, fork_flags 25, data_length 26..28,
    /// image header 28..33, RelFileNode 33..45, blkno 45..49.
    fn one_block_with_image() -> Vec<u8> {
        let mut b = RecBuilder::new();
        let mut b0 = blk(0, Some(REL_A), 7, b"data");
        b0.image = Some(holed_image(100, 8000, true));
        b.blocks = vec![b0];
        b.build()
    }

    #[test]
    fn truncated_headers() {
        let buf = one_block_with_image();
        assert!(decode(&buf).is_ok());
        assert_eq!(buf[24], 0);
        for (cut, what, offset) in [
            (25, "block header", 25),
            (26, "block header", 26),
            (27, "block header", 26),
            (28, "block image header", 28),
            (31, "block image header", 30),
            (33, "RelFileNode", 33),
            (40, "RelFileNode", 37),
            (45, "block number", 45),
            (47, "block number", 45),
        ] {
            let r = resealed(&buf[..cut]);
            let err = decode(&r).unwrap_err();
            assert_eq!(
                err,
                RecordError::TruncatedHeader {
                    block: Some(0),
                    what,
                    offset
                },
                "cut at {cut}"
            );
            assert_eq!(
                err.to_string(),
                format!("block 0: truncated {what} at offset {offset}")
            );
        }
        // Truncated special headers.
        let mut b = RecBuilder::new();
        b.main = vec![1; 10];
        b.force_long = true;
        b.origin = Some(1);
        b.toplevel = Some(2);
        let buf = b.build();
        // origin 24..27, toplevel 27..32, main data header 32..37.
        for (cut, what) in [
            (26, "replication origin"),
            (30, "toplevel xid"),
            (35, "main data length"),
        ] {
            let r = resealed(&buf[..cut]);
            assert!(
                matches!(
                    decode(&r),
                    Err(RecordError::TruncatedHeader { block: None, what: w, .. }) if w == what
                ),
                "cut at {cut}: {:?}",
                decode(&r)
            );
        }
        // Short main data header cut after its id.
        let r = assemble(&RecBuilder::new(), &[XLR_BLOCK_ID_DATA_SHORT], &[]);
        assert_eq!(
            decode(&r),
            Err(RecordError::TruncatedHeader {
                block: None,
                what: "main data length",
                offset: 25
            })
        );
    }

    #[test]
    fn block_id_errors() {
        let mut b = RecBuilder::new();
        b.blocks = vec![blk(2, Some(REL_A), 1, b"a"), blk(2, None, 2, b"b")];
        let err = decode(&b.build()).unwrap_err();
        assert_eq!(
            err,
            RecordError::OutOfOrderBlockId {
                block_id: 2,
                previous: 2
            }
        );
        assert!(err.to_string().contains("out-of-order block_id 2"));
        b.blocks = vec![blk(5, Some(REL_A), 1, b"a"), blk(1, None, 2, b"b")];
        assert!(matches!(
            decode(&b.build()),
            Err(RecordError::OutOfOrderBlockId {
                block_id: 1,
                previous: 5
            })
        ));
        for id in [33u8, 40, 100, 251] {
            b.blocks = vec![blk(id, Some(REL_A), 1, b"a")];
            let err = decode(&b.build()).unwrap_err();
            assert_eq!(
                err,
                RecordError::InvalidBlockId {
                    block_id: id,
                    offset: 24
                }
            );
            assert_eq!(
                err.to_string(),
                format!("invalid block_id {id} at offset 24")
            );
        }
        // SAME_REL on the first block.
        b.blocks = vec![blk(0, None, 1, b"a")];
        let err = decode(&b.build()).unwrap_err();
        assert_eq!(err, RecordError::SameRelWithoutPrevious { block: 0 });
        assert_eq!(
            err.to_string(),
            "block 0: BKPBLOCK_SAME_REL set but no previous rel"
        );
    }

    #[test]
    fn fork_and_data_flag_errors() {
        let mut b = RecBuilder::new();
        let mut b0 = blk(0, Some(REL_A), 1, b"a");
        b0.fork = 7;
        b.blocks = vec![b0];
        let err = decode(&b.build()).unwrap_err();
        assert_eq!(
            err,
            RecordError::InvalidFork {
                block: 0,
                forknum: 7
            }
        );
        assert!(err.to_string().contains("invalid fork number 7"));

        // InvalidBlockNumber in any block reference, not only the first.
        let mut b = RecBuilder::new();
        b.blocks = vec![blk(0, Some(REL_A), 1, b"a"), blk(1, None, u32::MAX, b"b")];
        let err = decode(&b.build()).unwrap_err();
        assert_eq!(
            err,
            RecordError::InvalidBlockNumber {
                block: 1,
                blkno: u32::MAX
            }
        );
        assert_eq!(
            err.to_string(),
            "block 1: invalid block number 4294967295 (no relation reaches 4294967294)"
        );
        b.blocks[1].blkno = u32::MAX - 1;
        assert_eq!(
            decode(&b.build()).unwrap_err(),
            RecordError::InvalidBlockNumber {
                block: 1,
                blkno: u32::MAX - 1
            }
        );
        // The block below is fine.
        b.blocks[1].blkno = u32::MAX - 2;
        assert!(decode(&b.build()).is_ok());

        // HAS_DATA with data_length 0: [id, flags, len(2), rel(12), blkno(4)].
        let mut h = vec![1u8, BKPBLOCK_HAS_DATA, 0, 0];
        h.extend_from_slice(&[0; 16]);
        let err = decode(&assemble(&b, &h, &[])).unwrap_err();
        assert_eq!(err, RecordError::HasDataWithoutData { block: 1 });
        assert_eq!(
            err.to_string(),
            "block 1: BKPBLOCK_HAS_DATA set, but no data included"
        );
        // data_length 5 without HAS_DATA.
        let mut h = vec![1u8, 0, 5, 0];
        h.extend_from_slice(&[0; 16]);
        let err = decode(&assemble(&b, &h, &[0; 5])).unwrap_err();
        assert_eq!(
            err,
            RecordError::DataWithoutHasData {
                block: 1,
                data_len: 5
            }
        );
        assert!(err.to_string().contains("data length is 5"));
    }

    fn image_error(img: TImage) -> RecordError {
        let mut b = RecBuilder::new();
        let mut b0 = blk(4, Some(REL_A), 1, b"");
        b0.image = Some(img);
        b.blocks = vec![b0];
        decode(&b.build()).unwrap_err()
    }

    #[test]
    fn image_errors() {
        // No hole, uncompressed, but not a full page.
        let err = image_error(TImage {
            data: vec![0; 8000],
            hole_offset: 0,
            hole_length: 0,
            info: BKPIMAGE_APPLY,
        });
        assert!(
            matches!(
                err,
                RecordError::BadImage {
                    block: 4,
                    bimg_len: 8000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("block 4: neither BKPIMAGE_HAS_HOLE"));
        assert!(err.to_string().contains("block image length 8000"));
        // Hole at offset 0.
        let err = image_error(holed_image(0, 100, true));
        assert!(matches!(
            err,
            RecordError::BadImage {
                block: 4,
                hole_offset: 0,
                hole_length: 100,
                ..
            }
        ));
        assert!(err.to_string().contains("BKPIMAGE_HAS_HOLE set"));
        // HAS_HOLE with a full-page image (hole length 0).
        let mut img = holed_image(10, 0, false);
        assert_eq!(img.data.len(), PAGE_SIZE);
        assert!(matches!(
            image_error(img.clone()),
            RecordError::BadImage { .. }
        ));
        // HAS_HOLE, uncompressed, image longer than a page.
        img.data = vec![0; PAGE_SIZE + 10];
        assert!(matches!(
            image_error(img),
            RecordError::BadImage {
                hole_length: -10,
                ..
            }
        ));
        // No hole flag but a hole offset.
        let err = image_error(TImage {
            data: vec![0; PAGE_SIZE],
            hole_offset: 5,
            hole_length: 0,
            info: 0,
        });
        assert!(
            err.to_string().contains("BKPIMAGE_HAS_HOLE not set"),
            "{err}"
        );
        // Hole running past the page end.
        let err = image_error(holed_image(5000, 4000, true));
        assert!(
            err.to_string().contains("past the end of the page"),
            "{err}"
        );
        let err = image_error(TImage {
            data: vec![0; 10],
            hole_offset: 8000,
            hole_length: 500,
            info: BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_PGLZ,
        });
        assert!(
            err.to_string().contains("past the end of the page"),
            "{err}"
        );
        // Compressed with hole but hole length 0.
        let err = image_error(TImage {
            data: vec![0; 10],
            hole_offset: 8,
            hole_length: 0,
            info: BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_ZSTD,
        });
        assert!(err.to_string().contains("BKPIMAGE_HAS_HOLE set"), "{err}");
        // Compressed but a whole page long.
        let err = image_error(TImage {
            data: vec![0; PAGE_SIZE],
            hole_offset: 0,
            hole_length: 0,
            info: BKPIMAGE_COMPRESS_LZ4,
        });
        assert!(err.to_string().contains("BKPIMAGE_COMPRESSED set"), "{err}");
        // Two compression methods.
        let err = image_error(TImage {
            data: vec![0; 10],
            hole_offset: 0,
            hole_length: 0,
            info: BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_PGLZ,
        });
        assert!(
            err.to_string().contains("more than one compression"),
            "{err}"
        );
    }

    #[test]
    fn payload_length_errors() {
        let b = rich();
        let (h, p) = b.parts();
        // Payload one byte short / one byte long, with a block-only record.
        let mut b2 = RecBuilder::new();
        b2.blocks = vec![blk(0, Some(REL_A), 1, b"abcdef")];
        let (h2, p2) = b2.parts();
        let err = decode(&assemble(&b2, &h2, &p2[..5])).unwrap_err();
        assert_eq!(
            err,
            RecordError::TruncatedPayload {
                declared: 6,
                available: 5
            }
        );
        assert!(err.to_string().starts_with("record truncated"));
        // Extra bytes after a block-only record are read as another header.
        let mut long2 = p2.clone();
        long2.push(0);
        assert!(decode(&assemble(&b2, &h2, &long2)).is_err());
        // With main data last: truncated and trailing.
        let err = decode(&assemble(&b, &h, &p[..p.len() - 1])).unwrap_err();
        assert_eq!(
            err,
            RecordError::TruncatedPayload {
                declared: p.len() as u64,
                available: p.len() - 1
            }
        );
        let mut longer = p.clone();
        longer.extend_from_slice(b"xyz");
        let err = decode(&assemble(&b, &h, &longer)).unwrap_err();
        assert_eq!(
            err,
            RecordError::TrailingBytes {
                declared: p.len() as u64,
                available: p.len() + 3
            }
        );
        assert!(err.to_string().contains("trailing bytes"));
        // Huge long main data length.
        let h3 = [XLR_BLOCK_ID_DATA_LONG, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            decode(&assemble(&b, &h3, b"abc")),
            Err(RecordError::TruncatedPayload {
                declared: 0xFFFF_FFFF,
                available: 3
            })
        ));
        // Image length that the payload cannot hold.
        let err = decode(&assemble(&b, &h, &p[..100])).unwrap_err();
        assert!(
            matches!(err, RecordError::TruncatedPayload { .. }),
            "{err:?}"
        );
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn page_records() {
        // Heap insert, Heap2 prune, Btree, Hash, Gin, Gist, Sequence,
        // SPGist, BRIN, Generic.
        for rmid in [10, 11, 12, 13, 14, 15, 16, 17, 20] {
            assert!(is_page_record(rmid, 0x00), "{}", rmgr_name(rmid));
        }
        assert!(is_page_record(9, 0x10)); // Heap2 PRUNE
        assert!(!is_page_record(9, 0x00)); // Heap2 REWRITE
        assert!(!is_page_record(9, 0x80)); // REWRITE with the INIT bit
        assert!(is_page_record(0, 0xB0)); // XLOG FPI
        assert!(is_page_record(0, 0xA0 | XLR_CHECK_CONSISTENCY)); // FPI_FOR_HINT
        assert!(!is_page_record(0, 0x00)); // CHECKPOINT_SHUTDOWN
        assert!(!is_page_record(0, 0xD0)); // XLOG_OVERWRITE_CONTRECORD
                                           // Transaction, Storage, CLOG, Database, Tablespace, MultiXact,
                                           // RelMap, Standby, CommitTs, ReplicationOrigin, LogicalMessage,
                                           // custom.
        for rmid in [1, 2, 3, 4, 5, 6, 7, 8, 18, 19, 21, 128, 255] {
            assert!(!is_page_record(rmid, 0x00), "{}", rmgr_name(rmid));
        }
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let samples = [rich().build(), one_block_with_image(), {
            let mut b = RecBuilder::new();
            b.main = vec![1; 300];
            b.origin = Some(9);
            b.build()
        }];
        for buf in &samples {
            for cut in 0..=buf.len() {
                let _ = decode(&buf[..cut]);
                let _ = decode_unchecked_crc(&buf[..cut]);
                if cut >= SIZE_OF_XLOG_RECORD {
                    let r = resealed(&buf[..cut]);
                    let res = decode(&r);
                    if cut == buf.len() {
                        assert!(res.is_ok());
                    }
                }
            }
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            // Corrupt one header-area byte (where structure lives) or any byte.
            let hdr_end = buf.len().min(80);
            for i in 0..4000 {
                let mut m = buf.clone();
                let pos = if i % 2 == 0 {
                    SIZE_OF_XLOG_RECORD + (rng.next() as usize) % (hdr_end - SIZE_OF_XLOG_RECORD)
                } else {
                    (rng.next() as usize) % m.len()
                };
                let v = rng.next() as u8;
                m[pos] = v;
                let _ = decode(&m);
                let _ = decode_unchecked_crc(&m);
                if pos >= 4 {
                    reseal(&mut m);
                    let _ = decode(&m);
                }
            }
            // Every byte position with every value in the header area, resealed.
            for pos in SIZE_OF_XLOG_RECORD..hdr_end {
                for v in 0..=255u8 {
                    let mut m = buf.clone();
                    m[pos] = v;
                    reseal(&mut m);
                    let _ = decode(&m);
                }
            }
        }
        // Random garbage behind a valid header.
        let mut rng = Rng(12345);
        for _ in 0..20000 {
            let len = SIZE_OF_XLOG_RECORD + (rng.next() as usize % 64);
            let mut m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            reseal(&mut m);
            let _ = decode(&m);
        }
    }
}
