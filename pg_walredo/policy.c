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
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "catalog/pg_control.h"
#include "catalog/storage_xlog.h"
#include "storage/bufpage.h"

#include "pg_walredo.h"
#include "policy.h"

/*
 * The heap records whose redo clears the visibility-map bits of heap block 0
 * when a flag of their main data says so (an update, which may clear two
 * blocks' bits, is handled apart).
 */
typedef struct VmClearingRecord
{
	RmgrId		rmid;
	uint8		op;				/* info & XLOG_HEAP_OPMASK */
	uint32		min_len;		/* of the main data */
	size_t		flags_offset;	/* of the flags byte in the main data */
	uint8		flag;
} VmClearingRecord;

static const VmClearingRecord vm_clearing_records[] = {
	{RM_HEAP_ID, XLOG_HEAP_INSERT, SizeOfHeapInsert,
	offsetof(xl_heap_insert, flags), XLH_INSERT_ALL_VISIBLE_CLEARED},
	{RM_HEAP2_ID, XLOG_HEAP2_MULTI_INSERT, SizeOfHeapMultiInsert,
	offsetof(xl_heap_multi_insert, flags), XLH_INSERT_ALL_VISIBLE_CLEARED},
	{RM_HEAP_ID, XLOG_HEAP_DELETE, SizeOfHeapDelete,
	offsetof(xl_heap_delete, flags), XLH_DELETE_ALL_VISIBLE_CLEARED},
	{RM_HEAP_ID, XLOG_HEAP_LOCK, SizeOfHeapLock,
	offsetof(xl_heap_lock, flags), XLH_LOCK_ALL_FROZEN_CLEARED},
	{RM_HEAP2_ID, XLOG_HEAP2_LOCK_UPDATED, SizeOfHeapLockUpdated,
	offsetof(xl_heap_lock_updated, flags), XLH_LOCK_ALL_FROZEN_CLEARED},
};

static bool is_page_record(RmgrId rmid, uint8 info);
static bool is_smgr_truncate(RmgrId rmid, uint8 info);
static bool clears_target_vm_bits(DecodedXLogRecord *decoded);
static bool cuts_target_vm_page(DecodedXLogRecord *decoded);

/*
 * Refuse a record that is not a page record (is_page_record) or a Storage
 * TRUNCATE.  Returns whether it is a truncation, which check_truncate_target
 * must see once it is decoded.
 */
bool
check_page_record(XLogRecord *record)
{
	bool		vm_truncate;

	vm_truncate = is_smgr_truncate(record->xl_rmid, record->xl_info);
	if (!is_page_record(record->xl_rmid, record->xl_info) && !vm_truncate)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wal-redo refuses a %s record (info 0x%02X): it is not a page record",
						RmgrTable[record->xl_rmid].rm_name, record->xl_info),
				 errdetail("Only records of the page resource managers (Heap, Heap2, Btree, Hash, Gin, Gist, Sequence, SPGist, BRIN, Generic) and full-page images (XLOG FPI and FPI_FOR_HINT) are applied.")));
	return vm_truncate;
}

/* Refuse a truncation unless it cuts into the target visibility-map page. */
void
check_truncate_target(DecodedXLogRecord *decoded)
{
	/* A truncation is applied to the visibility-map page it cuts into only. */
	if (!cuts_target_vm_page(decoded))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wal-redo refuses a %s record (info 0x%02X): it is not a page record",
						RmgrTable[decoded_rmid(decoded)].rm_name, decoded_info(decoded)),
				 errdetail("A Storage TRUNCATE is applied only to the visibility-map page it cuts into, and this target is not that page.")));
}

/* Refuse a record that does not change the target. */
void
check_changes_target(DecodedXLogRecord *decoded, bool vm_truncate,
					 int target_block_id)
{
	/*
	 * The target must be a block of the record, or a visibility-map page
	 * that the record changes without a block reference: bits that heap
	 * redo clears (its heap blocks stay sentinels, so only the
	 * visibility-map part of the record happens), or the page a truncation
	 * cuts into.
	 */
	if (!vm_truncate && target_block_id < 0 && !clears_target_vm_bits(decoded))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("WAL record does not change the target block %u/%u/%u fork %d blk %u",
						relfile_spc_oid(target_rlocator), relfile_db_oid(target_rlocator),
						relfile_number(target_rlocator), target_forknum, target_blkno),
				 errdetail("It neither references the block nor clears bits of it as a visibility-map page.")));
}

/* Refuse to start a request without a base page from any other record. */
void
check_initializes_target(DecodedXLogRecord *decoded, int target_block_id)
{
	/*
	 * Without a base page the target starts as zeros, which only a record
	 * that initializes the page (will-init, or an image to apply) can make
	 * sense of: any other redo routine would find no page and skip it.
	 */
	if (!target_has_base && n_request_records == 0)
	{
		DecodedBkpBlock *blk = target_block_id >= 0 ? &decoded->blocks[target_block_id] : NULL;

		if (blk == NULL || ((blk->flags & BKPBLOCK_WILL_INIT) == 0 && !blk->apply_image))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("no base page was given and the first record does not initialize the target page"),
					 errhint("Send the page with P, or start from a record that initializes it.")));
	}
}

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
static bool
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
static bool
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
static bool
clears_target_vm_bits(DecodedXLogRecord *decoded)
{
	RmgrId		rmid = decoded_rmid(decoded);
	uint8		op = decoded_info(decoded) & XLOG_HEAP_OPMASK;
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
	for (int i = 0; i < lengthof(vm_clearing_records); i++)
	{
		const VmClearingRecord *r = &vm_clearing_records[i];

		if (rmid == r->rmid && op == r->op)
		{
			if (len >= r->min_len && ((uint8) data[r->flags_offset] & r->flag) != 0)
				heapblk[n++] = blk0->blkno;
			break;
		}
	}
	if (rmid == RM_HEAP_ID &&
		(op == XLOG_HEAP_UPDATE || op == XLOG_HEAP_HOT_UPDATE) &&
		len >= SizeOfHeapUpdate)
	{
		uint8		flags = (uint8) data[offsetof(xl_heap_update, flags)];

		if (flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED)
			heapblk[n++] = (decoded->max_block_id >= 1 && decoded->blocks[1].in_use) ?
				decoded->blocks[1].blkno : blk0->blkno;
		if (flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED)
			heapblk[n++] = blk0->blkno;
	}

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
static bool
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
