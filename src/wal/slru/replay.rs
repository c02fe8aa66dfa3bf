//! Replaying a stretch of WAL onto every SLRU page and relation map it
//! changes, record by record as the WAL is read: what `walredo verify` keeps
//! beside its relation-page plan. Each page is read from a base directory
//! when a record first changes it (a page its file lacks is zeros, as
//! recovery reads it) and then changed in memory: memory holds the touched
//! pages only (8 KB each), never the records.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::datadir::read_slru_page;
use crate::pg::slru::*;
use crate::wal::record::DecodedRecord;
use crate::PAGE_SIZE;

use super::{
    apply_to_slru_page, relmap_update, slru_changes, RelMapFile, SlruChange, SlruKind, SlruPage,
};

/// A truncation a record asked for, with the LSN of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlruRemoval {
    pub lsn: u64,
    pub change: SlruChange,
}

/// Every SLRU page and relation map of a stretch of WAL, as recovery leaves
/// them after it ([`SlruReplay::add`] each record in order).
pub struct SlruReplay {
    base: PathBuf,
    format: SlruFormat,
    commit_ts_active: bool,
    /// Each page changed, and the LSN of the last record that changed it.
    pages: HashMap<SlruPage, (Box<[u8; PAGE_SIZE]>, u64)>,
    /// Each map written: the last RelMap UPDATE's file and its LSN.
    maps: BTreeMap<RelMapFile, (Vec<u8>, u64)>,
    removals: Vec<SlruRemoval>,
    /// The LSN of the last XLOG PARAMETER_CHANGE that turned commit
    /// timestamps off (recovery then deletes every `pg_commit_ts` file).
    commit_ts_deactivated: Option<u64>,
}

impl SlruReplay {
    /// Start from data directory `base` (its segment files are read as
    /// pages are first changed) of PostgreSQL `format`, with commit
    /// timestamps `commit_ts_active` as its `pg_control` says
    /// (`track_commit_timestamp`).
    pub fn new(base: PathBuf, format: SlruFormat, commit_ts_active: bool) -> SlruReplay {
        SlruReplay {
            base,
            format,
            commit_ts_active,
            pages: HashMap::new(),
            maps: BTreeMap::new(),
            removals: Vec::new(),
            commit_ts_deactivated: None,
        }
    }

    /// Replay one record (ending at `lsn`) onto the pages it changes.
    pub fn add(&mut self, decoded: &DecodedRecord<'_>, lsn: u64) -> Result<(), String> {
        let changes =
            slru_changes(decoded, self.format, self.commit_ts_active).map_err(|e| e.to_string())?;
        for change in changes {
            match change {
                SlruChange::Set(page) | SlruChange::Zero(page) => {
                    let entry = match self.pages.entry(page) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let start = if change.initializes() {
                                None
                            } else {
                                read_slru_page(&self.base, &page)
                                    .map_err(|e| format!("cannot read {page} from the base: {e}"))?
                            };
                            e.insert((start.unwrap_or_else(|| Box::new([0; PAGE_SIZE])), lsn))
                        }
                    };
                    apply_to_slru_page(page, &mut entry.0, decoded, self.format)
                        .map_err(|e| e.to_string())?;
                    entry.1 = lsn;
                }
                SlruChange::RelMap(file) => {
                    let (_, bytes) = relmap_update(decoded, self.format)
                        .map_err(|e| e.to_string())?
                        .expect("a RelMap change comes from a RelMap UPDATE");
                    self.maps.insert(file, (bytes.to_vec(), lsn));
                }
                SlruChange::Truncate { .. } | SlruChange::DeleteSegments { .. } => {
                    self.removals.push(SlruRemoval { lsn, change })
                }
                // `xlog.c: xlog_redo` for PARAMETER_CHANGE:
                // `CommitTsParameterChange` turning commit timestamps off
                // deletes every `pg_commit_ts` file.
                SlruChange::CommitTsActive(active) => {
                    if self.commit_ts_active && !active {
                        self.pages.retain(|p, _| p.kind != SlruKind::CommitTs);
                        self.commit_ts_deactivated = Some(lsn);
                    }
                    self.commit_ts_active = active;
                }
            }
        }
        Ok(())
    }

    /// Each page changed, with its bytes and the LSN of its last change.
    pub fn pages(&self) -> impl Iterator<Item = (&SlruPage, &[u8; PAGE_SIZE], u64)> {
        self.pages
            .iter()
            .map(|(p, (bytes, lsn))| (p, &**bytes, *lsn))
    }

    /// Each relation map written, with the last record's bytes and LSN.
    pub fn maps(&self) -> impl Iterator<Item = (&RelMapFile, &[u8], u64)> {
        self.maps
            .iter()
            .map(|(f, (bytes, lsn))| (f, &bytes[..], *lsn))
    }

    /// Whether a change after `lsn` removed `page`'s segment file
    /// ([`SlruChange::removes`]), or commit timestamps were turned off after
    /// it.
    pub fn removed_after(&self, page: &SlruPage, lsn: u64) -> bool {
        if page.kind == SlruKind::CommitTs && self.commit_ts_deactivated.is_some_and(|at| at > lsn)
        {
            return true;
        }
        self.removals
            .iter()
            .any(|r| r.lsn > lsn && r.change.removes(page))
    }
}
