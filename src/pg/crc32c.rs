//! CRC-32C (Castagnoli), computed the way PostgreSQL's `pg_crc32c` does it.
//!
//! PostgreSQL uses three macros: `INIT_CRC32C(crc)` sets the running value to
//! `0xFFFFFFFF`, `COMP_CRC32C(crc, data, len)` folds bytes into the running
//! value (reflected polynomial `0x82F63B78`), and `FIN_CRC32C(crc)` xors the
//! running value with `0xFFFFFFFF`. The functions here map one to one:
//! [`CRC32C_INIT`], [`crc32c_update`] and [`crc32c_finish`]; [`crc32c`] does all
//! three at once and [`Crc32c`] wraps them as an incremental hasher.
//!
//! The portable path is a slice-by-8 table implementation whose tables are
//! built at compile time; on x86_64 CPUs with SSE4.2 the `crc32` instruction is
//! used instead.

/// The running value after `INIT_CRC32C`.
pub const CRC32C_INIT: u32 = 0xFFFF_FFFF;

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// Slice-by-8 lookup tables. `TABLES[0]` is the classic byte-at-a-time table;
/// `TABLES[k][i]` is the CRC of byte `i` followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// `COMP_CRC32C`: fold `data` into the running (non-finalized) value `crc`.
///
/// Uses the SSE4.2 instruction when the CPU has it, else the table path.
#[inline]
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: `update_sse42` only requires the SSE4.2 target feature,
            // whose presence on this CPU we just checked at run time.
            return unsafe { update_sse42(crc, data) };
        }
    }
    crc32c_update_portable(crc, data)
}

/// `COMP_CRC32C` with the portable slice-by-8 table implementation, whatever
/// the CPU supports. [`crc32c_update`] gives the same results.
pub fn crc32c_update_portable(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = TABLES[7][(lo & 0xFF) as usize]
            ^ TABLES[6][((lo >> 8) & 0xFF) as usize]
            ^ TABLES[5][((lo >> 16) & 0xFF) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][c[4] as usize]
            ^ TABLES[2][c[5] as usize]
            ^ TABLES[1][c[6] as usize]
            ^ TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xFF) as usize];
    }
    crc
}

/// `COMP_CRC32C` using the SSE4.2 `crc32` instruction.
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut crc64 = crc as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        crc64 = _mm_crc32_u64(crc64, v);
    }
    // The instruction only ever produces 32 significant bits.
    let mut crc = crc64 as u32;
    for &b in chunks.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

/// `FIN_CRC32C`: turn a running value into the final CRC.
#[inline]
pub const fn crc32c_finish(crc: u32) -> u32 {
    crc ^ 0xFFFF_FFFF
}

/// The CRC-32C of `data` (INIT, COMP, FIN).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_finish(crc32c_update(CRC32C_INIT, data))
}

/// An incremental CRC-32C computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crc32c {
    state: u32,
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A fresh computation (`INIT_CRC32C`).
    pub const fn new() -> Self {
        Crc32c { state: CRC32C_INIT }
    }

    /// Fold more bytes in (`COMP_CRC32C`).
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.state = crc32c_update(self.state, data);
        self
    }

    /// The CRC of everything folded in so far (`FIN_CRC32C`); the computation
    /// may continue afterwards.
    pub const fn finish(&self) -> u32 {
        crc32c_finish(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time reference implementation.
    fn reference(data: &[u8]) -> u32 {
        let mut crc = CRC32C_INIT;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        crc32c_finish(crc)
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::test_rng::Rng(seed | 1);
        (0..len).map(|_| (rng.next() >> 24) as u8).collect()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn portable_matches_reference_and_vectors() {
        let p = |d: &[u8]| crc32c_finish(crc32c_update_portable(CRC32C_INIT, d));
        assert_eq!(p(b"123456789"), 0xE306_9283);
        assert_eq!(p(&[0u8; 32]), 0x8A91_36AA);
        for len in 0..100 {
            let d = pseudo_random(len, len as u64 + 7);
            assert_eq!(p(&d), reference(&d), "len {len}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse42_matches_portable() {
        if !std::arch::is_x86_feature_detected!("sse4.2") {
            eprintln!("no SSE4.2 on this CPU; skipping");
            return;
        }
        // SAFETY: SSE4.2 support was checked just above.
        let s = |c: u32, d: &[u8]| unsafe { update_sse42(c, d) };
        assert_eq!(crc32c_finish(s(CRC32C_INIT, b"123456789")), 0xE306_9283);
        assert_eq!(crc32c_finish(s(CRC32C_INIT, &[0u8; 32])), 0x8A91_36AA);
        let data = pseudo_random(4096, 42);
        for start in 0..17 {
            for len in [0usize, 1, 3, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4000] {
                let d = &data[start..start + len];
                for init in [CRC32C_INIT, 0, 0x1234_5678] {
                    assert_eq!(s(init, d), crc32c_update_portable(init, d));
                }
            }
        }
    }

    #[test]
    fn incremental_matches_one_shot() {
        let data = pseudo_random(1000, 99);
        let whole = crc32c(&data);
        for split in [0usize, 1, 5, 8, 13, 500, 999, 1000] {
            let mut h = Crc32c::new();
            h.update(&data[..split]).update(&data[split..]);
            assert_eq!(h.finish(), whole, "split {split}");
            let raw = crc32c_update(crc32c_update(CRC32C_INIT, &data[..split]), &data[split..]);
            assert_eq!(crc32c_finish(raw), whole);
        }
        assert_eq!(Crc32c::default().finish(), 0);
    }
}
