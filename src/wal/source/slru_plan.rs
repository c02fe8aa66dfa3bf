//! [`WalSource::plan_slru`]: the records that rebuild an SLRU page as of an
//! LSN (docs/slru.md). An SLRU page has no full-page images: its life
//! starts with the ZERO record that made it, so a plan reads segments back
//! from the LSN to the newest ZERO of the page, keeping the records that
//! write on it ([`crate::wal::slru::slru_changes`]). Not indexed: the
//! records that change SLRU pages are few, but a plan reads every record of
//! the segments it walks back through.

use super::*;
use crate::pg::slru::SlruFormat;
use crate::wal::slru::{slru_changes, SlruChange, SlruPage};

/// The records that rebuild an SLRU page as of `lsn`, oldest first: the
/// first one zeroes the page (rebuild from no base page:
/// [`crate::wal::slru::rebuild_slru_page`]).
#[derive(Clone, Debug)]
pub struct SlruPlan {
    pub page: SlruPage,
    pub lsn: u64,
    pub records: Vec<WalRecord>,
}

/// How a record concerns the page asked about.
enum Concern {
    Zero,
    Set,
    /// The page does not exist after it: a truncation of its segment, or
    /// commit timestamps turned off (every `pg_commit_ts` file deleted).
    Removed(String),
}

fn concern(page: &SlruPage, changes: &[SlruChange]) -> Option<Concern> {
    for c in changes {
        match c {
            SlruChange::Zero(p) if p == page => return Some(Concern::Zero),
            SlruChange::Set(p) if p == page => return Some(Concern::Set),
            c if c.removes(page) => return Some(Concern::Removed(format!("{c:?}"))),
            _ => {}
        }
    }
    None
}

impl WalSource {
    /// The records that rebuild SLRU page `page` as of `lsn` (after every
    /// record that ends at or before it): the newest ZERO record of the page
    /// at or before `lsn`, then every later record that writes on it. A
    /// commit counts for a `pg_commit_ts` page: a ZERO of one is only
    /// logged while commit timestamps are on, and turning them off deletes
    /// the page. `NotFound` when the readable WAL has no ZERO of the page
    /// (it was made before: an archive reaches further); `NoSuchBlock` when
    /// a record after the ZERO removed it. With a restore command, older
    /// segments are fetched as for [`plan`](Self::plan).
    pub fn plan_slru(
        &mut self,
        page: &SlruPage,
        lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<SlruPlan, SourceError> {
        self.with_restore_retry(lsn, interrupt, &mut |me, interrupt| {
            me.plan_slru_readable(page, lsn, interrupt)
        })
    }

    fn plan_slru_readable(
        &mut self,
        page: &SlruPage,
        lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<SlruPlan, SourceError> {
        let segs = self.list()?;
        let seg_size = segs.segment_size();
        let s_lsn = last_segment(lsn, seg_size);
        let further = "an archive directory holding older segments, or a restore command, \
                       would reach further";
        let Some((low, top)) = Self::run_below(&segs, s_lsn) else {
            return Err(SourceError::NotFound(format!(
                "LSN {} is before the oldest readable WAL record; {further}",
                format_lsn(lsn)
            )));
        };
        if top < s_lsn {
            return Err(SourceError::NotFound(format!(
                "LSN {} is after the newest readable WAL record (segment {} is not present): \
                 pass an LSN the server has flushed",
                format_lsn(lsn),
                segs.file_name(s_lsn)
            )));
        }
        // Newest segment first: the records of each that concern the page.
        let mut per_segment: Vec<Vec<(WalRecord, Concern)>> = Vec::new();
        let mut zero_found = false;
        for s in (low..=top).rev() {
            if interrupt() {
                return Err(SourceError::Cancelled);
            }
            let mut reader = match WalReader::open_segments(
                Arc::clone(&segs),
                Start::Segment(s),
                self.system_id,
            ) {
                Ok(r) => r,
                // The readable WAL begins after this segment.
                Err(WalError::BadHeader { .. } | WalError::Removed { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            self.system_id = Some(reader.system_id());
            self.pg_version = Some(reader.pg_version());
            let record_format = RecordFormat::of_version(reader.pg_version());
            let format = SlruFormat::of_version(reader.pg_version());
            reader.set_limit(lsn);
            let mut recs = Vec::new();
            let mut n: u64 = 0;
            while let Some(rec) = reader.next_record()? {
                if rec.start_lsn / seg_size != s {
                    break;
                }
                n += 1;
                if n % INTERRUPT_EVERY == 0 && interrupt() {
                    return Err(SourceError::Cancelled);
                }
                self.records_read += 1;
                let decoded =
                    record::decode_unchecked_crc_as(&rec.data, record_format).map_err(|error| {
                        SourceError::Malformed {
                            lsn: rec.start_lsn,
                            error,
                        }
                    })?;
                let changes = slru_changes(&decoded, format, true).map_err(|error| {
                    SourceError::Malformed {
                        lsn: rec.start_lsn,
                        error,
                    }
                })?;
                if let Some(c) = concern(page, &changes) {
                    recs.push((rec, c));
                }
            }
            if let Some(i) = recs.iter().rposition(|(_, c)| matches!(c, Concern::Zero)) {
                recs.drain(..i);
                per_segment.push(recs);
                zero_found = true;
                break;
            }
            per_segment.push(recs);
        }
        if !zero_found {
            let range = self.range_text(lsn);
            return Err(SourceError::NotFound(format!(
                "no record of the readable WAL ({range}) up to {} zeroes {page}: it was made \
                 before; {further}",
                format_lsn(lsn)
            )));
        }
        let mut records = Vec::new();
        for (rec, c) in per_segment.into_iter().rev().flatten() {
            if let Concern::Removed(how) = c {
                return Err(SourceError::NoSuchBlock(format!(
                    "{page} did not exist at {}: the record at {} removed it ({how})",
                    format_lsn(lsn),
                    format_lsn(rec.start_lsn)
                )));
            }
            records.push(rec);
        }
        self.flushed = self.flushed.max(lsn);
        Ok(SlruPlan {
            page: *page,
            lsn,
            records,
        })
    }
}
