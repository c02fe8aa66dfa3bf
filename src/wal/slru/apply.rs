//! Rebuilding an SLRU page: what one record writes on it, with the bytes
//! PostgreSQL's recovery leaves (docs/design-slru.md section 5.2; docs/slru.md
//! "Rebuilding").
//!
//! This is Rust, not PostgreSQL's routines in a wal-redo process, because
//! the routines cannot be reached there without PostgreSQL internals that
//! are not an API: each SLRU's control structure is `static` to its file
//! (`clog.c: XactCtlData` and the others), so a process would have to find
//! the shared `SlruSharedData` by name and size and fill its buffer slots
//! by hand (bank layout from 17), and `clog_redo`/`multixact_redo` write
//! and unlink segment files for the ZERO and TRUNCATE records. What the
//! routines do to a page's bytes is small and fixed: two status bits per
//! transaction (`TransactionIdSetStatusBit`), a 10-byte entry per
//! transaction (`TransactionIdSetCommitTs`), a 4-byte offset per multixact
//! and the next multixact's, a flag byte and an xid per member
//! (`RecordNewMultiXact`). `walredo verify` and the tests compare every
//! page rebuilt here with PostgreSQL's own recovery of the same WAL, on
//! every version served.
//!
//! One rule depends on the *minor* release: newer minors also write the
//! next multixact's offset in `RecordNewMultiXact` (read in 15.18 and 18.3;
//! observed in the pinned 14.23, 16.15, 17.11, 18.6 and Debian's 15.20 by
//! tests/slru_route.rs), older ones do not (read in 14.13, 16.2, 17.4:
//! design-slru.md 2.4). This module writes it, as the served minors do.

use crate::pg::bytes::le_u32;
use crate::pg::rmgr::{RM_CLOG_ID, RM_COMMIT_TS_ID, RM_MULTIXACT_ID, RM_XACT_ID};
use crate::pg::slru::*;
use crate::wal::record::{DecodedRecord, RecordError};
use crate::PAGE_SIZE;

use super::{multixact_create, next_multixact, slru_changes, xact_tree, SlruKind, SlruPage};

/// Apply `decoded` to `page`, the bytes of SLRU page `target` before it:
/// write what the record writes on that page and leave every other byte.
/// Returns whether the record wrote on the page (a record that does not
/// touch it leaves it as it was). Malformed main data is refused as
/// [`super::slru_changes`] refuses it.
///
/// A commit writes commit timestamps on a `pg_commit_ts` target whatever
/// the cluster's setting: the caller applies a commit to such a page only
/// when commit timestamps were active at the record, as
/// [`super::slru_changes`] names the page only then. Truncations change no
/// page's bytes (they remove files).
pub fn apply_to_slru_page(
    target: SlruPage,
    page: &mut [u8; PAGE_SIZE],
    decoded: &DecodedRecord<'_>,
    format: SlruFormat,
) -> Result<bool, RecordError> {
    match (target.kind, decoded.rmid) {
        (SlruKind::Xact | SlruKind::CommitTs, RM_XACT_ID) => {
            let Some(tree) = xact_tree(decoded, format)? else {
                return Ok(false);
            };
            let mut wrote = false;
            for xid in tree.ids() {
                if target.kind.page_of(xid) != target {
                    continue;
                }
                if target.kind == SlruKind::Xact {
                    let status = if tree.commit {
                        TRANSACTION_STATUS_COMMITTED
                    } else {
                        TRANSACTION_STATUS_ABORTED
                    };
                    set_xact_status(page, xid, status);
                    wrote = true;
                } else if tree.commit {
                    set_commit_ts(page, xid, tree.commit_time(), decoded.origin.unwrap_or(0));
                    wrote = true;
                }
            }
            Ok(wrote)
        }
        (SlruKind::MultiXactOffsets | SlruKind::MultiXactMembers, RM_MULTIXACT_ID)
            if decoded.rmgr_info() == XLOG_MULTIXACT_CREATE_ID =>
        {
            let create = multixact_create(decoded)?;
            if target.kind == SlruKind::MultiXactOffsets {
                Ok(write_offsets(
                    page,
                    target,
                    create.mid,
                    create.moff,
                    create.nmembers(),
                ))
            } else {
                Ok(write_members(page, target, create.moff, create.members))
            }
        }
        (_, RM_CLOG_ID | RM_COMMIT_TS_ID | RM_MULTIXACT_ID) => {
            // The ZERO records (and truncations, which write nothing).
            let zeroed =
                slru_changes(decoded, format, false)?.contains(&super::SlruChange::Zero(target));
            if zeroed {
                page.fill(0);
            }
            Ok(zeroed)
        }
        _ => Ok(false),
    }
}

