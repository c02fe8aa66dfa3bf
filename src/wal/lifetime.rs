//! When blocks stop existing: the records after which a block is gone until
//! a later record initializes it again. A page asked for at an LSN after such
//! a record (and before any re-initialization) did not exist then, and the
//! older version of the page that the WAL still holds must not be given.
//!
//! What PostgreSQL 15 to 18's redo removes (storage.c, xact.c,
//! dbcommands.c):
//! - Storage TRUNCATE: the main fork from the new length on
//!   (`SMGR_TRUNCATE_HEAP`), the visibility map from the first map page that
//!   holds no kept heap block (`SMGR_TRUNCATE_VM`,
//!   `visibilitymap_prepare_truncate`; the page the cut falls into is changed,
//!   see [`crate::wal::pages`]), the free-space map from the first page that
//!   holds no kept heap block (`SMGR_TRUNCATE_FSM`,
//!   `FreeSpaceMapPrepareTruncateRel`);
//! - Transaction COMMIT, COMMIT_PREPARED, ABORT and ABORT_PREPARED with
//!   relation files (`XACT_XINFO_HAS_RELFILENODES`): every fork of each
//!   (DROP TABLE, TRUNCATE, a rewrite, a rolled-back CREATE);
//! - Database DROP: every relation file of the database in the tablespaces
//!   it names;
//! - Database CREATE_FILE_COPY (`STRATEGY FILE_COPY`): the database's
//!   directory is removed and replaced by a copy of the template's files,
//!   which the WAL does not hold.
//!
//! Storage CREATE adds an empty fork and removes nothing; CREATE_WAL_LOG
//! (the default strategy) logs every copied page.

use std::fmt;

use crate::pg::bytes::le_u32;
use crate::pg::record::{RecordFormat, XLR_RMGR_INFO_MASK};
use crate::pg::record_type::{
    record_type_name_for, XLOG_DBASE_CREATE_FILE_COPY, XLOG_DBASE_DROP, XLOG_DBASE_DROP_14,
    XLOG_XACT_ABORT, XLOG_XACT_ABORT_PREPARED, XLOG_XACT_COMMIT, XLOG_XACT_COMMIT_PREPARED,
    XLOG_XACT_HAS_INFO, XLOG_XACT_OPMASK,
};
use crate::pg::rmgr::{rmgr_name, RM_DBASE_ID, RM_XACT_ID};
use crate::tag::{PageTag, RelFileNode, FSM_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
use crate::wal::pages::{self, SMGR_TRUNCATE_VM, VM_HEAPBLOCKS_PER_PAGE};
use crate::wal::record::{DecodedRecord, RecordError};
use crate::wal::source::SourceError;
use crate::wal::{format_lsn, WalRecord};

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;

const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
const SMGR_TRUNCATE_FSM: u32 = 0x0004;

/// Leaf slots of a free-space-map page (`SlotsPerFSMPage` for 8 KiB pages:
/// the page's nodes, `BLCKSZ - 24 - 4`, less its `BLCKSZ / 2 - 1` inner nodes).
const FSM_SLOTS_PER_PAGE: u64 = (8192 - 24 - 4) - (8192 / 2 - 1);
/// Levels of the free-space map's tree (`FSM_TREE_DEPTH`).
const FSM_TREE_DEPTH: u32 = 3;

/// What a record removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Blocks `from` and up of one fork of a relation (Storage TRUNCATE).
    Truncate {
        rel: RelFileNode,
        forknum: u8,
        from: u32,
    },
    /// Every fork of a relation (its files unlinked at commit or abort).
    Drop { rel: RelFileNode },
    /// Every relation of a database in a tablespace (DROP DATABASE).
    DropDatabase { spcnode: u32, dbnode: u32 },
    /// Every relation of a database in a tablespace, replaced by a copy of
    /// another database's files that the WAL does not hold
    /// (CREATE DATABASE ... STRATEGY FILE_COPY).
    CopyDatabase {
        spcnode: u32,
        dbnode: u32,
        src_spcnode: u32,
        src_dbnode: u32,
    },
}

