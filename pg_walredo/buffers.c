/*-------------------------------------------------------------------------
 *
 * buffers.c
 *	  The buffer pool of a wal-redo process: the target's buffer, the
 *	  sentinels of a record's other blocks, the side pages heap redo
 *	  touches, and what keeps redo from reading or writing the scratch
 *	  files.
 *
 * Every block reference of a record other than the target gets a sentinel:
 * a page at its own tag whose LSN no record reaches, so that redo finds it
 * done and leaves it alone.  The free-space-map and visibility-map pages
 * heap redo updates on the side are put in the pool too (their contents do
 * not matter).  Redo of legitimate WAL then finds every page it needs in the
 * pool and never reads or writes a scratch file; buffers are dropped
 * without being written when a request ends.  What bounds the scratch
 * directory should that fail is described at buffers_end_request.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/rmgr.h"
#include "access/xlogreader.h"
#include "catalog/pg_tablespace_d.h"
#include "common/relpath.h"
#include "executor/instrument.h"
#include "miscadmin.h"
#include "storage/buf_internals.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/fsm_internals.h"
#include "storage/smgr.h"
#include "storage/sync.h"

#include "buffers.h"
#include "pg_walredo.h"
#include "scratch_files.h"

/* An LSN no real record can reach: marks sentinel pages as "already done". */
#define SENTINEL_LSN		((XLogRecPtr) PG_UINT64_MAX)

/* Most distinct relations one request may touch before we refuse it. */
#define MAX_TOUCHED_RELS	64

/*
 * Relations whose files may exist in the scratch directory before all of
 * them are removed (see buffers_end_request).  Each has at most a few empty
 * files: the fork files smgrcreate makes.
 */
#define SCRATCH_RELS_LIMIT	128

/*
 * Buffers a record may need beyond its block references and side pages:
 * nothing we know of takes one, this is a margin.
 */
#define REDO_BUFFER_SLACK	8

/*
 * Blocks a request may write to the scratch files.  Redo of legitimate WAL
 * writes nothing but init-fork images (PostgreSQL flushes those at once);
 * anything more means that something filled the buffer pool after all.
 */
#define REQUEST_WRITE_BUDGET	2048	/* blocks: 16 MB */

/* Side-effect pages (free-space map, visibility map) remembered. */
#define MAX_SIDE_PAGES		16

/*
 * The free-space map's layout, as in freespace.c (which keeps it to
 * itself): a tree of FSM_TREE_DEPTH levels of SlotsPerFSMPage slots, stored
 * depth-first.
 */
#define WALREDO_FSM_TREE_DEPTH	((SlotsPerFSMPage >= 1626) ? 3 : 4)

/*
 * Relations whose buffers must be dropped when the request ends, and their
 * smgr entries.  Those stay valid until then: nothing a request runs closes
 * one (only remove_rel_files does, after the drop), and they are looked up
 * once per request instead of for every block and again for the drop.
 */
static RelFileLocator touched_rels[MAX_TOUCHED_RELS];
static SMgrRelation touched_smgrs[MAX_TOUCHED_RELS];
static int	n_touched_rels = 0;

/*
 * Buffers taken from the buffer pool's free list: for the request's main and
 * init forks since its buffers were last dropped, and for free-space-map and
 * visibility-map forks (kept between requests: see buffers_end_request)
 * since all buffers were last dropped; and the I/O counters then.  See
 * make_room_for_record: redo must never find the free list empty, because
 * then the buffer manager evicts (and writes) one of our dirty buffers.
 */
static int	n_request_buffers = 0;
static int	n_kept_buffers = 0;
static int64 request_io_base = 0;

/* I/O counters when the request began: see buffers_end_request. */
static int64 request_io_start = 0;
static int64 request_written_start = 0;

/*
 * Free-space map and visibility map pages recently placed in the pool for
 * redo, and their buffers (see place_side_page).
 */
