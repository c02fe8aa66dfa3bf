//! A PostgreSQL page (a block of a relation fork) and the fields of its
//! header (`PageHeaderData`, storage/bufpage.h) that this library reads or
//! stamps.

use crate::pg::bytes::le_u16;

/// Size of a PostgreSQL page (BLCKSZ); the only size this library supports.
pub const PAGE_SIZE: usize = 8192;

/// A page, as redo returns it.
pub type Page = [u8; PAGE_SIZE];

/// Offset of `pd_checksum` in the page header.
pub const PD_CHECKSUM: usize = 8;

/// `pd_checksum` as stored.
pub fn pd_checksum(page: &[u8]) -> u16 {
    le_u16(page, PD_CHECKSUM)
}

/// `pd_upper`: where the page's tuple space begins (0 on a new page).
pub fn pd_upper(page: &[u8]) -> u16 {
    le_u16(page, 14)
}

/// `PageIsNew`: the page was never initialized (its header is zeros).
pub fn page_is_new(page: &[u8]) -> bool {
    pd_upper(page) == 0
}

/// Store `lsn` in `pd_lsn` (two 32-bit halves, high first).
pub fn set_pd_lsn(page: &mut [u8], lsn: u64) {
    page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
}
