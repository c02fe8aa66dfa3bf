//! [`WalSource::history`]: every record of the readable WAL that changes a
//! block, oldest first.

use super::*;

/// One record of a block's history (for `walredo_wal_history`).
// The C ABI's `walredo_history_entry` is this with C strings for names
// (`HistoryEntry<*const c_char>`, cbindgen.toml renames it): its layout is
// part of the ABI.
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry<Name = &'static str> {
    pub start_lsn: u64,
    pub end_lsn: u64,
    pub xid: u32,
    pub rmid: u8,
    pub info: u8,
    /// Carries an image of this block (applicable or not).
    pub has_image: bool,
    /// BKPBLOCK_WILL_INIT for this block.
    pub will_init: bool,
    /// "Heap", "Btree", ... (valid during the callback).
    pub rmgr: Name,
    /// pg_waldump's name: "INSERT", "HOT_UPDATE", "INSERT_LEAF", ... (valid
    /// during the callback; "UNKNOWN" where pg_waldump prints UNKNOWN).
    pub record_type: Name,
}

impl HistoryEntry {
    /// The same entry with its names made by `name` (C strings for C).
    pub fn with_names<N>(&self, mut name: impl FnMut(&'static str) -> N) -> HistoryEntry<N> {
        HistoryEntry {
            start_lsn: self.start_lsn,
            end_lsn: self.end_lsn,
            xid: self.xid,
            rmid: self.rmid,
            info: self.info,
            has_image: self.has_image,
            will_init: self.will_init,
            rmgr: name(self.rmgr),
            record_type: name(self.record_type),
        }
    }
}

impl WalSource {
    /// [`history`](Self::history) of the records that start at or after
    /// `since` (a base backup's start: what came before is in the backup).
    /// With a restore command, the segments from `since`'s on that no
    /// directory has are fetched first (newest first), at most as many as
    /// its cache holds; a segment the archive lacks is `NotFound`, naming it.
    pub fn history_since(
        &mut self,
        tag: &PageTag,
        since: u64,
        end_lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
        each: &mut dyn FnMut(&HistoryEntry) -> bool,
    ) -> Result<(), SourceError> {
        if since == 0 {
            return self.history(tag, end_lsn, interrupt, each);
        }
        self.fetch_back_to(since, end_lsn, interrupt)?;
        self.history(tag, end_lsn, interrupt, &mut |e| {
            e.start_lsn < since || each(e)
        })
    }