impl Removal {
    /// Whether the block is gone after the record.
    pub fn covers(&self, tag: &PageTag) -> bool {
        match *self {
            Removal::Truncate { rel, forknum, from } => {
                tag.rel == rel && tag.forknum == forknum && tag.blkno >= from
            }
            Removal::Drop { rel } => tag.rel == rel,
            Removal::DropDatabase { spcnode, dbnode }
            | Removal::CopyDatabase {
                spcnode, dbnode, ..
            } => tag.rel.spcnode == spcnode && tag.rel.dbnode == dbnode,
        }
    }

    /// The block's content after the record comes from files the WAL does
    /// not hold (a copied database), rather than from nothing.
    pub fn replaced_outside_wal(&self) -> bool {
        matches!(self, Removal::CopyDatabase { .. })
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::Truncate { rel, forknum, from } => write!(
                f,
                "truncated fork {forknum} of relation {rel} to {from} block{}",
                if *from == 1 { "" } else { "s" }
            ),
            Removal::Drop { rel } => write!(f, "dropped the files of relation {rel}"),
            Removal::DropDatabase { spcnode, dbnode } => {
                write!(f, "dropped database {dbnode} (in tablespace {spcnode})")
            }
            Removal::CopyDatabase {
                spcnode,
                dbnode,
                src_spcnode,
                src_dbnode,
            } => write!(
                f,
                "made database {dbnode} (in tablespace {spcnode}) by copying the files of \
                 database {src_dbnode} (tablespace {src_spcnode}) (CREATE DATABASE's file copy: \
                 STRATEGY FILE_COPY from PostgreSQL 15, the only way before): those files are \
                 not in WAL"
            ),
        }
    }
}

/// The answer for `tag` as of `lsn` when the newest record at or before `lsn`
/// that starts its life over is the first of `records`, which removes it
/// (`removal`), followed by the rest of the block's records: the block did
/// not exist (nothing made it again), or its content is not in WAL. The one
/// rule for every user of a plan; only the first two records are looked at.
/// The records are PostgreSQL `pg_version`'s (their names differ).
pub fn after_removal<'a>(
    tag: &PageTag,
    lsn: u64,
    removal: Removal,
    records: impl IntoIterator<Item = &'a WalRecord>,
    pg_version: u32,
) -> SourceError {
    let mut records = records.into_iter();
    let Some(first) = records.next() else {
        return SourceError::NoSuchBlock(format!("{tag} did not exist at {}", format_lsn(lsn)));
    };
    let by = format!(
        "the record at {} ({}/{}) {removal}",
        format_lsn(first.start_lsn),
        rmgr_name(first.rmid()),
        record_type_name_for(pg_version, first.rmid(), first.info()).unwrap_or("UNKNOWN")
    );
    match (records.next(), removal.replaced_outside_wal()) {
        (None, false) => SourceError::NoSuchBlock(format!(
            "{tag} did not exist at {}: {by}, and no record up to that LSN made the block again",
            format_lsn(lsn)
        )),
        // Not WAL-logged at all: that, rather than the copy, is the reason.
        (None, true) if tag.forknum == FSM_FORKNUM => fsm_not_logged(tag, lsn),
        // No record of the block since the copy: as for any block no record
        // references (it may not have existed), with the copy named.
        (None, true) => SourceError::NotFound(format!(
            "no record from {} up to {} references {tag}: {by}; the page is as that copy left \
             it, or did not exist",
            format_lsn(first.start_lsn),
            format_lsn(lsn)
        )),
        (Some(next), _) => SourceError::NotInWal(format!(
            "{tag} cannot be rebuilt as of {}: {by}, and the record at {} changes the page \
             without initializing it",
            format_lsn(lsn),
            format_lsn(next.start_lsn)
        )),
    }
}

/// The answer for a free-space-map page that no record at or before `lsn`
/// initializes: the map is not WAL-logged (only hint-bit full-page images,
/// with data checksums or wal_log_hints, ever name its pages), so no archive
/// holds it either.
pub fn fsm_not_logged(tag: &PageTag, lsn: u64) -> SourceError {
    SourceError::NotInWal(format!(
        "{tag}: the free-space map is not WAL-logged (its pages appear in WAL only as \
         full-page images for hint bits, with data checksums or wal_log_hints), and no such \
         image of this page is in the readable WAL at or before {}",
        format_lsn(lsn)
    ))
}

