/*-------------------------------------------------------------------------
 *
 * redo.c
 *	  Applying one WAL record to the target page, with PostgreSQL's own
 *	  resource manager redo routines.
 *
 * A record is checked (length, checksum, resource manager), held to the
 * record policy (policy.c), decoded, its blocks put in the pool (the target,
 * and sentinels for the others: buffers.c), and handed to its resource
 * manager's redo routine.  With pg_walredo.verify, the target is then
 * compared with the record's consistency image.  Any ERROR ends the process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/rmgr.h"
#include "access/visibilitymap.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "access/xlogutils.h"
#include "catalog/storage_xlog.h"
#include "port/pg_bswap.h"
#include "port/pg_crc32c.h"
#include "storage/bufpage.h"
#include "utils/memutils.h"

#include "buffers.h"
#include "pg_walredo.h"
#include "policy.h"
#include "protocol.h"
#include "redo.h"

/* The record being applied, for the error context callback. */
static XLogRecPtr current_end_lsn = InvalidXLogRecPtr;
static RmgrId current_rmid = 0;
static uint8 current_info = 0;

static XLogReaderState *reader;
static MemoryContext request_context;

/*
 * Room for the record being applied, kept from one record to the next: its
 * MAXALIGNed copy, then (15 on) its decoded form.  That is two pallocs less
 * per record, and request_context stays empty unless redo allocates.  Given
 * back after a record that needed more than RECORD_SPACE_KEEP, as protocol.c
 * does with its input buffer.
 */
#define RECORD_SPACE_KEEP	(1024 * 1024)
static char *record_space = NULL;
static Size record_space_size = 0;

/* Verification counters, reported on stderr at exit when verify is on. */
static uint64 n_records_applied = 0;
static uint64 n_consistency_checks = 0;
static uint64 n_checks_skipped = 0;

static char *get_record_space(uint32 reclen);
static void check_record_integrity(XLogRecord *record, uint32 reclen);
static DecodedXLogRecord *decode_record(XLogRecord *record, uint32 reclen,
										XLogRecPtr end_lsn, char *space);
static void check_redo_result(void);
static void apply_vm_truncate(DecodedXLogRecord *decoded);
static void verify_target(DecodedXLogRecord *decoded, uint8 block_id);
static void apply_error_callback(void *arg);

void
redo_init(void)
{
	request_context = AllocSetContextCreate(TopMemoryContext,
											"pg_walredo record",
											ALLOCSET_DEFAULT_SIZES);

	for (int rmid = 0; rmid <= RM_MAX_ID; rmid++)
	{
		if (RmgrTable[rmid].rm_name != NULL && RmgrTable[rmid].rm_startup != NULL)
			RmgrTable[rmid].rm_startup();
	}

	reader = XLogReaderAllocate(wal_segment_size, NULL, XL_ROUTINE(.page_read = NULL), NULL);
	if (reader == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while allocating a WAL reading processor")));

#if PG_VERSION_NUM >= 150000
	/* Records up to MAX_RECORD_LEN must also fit get_record_space. */
	if (!AllocHugeSizeIsValid(MAXALIGN(MAX_RECORD_LEN) +
							  DecodeXLogRecordRequiredSpace(MAX_RECORD_LEN)))
		elog(FATAL, "MAX_RECORD_LEN does not fit a decoded record in one allocation");
#endif
}

/*
 * A: decode one record and apply it to the target page.  Payload: u64 LSN of
 * the end of the record (big-endian), then the raw XLogRecord.
 */
void
apply_record(const char *payload, uint32 len)
{
	uint64		end_lsn;
	uint32		reclen = len - sizeof(uint64);
	char	   *space;
	XLogRecord *record;
	DecodedXLogRecord *decoded;
	int			target_block_id;
	bool		vm_truncate;
	MemoryContext oldcxt;
	ErrorContextCallback errcallback;

	if (!request_active)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("wal-redo record received before a B or P message")));

	memcpy(&end_lsn, payload, sizeof(end_lsn));
	end_lsn = pg_ntoh64(end_lsn);

	oldcxt = MemoryContextSwitchTo(request_context);

	/* DecodeXLogRecord wants a MAXALIGNed record: the space is. */
	space = get_record_space(reclen);
	record = (XLogRecord *) space;
	memcpy(record, payload + sizeof(uint64), reclen);

	current_end_lsn = end_lsn;
	current_rmid = record->xl_rmid;
	current_info = record->xl_info;
	errcallback.callback = apply_error_callback;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	check_record_integrity(record, reclen);

	/* A truncation only ever reaches apply_vm_truncate, checked below. */
	vm_truncate = check_page_record(record);

	decoded = decode_record(record, reclen, end_lsn, space + MAXALIGN(reclen));
	if (vm_truncate)
		check_truncate_target(decoded);

	make_room_for_record(decoded);
	target_block_id = place_record_blocks(decoded);
	if (record->xl_rmid == RM_HEAP_ID || record->xl_rmid == RM_HEAP2_ID)
		place_side_pages(decoded);

	check_changes_target(decoded, vm_truncate, target_block_id);
	check_initializes_target(decoded, target_block_id);

	if (vm_truncate)
		apply_vm_truncate(decoded);
	else
		RmgrTable[record->xl_rmid].rm_redo(reader);
	n_records_applied++;
	n_request_records++;

	check_redo_result();

	/* A visibility-map page changed as a side effect has no image here. */
	if (walredo_verify && (record->xl_info & XLR_CHECK_CONSISTENCY) != 0 &&
		target_block_id >= 0)
		verify_target(decoded, (uint8) target_block_id);

	error_context_stack = errcallback.previous;
