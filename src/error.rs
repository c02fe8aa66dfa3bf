//! The library's one error type. Each variant maps to one C status code.

use std::fmt;

use crate::wal::record::RecordError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller passed something unusable (wrong size, bad config value...).
    InvalidArgument(String),
    /// Record `index` of the request is not a valid XLogRecord; it was refused
    /// before reaching any process.
    MalformedRecord { index: usize, source: RecordError },
    /// The wal-redo process failed the request: it died, or PostgreSQL's redo
    /// reported an error. `stderr` holds what the process wrote last.
    RedoFailed { message: String, stderr: String },
    /// No answer by the request's deadline; the process was killed.
    Timeout { after_ms: u64, stderr: String },
    /// A wal-redo process could not be started (missing binary, extension,
    /// user, scratch directory...). The message says what to install or set.
    SpawnFailed(String),
    /// The pool is shutting down or gone.
    Shutdown,
    /// A queue limit is reached: the pool's (`queue_depth`) or the
    /// tenant's (`tenant_queue_depth`); the message says which. Only
    /// `submit` and `start` say so; `redo` waits.
    Busy(String),
    /// The caller stopped the work (a cancelled call, an interrupted scan).
    Cancelled,
    /// A bug in this library (for example a caught panic).
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::MalformedRecord { index, source } => {
                write!(f, "malformed WAL record #{index}: {source}")
            }
            Error::RedoFailed { message, stderr } => {
                write!(f, "wal-redo failed: {message}")?;
                if !stderr.is_empty() {
                    write!(f, "; process stderr:\n{stderr}")?;
                }
                Ok(())
            }
            Error::Timeout { after_ms, stderr } => {
                write!(f, "wal-redo timed out after {after_ms} ms; process killed")?;
                if !stderr.is_empty() {
                    write!(f, "; process stderr:\n{stderr}")?;
                }
                Ok(())
            }
            Error::SpawnFailed(m) => write!(f, "cannot start a wal-redo process: {m}"),
            Error::Shutdown => write!(f, "the wal-redo pool is shut down"),
            Error::Busy(limit) => write!(f, "{limit}; try again later"),
            Error::Cancelled => write!(f, "cancelled by the caller"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