typedef struct SidePage
{
	BufferTag	tag;
	Buffer		buffer;
} SidePage;
static SidePage side_pages[MAX_SIDE_PAGES];
static int	next_side_page = 0;

/* Relations whose files were created since they were last removed. */
static RelFileLocator scratch_rels[SCRATCH_RELS_LIMIT + MAX_TOUCHED_RELS];
static int	n_scratch_rels = 0;

static void reserve_block(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno);
static Buffer place_buffer(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno,
						   bool *is_new);
static Buffer make_sentinel(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno);
static void drop_request_buffers(bool all_forks);
static void drop_all_buffers(void);
static int64 io_blocks(void);

void
buffers_begin_request(void)
{
	n_request_buffers = 0;
	request_io_start = request_io_base = io_blocks();
	request_written_start = pgBufferUsage.shared_blks_written;

	/* Side-fork pages kept from earlier requests: see buffers_end_request. */
	if (n_kept_buffers > NBuffers / 2)
		drop_all_buffers();
}

void
place_target(const char *page)
{
	Buffer		buf;
	bool		is_new;

	reserve_block(target_rlocator, target_forknum, target_blkno);
	buf = place_buffer(target_rlocator, target_forknum, target_blkno, &is_new);
	if (page != NULL)
		memcpy(BufferGetPage(buf), page, BLCKSZ);
	else if (!is_new)
		MemSet(BufferGetPage(buf), 0, BLCKSZ);

	/*
	 * Keep no pin: cleanup locks taken by redo (prune, vacuum) demand that
	 * the redo routine holds the only pin.  The buffer stays dirty, so it is
	 * never lost; were it evicted, it would be written to the scratch files
	 * and read back from there.
	 */
	MarkBufferDirty(buf);
	target_buffer = buf;
	UnlockReleaseBuffer(buf);
}

/*
 * The target's buffer, pinned and share-locked: UnlockReleaseBuffer it when
 * done with the page.
 */
Buffer
lock_target(void)
{
	Buffer		buf = target_buffer;

	/*
	 * The target stays in the buffer place_target gave it (dirty, it is
	 * never evicted while make_room_for_record keeps the free list from
	 * running out), and ReadRecentBuffer checks that buffer's tag instead of
	 * opening the relation and searching the pool.  Should it have moved
	 * after all, ask the buffer manager.
	 */
	if (!BufferIsValid(buf) ||
		!ReadRecentBuffer(target_rlocator, target_forknum, target_blkno, buf))
		buf = ReadPermanentBufferWithoutRelcache(target_rlocator, target_forknum,
												 target_blkno, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	return buf;
}

void
copy_target_page(char *page)
{
	Buffer		buf = lock_target();

	memcpy(page, BufferGetPage(buf), BLCKSZ);
	UnlockReleaseBuffer(buf);
}

/*
 * Whether buffers_end_request will remove scratch files: then the answer
 * waits for it, so that the scratch directory is clean once the host has
 * the page (tests/hostile.rs looks at it right after an answer).
 */
bool
buffers_end_removes_files(void)
{
	return io_blocks() != request_io_start || n_scratch_rels >= SCRATCH_RELS_LIMIT;
}

/*
 * The request ends: drop the main-fork and init-fork buffers of every
 * relation it touched, without writing them, so nothing leaks into the next
 * request.  Free-space-map and visibility-map buffers stay: the next request
 * on the same relation finds its side pages there (see place_side_pages),
 * and every other use of such a buffer rebuilds it (target, sentinel).  They
 * are counted, and all dropped before they could fill the pool.
 *
 * The relations stay open: reopening them for every request cost seven
 * system calls (creating or opening the fork's file, probing the other forks
 * for existence, closing), more than the redo itself.  Their cached sizes
 * only ever grow to cover the blocks we reserved.  Redo of such a request
 * never reads or writes the scratch files (see make_room_for_record and
 * place_side_pages), so they stay empty, and the common request pays nothing
 * more here than before.
 *
 * What bounds the scratch directory:
 * - a request during which redo did read or write scratch files (the
 *   buffer manager's I/O counters moved) has the files of all its relations
 *   removed here, and the fsync requests those writes queued forgotten;
 * - after SCRATCH_RELS_LIMIT relations, all their (empty) files are removed,
 *   and the directories made for them if empty, so files, directories, open
 *   descriptors, smgr entries and the fsync requests mdcreate queues for
 *   each new file (pendingOps) do not pile up over many relations;
 * - a request that writes more than REQUEST_WRITE_BUDGET blocks fails, and
 *   no file can grow past SCRATCH_FILE_LIMIT (limit_scratch in pg_walredo.c).
 */
void
buffers_end_request(void)
{
	bool		did_io = (io_blocks() != request_io_start);

	drop_request_buffers(did_io);
	if (did_io)
	{
		remove_rel_files(touched_rels, n_touched_rels);
		ProcessSyncRequests();
	}
	if (n_scratch_rels >= SCRATCH_RELS_LIMIT)
	{
		drop_all_buffers();
		remove_rel_files(scratch_rels, n_scratch_rels);
		remove_rel_dirs(scratch_rels, n_scratch_rels);
		n_scratch_rels = 0;
		/* mdcreate queued an fsync request for every file it created. */
		ProcessSyncRequests();
	}

	n_touched_rels = 0;
	n_request_buffers = 0;
}


void
check_write_budget(void)
{
	/* See REQUEST_WRITE_BUDGET; the pool replaces the process. */
	if (pgBufferUsage.shared_blks_written - request_written_start > REQUEST_WRITE_BUDGET)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the request wrote more than %d MB to the scratch directory",
						REQUEST_WRITE_BUDGET / (1024 * 1024 / BLCKSZ))));
}

