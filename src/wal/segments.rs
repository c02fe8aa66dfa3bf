//! Segment files: their names, and [`Segments`], the files of one timeline
//! (and its ancestors) found in a list of directories.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::pg::xlog::{
    pg_version_of_magic, xlp_magic, xlp_pageaddr, xlp_seg_size, SIZE_OF_XLOG_LONG_PHD,
    WAL_SEG_MAX_SIZE, WAL_SEG_MIN_SIZE,
};
use crate::wal::error::WalError;
use crate::wal::restore::RestoreCommand;
use crate::wal::segment_file::{self, Compression};
use crate::wal::timeline::History;

/// Name of a segment file: timeline, then `segno / segs_per_xlogid`, then
/// `segno % segs_per_xlogid`, each 8 uppercase hex digits.
pub fn segment_file_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = segs_per_xlogid(seg_size);
    format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
}

/// Parse a segment file name (exactly 24 uppercase hex digits) into
/// (timeline, segment number).
pub fn parse_segment_file_name(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    let (tli, hi, lo) = split_segment_name(name)?;
    let per = segs_per_xlogid(seg_size);
    if u64::from(lo) >= per {
        return None;
    }
    Some((tli, u64::from(hi) * per + u64::from(lo)))
}

fn segs_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

fn split_segment_name(name: &str) -> Option<(u32, u32, u32)> {
    let b = name.as_bytes();
    if b.len() != 24 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    let part = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
    Some((part(0..8)?, part(8..16)?, part(16..24)?))
}

/// Where a reader begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first record that starts in the lowest segment present.
    Oldest,
    /// The first record that starts in this segment: the tail of a record
    /// from the previous segment is skipped, as `XLogFindNextRecord` does.
    Segment(u64),
    /// This LSN, which must be a record start (such as a checkpoint's redo
    /// pointer).
    Lsn(u64),
}

/// The segment files of one target timeline and its ancestors (see
/// [`timeline`](crate::wal::timeline): each segment from the timeline current at its end), looked
/// up in a list of directories (the server's `pg_wal`, then archives, whose
/// segments may be compressed: [`segment_file`]): for
/// each segment, every directory that has a file of its name, in the order
/// of the list. Listing reads no WAL; which file of a segment is read is
/// decided when it is opened (the first one whose long page header is that
/// segment's).
#[derive(Clone, Debug)]
pub struct Segments {
    pub(super) dirs: Vec<PathBuf>,
    pub(super) tli: u32,
    pub(super) history: History,
    pub(super) seg_size: u64,
    pub(super) files: BTreeMap<u64, Vec<PathBuf>>,
    /// Fetches a segment no directory has ([`Segments::restore`]).
    pub(super) restore: Option<Arc<RestoreCommand>>,
}