/// What a decoded record removes (empty for most records). Main data too
/// short for what its flags announce is refused, as for page changes.
pub fn removals(decoded: &DecodedRecord<'_>) -> Result<Vec<Removal>, RecordError> {
    let info = decoded.info & XLR_RMGR_INFO_MASK;
    match decoded.rmid {
        RM_XACT_ID => xact_drops(decoded),
        RM_DBASE_ID => database_removals(decoded, info),
        _ => truncations(decoded),
    }
}

fn truncations(decoded: &DecodedRecord<'_>) -> Result<Vec<Removal>, RecordError> {
    let Some((rel, nblocks, flags)) = pages::smgr_truncate(decoded)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if flags & SMGR_TRUNCATE_HEAP != 0 {
        out.push(Removal::Truncate {
            rel,
            forknum: MAIN_FORKNUM,
            from: nblocks,
        });
    }
    if flags & SMGR_TRUNCATE_VM != 0 {
        out.push(Removal::Truncate {
            rel,
            forknum: VISIBILITYMAP_FORKNUM,
            from: nblocks.div_ceil(VM_HEAPBLOCKS_PER_PAGE),
        });
    }
    if flags & SMGR_TRUNCATE_FSM != 0 {
        out.push(Removal::Truncate {
            rel,
            forknum: FSM_FORKNUM,
            from: fsm_blocks_kept(nblocks),
        });
    }
    Ok(out)
}

/// The free-space-map blocks kept when the heap is cut to `nblocks`
/// (`FreeSpaceMapPrepareTruncateRel`): up to the bottom-level page holding
/// the first removed heap block's slot, that page too unless the slot is its
/// first.
fn fsm_blocks_kept(nblocks: u32) -> u32 {
    let leaf = u64::from(nblocks) / FSM_SLOTS_PER_PAGE;
    let slot = u64::from(nblocks) % FSM_SLOTS_PER_PAGE;
    // fsm_logical_to_physical of the bottom-level page `leaf`: the pages of
    // every level before it in the depth-first layout.
    let mut pages = 0;
    let mut n = leaf;
    for _ in 0..FSM_TREE_DEPTH {
        pages += n + 1;
        n /= FSM_SLOTS_PER_PAGE;
    }
    let physical = pages - 1;
    let kept = if slot == 0 { physical } else { physical + 1 };
    u32::try_from(kept).unwrap_or(u32::MAX)
}

/// A little-endian reader over main data.
struct Fields<'a, 'b> {
    decoded: &'b DecodedRecord<'a>,
    at: usize,
    what: &'static str,
}

impl Fields<'_, '_> {
    fn u32(&mut self) -> Result<u32, RecordError> {
        let d = self.decoded.main_data;
        let b = d
            .get(self.at..self.at + 4)
            .ok_or_else(|| RecordError::BadMainData {
                rmgr: self.decoded.rmgr_name(),
                info: self.decoded.info,
                what: self.what,
                len: d.len(),
            })?;
        self.at += 4;
        Ok(le_u32(b, 0))
    }

    fn skip(&mut self, n: usize) -> Result<(), RecordError> {
        if self.decoded.main_data.len() < self.at + n {
            return Err(RecordError::BadMainData {
                rmgr: self.decoded.rmgr_name(),
                info: self.decoded.info,
                what: self.what,
                len: self.decoded.main_data.len(),
            });
        }
        self.at += n;
        Ok(())
    }

    /// A count of `size`-byte entries that the main data must hold.
    fn count(&mut self, size: usize) -> Result<usize, RecordError> {
        let n = self.u32()? as usize;
        if n > (self.decoded.main_data.len() - self.at) / size {
            return Err(RecordError::BadMainData {
                rmgr: self.decoded.rmgr_name(),
                info: self.decoded.info,
                what: self.what,
                len: self.decoded.main_data.len(),
            });
        }
        Ok(n)
    }
}