/*
 * Drop buffers of every relation the request touched, without writing them:
 * of the main and init forks, or of all forks.  Dropped buffers go back to
 * the free list.
 */
static void
drop_request_buffers(bool all_forks)
{
	/*
	 * DropRelationBuffers takes at most MAX_FORKNUM forks at once (its
	 * array has room for the three that smgrtruncate passes).
	 */
	static ForkNumber request_forks[] = {MAIN_FORKNUM, INIT_FORKNUM};
	static ForkNumber side_forks[] = {FSM_FORKNUM, VISIBILITYMAP_FORKNUM};
	static BlockNumber from_block_zero[MAX_FORKNUM];

	/*
	 * Not DropRelationsAllBuffers: it asks the file system whether each
	 * fork without a cached size exists.  This one looks only at the buffer
	 * pool (which is tiny: shared_buffers is 1MB).
	 */
	for (int i = 0; i < n_touched_rels; i++)
	{
		SMgrRelation smgr = touched_smgrs[i];

		DropRelationBuffers(smgr, request_forks, lengthof(request_forks), from_block_zero);
		if (all_forks)
			DropRelationBuffers(smgr, side_forks, lengthof(side_forks), from_block_zero);
	}
}

/*
 * Drop every buffer of every relation we have used since the last sweep
 * (the request's included): one pass over the pool per database.
 */
static void
drop_all_buffers(void)
{
	for (int i = 0; i < n_scratch_rels; i++)
	{
		bool		seen = false;

		for (int j = 0; j < i && !seen; j++)
			seen = (relfile_db_oid(scratch_rels[j]) == relfile_db_oid(scratch_rels[i]));
		if (!seen)
			DropDatabaseBuffers(relfile_db_oid(scratch_rels[i]));
	}
	n_kept_buffers = 0;
}

/* Blocks the buffer manager has read from or written to storage so far. */
static int64
io_blocks(void)
{
	return pgBufferUsage.shared_blks_read + pgBufferUsage.shared_blks_written;
}

