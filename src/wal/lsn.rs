//! LSNs as PostgreSQL writes them (`%X/%X`), and where the record after
//! one ends starts.

use crate::pg::xlog::{SIZE_OF_XLOG_LONG_PHD, SIZE_OF_XLOG_SHORT_PHD, XLOG_BLCKSZ};

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

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1024 * 1024; // 1 MiB test segments

    #[test]
    fn next_record_starts_after_a_page_header() {
        assert_eq!(next_record_start(0x1000_0028, SEG), 0x1000_0028);
        assert_eq!(next_record_start(0x1000_2000, SEG), 0x1000_2018);
        assert_eq!(next_record_start(0x1010_0000, SEG), 0x1010_0028);
    }
}
