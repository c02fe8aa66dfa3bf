//! WAL segment files mapped into memory, read-only, for a caller that
//! keeps where each record is instead of its bytes and reads them back when
//! it needs them (`walredo verify`: its memory then holds a few words per
//! record, not the WAL). A record on one WAL page is borrowed from the map
//! as it is; one that crosses pages is gathered into the caller's buffer,
//! its page headers left out.
//!
//! The files must keep their length while mapped: a segment truncated
//! meanwhile makes a read of its lost part fault (SIGBUS). PostgreSQL never
//! truncates a segment (it recycles them whole); `walredo verify` reports
//! such a fault with its cause (cli/src/main.rs).
//!
//! Only records a [`WalReader`](crate::wal::WalReader) has read (their CRC,
//! their pages' headers checked) are looked up here, from the same files:
//! nothing here checks a page header again. A caller that sends the bytes
//! on to a pool has them checked again there (the request's CRC check).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::pg::xlog::{SIZE_OF_XLOG_LONG_PHD, SIZE_OF_XLOG_SHORT_PHD, XLOG_BLCKSZ};

/// One segment file, mapped read-only.
struct Map {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and never changed by us; its bytes may be
// read from any thread, and it is unmapped only when the `Map` is dropped.
unsafe impl Send for Map {}
// SAFETY: as for Send: shared read-only memory.
unsafe impl Sync for Map {}

impl Map {
    fn new(path: &Path) -> io::Result<Map> {
        let file = crate::wal::segment_file::open(path)?;
        let len = file.metadata()?.len() as usize;
        if len == 0 {
            return Ok(Map {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: a read-only shared mapping of a file we opened; the
        // result is checked; the descriptor may be closed once mapped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives (or is dangling with `len` 0).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

/// Segment files of one timeline, by segment number, mapped.
pub struct MappedWal {
    seg_size: u64,
    maps: BTreeMap<u64, Map>,
}

/// Where a record is: its start and its length (`xl_tot_len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordAt {
    pub start_lsn: u64,
    pub len: u32,
}

impl MappedWal {
    /// Map `files` (segment number, path) of segments of `seg_size` bytes.
    pub fn map(
        files: impl IntoIterator<Item = (u64, PathBuf)>,
        seg_size: u64,
    ) -> io::Result<MappedWal> {
        let mut maps = BTreeMap::new();
        for (segno, path) in files {
            let map = Map::new(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            maps.insert(segno, map);
        }
        Ok(MappedWal { seg_size, maps })
    }

    /// The bytes of the record `at`: borrowed from its page when it is on
    /// one, else appended to `gathered` and `None` returned (see
    /// [`MappedWal::gather`]). Err when a segment it needs is not mapped or
    /// is shorter than the record.
    fn on_one_page(&self, at: RecordAt) -> io::Result<Option<&[u8]>> {
        let len = at.len as u64;
        let page_left = XLOG_BLCKSZ - at.start_lsn % XLOG_BLCKSZ;
        if len > page_left {
            return Ok(None);
        }
        self.piece(at.start_lsn, len).map(Some)
    }

    /// `len` bytes at `lsn`, all in one segment.
    fn piece(&self, lsn: u64, len: u64) -> io::Result<&[u8]> {
        let segno = lsn / self.seg_size;
        let off = (lsn % self.seg_size) as usize;
        let missing = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "WAL at {} is no longer in its segment file (segment {segno} missing or \
                     shorter than when it was read)",
                    crate::wal::format_lsn(lsn)
                ),
            )
        };
        let map = self.maps.get(&segno).ok_or_else(missing)?;
        map.bytes().get(off..off + len as usize).ok_or_else(missing)
    }

    /// Append the bytes of the record `at` to `out`, its page headers left
    /// out.
    fn append(&self, at: RecordAt, out: &mut Vec<u8>) -> io::Result<()> {
        let mut left = at.len as u64;
        let mut lsn = at.start_lsn;
        while left > 0 {
            let page_off = lsn % XLOG_BLCKSZ;
            if page_off == 0 {
                // A page's header: long on a segment's first page.
                lsn += if lsn % self.seg_size == 0 {
                    SIZE_OF_XLOG_LONG_PHD
                } else {
                    SIZE_OF_XLOG_SHORT_PHD
                };
                continue;
            }
            let n = left.min(XLOG_BLCKSZ - page_off);
            out.extend_from_slice(self.piece(lsn, n)?);
            left -= n;
            lsn += n;
        }
        Ok(())
    }

    /// The bytes of each record of `records`, in order: borrowed from the
    /// maps where a record is on one page, else from `scratch`, which holds
    /// the records that cross pages, gathered (cleared first).
    pub fn gather<'a>(
        &'a self,
        records: &[RecordAt],
        scratch: &'a mut Vec<u8>,
    ) -> io::Result<Vec<&'a [u8]>> {
        scratch.clear();
        // Where each crossing record's bytes begin in `scratch`.
        let mut crossing = Vec::new();
        for at in records {
            if self.on_one_page(*at)?.is_none() {
                crossing.push(scratch.len());
                self.append(*at, scratch)?;
            }
        }
        let scratch: &'a Vec<u8> = scratch;
        let mut crossing = crossing.into_iter();
        records
            .iter()
            .map(|at| match self.on_one_page(*at)? {
                Some(bytes) => Ok(bytes),
                None => {
                    let from = crossing.next().expect("gathered above");
                    Ok(&scratch[from..from + at.len as usize])
                }
            })
            .collect()
    }
}
