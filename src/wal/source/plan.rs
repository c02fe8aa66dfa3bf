//! [`WalSource::plan`]: the records that rebuild a block as of an LSN, found
//! by reading segments back from the LSN to the block's starting point.

use super::*;

/// The records that rebuild `tag` as of `lsn`, oldest first: the first one
/// initializes the page (an applicable full-page image, or will-init).
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub tag: PageTag,
    pub lsn: u64,
    pub records: Vec<WalRecord>,
}

impl ReplayPlan {
    /// The records, ready for [`crate::Pool::redo`] with no base page.
    pub fn record_refs(&self) -> Vec<RecordRef<'_>> {
        self.records
            .iter()
            .map(|r| RecordRef {
                end_lsn: r.end_lsn,
                data: &r.data,
            })
            .collect()
    }
}

impl WalSource {
    /// The records that rebuild `tag` as of `lsn` (after every record that
    /// ends at or before it; nothing after it is read): the newest record at
    /// or before `lsn` that initializes the page, then every later record
    /// that changes it. `interrupt` is asked every few thousand records
    /// whether to stop.
    pub fn plan(
        &mut self,
        tag: &PageTag,
        lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<ReplayPlan, SourceError> {
        let segs = self.list()?;
        let seg_size = segs.segment_size();
        let s_lsn = last_segment(lsn, seg_size);
        let further = "an archive directory holding older segments, or a larger wal_keep_size, \
                       would reach further";
        let run = Self::run_below(&segs, s_lsn);
        let oldest = match run {
            Some((low, top)) => self.oldest_start(&segs, low, top, lsn)?,
            None => None,
        };
        let (Some((_, top)), Some((low_readable, oldest))) = (run, oldest) else {
            let oldest = match segs.present().next() {
                Some(s) => format!(" (the oldest segment present is {})", segs.file_name(s)),
                None => String::new(),
            };
            return Err(SourceError::NotFound(format!(
                "LSN {} is before the oldest readable WAL record{oldest}; {further}",
                format_lsn(lsn)
            )));
        };
        if lsn < oldest {
            return Err(SourceError::NotFound(format!(
                "LSN {} is before the oldest readable WAL record, at {}; {further}",
                format_lsn(lsn),
                format_lsn(oldest)
            )));
        }
        let after_newest = |me: &mut Self, detail: String| {
            let range = me.range_text(lsn);
            SourceError::NotFound(format!(
                "LSN {} is after the newest readable WAL record ({detail}; readable: {range}): \
                 pass an LSN the server has flushed",
                format_lsn(lsn)
            ))
        };
        if top < s_lsn {
            return Err(after_newest(
                self,
                format!("segment {} is not present", segs.file_name(s_lsn)),
            ));
        }

        // Newest segment first; each holds the block's records that start in it.
        let mut per_segment: Vec<Vec<WalRecord>> = Vec::new();
        let mut found = false;
        let mut oldest_use: Option<u64> = None;
        let mut removed_by: Option<Removal> = None;
        for s in (low_readable..=top).rev() {
            if interrupt() {
                return Err(SourceError::Cancelled);
            }
            let mut start = Start::Segment(s);
            if s < s_lsn {
                if let Some(summary) = self.summaries.get(&s) {
                    match summary.get(tag) {
                        None if !self.removes_in(s, tag) => continue,
                        // Its newest starting point, if it is complete at
                        // `lsn`; else every record of the segment that is.
                        Some(Some(init)) if init.end <= lsn => start = Start::Lsn(init.start),
                        _ => {}
                    }
                }
            }
            let mut recs: Vec<WalRecord> = Vec::new();
            let mut last_init: Option<usize> = None;
            let scanned =
                self.scan(&segs, start, s, lsn, Some(tag), interrupt, &mut |rec, b| {
                    // A removal starts the page's life over, as an
                    // initializing record does: nothing before it counts.
                    if b.initializes || b.removal.is_some() {
                        last_init = Some(recs.len());
                        removed_by = b.removal;
                    }
                    recs.push(rec);
                    true
                })?;
            match scanned.end {
                ScanEnd::NextSegment | ScanEnd::Limit | ScanEnd::Stopped => {}
                ScanEnd::EndOfWal { at, why, damaged } => {
                    if next_record_start(at, seg_size) < lsn {
                        if damaged {
                            return Err(SourceError::Corrupt {
                                lsn: at,
                                end: lsn,
                                why,
                            });
                        }
                        if per_segment.iter().all(Vec::is_empty) && s == top {
                            return Err(after_newest(
                                self,
                                format!("the WAL ends at {}: {why}", format_lsn(at)),
                            ));
                        }
                        return Err(SourceError::NotFound(format!(
                            "the WAL cannot be read past {} ({why}), although later WAL was read: \
                             a segment changed while it was read; {further}",
                            format_lsn(at)
                        )));
                    }
                }
                ScanEnd::Unreadable(e) => {
                    if s == s_lsn {
                        return Err(after_newest(self, e.to_string()));
                    }
                    // The readable WAL begins after this segment.
                    if !found {
                        let range = self.range_text(lsn);
                        let why = format!(
                            "segment {} cannot be read ({e}); {further}",
                            segs.file_name(s)
                        );
                        return Err(self.no_start(tag, lsn, seg_size, oldest_use, &range, &why));
                    }
                }
            }
            if let Some(first) = recs.first() {
                oldest_use = Some(first.start_lsn);
            }
            if let Some(i) = last_init {
                recs.drain(..i);
                per_segment.push(recs);
                found = true;
                break;
            }
            per_segment.push(recs);
        }
        if !found {
            if tag.forknum == FSM_FORKNUM {
                return Err(lifetime::fsm_not_logged(tag, lsn));
            }
            let range = self.range_text(lsn);
            return Err(self.no_start(tag, lsn, seg_size, oldest_use, &range, further));
        }
        let records: Vec<WalRecord> = per_segment.into_iter().rev().flatten().collect();
        if let Some(removal) = removed_by {
            let pg_version = self.pg_version.unwrap_or(15);
            return Err(lifetime::after_removal(
                tag, lsn, removal, &records, pg_version,
            ));
        }
        Ok(ReplayPlan {
            tag: *tag,
            lsn,
            records,
        })
    }

    /// Whether a record of segment `s` (read whole) removes `tag`.
    pub(super) fn removes_in(&self, s: u64, tag: &PageTag) -> bool {
        self.removals
            .get(&s)
            .is_some_and(|v| v.iter().any(|r| r.covers(tag)))
    }

    /// The NOT_FOUND of a block without a starting point at or before `lsn`.
    fn no_start(
        &self,
        tag: &PageTag,
        lsn: u64,
        seg_size: u64,
        oldest_use: Option<u64>,
        range: &str,
        further: &str,
    ) -> SourceError {
        let Some(oldest_use) = oldest_use else {
            return SourceError::NotFound(format!(
                "no record of the readable WAL ({range}) up to {} references {tag}: the block \
                 was not changed in that WAL, or its relation fork or block does not exist; {further}",
                format_lsn(lsn)
            ));
        };
        // A starting point after lsn that an earlier lookup saw.
        let later = self
            .summaries
            .range(lsn / seg_size..)
            .filter_map(|(_, m)| m.get(tag).copied().flatten())
            .map(|init| init.start)
            .find(|&start| start > lsn);
        let from = match later {
            Some(init) => format!(
                "; the page can be rebuilt as of the end of the record at {} or later",
                format_lsn(init)
            ),
            None => String::new(),
        };
        SourceError::NotFound(format!(
            "{tag} has no full-page image or initializing record at or before {} in the \
             readable WAL ({range}): its oldest record there, at {}, changes an older version \
             of the page{from}; {further}",
            format_lsn(lsn),
            format_lsn(oldest_use)
        ))
    }
}