/// Rebuild SLRU page `target` from `base` (None: a page of zeros, as
/// recovery reads a page whose segment file does not exist) and the
/// records that change it, in LSN order, each checked (CRC, layout) before
/// it is applied. A record that does not touch the page is refused: it
/// means the caller routed it wrongly, and its page would be silently
/// wrong. Returns the page, or the index of the refused record and why.
pub fn rebuild_slru_page(
    target: SlruPage,
    base: Option<&[u8; PAGE_SIZE]>,
    records: &[&[u8]],
    format: SlruFormat,
) -> Result<Box<[u8; PAGE_SIZE]>, (usize, RecordError)> {
    let mut page = Box::new(base.copied().unwrap_or([0; PAGE_SIZE]));
    for (i, rec) in records.iter().enumerate() {
        let decoded =
            crate::wal::record::decode_as(rec, format.record_format()).map_err(|e| (i, e))?;
        let named = slru_changes(&decoded, format, true)
            .map_err(|e| (i, e))?
            .iter()
            .any(|c| c.page() == Some(target));
        if !named {
            return Err((i, RecordError::NotForSlruPage));
        }
        apply_to_slru_page(target, &mut page, &decoded, format).map_err(|e| (i, e))?;
    }
    Ok(page)
}

/// `clog.c: TransactionIdSetStatusBit`: the 2 bits of `xid` on its page.
fn set_xact_status(page: &mut [u8; PAGE_SIZE], xid: u32, status: u8) {
    let entry = (u64::from(xid) % CLOG_XACTS_PER_PAGE) as usize;
    let shift = (entry % 4) * 2;
    let byte = &mut page[entry / 4];
    *byte = (*byte & !(0b11 << shift)) | (status << shift);
}

/// `commit_ts.c: TransactionIdSetCommitTs`: time then origin, 10 bytes.
fn set_commit_ts(page: &mut [u8; PAGE_SIZE], xid: u32, time: i64, origin: u16) {
    let entry = (u64::from(xid) % COMMIT_TS_XACTS_PER_PAGE) as usize;
    let at = entry * SIZE_OF_COMMIT_TIMESTAMP_ENTRY;
    page[at..at + 8].copy_from_slice(&time.to_le_bytes());
    page[at + 8..at + 10].copy_from_slice(&origin.to_le_bytes());
}

/// The offsets part of `RecordNewMultiXact`: `moff` at `mid`'s entry, and
/// the next multixact's start (`moff + nmembers`, never 0) at its entry.
fn write_offsets(
    page: &mut [u8; PAGE_SIZE],
    target: SlruPage,
    mid: u32,
    moff: u32,
    n: u32,
) -> bool {
    let mut next_offset = moff.wrapping_add(n);
    if next_offset == 0 {
        next_offset = 1;
    }
    let mut wrote = false;
    for (multi, value) in [(mid, moff), (next_multixact(mid), next_offset)] {
        if SlruKind::MultiXactOffsets.page_of(multi) == target {
            let at = (u64::from(multi) % MULTIXACT_OFFSETS_PER_PAGE) as usize * 4;
            page[at..at + 4].copy_from_slice(&value.to_le_bytes());
            wrote = true;
        }
    }
    wrote
}

/// The members part of `RecordNewMultiXact`: for each member at offset
/// `moff + i` (modulo 2^32) on this page, its xid in its group's slot and
/// its status in its flag byte (`MXOffsetToMemberOffset`,
/// `MXOffsetToFlagsOffset`, `MXOffsetToFlagsBitShift`).
fn write_members(page: &mut [u8; PAGE_SIZE], target: SlruPage, moff: u32, members: &[u8]) -> bool {
    let mut wrote = false;
    for (i, member) in members.chunks_exact(SIZE_OF_MULTIXACT_MEMBER).enumerate() {
        let offset = moff.wrapping_add(i as u32);
        if SlruKind::MultiXactMembers.page_of(offset) != target {
            continue;
        }
        let group = (u64::from(offset) / 4 % MULTIXACT_MEMBERGROUPS_PER_PAGE) as usize;
        let in_group = (offset % 4) as usize;
        let group_at = group * MULTIXACT_MEMBERGROUP_SIZE;
        let xid_at = group_at + 4 + in_group * 4;
        page[xid_at..xid_at + 4].copy_from_slice(&member[..4]);
        // The status is an enum of 0..=5 (MultiXactStatusUpdate); its low
        // byte is the flag byte, as `members[i].status << bshift` keeps it.
        page[group_at + in_group] = le_u32(member, 4) as u8;
        wrote = true;
    }
    wrote
}

#[cfg(test)]
mod tests;
