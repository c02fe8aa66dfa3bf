//! Timeline histories: on which timeline each LSN of a cluster's WAL was
//! written, as PostgreSQL's recovery follows it.
//!
//! A promoted standby (or a point-in-time recovery) starts a new timeline at
//! a switch point and writes `NNNNNNNN.history` (in `pg_wal`, and archived),
//! one line per ancestor: `parent-tli  switch-LSN  reason`. WAL below the
//! first switch point is on the oldest timeline's segment files, and so on;
//! the segment holding a switch point is read from the newer timeline's
//! file, which begins with a copy of the older one up to that point (as
//! `XLogFileReadAnyTLI` prefers the newest timeline that began before the
//! segment ends). An older timeline's files past its switch point hold WAL
//! that is not on the target's history and are never read.

use std::io;
use std::path::{Path, PathBuf};

use crate::wal::{parse_lsn, WalError};

/// The history of one target timeline: the timelines it descends from, each
/// with the LSN it ended at (where the next one began), oldest first, then
/// the target itself, which does not end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// (timeline, end): LSNs below `end` (and at or after the previous
    /// entry's end) were written on `timeline`. The last end is `u64::MAX`.
    entries: Vec<(u32, u64)>,
}

/// More than any history file holds (a line per ancestor timeline).
const MAX_HISTORY_FILE: usize = 16 << 20;

/// The history file name of timeline `tli`: `00000002.history`.
pub fn history_file_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

/// Where timeline `tli`'s history file may be, in the order looked in:
/// each directory, plain, then compressed as archives keep it.
fn history_file_paths(dirs: &[PathBuf], tli: u32) -> impl Iterator<Item = PathBuf> + '_ {
    let name = history_file_name(tli);
    dirs.iter().flat_map(move |dir| {
        let name = name.clone();
        ["", ".gz", ".zst", ".lz4"]
            .into_iter()
            .map(move |suffix| dir.join(format!("{name}{suffix}")))
    })
}

/// With `restore`, fetch timeline `tli`'s history file when none of `dirs`
/// has it (plain or compressed), as recovery does: without it, the WAL
/// before the timeline began would be looked for under the wrong names.
/// True when it was fetched (it is then in the restore cache, kept there).
pub fn fetch_history(
    dirs: &[PathBuf],
    tli: u32,
    restore: &crate::wal::restore::RestoreCommand,
) -> Result<bool, WalError> {
    if tli <= 1 {
        return Ok(false);
    }
    if history_file_paths(dirs, tli).any(|p| p.is_file()) {
        return Ok(false);
    }
    restore
        .fetch(&history_file_name(tli))
        .map(|found| found.is_some())
        .map_err(|e| WalError::Restore(e.to_string()))
}

impl History {
    /// A timeline without ancestors (timeline 1, or one whose history file
    /// is in none of the directories).
    pub fn alone(tli: u32) -> History {
        History {
            entries: vec![(tli, u64::MAX)],
        }
    }

