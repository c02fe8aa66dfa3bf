//! A WAL record as the library passes it around.

/// One record to apply: its raw XLogRecord bytes and the LSN of its end.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub end_lsn: u64,
    pub data: &'a [u8],
}