/* The relation's smgr entry, the relation remembered as touched. */
static SMgrRelation
open_touched_rel(RelFileLocator rlocator)
{
	for (int i = 0; i < n_touched_rels; i++)
	{
		if (RelFileLocatorEquals(touched_rels[i], rlocator))
			return touched_smgrs[i];
	}
	if (n_touched_rels >= MAX_TOUCHED_RELS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a wal-redo request may touch at most %d relations",
						MAX_TOUCHED_RELS)));
	touched_rels[n_touched_rels] = rlocator;
	touched_smgrs[n_touched_rels] = smgropen(rlocator, INVALID_PROC_NUMBER);
	return touched_smgrs[n_touched_rels++];
}

/*
 * Make sure a buffer for this block can be had without touching storage.
 * During recovery smgrnblocks() returns the cached fork size, so raising it
 * past blkno makes XLogReadBufferExtended find the buffer we put in the pool
 * instead of extending the scratch file block by block up to blkno.
 */
static void
reserve_block(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno)
{
	SMgrRelation smgr = open_touched_rel(rlocator);

	/*
	 * First use since the relation was opened.  Its free-space map and
	 * visibility map, which heap redo updates as side effects, are declared
	 * as large as they can be: visibilitymap_pin and
	 * XLogRecordPageWithFreeSpace then never extend them (page by page, up
	 * to the heap block's page: 100 MB of free-space map for a heap block at
	 * 50,000,000), and find the pages place_side_pages put in the pool.
	 */
	if (smgr->smgr_cached_nblocks[FSM_FORKNUM] == InvalidBlockNumber)
	{
		smgr->smgr_cached_nblocks[FSM_FORKNUM] = MaxBlockNumber;
		smgr->smgr_cached_nblocks[VISIBILITYMAP_FORKNUM] = MaxBlockNumber;
		scratch_rels[n_scratch_rels++] = rlocator;
	}

	/*
	 * The fork's file must exist: smgr opens it to read a block that is not
	 * in the pool, and in redo mode this also creates the database
	 * directory, which the free-space map (smgrcreate'd by
	 * XLogReadBufferExtended) needs; it is a no-op once the file is open.
	 */
	smgrcreate(smgr, forknum, true);

	if (smgr->smgr_cached_nblocks[forknum] == InvalidBlockNumber ||
		smgr->smgr_cached_nblocks[forknum] <= blkno)
		smgr->smgr_cached_nblocks[forknum] = blkno + 1;
}

/*
 * A buffer for this block, exclusively locked and pinned; counts the buffers
 * the request takes from the free list.  *is_new says whether it was taken
 * from there now: then the buffer manager has zeroed it (RBM_ZERO_AND_LOCK
 * fills a page that is not in the pool with zeros), else it holds whatever
 * it held.
 */
static Buffer
place_buffer(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno,
			 bool *is_new)
{
	int64		hits = pgBufferUsage.shared_blks_hit;
	Buffer		buf;

	buf = ReadPermanentBufferWithoutRelcache(rlocator, forknum, blkno,
											 RBM_ZERO_AND_LOCK, NULL);
	*is_new = (pgBufferUsage.shared_blks_hit == hits);
	if (*is_new)
	{
		if (forknum == FSM_FORKNUM || forknum == VISIBILITYMAP_FORKNUM)
			n_kept_buffers++;
		else
			n_request_buffers++;
	}
	return buf;
}

/*
 * Put a page at this block's own tag whose LSN is beyond any record, so that
 * XLogReadBufferForRedo reports BLK_DONE and the redo routine skips the
 * block.  It has to sit at the block's tag: ReadRecentBuffer checks the tag of
 * the buffer it is given.
 */
