//! A WAL record's format: the fixed `XLogRecord` header and its fields, the
//! block-reference and image flags, the record CRC, and [`RecordRef`], a
//! record as the library passes it around. Decoding is `wal::record`'s job.

use crate::pg::bytes::{le_u32, le_u64};
use crate::pg::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};

/// One record to apply: its raw XLogRecord bytes and the LSN of its end.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub end_lsn: u64,
    pub data: &'a [u8],
}

/// Size of the fixed `XLogRecord` header.
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// Offset of `xl_crc` within the header; the CRC covers the header up to here.
pub const XL_CRC_OFFSET: usize = 20;

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

/// `bimg_info` bits (from PostgreSQL 15; 14's are below).
pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
pub const BKPIMAGE_APPLY: u8 = 0x02;
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;
pub const BKPIMAGE_COMPRESS_MASK: u8 =
    BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;

/// PostgreSQL 14's `bimg_info` bits other than `BKPIMAGE_HAS_HOLE`: one
/// compression method (pglz), and apply where 15 has it at 0x02.
pub const BKPIMAGE_IS_COMPRESSED_14: u8 = 0x02;
pub const BKPIMAGE_APPLY_14: u8 = 0x04;

/// The record format a PostgreSQL version writes. Record and block headers
/// are the same from 14 to 18; 14's full-page image flags differ, and so do
/// its Database record types (`XLOG_DBASE_DROP_14`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordFormat {
    /// PostgreSQL 14: `BKPIMAGE_IS_COMPRESSED` (always pglz) 0x02,
    /// `BKPIMAGE_APPLY` 0x04.
    Pg14,
    /// PostgreSQL 15 to 18: `BKPIMAGE_APPLY` 0x02, pglz, lz4 and zstd
    /// 0x04, 0x08 and 0x10.
    #[default]
    Pg15,
}

impl RecordFormat {
    /// The format of PostgreSQL `pg_version`'s WAL (15's for any version
    /// but 14).
    pub fn of_version(pg_version: u32) -> RecordFormat {
        if pg_version == 14 {
            RecordFormat::Pg14
        } else {
            RecordFormat::Pg15
        }
    }

    /// A record's `bimg_info` in 15's layout, which the decoded images
    /// carry whatever version wrote them. 14's other bits mean nothing to
    /// 14 and are dropped.
    pub fn image_flags(self, bimg_info: u8) -> u8 {
        match self {
            RecordFormat::Pg15 => bimg_info,
            RecordFormat::Pg14 => {
                let mut flags = bimg_info & BKPIMAGE_HAS_HOLE;
                if bimg_info & BKPIMAGE_IS_COMPRESSED_14 != 0 {
                    flags |= BKPIMAGE_COMPRESS_PGLZ;
                }
                if bimg_info & BKPIMAGE_APPLY_14 != 0 {
                    flags |= BKPIMAGE_APPLY;
                }
                flags
            }
        }
    }
}

/// `xl_tot_len` of the record header at the start of `b`.
pub fn xl_tot_len(b: &[u8]) -> u32 {
    le_u32(b, 0)
}

/// `xl_xid`.
pub fn xl_xid(b: &[u8]) -> u32 {
    le_u32(b, 4)
}

/// `xl_prev`: the start of the previous record.
pub fn xl_prev(b: &[u8]) -> u64 {
    le_u64(b, 8)
}

/// `xl_info`.
pub fn xl_info(b: &[u8]) -> u8 {
    b[16]
}

/// `xl_rmid`.
pub fn xl_rmid(b: &[u8]) -> u8 {
    b[17]
}

/// `xl_crc` as stored.
pub fn xl_crc(b: &[u8]) -> u32 {
    le_u32(b, XL_CRC_OFFSET)
}

/// The CRC PostgreSQL computes for a record: payload after the header, then
/// the header up to `xl_crc`. `buf` should hold at least the header (a
/// shorter one gets the CRC of what it has).
pub fn record_crc(buf: &[u8]) -> u32 {
    let body = buf.get(SIZE_OF_XLOG_RECORD..).unwrap_or(&[]);
    let head = buf.get(..XL_CRC_OFFSET).unwrap_or(&[]);
    crc32c_finish(crc32c_update(crc32c_update(CRC32C_INIT, body), head))
}

/// Store [`record_crc`] in the record's `xl_crc` (for building records);
/// `buf` must hold the whole header.
pub fn set_record_crc(buf: &mut [u8]) {
    let crc = record_crc(buf);
    buf[XL_CRC_OFFSET..SIZE_OF_XLOG_RECORD].copy_from_slice(&crc.to_le_bytes());
}