impl Segments {
    /// List `dirs`. The target timeline is `timeline`, or the highest one
    /// present (with `start_lsn`: the highest one whose history has the
    /// segment that holds it); its history file is followed, and other
    /// timelines' files and other files (`*.partial`, `archive_status/`) are
    /// ignored. The segment size is the size of the
    /// lowest segment file of that timeline with a valid size.
    pub fn list(
        dirs: &[PathBuf],
        timeline: Option<u32>,
        start_lsn: Option<u64>,
    ) -> Result<Segments, WalError> {
        // (tli, hi, lo, directory index, path, size when not compressed)
        let mut files: Vec<(u32, u32, u32, usize, PathBuf, Option<u64>)> = Vec::new();
        for (d, dir) in dirs.iter().enumerate() {
            let entries = fs::read_dir(dir).map_err(|source| WalError::ReadDir {
                dir: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| WalError::ReadDir {
                    dir: dir.clone(),
                    source,
                })?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                // Archives keep segments compressed too (`.gz`, `.zst`,
                // `.lz4`: segment_file).
                let (name, compression) = Compression::of_name(name);
                let Some((tli, hi, lo)) = split_segment_name(name) else {
                    continue;
                };
                let path = entry.path();
                // Follow symlinks; skip anything that is not a regular file,
                // and files removed since the listing. The size is taken
                // now: a second look could find the file gone (a checkpoint
                // removing the oldest segments).
                // A compressed file's size is known once decompressed: it is
                // checked when the segment is opened.
                match fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        let size = (compression == Compression::None).then_some(m.len());
                        files.push((tli, hi, lo, d, path, size))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(WalError::Io { file: path, source }),
                }
            }
        }
        let no_segments = || WalError::NoSegments {
            dirs: dirs.to_vec(),
            timeline,
        };
        files.sort();
        let size_tli = match timeline {
            Some(t) => t,
            None => files.iter().map(|f| f.0).max().ok_or_else(no_segments)?,
        };
        // The size of the lowest file of the timeline that has a valid one (a
        // truncated copy in one directory may have a good one in another);
        // with only compressed files, the size the first one's long page
        // header gives (`xlp_seg_size`).
        let valid = |size: &u64| {
            size.is_power_of_two() && (WAL_SEG_MIN_SIZE..=WAL_SEG_MAX_SIZE).contains(size)
        };
        let mut first_bad = None;
        let mut seg_size = None;
        for f in files.iter().filter(|f| f.0 == size_tli && f.5.is_some()) {
            let size = f.5.expect("filtered");
            if valid(&size) {
                seg_size = Some(size);
                break;
            }
            first_bad.get_or_insert((f.4.clone(), size));
        }
        if seg_size.is_none() && first_bad.is_none() {
            if let Some(f) = files.iter().find(|f| f.0 == size_tli) {
                let head =
                    segment_file::head(&f.4, SIZE_OF_XLOG_LONG_PHD as usize).map_err(|source| {
                        WalError::Io {
                            file: f.4.clone(),
                            source,
                        }
                    })?;
                let size = if head.len() == SIZE_OF_XLOG_LONG_PHD as usize {
                    u64::from(xlp_seg_size(&head))
                } else {
                    head.len() as u64
                };
                if valid(&size) {
                    seg_size = Some(size);
                } else {
                    first_bad = Some((f.4.clone(), size));
                }
            }
        }
        let seg_size = match (seg_size, first_bad) {
            (Some(size), _) => size,
            (None, Some((file, size))) => {
                return Err(WalError::WrongSegmentSize {
                    file,
                    size,
                    expected: None,
                })
            }
            (None, None) => return Err(no_segments()),
        };
        let per = segs_per_xlogid(seg_size);
        let segno_of = |f: &(u32, u32, u32, usize, PathBuf, Option<u64>)| -> Option<u64> {
            (u64::from(f.2) < per).then(|| u64::from(f.1) * per + u64::from(f.2))
        };
        let history = match (timeline, start_lsn) {
            (Some(t), _) => History::read(dirs, t)?,
            (None, None) => History::read(dirs, size_tli)?,
            (None, Some(lsn)) => {
                let segno = lsn / seg_size;
                let has = |tli: u32| {
                    files
                        .iter()
                        .any(|f| f.0 == tli && segno_of(f) == Some(segno))
                };
                let tlis = files.iter().map(|f| f.0).rev();
                History::newest_reaching(dirs, tlis, segno, seg_size, has)?.ok_or_else(|| {
                    WalError::StartNotFound {
                        lsn,
                        dirs: dirs.to_vec(),
                    }
                })?
            }
        };
        let tli = history.target();
        let mut by_segno: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for f in &files {
            if let Some(segno) = segno_of(f) {
                if f.0 == history.timeline_of_segment(segno, seg_size) {
                    by_segno.entry(segno).or_default().push(f.4.clone());
                }
            }
        }
        if by_segno.is_empty() {
            return Err(no_segments());
        }
        Ok(Segments {
            dirs: dirs.to_vec(),
            tli,
            history,
            seg_size,
            files: by_segno,
            restore: None,
        })
    }

    /// These segments, with `restore` fetching those no directory has.
    pub fn with_restore(mut self, restore: Option<Arc<RestoreCommand>>) -> Segments {
        self.restore = restore;
        self
    }

    /// Whether a restore command may fetch missing segments.
    pub fn can_restore(&self) -> bool {
        self.restore.is_some()
    }

    /// Fetch segment `segno` (of the timeline current at its end) with the
    /// restore command: true when it was fetched (it is then present),
    /// false when there is no command or the archive does not have it.
    pub fn restore(&mut self, segno: u64) -> Result<bool, WalError> {
        let Some(restore) = self.restore.clone() else {
            return Ok(false);
        };
        if self.files.contains_key(&segno) {
            return Ok(true);
        }
        let name = self.file_name(segno);
        match restore
            .fetch(&name)
            .map_err(|e| WalError::Restore(e.to_string()))?
        {
            Some(path) => {
                log::debug!("restored WAL segment {name}");
                self.files.insert(segno, vec![path]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub fn timeline(&self) -> u32 {
        self.tli
    }

    pub fn segment_size(&self) -> u64 {
        self.seg_size
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The segment numbers present, ascending.
    pub fn present(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.files.keys().copied()
    }

    pub fn contains(&self, segno: u64) -> bool {
        self.files.contains_key(&segno)
    }

    /// Whether a file of segment `segno` begins with that segment's long
    /// page header (rather than being a file recycled for future use).
    pub fn holds_wal(&self, segno: u64) -> bool {
        self.files.get(&segno).is_some_and(|paths| {
            paths.iter().any(|p| {
                segment_file::head(p, SIZE_OF_XLOG_LONG_PHD as usize).is_ok_and(|head| {
                    head.len() == SIZE_OF_XLOG_LONG_PHD as usize
                        && pg_version_of_magic(xlp_magic(&head)).is_some()
                        && xlp_pageaddr(&head) == segno * self.seg_size
                })
            })
        })
    }

    /// The PostgreSQL major version whose page magic segment `segno`'s first
    /// page has, if it is present and has a known one.
    pub fn pg_version(&self, segno: u64) -> Option<u32> {
        self.files.get(&segno)?.iter().find_map(|p| {
            let head = segment_file::head(p, 2).ok().filter(|h| h.len() == 2)?;
            pg_version_of_magic(xlp_magic(&head))
        })
    }

    /// The file name of segment `segno`: of the timeline current at its end.
    pub fn file_name(&self, segno: u64) -> String {
        let tli = self.history.timeline_of_segment(segno, self.seg_size);
        segment_file_name(tli, segno, self.seg_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::lsn::{format_lsn, parse_lsn};

    const SEG: u64 = 1024 * 1024; // 1 MiB test segments

    #[test]
    fn names_and_lsns() {
        let m16 = 16 * 1024 * 1024;
        assert_eq!(segment_file_name(1, 1, m16), "000000010000000000000001");
        assert_eq!(segment_file_name(1, 0x100, m16), "000000010000000100000000");
        assert_eq!(segment_file_name(2, 0x2FF, m16), "0000000200000002000000FF");
        assert_eq!(segment_file_name(1, 4096, SEG), "000000010000000100000000");
        assert_eq!(
            segment_file_name(0x1A, 4097, SEG),
            "0000001A0000000100000001"
        );
        assert_eq!(
            parse_segment_file_name("0000000200000002000000FF", m16),
            Some((2, 0x2FF))
        );
        assert_eq!(
            parse_segment_file_name("0000001A0000000100000001", SEG),
            Some((0x1A, 4097))
        );
        for (tli, segno, size) in [
            (1, 1, m16),
            (3, 12345, SEG),
            (7, 5, 1 << 30),
            (9, 0xFFFF, 64 << 20),
        ] {
            let n = segment_file_name(tli, segno, size);
            assert_eq!(parse_segment_file_name(&n, size), Some((tli, segno)));
        }
        // lowercase, wrong length, out-of-range low part
        assert_eq!(
            parse_segment_file_name("0000000100000000000000ff", m16),
            None
        );
        assert_eq!(
            parse_segment_file_name("00000001000000000000001", m16),
            None
        );
        assert_eq!(
            parse_segment_file_name("000000010000000000000001.partial", m16),
            None
        );
        assert_eq!(
            parse_segment_file_name("000000010000000000000100", m16),
            None
        );
        assert_eq!(format_lsn(0x16B3748), "0/16B3748");
        assert_eq!(format_lsn(0x1_0000_00A0), "1/A0");
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/a0"), Some(0x1_0000_00A0));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in [
            "",
            "/",
            "0/",
            "/1",
            "1",
            "0/123456789",
            "x/1",
            "0/1/2",
            "-1/0",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }
}
