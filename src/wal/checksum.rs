//! PostgreSQL's data page checksum (`pd_checksum`), for clusters initialized
//! with data checksums. Redo hands pages back without one; PostgreSQL
//! computes it when it writes a page out. Stamping it makes a reconstructed
//! page byte-identical to the page on disk.
//!
//! The algorithm (storage/checksum_impl.h): 32 parallel FNV-1a-like sums over
//! the page as 32-bit words with `pd_checksum` zeroed, two rounds of zeros,
//! the sums XORed together, XORed with the block number, reduced to 1..=65535.

use crate::pg::page::{
    page_is_new, pd_checksum, pd_flags, pd_lower, pd_special, pd_upper, PD_CHECKSUM,
};
use crate::PAGE_SIZE;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

fn mix(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// The checksum PostgreSQL would store in `page`, block `blkno` of its fork.
pub fn page_checksum(page: &[u8; PAGE_SIZE], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    for (row_index, row) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (j, word) in row.chunks_exact(4).enumerate() {
            let mut w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            // pd_checksum (bytes 8..10) counts as zero.
            if row_index == 0 && j == PD_CHECKSUM / 4 {
                w &= 0xFFFF_0000;
            }
            sums[j] = mix(sums[j], w);
        }
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            *s = mix(*s, 0);
        }
    }
    let checksum = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    (checksum % 65535 + 1) as u16
}

/// Store the checksum in `page`, as PostgreSQL does when it writes a page
/// (new, all-zero pages get none).
pub fn stamp_checksum(page: &mut [u8; PAGE_SIZE], blkno: u32) {
    if page_is_new(page) {
        return;
    }
    let sum = page_checksum(page, blkno);
    page[PD_CHECKSUM..PD_CHECKSUM + 2].copy_from_slice(&sum.to_le_bytes());
}

/// `pd_flags` bits PostgreSQL defines (`PD_VALID_FLAG_BITS`).
const PD_VALID_FLAG_BITS: u16 = 0x0007;

/// Whether PostgreSQL would accept `page`, block `blkno`, read from disk
/// (`PageIsVerified`): an all-zero page, or a header whose offsets are in
/// order and, with data checksums on, a matching checksum.
pub fn page_verifies(page: &[u8; PAGE_SIZE], blkno: u32, data_checksums: bool) -> bool {
    if page_is_new(page) {
        return page.iter().all(|&b| b == 0);
    }
    let (lower, upper, special) = (pd_lower(page), pd_upper(page), pd_special(page));
    let header_ok = pd_flags(page) & !PD_VALID_FLAG_BITS == 0
        && lower <= upper
        && upper <= special
        && special as usize <= PAGE_SIZE
        && special % 8 == 0;
    header_ok && (!data_checksums || pd_checksum(page) == page_checksum(page, blkno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_its_own_field_and_depends_on_the_block() {
        let mut page = [0u8; PAGE_SIZE];
        page[14] = 0x20; // pd_upper
        for (i, b) in page.iter_mut().enumerate().skip(24) {
            *b = (i * 7) as u8;
        }
        let a = page_checksum(&page, 0);
        page[8] = 0xAA;
        page[9] = 0x55;
        assert_eq!(
            page_checksum(&page, 0),
            a,
            "pd_checksum itself is not summed"
        );
        assert_ne!(page_checksum(&page, 1), a);
        page[100] ^= 1;
        assert_ne!(page_checksum(&page, 0), a);
        stamp_checksum(&mut page, 3);
        assert_eq!(pd_checksum(&page), page_checksum(&page, 3));
        assert!(page_checksum(&page, 3) >= 1);
    }

    #[test]
    fn verifies_as_postgresql_reads_a_page() {
        let zeros = [0u8; PAGE_SIZE];
        assert!(page_verifies(&zeros, 7, true));
        let mut page = zeros;
        page[12] = 24; // pd_lower
        page[14..16].copy_from_slice(&8192u16.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        assert!(page_verifies(&page, 7, false));
        assert!(!page_verifies(&page, 7, true), "no checksum yet");
        stamp_checksum(&mut page, 7);
        assert!(page_verifies(&page, 7, true));
        assert!(!page_verifies(&page, 8, true), "another block's");
        page[4000] = 0xAB;
        assert!(!page_verifies(&page, 7, true), "a damaged byte");
        assert!(page_verifies(&page, 7, false));
        page[12] = 0xFF; // pd_lower past pd_upper
        page[13] = 0x7F;
        assert!(!page_verifies(&page, 7, false));
        let mut torn = zeros;
        torn[100] = 1; // a new page's header with bytes after it
        assert!(!page_verifies(&torn, 7, false));
    }
}