#if PG_VERSION_NUM >= 150000
	reader->record = NULL;
#else
	reader->decoded_record = NULL;
#endif
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(request_context);
	if (record_space_size > RECORD_SPACE_KEEP)
	{
		pfree(record_space);
		record_space = NULL;
		record_space_size = 0;
	}
}

/* At least reclen bytes for the record, then its decoded form. */
static char *
get_record_space(uint32 reclen)
{
	Size		need = MAXALIGN(reclen);

#if PG_VERSION_NUM >= 150000
	need += DecodeXLogRecordRequiredSpace(reclen);
#endif
	if (record_space_size < need)
	{
		if (record_space != NULL)
			pfree(record_space);
		record_space = MemoryContextAllocHuge(TopMemoryContext, need);
		record_space_size = need;
	}
	return record_space;
}

/*
 * The record is what the message says it is: its length, its checksum, a
 * resource manager this server has.
 */
static void
check_record_integrity(XLogRecord *record, uint32 reclen)
{
	pg_crc32c	crc;

	if (record->xl_tot_len != reclen)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("record length %u does not match message length %u",
						record->xl_tot_len, reclen)));

	/* The pool validates records too; a corrupt one must never reach redo. */
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, ((char *) record) + SizeOfXLogRecord, reclen - SizeOfXLogRecord);
	COMP_CRC32C(crc, (char *) record, offsetof(XLogRecord, xl_crc));
	FIN_CRC32C(crc);
	if (!EQ_CRC32C(crc, record->xl_crc))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("incorrect resource manager data checksum in record")));

	if (!RmgrIdIsValid(record->xl_rmid) ||
		RmgrTable[record->xl_rmid].rm_name == NULL ||
		RmgrTable[record->xl_rmid].rm_redo == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("unknown resource manager %u", record->xl_rmid)));
}

/*
 * Decode the record (15 on: into space, get_record_space's) and make it
 * the reader's current record, as redo routines expect it.
 *
 * The protocol carries only the end LSN.  Page redo stamps pages with
 * EndRecPtr and never uses the start, so an approximate start (exact unless
 * the record crossed a WAL page header) is enough for messages.
 */
static DecodedXLogRecord *
decode_record(XLogRecord *record, uint32 reclen, XLogRecPtr end_lsn, char *space)
{
	DecodedXLogRecord *decoded;
	char	   *errormsg;
	bool		ok;

	reader->ReadRecPtr = end_lsn - MAXALIGN(reclen);
	reader->EndRecPtr = end_lsn;
#if PG_VERSION_NUM < 150000

	/*
	 * 14 decodes into the reader itself, keeping its block data and main
	 * data buffers from one record to the next: they must outlive
	 * request_context, which is reset after every record.
	 */
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		ok = DecodeXLogRecord(reader, record, &errormsg);
		MemoryContextSwitchTo(oldcxt);
	}
	decoded = reader;
#else
	decoded = (DecodedXLogRecord *) space;
	ok = DecodeXLogRecord(reader, decoded, record, reader->ReadRecPtr, &errormsg);
#endif
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decode WAL record: %s", errormsg)));
#if PG_VERSION_NUM >= 150000
	decoded->next_lsn = end_lsn;
	reader->record = decoded;
#endif
	return decoded;
}

/*
 * After redo: the routine found the pages it needed, and wrote no more than
 * the request may.
 */
