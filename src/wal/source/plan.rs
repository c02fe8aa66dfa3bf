//! [`WalSource::plan`]: the records that rebuild a block as of an LSN, found
//! by reading segments back from the LSN to the block's starting point.

use super::*;

/// What [`WalSource::fetch`] hands each record to: the record, the pages it
/// changes, what it removes; true when it is the record indexed.
type FetchFn<'a> = dyn FnMut(WalRecord, &[pages::RecordPage], &[Removal]) -> bool + 'a;

/// A lookup of what the directories hold now, given the source and the
/// interrupt callback ([`WalSource::with_restore_retry`]).
pub(super) type Lookup<'a, T> =
    dyn FnMut(&mut WalSource, &mut dyn FnMut() -> bool) -> Result<T, SourceError> + 'a;

/// Pages one read takes when a plan fetches its records one by one (they
/// are often far apart).
const FETCH_CHUNK_PAGES: u64 = 4;

/// The records that rebuild `tag` as of `lsn`, oldest first: the first one
/// initializes the page (an applicable full-page image, or will-init).
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub tag: PageTag,
    pub lsn: u64,
    pub records: Vec<WalRecord>,
    /// The records apply to a base page (the block as a base backup holds
    /// it): no record after the plan's floor initializes the page
    /// ([`WalSource::plan_on_base`]). False: the first record initializes it.
    pub on_base: bool,
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
    ///
    /// With a restore command ([`WalSource::set_restore`]), a plan the
    /// directories cannot answer fetches the segment that would reach
    /// further (the one holding `lsn`, else the one before the oldest of the
    /// present run that ends there) and is made again, until it is answered
    /// or the archive has no such segment (then the error says so), at most
    /// as many times as the restore cache holds segments.
    pub fn plan(
        &mut self,
        tag: &PageTag,
        lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<ReplayPlan, SourceError> {
        self.with_restore_retry(lsn, interrupt, &mut |me, interrupt| {
            me.plan_readable(tag, lsn, 0, interrupt)
        })
    }

    /// [`plan`](Self::plan) for a caller that has the block as a base backup
    /// holds it, the backup starting at `base_lsn` (its backup_label's START
    /// WAL LOCATION, a record start): WAL older than `base_lsn` is never
    /// needed, nor fetched. When no record in `base_lsn..lsn` initializes the
    /// page, the plan is every record of the block that starts at or after
    /// `base_lsn` and ends at or before `lsn` (maybe none), `on_base`: they
    /// apply to the backup's page, which may hold any version of the page
    /// from `base_lsn` on (as PostgreSQL's recovery of a base backup
    /// assumes: each redo routine skips a record its page is already past).
    pub fn plan_on_base(
        &mut self,
        tag: &PageTag,
        lsn: u64,
        base_lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<ReplayPlan, SourceError> {
        if base_lsn == 0 || base_lsn > lsn {
            return Err(SourceError::NotFound(format!(
                "the base backup starts at {}, after {}: it cannot rebuild the page as of that LSN",
                format_lsn(base_lsn),
                format_lsn(lsn)
            )));
        }
        self.with_restore_retry(lsn, interrupt, &mut |me, interrupt| {
            me.plan_readable(tag, lsn, base_lsn, interrupt)
        })
    }

    /// `body`, a lookup of what the directories hold now; with a restore
    /// command, when it is not found, the segment that would reach further
    /// is fetched (the one holding `lsn`, else the one before the oldest of
    /// the present run that ends there) and `body` made again, until it is
    /// found or the archive has no such segment (then the error says so),
    /// at most as many times as the restore cache holds segments.
    pub(super) fn with_restore_retry<T>(
        &mut self,
        lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
        body: &mut Lookup<'_, T>,
    ) -> Result<T, SourceError> {
        let mut fetched = 0;
        loop {
            let answer = body(self, interrupt);
            let Some(restore) = self.restore.clone() else {
                return answer;
            };
            let Err(SourceError::NotFound(why)) = answer else {
                return answer;
            };
            if fetched >= restore.most_cached() {
                return Err(SourceError::NotFound(format!(
                    "{why} (the restore command fetched {fetched} segments, as many as its \
                     cache holds)"
                )));
            }
            let segs = self.list()?;
            let s_lsn = last_segment(lsn, segs.segment_size());
            let Some(wanted) = Self::segment_to_fetch(&segs, s_lsn) else {
                return Err(SourceError::NotFound(why));
            };
            let name = segs.file_name(wanted);
            if !fetch_segment(&restore, &name, interrupt)? {
                return Err(SourceError::NotFound(format!(
                    "{why} (the restore command found no {name})"
                )));
            }
            fetched += 1;
        }
    }

    /// [`plan`](Self::plan) from what the directories hold now; `floor`
    /// (0: none) as [`plan_on_base`](Self::plan_on_base)'s `base_lsn`.
    fn plan_readable(
        &mut self,
        tag: &PageTag,
        lsn: u64,
        floor: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<ReplayPlan, SourceError> {
        let segs = self.list()?;
        if let Some(plan) = self.plan_indexed(&segs, tag, lsn, floor, interrupt)? {
            return Ok(plan);
        }
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
        let floor_seg = floor / seg_size;
        if floor > 0 && low_readable > floor_seg {
            return Err(SourceError::NotFound(format!(
                "the base backup starts at {}, before the oldest readable WAL record, at {}; \
                 {further}",
                format_lsn(floor),
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
        for s in (low_readable.max(floor_seg)..=top).rev() {
            if interrupt() {
                return Err(SourceError::Cancelled);
            }
            let mut start = Start::Segment(s);
            if s < s_lsn {
                if let Some(seg) = self.index.get(&s) {
                    match seg.newest_init(tag) {
                        None if !seg.blocks.contains_key(tag) && !self.removes_in(s, tag) => {
                            continue
                        }
                        // Its newest starting point, if it is complete at
                        // `lsn`; else every record of the segment that is.
                        Some(init) if init.end <= lsn => start = Start::Lsn(init.start),
                        _ => {}
                    }
                }
            }
            let mut recs: Vec<WalRecord> = Vec::new();
            let mut last_init: Option<usize> = None;
            let scanned = self.scan(
                &segs,
                start,
                s,
                lsn,
                Some(tag),
                interrupt,
                &mut |rec, b| {
                    // The base backup holds what came before its start.
                    if rec.start_lsn < floor {
                        return true;
                    }
                    // A removal starts the page's life over, as an
                    // initializing record does: nothing before it counts.
                    if b.initializes || b.removal.is_some() {
                        last_init = Some(recs.len());
                        removed_by = b.removal;
                    }
                    recs.push(rec);
                    true
                },
                None,
            )?;
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
        // Without a starting point since the floor, the base page is one.
        let on_base = !found && floor > 0;
        if !found && !on_base {
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
        self.flushed = self.flushed.max(lsn);
        Ok(ReplayPlan {
            tag: *tag,
            lsn,
            records,
            on_base,
        })
    }

    /// What the index holds of segment `s` as of `lsn`: Some(Some(index)),
    /// Some(None) when no record that starts in it ends at or before `lsn`
    /// (the partial segment's next record, before it, ends after), None
    /// when it is not indexed that far.
    pub(super) fn seg_view(&self, s: u64, lsn: u64) -> Option<Option<&SegIndex>> {
        if let Some(seg) = self.index.get(&s) {
            return Some(Some(seg));
        }
        let p = self.partial.as_ref().filter(|p| p.covered >= lsn)?;
        match p.segno.cmp(&s) {
            std::cmp::Ordering::Equal => Some(Some(&p.index)),
            std::cmp::Ordering::Less => Some(None),
            std::cmp::Ordering::Greater => None,
        }
    }

    /// Index segment `s` up to `flushed` (a flushed position): from its
    /// start, or on from where the partial segment stopped when it is `s`.
    /// False when it cannot be read so: the reading lookups say why.
    pub(super) fn index_segment(
        &mut self,
        segs: &Arc<Segments>,
        s: u64,
        flushed: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<bool, SourceError> {
        let (start, resume) = match self.partial.take() {
            Some(p) if p.segno == s => (Start::Lsn(p.next), Some(p)),
            other => {
                self.partial = other;
                (Start::Segment(s), None)
            }
        };
        let found = &mut |_, _| true;
        match self.scan(segs, start, s, flushed, None, interrupt, found, resume) {
            Ok(scanned) => Ok(matches!(scanned.end, ScanEnd::NextSegment | ScanEnd::Limit)),
            Err(SourceError::Cancelled) => Err(SourceError::Cancelled),
            Err(_) => Ok(false),
        }
    }

    /// Read the records `uses` index (oldest first, ending at or before
    /// `lsn`) one by one: `each` gets the record, the pages it changes and
    /// the removals it makes, and says whether it is the record indexed.
    /// False when one cannot be read, is not where the index says, or
    /// `each` says it is not: then everything learnt is forgotten (the WAL
    /// read is not the WAL indexed).
    pub(super) fn fetch(
        &mut self,
        segs: &Arc<Segments>,
        uses: &[Use],
        lsn: u64,
        each: &mut FetchFn<'_>,
    ) -> bool {
        let Some(first) = uses.first() else {
            return true;
        };
        let Ok(mut reader) = WalReader::open_segments_chunked(
            Arc::clone(segs),
            Start::Lsn(first.start),
            self.system_id,
            FETCH_CHUNK_PAGES,
        ) else {
            return false;
        };
        reader.set_limit(lsn);
        let format = RecordFormat::of_version(reader.pg_version());
        for u in uses {
            self.records_read += 1;
            let rec = match reader.seek(u.start).map(|()| reader.next_record()) {
                Ok(Ok(Some(rec))) if rec.start_lsn == u.start && rec.end_lsn == u.end => rec,
                _ => {
                    self.forget();
                    return false;
                }
            };
            let decoded = record::decode_unchecked_crc_as(&rec.data, format);
            let (pages, removals) = match decoded
                .and_then(|d| Ok((pages::record_pages(&d)?, lifetime::removals(&d)?)))
            {
                Ok(both) => both,
                Err(_) => {
                    self.forget();
                    return false;
                }
            };
            if !each(rec, &pages, &removals) {
                self.forget();
                return false;
            }
        }
        true
    }

    /// Whether a record of segment `s` (read whole) removes `tag`.
    pub(super) fn removes_in(&self, s: u64, tag: &PageTag) -> bool {
        self.index
            .get(&s)
            .is_some_and(|m| m.removals.iter().any(|(_, r)| r.covers(tag)))
    }

    /// The plan from the index alone, reading only the block's records,
    /// when the index answers: every segment from the one holding `lsn`
    /// back to the block's starting point indexed (those that are not yet
    /// are read whole now, up to the highest LSN ever asked for, which is
    /// flushed; the newest one goes on from where the last lookup stopped),
    /// no removal of the block after that starting point. None: the
    /// lookup that reads the WAL itself answers (and says what is wrong,
    /// when something is). Each record read must be the one indexed there
    /// (its start, its end, a change of the block), else everything learnt
    /// is forgotten: the WAL read is not the WAL indexed.
    fn plan_indexed(
        &mut self,
        segs: &Arc<Segments>,
        tag: &PageTag,
        lsn: u64,
        floor: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<Option<ReplayPlan>, SourceError> {
        let seg_size = segs.segment_size();
        let flushed = self.flushed.max(lsn);
        // Newest first, back to (and with) the starting point.
        let mut uses: Vec<Use> = Vec::new();
        let mut removed_after: Option<u64> = None;
        let mut s = last_segment(lsn, seg_size);
        let mut read_now = false;
        let init = loop {
            if !segs.contains(s) {
                return Ok(None);
            }
            let Some(seg) = self.seg_view(s, lsn) else {
                // Not indexed yet: read it (once).
                if read_now || !self.index_segment(segs, s, flushed, interrupt)? {
                    return Ok(None);
                }
                read_now = true;
                continue;
            };
            read_now = false;
            let mut init = None;
            if let Some(seg) = seg {
                for (span, r) in &seg.removals {
                    if span.end <= lsn && span.start >= floor && r.covers(tag) {
                        removed_after = removed_after.max(Some(span.start));
                    }
                }
                for u in seg
                    .uses(tag)
                    .rev()
                    .filter(|u| u.end <= lsn && u.start >= floor)
                {
                    uses.push(u);
                    if u.initializes {
                        init = Some(u);
                        break;
                    }
                }
            }
            if let Some(init) = init {
                break Some(init);
            }
            // The base backup holds what came before its start.
            if floor > 0 && s <= floor / seg_size {
                break None;
            }
            if interrupt() {
                return Err(SourceError::Cancelled);
            }
            if s == 0 {
                return Ok(None);
            }
            s -= 1;
        };
        // A removal since: the lookup that reads says what it means.
        if removed_after.is_some_and(|r| r >= init.map_or(floor, |i| i.start)) {
            return Ok(None);
        }
        uses.reverse();
        let mut records = Vec::with_capacity(uses.len());
        let fetched = self.fetch(segs, &uses, lsn, &mut |rec, pages, _| {
            let changes = pages
                .iter()
                .any(|p| p.tag == *tag && p.initializes() == uses[records.len()].initializes);
            if changes {
                records.push(rec);
            }
            changes
        });
        if !fetched {
            return Ok(None);
        }
        self.flushed = flushed;
        Ok(Some(ReplayPlan {
            tag: *tag,
            lsn,
            records,
            on_base: init.is_none(),
        }))
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
            .index
            .range(lsn / seg_size..)
            .filter_map(|(_, m)| m.newest_init(tag))
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
