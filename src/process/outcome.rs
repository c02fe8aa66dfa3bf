//! What a failed round trip means to the caller: a process [`Failure`],
//! turned into the request's [`Error`] by the one who holds the process.

use std::time::Duration;

use crate::error::Error;
use crate::process::{Failure, Process};

impl Process {
    /// Turn a failure of this process into the caller's error, with its
    /// stderr: the process is killed here (`timeout` is the attempt's).
    pub(crate) fn failure_error(&mut self, failure: Failure, timeout: Duration) -> Error {
        let stderr = self.kill_and_collect_stderr();
        match failure {
            Failure::Timeout => Error::Timeout {
                after_ms: timeout.as_millis() as u64,
                stderr,
            },
            other => {
                // PostgreSQL's own words are the most useful message.
                let how = match self.death_signal() {
                    Some(signal) => format!("{other}, {signal}"),
                    None => other.to_string(),
                };
                let message = stderr
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("FATAL:") || l.starts_with("PANIC:"))
                    .map(|l| format!("{l} ({how}, pid {})", self.pid()))
                    .unwrap_or_else(|| format!("{how} (pid {})", self.pid()));
                Error::RedoFailed { message, stderr }
            }
        }
    }
}
