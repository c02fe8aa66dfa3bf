//! [`RecordError`]: why a record was rejected, in words that say where.

use std::fmt;

use crate::pg::record::SIZE_OF_XLOG_RECORD;
use crate::tag::MAX_FORKNUM;
use crate::wal::record::MAX_BLOCK_NUMBER;

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
        header: ImageHeader,
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
    /// A RelMap UPDATE whose map is not one PostgreSQL would read back
    /// (`relmapper.c: read_relmap_file`: size, magic, count, CRC).
    BadRelMap { reason: &'static str },
    /// A record given to rebuild an SLRU page does not change that page.
    NotForSlruPage,
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
                header: h,
            } => write!(
                f,
                "block {block}: {reason} (block image length {}, hole offset {}, hole length {}, \
                 bimg_info {:#04x})",
                h.bimg_len, h.hole_offset, h.hole_length, h.bimg_info
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
            BadRelMap { reason } => write!(f, "RelMap UPDATE record: {reason}"),
            NotForSlruPage => write!(
                f,
                "the record does not change this SLRU page: it was routed to the wrong page"
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

/// An `XLogRecordBlockImageHeader` as read (with the hole length, from the
/// compression header or computed), for [`RecordError::BadImage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub bimg_len: u16,
    pub hole_offset: u16,
    /// Signed: an uncompressed image longer than a page gives a negative hole.
    pub hole_length: i64,
    pub bimg_info: u8,
}