/// The relation files a commit or abort drops (`ParseCommitRecord`,
/// `ParseAbortRecord`: xact_time, then with `XLOG_XACT_HAS_INFO` the xinfo
/// word, the database info, the subtransactions, the relation files).
fn xact_drops(decoded: &DecodedRecord<'_>) -> Result<Vec<Removal>, RecordError> {
    let op = decoded.info & XLOG_XACT_OPMASK;
    if !matches!(
        op,
        XLOG_XACT_COMMIT | XLOG_XACT_ABORT | XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_ABORT_PREPARED
    ) || decoded.info & XLOG_XACT_HAS_INFO == 0
    {
        return Ok(Vec::new());
    }
    let mut f = Fields {
        decoded,
        at: 0,
        what: "commit or abort",
    };
    f.skip(8)?; // xact_time
    let xinfo = f.u32()?;
    if xinfo & XACT_XINFO_HAS_RELFILENODES == 0 {
        return Ok(Vec::new());
    }
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        f.skip(8)?;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = f.count(4)?;
        f.skip(4 * n)?;
    }
    let n = f.count(12)?;
    (0..n)
        .map(|_| {
            Ok(Removal::Drop {
                rel: RelFileNode {
                    spcnode: f.u32()?,
                    dbnode: f.u32()?,
                    relnode: f.u32()?,
                },
            })
        })
        .collect()
}

