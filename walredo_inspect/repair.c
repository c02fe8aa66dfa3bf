/*
 * repair.c
 *		repair_page: rebuild a damaged block of a live cluster from its WAL
 *		(and walredo_inspect.base_backup) and install it, WAL-logged.
 *
 * The order of steps is what keeps it safe:
 *
 * 1. The relation is locked (AccessShareLock, to the end of the transaction),
 *    so it cannot be truncated or rewritten meanwhile: every way of removing
 *    the block takes a stronger lock.
 * 2. All WAL inserted so far is flushed, and the page is rebuilt to the
 *    flush LSN with no buffer lock held (a long archive fetch stays
 *    interruptible).
 * 3. Only then is the buffer locked exclusively.  A page that fails
 *    PostgreSQL's checks on disk cannot be read into a buffer, so it is
 *    taken with RBM_ZERO_AND_LOCK (the disk copy is not read; a valid copy
 *    already in shared buffers is kept).  No record can change the block
 *    while the lock is held, so a page whose LSN is not past the flush LSN
 *    has no record the rebuild missed; one that is (a valid page, changed
 *    in shared buffers meanwhile) is released and rebuilt again from step
 *    2, never under the lock: a few times, then an error.
 * 4. The rebuilt page is installed in a critical section, marked dirty and
 *    WAL-logged as a full-page image (standbys and any later recovery get
 *    it too), and written out at once so the damaged disk copy is gone.
 *
 * A zeroed buffer never outlives step 3 without the rebuilt page in it:
 * between RBM_ZERO_AND_LOCK and the critical section nothing can fail.
 */
#include "walredo_inspect.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xlog.h"
#include "access/xloginsert.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/checksum.h"
#include "storage/smgr.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(repair_page);

/* PostgreSQL's check of a page read from disk (header, checksum), silent. */
static bool
page_verifies(Page page, BlockNumber blkno)
{
#if PG_VERSION_NUM >= 180000
	bool		checksum_failure;

	return PageIsVerified(page, blkno, 0, &checksum_failure);
#else
	return PageIsVerifiedExtended(page, blkno, 0);
#endif
}

/* Flush every WAL record inserted so far; the flush LSN. */
static XLogRecPtr
flush_all(void)
{
	XLogFlush(GetXLogInsertRecPtr());
	return inspect_flush_limit();
}

/* Whether two copies of a block hold the same page, redo's differences masked. */
static bool
same_page(const walredo_page_tag *tag, const uint8 *a, const uint8 *b)
{
	int			matches = 0;
	int			rc = walredo_pages_match(tag, a, b, &matches);

	if (rc != WALREDO_OK)
		inspect_library_error(rc, "could not compare the pages");
	return matches != 0;
}

/*
 * repair_page(rel regclass, blkno bigint, fork text, dry_run boolean)
 * RETURNS (result, old_page_valid, old_checksum_ok, old_lsn, rebuilt_lsn,
 * new_lsn, records, replayed_from, from_base_backup)
 */
Datum
repair_page(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	BlockNumber blkno = inspect_block_argument(PG_GETARG_INT64(1));
	ForkNumber	forknum = inspect_fork_argument(PG_GETARG_TEXT_PP(2));
	bool		dry_run = PG_GETARG_BOOL(3);
	Relation	rel;
	walredo_page_tag tag;
	PGAlignedBlock disk;
	PGAlignedBlock rebuilt;
	bool		disk_valid;
	XLogRecPtr	flushed;
	InspectRebuild what;
	Buffer		buf = InvalidBuffer;
	Page		current;
	const char *result;
	XLogRecPtr	new_lsn = InvalidXLogRecPtr;
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9] = {0};

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to repair pages")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot repair pages during recovery"),
				 errhint("Repair the page on the primary: its full-page image reaches the "
						 "standbys through WAL.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/* 1. Held to the end of the transaction: no truncation meanwhile. */
	rel = relation_open(relid, AccessShareLock);
	inspect_relation_tag(relid, forknum, blkno, &tag, NULL, "repair");

	smgrread(RelationGetSmgr(rel), forknum, blkno, disk.data);
	disk_valid = page_verifies((Page) disk.data, blkno);

	for (int attempt = 1;; attempt++)
	{
		/* 2. Every record of the block is in the flushed WAL. */
		flushed = flush_all();
		inspect_rebuild(&tag, flushed, NULL, (uint8 *) rebuilt.data, &what);

		/* 3. A damaged disk copy cannot be read into a buffer: take it zeroed. */
		if (disk_valid)
		{
			buf = ReadBufferExtended(rel, forknum, blkno, RBM_NORMAL, NULL);
			LockBuffer(buf, dry_run ? BUFFER_LOCK_SHARE : BUFFER_LOCK_EXCLUSIVE);
			current = BufferGetPage(buf);
		}
		else if (!dry_run)
		{
			buf = ReadBufferExtended(rel, forknum, blkno, RBM_ZERO_AND_LOCK, NULL);
			current = BufferGetPage(buf);
		}
		else
			current = (Page) disk.data;

		/*
		 * A valid page in shared buffers changed since step 2 (never a zeroed
		 * one): rebuild again, without the lock.
		 */
		if (!BufferIsValid(buf) || PageIsNew(current) || PageGetLSN(current) <= flushed)
			break;
		UnlockReleaseBuffer(buf);
		buf = InvalidBuffer;
		if (attempt == 3)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("block %u of relation \"%s\" kept changing while it was rebuilt",
							blkno, RelationGetRelationName(rel)),
					 errhint("A page that is written to is not damaged in shared buffers; "
							 "try again when it is quieter.")));
		CHECK_FOR_INTERRUPTS();
	}

	if (disk_valid && same_page(&tag, (uint8 *) current, (uint8 *) rebuilt.data))
		result = "identical";
	else if (dry_run)
		result = "would repair";
	else
	{
		/* 4. */
		START_CRIT_SECTION();
		memcpy(current, rebuilt.data, BLCKSZ);
		MarkBufferDirty(buf);
		new_lsn = log_newpage_buffer(buf, false);
		END_CRIT_SECTION();
		FlushOneBuffer(buf);
		result = "repaired";
	}
	if (BufferIsValid(buf))
		UnlockReleaseBuffer(buf);
	relation_close(rel, NoLock);

	values[0] = CStringGetTextDatum(result);
	values[1] = BoolGetDatum(disk_valid);
	if (DataChecksumsEnabled() && !PageIsNew((Page) disk.data))
		values[2] = BoolGetDatum(pg_checksum_page(disk.data, blkno) ==
								 ((PageHeader) disk.data)->pd_checksum);
	else
		nulls[2] = true;
	values[3] = LSNGetDatum(PageGetLSN((Page) disk.data));
	values[4] = LSNGetDatum(PageGetLSN((Page) rebuilt.data));
	values[5] = LSNGetDatum(new_lsn);
	nulls[5] = XLogRecPtrIsInvalid(new_lsn);
	values[6] = Int32GetDatum(what.records);
	values[7] = LSNGetDatum(what.first_lsn);
	nulls[7] = XLogRecPtrIsInvalid(what.first_lsn);
	values[8] = BoolGetDatum(what.from_base);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