static void
check_redo_result(void)
{
	/*
	 * A redo routine that found its page all zeros (a zero base page, or a
	 * block the request never initialized) skips it, and xlogutils.c only
	 * remembers that as an "invalid page", to complain about once recovery
	 * is consistent: PostgreSQL's own recovery would stop there.  We would
	 * instead hand back a page that the record never changed, so stop now.
	 */
	if (XLogHaveInvalidPages())
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the record needs an existing page, but redo found an empty (all-zero) page"),
				 errdetail("PostgreSQL's recovery would stop with \"WAL contains references to invalid pages\"."),
				 errhint("The base page is missing or the records are incomplete.")));

	check_write_budget();
}

/*
 * The visibility-map part of smgr_redo's truncation, and nothing else: clear
 * the bits of the heap blocks past the new end in the target page, with
 * PostgreSQL's own visibilitymap_prepare_truncate (which, in recovery, logs
 * nothing and leaves the page LSN alone).  Nothing is truncated or dropped:
 * its result, the new number of map blocks, is not used.  The target is in
 * the pool and the fork's cached size covers it (reserve_block), so it reads
 * no file.
 */
static void
apply_vm_truncate(DecodedXLogRecord *decoded)
{
	xl_smgr_truncate xlrec;
	Relation	rel;

	memcpy(&xlrec, decoded->main_data, sizeof(xlrec));
	rel = CreateFakeRelcacheEntry(target_rlocator);
	(void) visibilitymap_prepare_truncate(rel, xlrec.blkno);
	FreeFakeRelcacheEntry(rel);
}

/*
 * Compare the target page, after redo, with the record's consistency image,
 * both masked by the resource manager, as PostgreSQL's own
 * wal_consistency_checking does.  A mismatch is FATAL.
 */
static void
verify_target(DecodedXLogRecord *decoded, uint8 block_id)
{
	DecodedBkpBlock *blk = &decoded->blocks[block_id];
	RmgrData	rmgr = RmgrTable[decoded_rmid(decoded)];
	PGAlignedBlock replayed;
	PGAlignedBlock primary;

	if (!blk->has_image)
	{
		/* Blocks the record initializes carry no image. */
		if ((blk->flags & BKPBLOCK_WILL_INIT) != 0)
		{
			n_checks_skipped++;
			return;
		}
		ereport(FATAL,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("consistency check requested but block %u has no image",
						block_id)));
	}
	/* An image that was applied is trivially equal to itself. */
	if (blk->apply_image)
	{
		n_checks_skipped++;
		return;
	}

	copy_target_page(replayed.data);

	/* A page already newer than this record cannot be expected to match. */
	if (PageGetLSN(replayed.data) > reader->EndRecPtr)
	{
		n_checks_skipped++;
		return;
	}

	if (!RestoreBlockImage(reader, block_id, primary.data))
		ereport(FATAL,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg_internal("%s", reader->errormsg_buf)));

	if (rmgr.rm_mask != NULL)
	{
		rmgr.rm_mask(replayed.data, target_blkno);
		rmgr.rm_mask(primary.data, target_blkno);
	}

	if (memcmp(replayed.data, primary.data, BLCKSZ) != 0)
	{
		int			off = 0;

		while (off < BLCKSZ && replayed.data[off] == primary.data[off])
			off++;
		ereport(FATAL,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("inconsistent page found, rel %u/%u/%u, forknum %u, blkno %u",
						relfile_spc_oid(target_rlocator), relfile_db_oid(target_rlocator),
						relfile_number(target_rlocator), target_forknum, target_blkno),
				 errdetail("First difference at byte %d after masking.", off)));
	}
	n_consistency_checks++;
}

static void
apply_error_callback(void *arg)
{
	const char *rmname = RmgrIdIsValid(current_rmid) && RmgrTable[current_rmid].rm_name ?
		RmgrTable[current_rmid].rm_name : "unknown";

	errcontext("wal-redo of %s record (info 0x%02X) ending at %X/%X on block %u/%u/%u fork %d blk %u",
			   rmname, current_info, LSN_FORMAT_ARGS(current_end_lsn),
			   relfile_spc_oid(target_rlocator), relfile_db_oid(target_rlocator),
			   relfile_number(target_rlocator),
			   target_forknum, target_blkno);
}

void
report_verification(void)
{
	ereport(LOG,
			(errmsg("pg_walredo verification summary: records=" UINT64_FORMAT
					" checks=" UINT64_FORMAT " skipped=" UINT64_FORMAT
					" mismatches=0",
					n_records_applied, n_consistency_checks, n_checks_skipped)));
}