fn database_removals(decoded: &DecodedRecord<'_>, info: u8) -> Result<Vec<Removal>, RecordError> {
    // 14 has its DROP where 15 has CREATE_WAL_LOG; its CREATE is the copy.
    let drop = match decoded.format {
        RecordFormat::Pg14 => XLOG_DBASE_DROP_14,
        RecordFormat::Pg15 => XLOG_DBASE_DROP,
    };
    match info {
        XLOG_DBASE_CREATE_FILE_COPY => {
            // xl_dbase_create_file_copy_rec: db_id, tablespace_id,
            // src_db_id, src_tablespace_id.
            let mut f = Fields {
                decoded,
                at: 0,
                what: "create database",
            };
            let (dbnode, spcnode) = (f.u32()?, f.u32()?);
            let (src_dbnode, src_spcnode) = (f.u32()?, f.u32()?);
            Ok(vec![Removal::CopyDatabase {
                spcnode,
                dbnode,
                src_spcnode,
                src_dbnode,
            }])
        }
        _ if info == drop => {
            // xl_dbase_drop_rec: db_id, ntablespaces, tablespace_ids[].
            let mut f = Fields {
                decoded,
                at: 0,
                what: "drop database",
            };
            let dbnode = f.u32()?;
            let n = f.count(4)?;
            (0..n)
                .map(|_| {
                    Ok(Removal::DropDatabase {
                        spcnode: f.u32()?,
                        dbnode,
                    })
                })
                .collect()
        }
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsm_pages_kept_follow_the_tree_layout() {
        // Heap block 0 lives in the first bottom page, physical block 2
        // (after the root and the middle page).
        assert_eq!(fsm_blocks_kept(0), 2);
        assert_eq!(fsm_blocks_kept(1), 3);
        assert_eq!(fsm_blocks_kept(FSM_SLOTS_PER_PAGE as u32 - 1), 3);
        assert_eq!(fsm_blocks_kept(FSM_SLOTS_PER_PAGE as u32), 3);
        assert_eq!(fsm_blocks_kept(FSM_SLOTS_PER_PAGE as u32 + 1), 4);
        assert_eq!(FSM_SLOTS_PER_PAGE, 4069);
    }

    fn decoded(rmid: u8, info: u8, main_data: &[u8]) -> DecodedRecord<'_> {
        DecodedRecord {
            tot_len: 0,
            xid: 0,
            prev: 0,
            info,
            rmid,
            crc: 0,
            blocks: Default::default(),
            main_data,
            origin: None,
            toplevel_xid: None,
            format: RecordFormat::Pg15,
        }
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn commits_aborts_and_databases_are_parsed() {
        // xact_time, xinfo (dbinfo, subxacts, relfilenodes), dbinfo, 2
        // subxacts, 2 relation files.
        let mut commit = vec![0u8; 8];
        commit.extend(words(&[0b111, 5, 1663, 2, 700, 701, 2]));
        commit.extend(words(&[1663, 5, 16384, 1663, 5, 16390]));
        for info in [XLOG_XACT_COMMIT, XLOG_XACT_ABORT, XLOG_XACT_COMMIT_PREPARED] {
            let r = removals(&decoded(RM_XACT_ID, info | XLOG_XACT_HAS_INFO, &commit)).unwrap();
            assert_eq!(r.len(), 2);
            assert!(matches!(r[1], Removal::Drop { rel } if rel.relnode == 16390));
            // Without XLOG_XACT_HAS_INFO there is no xinfo: nothing dropped.
            assert!(removals(&decoded(RM_XACT_ID, info, &commit))
                .unwrap()
                .is_empty());
        }
        // A count larger than the data: refused, not read past.
        let mut huge = vec![0u8; 8];
        huge.extend(words(&[0b100, 0x7fff_ffff, 1663]));
        assert!(matches!(
            removals(&decoded(RM_XACT_ID, XLOG_XACT_HAS_INFO, &huge)),
            Err(RecordError::BadMainData { .. })
        ));
        assert!(removals(&decoded(RM_XACT_ID, XLOG_XACT_HAS_INFO, &[0; 9])).is_err());
        // DROP DATABASE 16400 in two tablespaces.
        let drop = words(&[16400, 2, 1663, 16500]);
        let r = removals(&decoded(RM_DBASE_ID, XLOG_DBASE_DROP, &drop)).unwrap();
        assert_eq!(
            r,
            vec![
                Removal::DropDatabase {
                    spcnode: 1663,
                    dbnode: 16400
                },
                Removal::DropDatabase {
                    spcnode: 16500,
                    dbnode: 16400
                }
            ]
        );
        assert!(removals(&decoded(RM_DBASE_ID, XLOG_DBASE_DROP, &drop[..12])).is_err());
        // Storage TRUNCATE to 5 heap blocks, every fork.
        let t = words(&[5, 1663, 5, 16384, 7]);
        let r = removals(&decoded(2, 0x20, &t)).unwrap();
        let from: Vec<(u8, u32)> = r
            .iter()
            .map(|r| match r {
                Removal::Truncate { forknum, from, .. } => (*forknum, *from),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            from,
            [
                (MAIN_FORKNUM, 5),
                (VISIBILITYMAP_FORKNUM, 1),
                (FSM_FORKNUM, 3)
            ]
        );
        // CREATE DATABASE ... FILE_COPY replaces; WAL_LOG (0x10) does not.
        let copy = words(&[16401, 1663, 1, 1663]);
        let r = removals(&decoded(RM_DBASE_ID, XLOG_DBASE_CREATE_FILE_COPY, &copy)).unwrap();
        assert!(r[0].replaced_outside_wal());
        assert!(removals(&decoded(RM_DBASE_ID, 0x10, &copy[..8]))
            .unwrap()
            .is_empty());
        // PostgreSQL 14: DROP is 0x10 (15's WAL_LOG), and 15's DROP (0x20)
        // means nothing; CREATE (0x00) is the copy, as on 15.
        let as_14 = |info, data: &[u8]| {
            let mut d = decoded(RM_DBASE_ID, info, data);
            d.format = RecordFormat::Pg14;
            removals(&d).unwrap()
        };
        assert_eq!(
            as_14(XLOG_DBASE_DROP_14, &drop),
            removals(&decoded(RM_DBASE_ID, XLOG_DBASE_DROP, &drop)).unwrap()
        );
        assert!(as_14(XLOG_DBASE_DROP, &drop).is_empty());
        assert!(as_14(XLOG_DBASE_CREATE_FILE_COPY, &copy)[0].replaced_outside_wal());
    }

    #[test]
    fn removals_cover_their_blocks() {
        let rel = RelFileNode {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
        };
        let tag = |forknum, blkno| PageTag {
            rel,
            forknum,
            blkno,
        };
        let t = Removal::Truncate {
            rel,
            forknum: MAIN_FORKNUM,
            from: 2,
        };
        assert!(!t.covers(&tag(MAIN_FORKNUM, 1)));
        assert!(t.covers(&tag(MAIN_FORKNUM, 2)));
        assert!(!t.covers(&tag(VISIBILITYMAP_FORKNUM, 2)));
        assert!(Removal::Drop { rel }.covers(&tag(FSM_FORKNUM, 9)));
        let d = Removal::DropDatabase {
            spcnode: 1663,
            dbnode: 5,
        };
        assert!(d.covers(&tag(MAIN_FORKNUM, 0)));
        assert!(!Removal::DropDatabase {
            spcnode: 1664,
            dbnode: 5
        }
        .covers(&tag(MAIN_FORKNUM, 0)));
    }
}
