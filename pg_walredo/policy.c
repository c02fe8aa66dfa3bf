/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  The record policy of a wal-redo process: which records may be
 *	  applied, and which pages each may change.
 *
 * A wal-redo process applies a record to one target page, and the WAL it
 * is given may be hostile.  Only records that change nothing but pages are
 * applied; a Storage TRUNCATE only to the visibility-map page it cuts into;
 * and a record only when it changes the target: as one of its block
 * references, or as the visibility-map page whose bits heap redo clears.
 * The library applies the same rules when it routes records to pages
 * (walredo_record_pages).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam_xlog.h"
#include "access/rmgr.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "catalog/pg_control.h"
#include "catalog/storage_xlog.h"
#include "storage/bufpage.h"

#include "pg_walredo.h"
#include "policy.h"

/*
 * Whether a record only changes pages, so that applying it to one block can
 * touch nothing but that block (and its sentinels).  Any resource manager's
 * redo runs once a block reference matches the target, so without this a
 * forged block reference would let a commit record drop relation files, a
 * database record remove directories, or a checkpoint rewrite shared state.
 * Real WAL never puts block references on those records.  Heap2's REWRITE
 * records (logical rewrite mappings) write files of their own, and carry no
 * block reference either.
 */
bool
is_page_record(RmgrId rmid, uint8 info)
{
	switch (rmid)
	{
		case RM_HEAP_ID:
		case RM_BTREE_ID:
		case RM_HASH_ID:
		case RM_GIN_ID:
		case RM_GIST_ID:
		case RM_SEQ_ID:
		case RM_SPGIST_ID:
		case RM_BRIN_ID:
		case RM_GENERIC_ID:
			return true;
		case RM_HEAP2_ID:
			return (info & XLOG_HEAP_OPMASK) != XLOG_HEAP2_REWRITE;
		case RM_XLOG_ID:
			info &= ~XLR_INFO_MASK;
			return info == XLOG_FPI || info == XLOG_FPI_FOR_HINT;
		default:
			return false;
	}
}

/* Storage TRUNCATE: applied only through apply_vm_truncate. */
bool
is_smgr_truncate(RmgrId rmid, uint8 info)
{
	return rmid == RM_SMGR_ID && (info & ~XLR_INFO_MASK) == XLOG_SMGR_TRUNCATE;
}

/*
 * Whether heap redo of this record clears bits of the target as a
 * visibility-map page, as heapam.c decides: from the *_ALL_VISIBLE_CLEARED
 * and XLH_LOCK_ALL_FROZEN_CLEARED flags, for heap block 0 (and, for an
 * update, the old block: reference 1, or block 0 without one), in the
 * relation of block 0.  The same rules as the library's
 * walredo_record_pages, which validated the request already.
 */
bool
clears_target_vm_bits(DecodedXLogRecord *decoded)
{
	RmgrId		rmid = decoded->header.xl_rmid;
	uint8		op = decoded->header.xl_info & XLOG_HEAP_OPMASK;
	const char *data = decoded->main_data;
	uint32		len = decoded->main_data_len;
	DecodedBkpBlock *blk0 = &decoded->blocks[0];
	BlockNumber heapblk[2];
	int			n = 0;

	if (target_forknum != VISIBILITYMAP_FORKNUM ||
		(rmid != RM_HEAP_ID && rmid != RM_HEAP2_ID) ||
		decoded->max_block_id < 0 || !blk0->in_use ||
		!RelFileLocatorEquals(decoded_block_relfile(blk0), target_rlocator))
		return false;

	/* Flags are single bytes: read them in place, whatever the alignment. */
#define FLAGS_OF(type) ((uint8) data[offsetof(type, flags)])
	if (rmid == RM_HEAP_ID && op == XLOG_HEAP_INSERT && len >= SizeOfHeapInsert)
	{
		if (FLAGS_OF(xl_heap_insert) & XLH_INSERT_ALL_VISIBLE_CLEARED)
			heapblk[n++] = blk0->blkno;
	}
	else if (rmid == RM_HEAP2_ID && op == XLOG_HEAP2_MULTI_INSERT &&
			 len >= SizeOfHeapMultiInsert)
	{
		if (FLAGS_OF(xl_heap_multi_insert) & XLH_INSERT_ALL_VISIBLE_CLEARED)
			heapblk[n++] = blk0->blkno;
	}
	else if (rmid == RM_HEAP_ID && op == XLOG_HEAP_DELETE && len >= SizeOfHeapDelete)
	{
		if (FLAGS_OF(xl_heap_delete) & XLH_DELETE_ALL_VISIBLE_CLEARED)
			heapblk[n++] = blk0->blkno;
	}
	else if (rmid == RM_HEAP_ID && op == XLOG_HEAP_LOCK && len >= SizeOfHeapLock)
	{
		if (FLAGS_OF(xl_heap_lock) & XLH_LOCK_ALL_FROZEN_CLEARED)
			heapblk[n++] = blk0->blkno;
	}
	else if (rmid == RM_HEAP2_ID && op == XLOG_HEAP2_LOCK_UPDATED &&
			 len >= SizeOfHeapLockUpdated)
	{
		if (FLAGS_OF(xl_heap_lock_updated) & XLH_LOCK_ALL_FROZEN_CLEARED)
			heapblk[n++] = blk0->blkno;
	}
	else if (rmid == RM_HEAP_ID &&
			 (op == XLOG_HEAP_UPDATE || op == XLOG_HEAP_HOT_UPDATE) &&
			 len >= SizeOfHeapUpdate)
	{
		uint8		flags = FLAGS_OF(xl_heap_update);

		if (flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED)
			heapblk[n++] = (decoded->max_block_id >= 1 && decoded->blocks[1].in_use) ?
				decoded->blocks[1].blkno : blk0->blkno;
		if (flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED)
			heapblk[n++] = blk0->blkno;
	}
#undef FLAGS_OF

	for (int i = 0; i < n; i++)
	{
		if (heapblk[i] / VM_HEAPBLOCKS_PER_PAGE == target_blkno)
			return true;
	}
	return false;
}

/*
 * Whether this Storage TRUNCATE cuts into the target as a visibility-map
 * page: the record has no block references, truncates the visibility map of
 * the target's relation, and its new length falls inside the target page.
 */
bool
cuts_target_vm_page(DecodedXLogRecord *decoded)
{
	xl_smgr_truncate xlrec;

	if (decoded->max_block_id >= 0 ||
		decoded->main_data_len != sizeof(xl_smgr_truncate))
		return false;
	memcpy(&xlrec, decoded->main_data, sizeof(xlrec));
	return (xlrec.flags & SMGR_TRUNCATE_VM) != 0 &&
		target_forknum == VISIBILITYMAP_FORKNUM &&
		RelFileLocatorEquals(smgr_truncate_relfile(&xlrec), target_rlocator) &&
		xlrec.blkno % VM_HEAPBLOCKS_PER_PAGE != 0 &&
		xlrec.blkno / VM_HEAPBLOCKS_PER_PAGE == target_blkno;
}
