//! `verify`'s SLRU pages and relation maps: rebuilt while the WAL is read
//! ([`SlruReplay`], beside the relation-page plan), then compared with
//! EXPECTED's files, one report row per kind (docs/slru.md).

use std::fmt;
use std::path::Path;

use walredo::datadir::{read_slru_page, relmap_path};
use walredo::wal::slru::{SlruKind, SlruReplay};

/// Report rows, in this order: the SLRUs, then the relation maps.
pub const SLRU_ROW_NAMES: [&str; 5] = [
    "pg_xact",
    "pg_multixact/offsets",
    "pg_multixact/members",
    "pg_commit_ts",
    "pg_filenode.map",
];

fn row_of(kind: SlruKind) -> usize {
    match kind {
        SlruKind::Xact => 0,
        SlruKind::MultiXactOffsets => 1,
        SlruKind::MultiXactMembers => 2,
        SlruKind::CommitTs => 3,
    }
}

/// How one kind of page compared.
#[derive(Clone, Debug, Default)]
pub struct SlruTally {
    pub pages: u64,
    pub identical: u64,
    pub different: u64,
    /// In EXPECTED no more: removed by a truncation (or database drop)
    /// after the last change; not counted as compared.
    pub removed: u64,
    /// Each differing page ("pg_xact page 3") and its first differing byte.
    pub differences: Vec<(String, usize)>,
}

/// The SLRU part of a report: a row per kind, or why nothing was compared.
#[derive(Clone, Debug, Default)]
pub struct SlruReport {
    pub rows: [SlruTally; 5],
    /// Set when EXPECTED cannot be compared (not stopped in recovery).
    pub skipped: Option<String>,
}

/// Compare every page and map `replay` rebuilt with EXPECTED's files.
/// `expected_state` is EXPECTED's `pg_control` state: only a server that
/// stopped in recovery left the SLRUs as the WAL made them (a promoted or
/// crash-recovered one trimmed them: `TrimCLOG`, `TrimMultiXact`).
pub fn compare(replay: &SlruReplay, expected: &Path, expected_state: &str) -> SlruReport {
    let mut report = SlruReport::default();
    if expected_state != "shut down in recovery" {
        report.skipped = Some(format!(
            "EXPECTED's state is {expected_state:?}, not \"shut down in recovery\": its SLRU \
             pages were changed after the WAL (end-of-recovery trims), so they were not compared"
        ));
        return report;
    }
    let mut pages: Vec<_> = replay.pages().collect();
    pages.sort_by_key(|(p, _, _)| **p);
    for (page, bytes, lsn) in pages {
        let row = &mut report.rows[row_of(page.kind)];
        match read_slru_page(expected, page) {
            Ok(Some(e)) => count(row, &e[..], &bytes[..], || page.to_string()),
            Ok(None) if replay.removed_after(page, lsn) => row.removed += 1,
            Ok(None) => missing(row, page.to_string()),
            Err(e) => missing(row, format!("{page} (unreadable: {e})")),
        }
    }
    for (file, bytes, _) in replay.maps() {
        let row = &mut report.rows[4];
        let path = relmap_path(expected, file);
        match std::fs::read(&path) {
            Ok(e) => count(row, &e, bytes, || file.to_string()),
            // The database was dropped later: its directory is gone.
            Err(_) if path.parent().is_some_and(|d| !d.exists()) => row.removed += 1,
            Err(e) => missing(row, format!("{file} (unreadable: {e})")),
        }
    }
    report
}

fn count(row: &mut SlruTally, expected: &[u8], rebuilt: &[u8], name: impl Fn() -> String) {
    row.pages += 1;
    if expected == rebuilt {
        row.identical += 1;
    } else {
        row.different += 1;
        let off = expected
            .iter()
            .zip(rebuilt)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(rebuilt.len()));
        row.differences.push((name(), off));
    }
}

/// A page EXPECTED should have and lacks: different.
fn missing(row: &mut SlruTally, name: String) {
    row.pages += 1;
    row.different += 1;
    row.differences
        .push((format!("{name}, not in EXPECTED"), 0));
}

impl SlruReport {
    /// Pages compared, identical and different over every kind.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.rows.iter().fold((0, 0, 0), |(p, i, d), r| {
            (p + r.pages, i + r.identical, d + r.different)
        })
    }
}

impl fmt::Display for SlruReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.skipped {
            return writeln!(f, "SLRU pages and relation maps: {why}");
        }
        for (name, row) in SLRU_ROW_NAMES.iter().zip(&self.rows) {
            if row.pages == 0 && row.removed == 0 {
                continue;
            }
            write!(
                f,
                "{name:<20} {:>8} {:>10} {:>10}",
                row.pages, row.identical, row.different
            )?;
            if row.removed > 0 {
                write!(f, "   ({} more removed later, as in EXPECTED)", row.removed)?;
            }
            writeln!(f)?;
            for (what, off) in row.differences.iter().take(10) {
                writeln!(f, "       different: {what}, first at byte {off}")?;
            }
        }
        Ok(())
    }
}
