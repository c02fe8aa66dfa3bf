//! Decoding raw PostgreSQL WAL records (`XLogRecord`, little-endian): one
//! format from 14 to 18 but for 14's image flags ([`RecordFormat`]).
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

use crate::pg::record::*;
use crate::pg::rmgr::rmgr_name;
use crate::tag::{PageTag, RelFileNode, MAX_FORKNUM};
use crate::PAGE_SIZE;

mod error;

pub use error::{ImageHeader, RecordError};

const BLCKSZ: u32 = PAGE_SIZE as u32;

/// PostgreSQL's `InvalidBlockNumber`, never the number of a real block.
pub const INVALID_BLOCK_NUMBER: u32 = u32::MAX;
/// PostgreSQL's `MaxBlockNumber`: a relation that had it would have
/// `InvalidBlockNumber` blocks, so redo requests refuse it too.
pub const MAX_BLOCK_NUMBER: u32 = u32::MAX - 1;

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
    /// The `BKPIMAGE_*` flags, in 15's layout whatever version wrote the
    /// record ([`RecordFormat::image_flags`]).
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
    /// The format it was decoded as (the version that wrote it).
    pub format: RecordFormat,
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

/// Decode `buf`, which must hold exactly one record of PostgreSQL 15 to
/// 18, verifying its CRC.
pub fn decode(buf: &[u8]) -> Result<DecodedRecord<'_>, RecordError> {
    decode_inner(buf, true, RecordFormat::Pg15)
}

/// Like [`decode`], for a record in `format` (see [`RecordFormat`]: 14's
/// image flags are read into 15's layout).
pub fn decode_as(buf: &[u8], format: RecordFormat) -> Result<DecodedRecord<'_>, RecordError> {
    decode_inner(buf, true, format)
}

/// [`decode_as`] into `blocks`' allocation (cleared first): a caller that
/// decodes several records in turn keeps one list for all of them (the
/// request path: one allocation per request instead of one per record).
pub(crate) fn decode_as_reusing<'a>(
    buf: &'a [u8],
    format: RecordFormat,
    blocks: Vec<BlockRef<'a>>,
) -> Result<DecodedRecord<'a>, RecordError> {
    decode_into(buf, true, format, blocks)
}

/// Like [`decode`], without verifying the CRC.
pub fn decode_unchecked_crc(buf: &[u8]) -> Result<DecodedRecord<'_>, RecordError> {
    decode_inner(buf, false, RecordFormat::Pg15)
}

/// Like [`decode_as`], without verifying the CRC.
pub fn decode_unchecked_crc_as(
    buf: &[u8],
    format: RecordFormat,
) -> Result<DecodedRecord<'_>, RecordError> {
    decode_inner(buf, false, format)
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

fn decode_inner(
    buf: &[u8],
    check_crc: bool,
    format: RecordFormat,
) -> Result<DecodedRecord<'_>, RecordError> {
    decode_into(buf, check_crc, format, Vec::new())
}

fn decode_into<'a>(
    buf: &'a [u8],
    check_crc: bool,
    format: RecordFormat,
    mut blocks: Vec<BlockRef<'a>>,
) -> Result<DecodedRecord<'a>, RecordError> {
    blocks.clear();
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
    // The blocks are made as their headers are read, their payloads located
    // afterwards (they follow every header): the lengths wait on the stack
    // (block ids increase, so at most XLR_MAX_BLOCK_ID + 1 of them).
    let mut lengths = [(0u16, 0u16); XLR_MAX_BLOCK_ID as usize + 1];
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
                if let Some(prev_hdr) = blocks.last() {
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
                    let img = read_image_header(&mut r, block_id, format)?;
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
                lengths[blocks.len()] = (data_len, image.map_or(0, |i| i.0));
                blocks.push(BlockRef {
                    id: block_id,
                    tag: PageTag {
                        rel,
                        forknum,
                        blkno,
                    },
                    will_init: fork_flags & BKPBLOCK_WILL_INIT != 0,
                    has_data,
                    data: &[],
                    image: image.map(|(_, hole_offset, hole_length, bimg_info)| BlockImage {
                        data: &[],
                        hole_offset,
                        hole_length,
                        bimg_info,
                    }),
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
    for (block, &(data_len, bimg_len)) in blocks.iter_mut().zip(&lengths) {
        if let Some(image) = &mut block.image {
            image.data = r.slice(bimg_len.into()).ok_or_else(truncated)?;
        }
        block.data = r.slice(data_len.into()).ok_or_else(truncated)?;
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
        format,
    })
}

/// Read and validate an `XLogRecordBlockImageHeader` (plus the compressed
/// hole length, if any). Returns (bimg_len, hole_offset, hole_length, bimg_info).
/// The `bimg_info` returned is in 15's layout ([`RecordFormat::image_flags`]).
fn read_image_header(
    r: &mut Reader<'_>,
    block: u8,
    format: RecordFormat,
) -> Result<(u16, u16, u16, u8), RecordError> {
    let b = Some(block);
    let bimg_len = r.u16(b, "block image header")?;
    let hole_offset = r.u16(b, "block image header")?;
    let bimg_info = format.image_flags(r.u8(b, "block image header")?);
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
    let header = ImageHeader {
        bimg_len,
        hole_offset,
        hole_length,
        bimg_info,
    };
    let bad = |reason: &'static str| RecordError::BadImage {
        block,
        reason,
        header,
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
mod tests;