static Buffer
make_sentinel(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno)
{
	Buffer		buf;
	Page		page;
	bool		is_new;

	buf = place_buffer(rlocator, forknum, blkno, &is_new);
	page = BufferGetPage(buf);
	if (is_new)
	{
		/* What PageInit leaves, without zeroing the page a second time. */
		PageHeader	header = (PageHeader) page;

		header->pd_lower = SizeOfPageHeaderData;
		header->pd_upper = BLCKSZ;
		header->pd_special = BLCKSZ;
		PageSetPageSizeAndVersion(page, BLCKSZ, PG_PAGE_LAYOUT_VERSION);
	}
	else
		PageInit(page, BLCKSZ, 0);
	PageSetLSN(page, SENTINEL_LSN);
	MarkBufferDirty(buf);
	UnlockReleaseBuffer(buf);
	return buf;
}

/* The free-space map's bottom-level page for a heap block (freespace.c). */
static BlockNumber
fsm_leaf_block(BlockNumber heapblk)
{
	uint64		leafno = heapblk / SlotsPerFSMPage;
	uint64		pages = 0;

	/* Each level above holds one page per SlotsPerFSMPage pages below. */
	for (int level = 0; level < WALREDO_FSM_TREE_DEPTH; level++)
	{
		pages += leafno + 1;
		leafno /= SlotsPerFSMPage;
	}
	return (BlockNumber) (pages - 1);
}

static bool
is_block_of(DecodedXLogRecord *decoded, RelFileLocator rlocator, ForkNumber forknum,
			BlockNumber blkno)
{
	for (int block_id = 0; block_id <= decoded->max_block_id; block_id++)
	{
		DecodedBkpBlock *blk = &decoded->blocks[block_id];

		if (blk->in_use && RelFileLocatorEquals(decoded_block_relfile(blk), rlocator) &&
			blk->forknum == forknum && blk->blkno == blkno)
			return true;
	}
	return false;
}

static void
place_side_page(DecodedXLogRecord *decoded, RelFileLocator rlocator,
				ForkNumber forknum, BlockNumber blkno)
{
	BufferTag	tag;
	SidePage   *slot;
	bool		is_new;

	/* The target, or a block of the record: already in the pool. */
	if (is_target(rlocator, forknum, blkno) ||
		is_block_of(decoded, rlocator, forknum, blkno))
		return;

	/*
	 * Placed before and still there?  Side pages stay in the pool between
	 * requests (see buffers_end_request), and looking at the buffer's header
	 * costs far less than asking the buffer manager.  Unlocked, which is
	 * exact in this process: no other backend, no background writer, no
	 * checkpointer.
	 * A buffer dropped since has another tag, or none.
	 */
	InitBufferTag(&tag, &rlocator, forknum, blkno);
	slot = NULL;
	for (int i = 0; i < MAX_SIDE_PAGES && slot == NULL; i++)
	{
		if (BufferIsValid(side_pages[i].buffer) &&
			BufferTagsEqual(&side_pages[i].tag, &tag))
			slot = &side_pages[i];
	}
	if (slot != NULL)
	{
		BufferDesc *desc = GetBufferDescriptor(slot->buffer - 1);

		if (BufferTagsEqual(&desc->tag, &tag) &&
			(pg_atomic_read_u32(&desc->state) & BM_VALID) != 0)
			return;
	}
	else
	{
		slot = &side_pages[next_side_page];
		next_side_page = (next_side_page + 1) % MAX_SIDE_PAGES;
		slot->tag = tag;
	}
	/* Not marked dirty: what redo writes there is never looked at. */
	slot->buffer = place_buffer(rlocator, forknum, blkno, &is_new);
	UnlockReleaseBuffer(slot->buffer);
}

/*
 * Put every block of the record in the pool for redo: the target's buffer
 * for the target, a sentinel for each other block.  Returns the target's
 * block id, or -1 when no block reference is the target.
 */
