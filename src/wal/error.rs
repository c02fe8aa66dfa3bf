//! [`WalError`]: what went wrong while opening or reading WAL (as opposed to
//! the WAL simply ending, which is not an error).

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::wal::lsn::format_lsn;

/// What went wrong while opening or reading WAL (as opposed to the WAL simply
/// ending, which is not an error).
#[derive(Debug)]
pub enum WalError {
    /// The WAL directory could not be listed.
    ReadDir { dir: PathBuf, source: io::Error },
    /// The directories hold no WAL segment files (of the timeline asked for).
    NoSegments {
        dirs: Vec<PathBuf>,
        timeline: Option<u32>,
    },
    /// A segment file's size is not the segment size (or not a valid one).
    WrongSegmentSize {
        file: PathBuf,
        size: u64,
        expected: Option<u64>,
    },
    /// A segment is missing although later segments hold WAL.
    Gap {
        missing: String,
        next_present: String,
    },
    /// No present segment holds the requested start LSN.
    StartNotFound { lsn: u64, dirs: Vec<PathBuf> },
    /// A segment listed a moment ago is in none of the directories any more:
    /// the server removed or recycled it while it was being read.
    Removed { segment: String, dirs: Vec<PathBuf> },
    /// The requested start LSN cannot be a record start.
    InvalidStart { lsn: u64, reason: String },
    /// Reading a segment file failed.
    Io { file: PathBuf, source: io::Error },
    /// A long page header disagrees with the files (segment or block size),
    /// or the first segment is not PostgreSQL WAL at all.
    BadHeader { file: PathBuf, detail: String },
    /// The WAL is of another PostgreSQL major version than the one asked for.
    WrongVersion {
        file: PathBuf,
        found: u32,
        expected: u32,
    },
    /// A segment belongs to another database cluster.
    SystemIdMismatch {
        file: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A timeline history file cannot be parsed.
    BadHistory { file: PathBuf, detail: String },
    /// The restore command failed (killed by a signal, hung, could not
    /// run): not "the archive does not have the file".
    Restore(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Restore(why) => write!(f, "{why}"),
            WalError::WrongVersion {
                file,
                found,
                expected,
            } => write!(
                f,
                "{} is PostgreSQL {found} WAL, but PostgreSQL {expected} is asked for: redo it with a pool of pg_version {found} (PostgreSQL {found}'s binaries and its pg_walredo)",
                file.display()
            ),
            WalError::ReadDir { dir, source } => write!(
                f,
                "cannot read WAL directory {}: {source}; check that the path exists and is readable",
                dir.display()
            ),
            WalError::NoSegments {
                dirs,
                timeline: None,
            } => write!(
                f,
                "no WAL segment files (24 hex digit names) in {}; point at the cluster's pg_wal directory",
                show_dirs(dirs)
            ),
            WalError::NoSegments {
                dirs,
                timeline: Some(tli),
            } => write!(
                f,
                "no WAL segment files of timeline {tli} in {}; pass timeline 0 for the highest one present",
                show_dirs(dirs)
            ),
            WalError::WrongSegmentSize {
                file,
                size,
                expected: Some(expected),
            } => write!(
                f,
                "WAL segment {} is {size} bytes, expected {expected}; it is truncated or foreign: restore it from the archive or remove it",
                file.display()
            ),
            WalError::WrongSegmentSize {
                file,
                size,
                expected: None,
            } => write!(
                f,
                "WAL segment {} is {size} bytes, not a valid WAL segment size (a power of two from 1 MiB to 1 GiB); it is truncated or foreign: restore it from the archive or remove it",
                file.display()
            ),
            WalError::Gap {
                missing,
                next_present,
            } => write!(
                f,
                "WAL gap: segment {missing} missing (WAL continues in {next_present}); restore {missing} from the archive"
            ),
            WalError::StartNotFound { lsn, dirs } => write!(
                f,
                "start LSN {} is not in any WAL segment present in {}; restore that segment or choose a later start",
                format_lsn(*lsn),
                show_dirs(dirs)
            ),
            WalError::Removed { segment, dirs } => write!(
                f,
                "WAL segment {segment} was removed from {} while it was being read (the server \
                 recycles segments it no longer needs): a larger wal_keep_size keeps them longer, \
                 an archive directory keeps them for good",
                show_dirs(dirs)
            ),
            WalError::InvalidStart { lsn, reason } => write!(
                f,
                "start LSN {} cannot be a record start: {reason}; pass a record start such as a checkpoint's redo LSN",
                format_lsn(*lsn)
            ),
            WalError::Io { file, source } => {
                write!(f, "cannot read WAL segment {}: {source}", file.display())
            }
            WalError::BadHeader { file, detail } => write!(
                f,
                "WAL segment {}: {detail}; this reader needs PostgreSQL 14 to 18 WAL with 8 KiB pages",
                file.display()
            ),
            WalError::BadHistory { file, detail } => write!(
                f,
                "timeline history file {}: {detail}; restore it from the archive",
                file.display()
            ),
            WalError::SystemIdMismatch {
                file,
                expected,
                found,
            } => write!(
                f,
                "WAL segment {} is of another cluster: its system identifier is {found}, this cluster's {expected} (an archive or directory of another cluster with the same segment names)",
                file.display()
            ),
        }
    }
}

impl Error for WalError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            WalError::ReadDir { source, .. } | WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Directories for a message: `a, b and c`.
fn show_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    match names.split_last() {
        None => "no directory".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}