    /// The history of `target`, from the first of `dirs` holding its history
    /// file (none: it has no ancestors, as for PostgreSQL).
    pub fn read(dirs: &[PathBuf], target: u32) -> Result<History, WalError> {
        for path in history_file_paths(dirs, target) {
            let text = crate::wal::segment_file::head(&path, MAX_HISTORY_FILE)
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            match text {
                Ok(text) => return History::parse(&text, target, &path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(WalError::Io { file: path, source }),
            }
        }
        Ok(History::alone(target))
    }

    /// The history of the newest of `timelines` (newest first, repeats
    /// allowed) under which segment `segno` is one whose file exists
    /// (`has_file(tli)`), if any.
    pub fn newest_reaching(
        dirs: &[PathBuf],
        timelines: impl Iterator<Item = u32>,
        segno: u64,
        seg_size: u64,
        has_file: impl Fn(u32) -> bool,
    ) -> Result<Option<History>, WalError> {
        let mut last = None;
        for tli in timelines {
            if last == Some(tli) {
                continue;
            }
            last = Some(tli);
            let h = History::read(dirs, tli)?;
            if has_file(h.timeline_of_segment(segno, seg_size)) {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    /// Parse a history file's text (as `readTimeLineHistory` does: blank
    /// lines and `#` comments are skipped; timelines must increase).
    pub fn parse(text: &str, target: u32, file: &Path) -> Result<History, WalError> {
        let bad = |detail: String| WalError::BadHistory {
            file: file.to_path_buf(),
            detail,
        };
        let mut entries: Vec<(u32, u64)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let tli = fields.next().and_then(|t| t.parse::<u32>().ok());
            let end = fields.next().and_then(parse_lsn);
            let (Some(tli), Some(end)) = (tli, end) else {
                return Err(bad(format!(
                    "line {} is not 'timeline switch-LSN reason': {line:?}",
                    i + 1
                )));
            };
            if let Some(&(prev_tli, prev_end)) = entries.last() {
                if tli <= prev_tli || end < prev_end {
                    return Err(bad(format!(
                        "line {}: timelines and switch points must increase",
                        i + 1
                    )));
                }
            }
            entries.push((tli, end));
        }
        if entries.last().is_some_and(|&(tli, _)| tli >= target) {
            return Err(bad(format!(
                "it names timeline {} as an ancestor of timeline {target}",
                entries.last().map_or(0, |e| e.0)
            )));
        }
        entries.push((target, u64::MAX));
        Ok(History { entries })
    }

    /// The target timeline.
    pub fn target(&self) -> u32 {
        self.entries.last().map_or(1, |e| e.0)
    }

    /// The timeline that was current at `lsn`.
    pub fn timeline_at(&self, lsn: u64) -> u32 {
        self.entries
            .iter()
            .find(|&&(_, end)| lsn < end)
            .map_or(self.target(), |e| e.0)
    }

    /// The timeline whose file of segment `segno` is read: the one current
    /// at the segment's last byte (its file holds the segment's WAL up to
    /// any switch inside it, copied from the older timeline).
    pub fn timeline_of_segment(&self, segno: u64, seg_size: u64) -> u32 {
        self.timeline_at((segno + 1).saturating_mul(seg_size) - 1)
    }

    /// The timelines of the history, oldest first (the target last).
    pub fn timelines(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const SEG: u64 = 16 << 20;

    #[test]
    fn parses_postgresql_history_files() {
        let text = "1\t0/3000158\tno recovery target specified\n\n\
                    # comment\n2\t0/6000000\tat restore point \"x\"\n";
        let h = History::parse(text, 3, Path::new("00000003.history")).unwrap();
        assert_eq!(h.timelines().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(h.target(), 3);
        assert_eq!(h.timeline_at(0x3000157), 1);
        assert_eq!(h.timeline_at(0x3000158), 2);
        assert_eq!(h.timeline_at(0x5FFFFFF), 2);
        assert_eq!(h.timeline_at(0x6000000), 3);
        assert_eq!(h.timeline_at(u64::MAX - 1), 3);
        // The segment holding a switch point is the newer timeline's.
        assert_eq!(h.timeline_of_segment(2, SEG), 1);
        assert_eq!(h.timeline_of_segment(3, SEG), 2);
        assert_eq!(h.timeline_of_segment(4, SEG), 2);
        // 0/6000000 is a segment's start: segment 5 is all timeline 2's.
        assert_eq!(h.timeline_of_segment(5, SEG), 2);
        assert_eq!(h.timeline_of_segment(6, SEG), 3);
        assert_eq!(History::alone(1).timeline_of_segment(9, SEG), 1);
    }

    #[test]
    fn refuses_bad_history_files() {
        let p = Path::new("x.history");
        for (text, want) in [
            ("1 nonsense reason\n", "is not"),
            ("2\t0/10\tr\n1\t0/20\tr\n", "must increase"),
            ("1\t0/20\tr\n2\t0/10\tr\n", "must increase"),
            ("3\t0/10\tr\n", "as an ancestor"),
        ] {
            let e = History::parse(text, 3, p).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn reads_the_first_directory_holding_it() {
        let base = std::env::temp_dir().join(format!("walredo-tli-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("00000002.history"), "1\t0/2000000\tr\n").unwrap();
        let h = History::read(&[a.clone(), b.clone()], 2).unwrap();
        assert_eq!(h.timelines().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(History::read(&[a, b], 5).unwrap(), History::alone(5));
        fs::remove_dir_all(&base).unwrap();
    }
}
