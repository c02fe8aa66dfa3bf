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