int
place_record_blocks(DecodedXLogRecord *decoded)
{
	int			target_block_id = -1;

	for (int block_id = 0; block_id <= decoded->max_block_id; block_id++)
	{
		DecodedBkpBlock *blk = &decoded->blocks[block_id];

		if (!blk->in_use)
			continue;

		/*
		 * DecodeXLogRecord takes the fork number from four bits of the block
		 * header and the block number as it comes.  A fork above MAX_FORKNUM
		 * would index smgr's per-fork arrays out of bounds, and
		 * InvalidBlockNumber is P_NEW to the buffer manager (and wraps the
		 * reserved size to 0), so either would make redo touch some other
		 * block than the one named.  MaxBlockNumber cannot be reserved
		 * either (its fork size would be InvalidBlockNumber), and no
		 * relation reaches it.
		 */
		if ((int) blk->forknum < 0 || blk->forknum > MAX_FORKNUM)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("invalid fork number %d in block reference %d",
							(int) blk->forknum, block_id)));
		if (blk->blkno >= MaxBlockNumber)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("invalid block number %u in block reference %d",
							blk->blkno, block_id)));

		/* The target was reserved when the request began (place_target). */
		if (is_target(decoded_block_relfile(blk), blk->forknum, blk->blkno))
		{
			set_block_buffer(blk, target_buffer);
			target_block_id = block_id;
			continue;
		}
		reserve_block(decoded_block_relfile(blk), blk->forknum, blk->blkno);
		set_block_buffer(blk, make_sentinel(decoded_block_relfile(blk),
											blk->forknum, blk->blkno));
	}
	return target_block_id;
}

/*
 * Heap redo updates the free-space map and the visibility map of each heap
 * block it is given (XLogRecordPageWithFreeSpace, visibilitymap_pin and
 * visibilitymap_clear), pages that are not among the record's block
 * references.  Put those pages in the pool, so that redo finds them there
 * and never reads the scratch files: a read of a block beyond the first 1 GB
 * segment makes md.c create and pad every segment before it.  Their contents
 * do not matter: the free-space map is only a hint, and a visibility-map
 * page is only ever rebuilt as a target (by its own block reference, or by
 * the heap records that clear its bits: see clears_target_vm_bits), which is
 * in the pool already and skipped here.
 */
void
place_side_pages(DecodedXLogRecord *decoded)
{
	for (int block_id = 0; block_id <= decoded->max_block_id; block_id++)
	{
		DecodedBkpBlock *blk = &decoded->blocks[block_id];

		if (!blk->in_use)
			continue;
		/* Redo takes the heap block number whatever the fork says. */
		place_side_page(decoded, decoded_block_relfile(blk), VISIBILITYMAP_FORKNUM,
						blk->blkno / VM_HEAPBLOCKS_PER_PAGE);
		place_side_page(decoded, decoded_block_relfile(blk), FSM_FORKNUM,
						fsm_leaf_block(blk->blkno));
	}
}

/*
 * Make sure the record's buffers can be had from the free list.  A buffer
 * pool without a free buffer evicts one of ours, all dirty, which writes it
 * to the scratch files (creating every segment before a high block), and a
 * request with many distinct blocks would get there (the pool has 128).
 * When this record might need more than is left, drop every buffer but the
 * target's: sentinels are rebuilt for every record anyway, and side pages
 * carry nothing.
 */
void
make_room_for_record(DecodedXLogRecord *decoded)
{
	RmgrId		rmid = decoded_rmid(decoded);
	int			per_block = (rmid == RM_HEAP_ID || rmid == RM_HEAP2_ID) ? 3 : 1;
	int			need = (decoded->max_block_id + 1) * per_block + REDO_BUFFER_SLACK;
	int64		used = n_request_buffers + n_kept_buffers + (io_blocks() - request_io_base);
	PGAlignedBlock copy;
	Buffer		buf;
	bool		is_new;

	if (used + need < NBuffers)
		return;

	copy_target_page(copy.data);

	drop_all_buffers();
	n_request_buffers = 0;
	request_io_base = io_blocks();

	buf = place_buffer(target_rlocator, target_forknum, target_blkno, &is_new);
	memcpy(BufferGetPage(buf), copy.data, BLCKSZ);
	MarkBufferDirty(buf);
	target_buffer = buf;
	UnlockReleaseBuffer(buf);
}