    /// With a restore command, fetch the segments no directory has from
    /// the one holding `since` up to the run of present segments that ends
    /// at `end_lsn`'s.
    fn fetch_back_to(
        &mut self,
        since: u64,
        end_lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<(), SourceError> {
        let Some(restore) = self.restore.clone() else {
            return Ok(());
        };
        let mut fetched = 0;
        loop {
            let segs = self.list()?;
            let seg_size = segs.segment_size();
            let top = last_segment(end_lsn, seg_size);
            if Self::run_below(&segs, top).is_some_and(|(low, _)| low <= since / seg_size) {
                return Ok(());
            }
            let Some(wanted) = Self::segment_to_fetch(&segs, top) else {
                return Ok(());
            };
            if fetched >= restore.most_cached() {
                return Err(SourceError::NotFound(format!(
                    "the history from {} needs more segments than the restore cache holds \
                     ({fetched})",
                    format_lsn(since)
                )));
            }
            let name = segs.file_name(wanted);
            if !fetch_segment(&restore, &name, interrupt)? {
                return Err(SourceError::NotFound(format!(
                    "the restore command found no {name}, which the history from {} needs",
                    format_lsn(since)
                )));
            }
            fetched += 1;
        }
    }

    /// Every record of the readable WAL that ends at or before `end_lsn`
    /// and changes `tag`, oldest first; `each` returns false to stop.
    pub fn history(
        &mut self,
        tag: &PageTag,
        end_lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
        each: &mut dyn FnMut(&HistoryEntry) -> bool,
    ) -> Result<(), SourceError> {
        let segs = self.list()?;
        if let Some(entries) = self.history_indexed(&segs, tag, end_lsn, interrupt)? {
            for e in &entries {
                if !each(e) {
                    break;
                }
            }
            return Ok(());
        }
        let seg_size = segs.segment_size();
        let Some((mut low, top)) = Self::run_below(&segs, last_segment(end_lsn, seg_size)) else {
            return Ok(());
        };
        let skip = |me: &Self, s: u64| {
            s < top
                && me
                    .index
                    .get(&s)
                    .is_some_and(|m| !m.blocks.contains_key(tag))
                && !me.removes_in(s, tag)
        };
        // Removals before the block's first record are not part of its
        // history (a database copied long before the block was made).
        let mut used = false;
        let mut s = low;
        while s <= top {
            if skip(self, s) {
                s += 1;
                continue;
            }
            // One reader over the following segments that must be read.
            let mut last = s;
            while last < top && !skip(self, last + 1) {
                last += 1;
            }
            if interrupt() {
                return Err(SourceError::Cancelled);
            }
            let pg_version = self.pg_version.or(segs.pg_version(s)).unwrap_or(15);
            let scanned = self.scan(
                &segs,
                Start::Segment(s),
                last,
                end_lsn,
                Some(tag),
                interrupt,
                &mut |rec, b| {
                    if b.removal.is_none() {
                        used = true;
                    } else if !used {
                        return true;
                    }
                    let (rmid, info) = (rec.rmid(), rec.info());
                    each(&HistoryEntry {
                        start_lsn: rec.start_lsn,
                        end_lsn: rec.end_lsn,
                        xid: rec.xid(),
                        rmid,
                        info,
                        has_image: b.has_image,
                        will_init: b.will_init,
                        rmgr: rmgr_name(rmid),
                        record_type: record_type_name_for(pg_version, rmid, info)
                            .unwrap_or("UNKNOWN"),
                    })
                },
                None,
            )?;
            match scanned.end {
                ScanEnd::Stopped => return Ok(()),
                ScanEnd::NextSegment => {}
                // The newest WAL: nothing more to read.
                ScanEnd::Limit => return Ok(()),
                ScanEnd::EndOfWal { at, why, damaged } => {
                    if damaged {
                        return Err(SourceError::Corrupt {
                            lsn: at,
                            end: end_lsn,
                            why,
                        });
                    }
                    if later_wal_exists(&segs, at / seg_size, top) {
                        return Err(SourceError::NotFound(format!(
                            "the WAL cannot be read past {} ({why}), although later segments hold \
                             WAL: a segment changed while it was read, or is damaged",
                            format_lsn(at)
                        )));
                    }
                    // WAL never written, below a position given as flushed.
                    if end_lsn != u64::MAX && next_record_start(at, seg_size) < end_lsn {
                        return Err(SourceError::NotFound(format!(
                            "the WAL ends at {} ({why}), before {}: pass an LSN the server has \
                             flushed (u64::MAX: to the end of the WAL)",
                            format_lsn(at),
                            format_lsn(end_lsn)
                        )));
                    }
                    return Ok(());
                }
                // The oldest segment cannot be read (being removed): the
                // readable WAL starts after it.
                ScanEnd::Unreadable(_) if s == low => {
                    low += 1;
                    s += 1;
                    continue;
                }
                ScanEnd::Unreadable(e) => {
                    if later_wal_exists(&segs, s, top) {
                        return Err(e.into());
                    }
                    return Ok(());
                }
            }
            s = last + 1;
        }
        Ok(())
    }
}

impl WalSource {
    /// The history from the index alone, reading only the block's records,
    /// when every segment of the readable WAL up to `end_lsn` (a flushed
    /// position; not u64::MAX) is indexed or can be now. None: the walk
    /// that reads the segments answers (and says what is wrong, when
    /// something is). Each record read must be the one indexed there, else
    /// everything learnt is forgotten.
    fn history_indexed(
        &mut self,
        segs: &Arc<Segments>,
        tag: &PageTag,
        end_lsn: u64,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Vec<HistoryEntry>>, SourceError> {
        if end_lsn == u64::MAX {
            return Ok(None);
        }
        let seg_size = segs.segment_size();
        let flushed = self.flushed.max(end_lsn);
        let Some((low, top)) = Self::run_below(segs, last_segment(end_lsn, seg_size)) else {
            return Ok(None);
        };
        for s in low..=top {
            if self.seg_view(s, end_lsn).is_none()
                && !(self.index_segment(segs, s, flushed, interrupt)?
                    && self.seg_view(s, end_lsn).is_some())
            {
                return Ok(None);
            }
        }
        // The records that change the block or remove it, oldest first; a
        // record that does both is one that changes it.
        let mut items: Vec<(Use, bool)> = Vec::new();
        for s in low..=top {
            let Some(Some(seg)) = self.seg_view(s, end_lsn) else {
                continue;
            };
            let at = items.len();
            items.extend(
                seg.uses(tag)
                    .filter(|u| u.end <= end_lsn)
                    .map(|u| (u, false)),
            );
            for (span, r) in &seg.removals {
                if span.end <= end_lsn && r.covers(tag) {
                    let u = Use {
                        start: span.start,
                        end: span.end,
                        initializes: false,
                    };
                    items.push((u, true));
                }
            }
            items[at..].sort_by_key(|(u, removal)| (u.start, *removal));
        }
        items.dedup_by_key(|(u, _)| u.start);
        // Removals before the block's first record are not part of its
        // history (a database copied long before the block was made).
        let first_use = items.iter().position(|(_, removal)| !removal);
        items.drain(..first_use.unwrap_or(items.len()));
        let uses: Vec<Use> = items.iter().map(|(u, _)| *u).collect();
        let mut entries = Vec::with_capacity(uses.len());
        let pg_version = self.pg_version.unwrap_or(15);
        for chunk in uses.chunks(INTERRUPT_EVERY as usize) {
            if interrupt() {
                return Err(SourceError::Cancelled);
            }
            let fetched = self.fetch(segs, chunk, end_lsn, &mut |rec, pages, removals| {
                let (u, removal) = items[entries.len()];
                let (has_image, will_init) = match pages.iter().find(|p| p.tag == *tag) {
                    Some(p) if !removal && p.initializes() == u.initializes => {
                        (p.has_image(), p.will_init())
                    }
                    None if removal && removals.iter().any(|r| r.covers(tag)) => (false, false),
                    _ => return false,
                };
                let (rmid, info) = (rec.rmid(), rec.info());
                entries.push(HistoryEntry {
                    start_lsn: rec.start_lsn,
                    end_lsn: rec.end_lsn,
                    xid: rec.xid(),
                    rmid,
                    info,
                    has_image,
                    will_init,
                    rmgr: rmgr_name(rmid),
                    record_type: record_type_name_for(pg_version, rmid, info).unwrap_or("UNKNOWN"),
                });
                true
            });
            if !fetched {
                return Ok(None);
            }
        }
        self.flushed = flushed;
        Ok(Some(entries))
    }
}
