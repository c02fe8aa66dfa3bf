//! A PostgreSQL page (a block of a relation fork) and the fields of its
//! header (`PageHeaderData`, storage/bufpage.h) that this library reads or
//! stamps.

use crate::pg::bytes::{le_u16, le_u32};

/// Size of a PostgreSQL page (BLCKSZ); the only size this library supports.
pub const PAGE_SIZE: usize = 8192;

/// A page, as redo returns it.
pub type Page = [u8; PAGE_SIZE];

/// Offset of `pd_checksum` in the page header.
pub const PD_CHECKSUM: usize = 8;

/// Offsets of `pd_flags`, `pd_lower`, `pd_upper`, `pd_special` and
/// `pd_prune_xid` in the page header.
pub const PD_FLAGS: usize = 10;
pub const PD_LOWER: usize = 12;
pub const PD_UPPER: usize = 14;
pub const PD_SPECIAL: usize = 16;
pub const PD_PRUNE_XID: usize = 20;

/// `SizeOfPageHeaderData`: the header's size, where line pointers begin.
pub const SIZE_OF_PAGE_HEADER: usize = 24;

/// `pd_flags` bits (`PD_HAS_FREE_LINES`, `PD_PAGE_FULL`, `PD_ALL_VISIBLE`).
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
pub const PD_PAGE_FULL: u16 = 0x0002;
pub const PD_ALL_VISIBLE: u16 = 0x0004;

/// `pd_checksum` as stored.
pub fn pd_checksum(page: &[u8]) -> u16 {
    le_u16(page, PD_CHECKSUM)
}

/// `pd_flags`: the page's flag bits.
pub fn pd_flags(page: &[u8]) -> u16 {
    le_u16(page, PD_FLAGS)
}

/// `pd_lower`: where the page's free space begins (the end of its line
/// pointers).
pub fn pd_lower(page: &[u8]) -> u16 {
    le_u16(page, PD_LOWER)
}

/// `pd_upper`: where the page's tuple space begins (0 on a new page).
pub fn pd_upper(page: &[u8]) -> u16 {
    le_u16(page, PD_UPPER)
}

/// `pd_special`: where the page's special space begins (the page size when
/// it has none).
pub fn pd_special(page: &[u8]) -> u16 {
    le_u16(page, PD_SPECIAL)
}

/// `PageIsNew`: the page was never initialized (its header is zeros).
pub fn page_is_new(page: &[u8]) -> bool {
    pd_upper(page) == 0
}

/// `pd_lsn`: the end of the last record that changed the page.
pub fn pd_lsn(page: &[u8]) -> u64 {
    (u64::from(le_u32(page, 0)) << 32) | u64::from(le_u32(page, 4))
}

/// Store `lsn` in `pd_lsn` (two 32-bit halves, high first).
pub fn set_pd_lsn(page: &mut [u8], lsn: u64) {
    page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
}
