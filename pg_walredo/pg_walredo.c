/*-------------------------------------------------------------------------
 *
 * pg_walredo.c
 *	  Turn a stock PostgreSQL 15 single-user backend into a wal-redo process.
 *
 * The process is started as
 *
 *	  postgres --single -D <scratch> -c shared_preload_libraries=pg_walredo ...
 *
 * and, instead of reading SQL from stdin, speaks the wal-redo pipe protocol
 * (tags B, P, A, G and H; see docs/protocol.md of the walredo project): it
 * receives a target page, optionally its base image, and WAL records, applies
 * the records with PostgreSQL's own resource manager redo routines, and writes
 * the resulting page to stdout.
 *
 * How the takeover works: _PG_init installs a shmem_startup_hook.  In
 * single-user mode that hook runs at the end of CreateSharedMemoryAndSemaphores,
 * after the buffer pool exists and before InitProcess, PostgresMain and
 * StartupXLOG.  The hook performs the backend initialization that would come
 * next, enters "recovery" mode, and never returns.
 *
 * How one record is applied to one block, without a patched server: every block
 * reference of the record other than the target gets a "sentinel" page in the
 * buffer pool at its own tag, with pd_lsn = UINT64_MAX.  The redo routine then
 * finds those blocks already up to date (BLK_DONE) and leaves them alone, so
 * only the target page is changed.  Full-page images of non-target blocks are
 * still restored, into the sentinel buffers, because some redo routines insist
 * on that; the sentinels are rebuilt before every record.
 *
 * Failure model: any ERROR here has no handler and so is promoted to FATAL;
 * the process exits and the pool sees EOF on stdout, reads the message from
 * stderr, and decides what to do.  Nothing but page images is ever written to
 * stdout.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/syscall.h>

#include "access/heapam_xlog.h"
#include "access/visibilitymap.h"
#include "access/rmgr.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "access/xlogutils.h"
#include "catalog/pg_control.h"
#include "catalog/pg_tablespace_d.h"
#include "catalog/storage_xlog.h"
#include "common/relpath.h"
#include "executor/instrument.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "port/pg_crc32c.h"
#include "storage/buf_internals.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/fd.h"
#include "storage/fsm_internals.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/smgr.h"
#include "storage/sync.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "pg_common/compat.h"
#include "sandbox.h"
#include "template.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Protocol constants: see docs/protocol.md. */
#define MSG_HEADER_SIZE		5	/* tag byte + big-endian u32 length */
#define PAGE_TAG_SIZE		17	/* forknum u8, spc, db, rel, blkno u32 */

/*
 * The longest record PostgreSQL 15's own WAL reader can hold.  Version 15
 * has no XLogRecordMaxSize (that came with 16); what bounds xl_tot_len there
 * is allocate_recordbuf(), which rounds the length up past the next
 * XLOG_BLCKSZ boundary and pallocs that, so it must stay within
 * MaxAllocSize.  An A message carries the end LSN and the record.
 */
#define MAX_RECORD_LEN		((uint32) ((MaxAllocSize / XLOG_BLCKSZ) * XLOG_BLCKSZ - 1))
#define MSG_LEN_PAGE_TAG	(4 + PAGE_TAG_SIZE)	/* B and G */
#define MSG_LEN_PUSH_PAGE	(4 + PAGE_TAG_SIZE + BLCKSZ)	/* P */
#define MSG_LEN_PING		4	/* H */
#define MSG_LEN_RECORD_MIN	(4 + sizeof(uint64) + SizeOfXLogRecord)	/* A */
#define MSG_LEN_RECORD_MAX	(4 + sizeof(uint64) + MAX_RECORD_LEN)

/*
 * The input buffer starts at INBUF_INITIAL_SIZE and grows to hold the
 * largest message seen; past INBUF_KEEP_SIZE it is shrunk back once that
 * message is done, so one large record does not pin its memory for the rest
 * of the process's life.
 */
#define INBUF_INITIAL_SIZE	(64 * 1024)
#define INBUF_KEEP_SIZE		(1024 * 1024)

/* An LSN no real record can reach: marks sentinel pages as "already done". */
#define SENTINEL_LSN		((XLogRecPtr) PG_UINT64_MAX)

/* Most distinct relations one request may touch before we refuse it. */
#define MAX_TOUCHED_RELS	64

/*
 * Relations whose files may exist in the scratch directory before all of
 * them are removed (see end_request).  Each has at most a few empty files:
 * the fork files smgrcreate makes.
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

/*
 * RLIMIT_FSIZE of the process: no scratch file grows past this.  It is far
 * below a relation segment (1 GB), so no second segment can ever be created
 * either: that takes padding the first one to its full size.
 */
#define SCRATCH_FILE_LIMIT	(64 * 1024 * 1024)

/* Side-effect pages (free-space map, visibility map) remembered. */
#define MAX_SIDE_PAGES		16

/*
 * Heap blocks per visibility-map page and the free-space map's layout, as in
 * visibilitymap.c and freespace.c (which keep these to themselves): two bits
 * per heap block after the page header; a tree of FSM_TREE_DEPTH levels of
 * SlotsPerFSMPage slots, stored depth-first.
 */
#define VM_HEAPBLOCKS_PER_PAGE	((BLCKSZ - MAXALIGN(SizeOfPageHeaderData)) * (BITS_PER_BYTE / 2))
#define WALREDO_FSM_TREE_DEPTH	((SlotsPerFSMPage >= 1626) ? 3 : 4)

/* GUC: compare each applied record with its consistency image. */
static bool walredo_verify = false;

/* GUC: confine the process (sandbox.c); off for debugging only. */
static bool walredo_sandbox = true;

/* GUC: refuse to serve when Landlock is missing (sandbox.c). */
static bool walredo_require_landlock = true;

/*
 * GUC, for the sandbox's tests only: what a ping does before it answers
 * (see sandbox_test): "getppid", "open:PATH", "tgkill:PID", "shmctl:ID",
 * "mmap-exec" or "fsize".
 */
static char *walredo_test_on_ping = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* State of the request in progress (between B/P and G). */
static bool request_active = false;
static RelFileLocator target_rlocator;
static ForkNumber target_forknum;
static BlockNumber target_blkno;
static Buffer target_buffer = InvalidBuffer;
static bool target_has_base = false;	/* P, not B */
static int	n_request_records = 0;

/* Relations whose buffers must be dropped when the request ends. */
static RelFileLocator touched_rels[MAX_TOUCHED_RELS];
static int	n_touched_rels = 0;

/*
 * Buffers taken from the buffer pool's free list: for the request's main and
 * init forks since its buffers were last dropped, and for free-space-map and
 * visibility-map forks (kept between requests: see end_request) since all
 * buffers were last dropped; and the I/O counters then.  See
 * make_room_for_record: redo must never find the free list empty, because
 * then the buffer manager evicts (and writes) one of our dirty buffers.
 */
static int	n_request_buffers = 0;
static int	n_kept_buffers = 0;
static int64 request_io_base = 0;

/* I/O counters when the request began: see end_request. */
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

/* The record being applied, for the error context callback. */
static XLogRecPtr current_end_lsn = InvalidXLogRecPtr;
static RmgrId current_rmid = 0;
static uint8 current_info = 0;

static XLogReaderState *reader;
static MemoryContext request_context;

/* Verification counters, reported on stderr at exit when verify is on. */
static uint64 n_records_applied = 0;
static uint64 n_consistency_checks = 0;
static uint64 n_checks_skipped = 0;

/* Input buffering: raw read() on stdin, no stdio. */
static char *inbuf;
static size_t inbuf_size = 0;
static size_t inbuf_len = 0;
static size_t inbuf_pos = 0;

static void walredo_shmem_startup(void);
static void walredo_main(void) pg_attribute_noreturn();
static void limit_scratch(void);
static bool read_message(char *tag, char **payload, uint32 *payload_len);
static void parse_page_tag(const char *p, RelFileLocator *rlocator,
						   ForkNumber *forknum, BlockNumber *blkno);
static void begin_request(const char *tagbytes, const char *page);
static void apply_record(const char *payload, uint32 len);
static void get_page(const char *tagbytes);
static void end_request(void);
static void write_page(const char *page);
static void remember_rel(RelFileLocator rlocator);
static void reserve_block(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno);
static Buffer place_buffer(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno);
static Buffer make_sentinel(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno);
static void place_side_pages(DecodedXLogRecord *decoded);
static void make_room_for_record(DecodedXLogRecord *decoded);
static void drop_request_buffers(bool all_forks);
static void drop_all_buffers(void);
static void remove_rel_files(RelFileLocator *rlocators, int n);
static void remove_rel_dirs(RelFileLocator *rlocators, int n);
static int64 io_blocks(void);
static bool is_page_record(RmgrId rmid, uint8 info);
static bool is_smgr_truncate(RmgrId rmid, uint8 info);
static bool clears_target_vm_bits(DecodedXLogRecord *decoded);
static bool cuts_target_vm_page(DecodedXLogRecord *decoded);
static void apply_vm_truncate(DecodedXLogRecord *decoded);
static void verify_target(uint8 block_id);
static void apply_error_callback(void *arg);
static void sandbox_test(const char *what);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errmsg("pg_walredo must be loaded with shared_preload_libraries")));

	DefineCustomBoolVariable("pg_walredo.verify",
							 "Checks every applied record against its consistency image.",
							 "Needs WAL written with wal_consistency_checking; a mismatch is FATAL.",
							 &walredo_verify,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("pg_walredo.sandbox",
							 "Confines the process with Landlock and seccomp before the first request.",
							 "For debugging only: a wal-redo process handles untrusted WAL.",
							 &walredo_sandbox,
							 true,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("pg_walredo.require_landlock",
							 "Refuses to serve when the kernel has no Landlock.",
							 "Without Landlock only seccomp confines the process, and it cannot "
							 "keep file system calls inside the scratch directory.  Off accepts "
							 "that weaker sandbox (with a warning).",
							 &walredo_require_landlock,
							 true,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("pg_walredo.test_on_ping",
							   "For the sandbox's tests: what a ping does before it answers.",
							   NULL,
							   &walredo_test_on_ping,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	walredo_template_init();
	MarkGUCPrefixReserved("pg_walredo");

	/*
	 * Take over only a single-user backend.  Loaded into a postmaster, this
	 * library stays inert: a wal-redo loop there would hang the server.
	 */
	if (IsPostmasterEnvironment)
	{
		ereport(WARNING,
				(errmsg("pg_walredo does nothing in a multi-user server"),
				 errhint("Start it with postgres --single.")));
		return;
	}

	/* Before the template forks and before any WAL (sandbox.c). */
	if (walredo_sandbox)
		walredo_make_undumpable();

	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = walredo_shmem_startup;
}

static void
walredo_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	/* Nothing of ours may outlive us, however we die (sandbox.c). */
	walredo_release_segment();
	walredo_main();
}

/*
 * Finish the start-up the single-user backend would have done, then serve
 * requests until stdin ends.  Never returns.
 */
static void
walredo_main(void)
{
	MemoryContextSwitchTo(TopMemoryContext);

	/* What PostgresSingleUserMain does after shared memory exists. */
	set_max_safe_fds();
	InitProcess();

	/* What PostgresMain does first. */
	BaseInit();
	SetProcessingMode(NormalProcessing);

	/*
	 * Redo routines behave as in crash recovery: no hot-standby conflict
	 * handling, and smgrnblocks() trusts the cached fork sizes we set.
	 */
	InRecovery = true;
	standbyState = STANDBY_DISABLED;

	CurrentResourceOwner = ResourceOwnerCreate(NULL, "pg_walredo");
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

	/* Records up to MAX_RECORD_LEN must also fit apply_record's pallocs. */
	if (!AllocSizeIsValid(DecodeXLogRecordRequiredSpace(MAX_RECORD_LEN)))
		elog(FATAL, "MAX_RECORD_LEN does not fit a decoded record in one palloc");

	inbuf_size = INBUF_INITIAL_SIZE;
	inbuf = MemoryContextAlloc(TopMemoryContext, inbuf_size);

	limit_scratch();

	/* Start-up is over: from here on, only what the request loop needs. */
	if (walredo_sandbox)
		walredo_enter_sandbox(walredo_require_landlock);

	for (;;)
	{
		char		tag;
		char	   *payload;
		uint32		len;

		if (!read_message(&tag, &payload, &len))
			break;

		/* read_message has checked the tag and the length. */
		switch (tag)
		{
			case 'B':
				begin_request(payload, NULL);
				break;
			case 'P':
				begin_request(payload, payload + PAGE_TAG_SIZE);
				break;
			case 'A':
				apply_record(payload, len);
				break;
			case 'G':
				get_page(payload);
				break;
			case 'H':
				{
					static const PGAlignedBlock zeroes;

					if (walredo_test_on_ping && walredo_test_on_ping[0] != '\0')
						sandbox_test(walredo_test_on_ping);
					write_page(zeroes.data);
					break;
				}
		}
	}

	/* stdin is closed: the pool is gone or is retiring us. */
	if (request_active)
		end_request();
	if (walredo_verify)
		ereport(LOG,
				(errmsg("pg_walredo verification summary: records=" UINT64_FORMAT
						" checks=" UINT64_FORMAT " skipped=" UINT64_FORMAT
						" mismatches=0",
						n_records_applied, n_consistency_checks, n_checks_skipped)));
	proc_exit(0);
}

/*
 * What bounds the scratch directory, beyond redo writing nothing (see
 * reserve_block, place_side_pages and make_room_for_record): a file size
 * limit, and the settings those rely on.
 */
static void
limit_scratch(void)
{
	struct rlimit rl;

	/* One record's blocks, their side pages and a margin, at least. */
	if (NBuffers < 128)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_walredo needs shared_buffers of at least 1MB (128 buffers), not %d buffers",
						NBuffers)));

	/*
	 * Nothing in the scratch directory is ever read back after the process
	 * ends, and the sandbox does not allow fsync: ProcessSyncRequests (see
	 * end_request) must only forget its requests.
	 */
	if (enableFsync)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pg_walredo needs fsync = off")));

	/*
	 * A write past the limit must fail with EFBIG, an ERROR like disk full.
	 * The postmaster ignores SIGXFSZ for that reason; a single-user backend
	 * keeps the default action (terminate) and only has the signal blocked
	 * (InitStandaloneProcess blocks all but the synchronous ones), so it
	 * would stay pending, ready to kill us should it ever be unblocked.
	 */
	pqsignal(SIGXFSZ, SIG_IGN);
	if (getrlimit(RLIMIT_FSIZE, &rl) != 0)
		ereport(FATAL,
				(errmsg("could not read the file size limit: %m")));
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > SCRATCH_FILE_LIMIT)
		rl.rlim_max = SCRATCH_FILE_LIMIT;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
		ereport(FATAL,
				(errmsg("could not set the file size limit: %m")));
}

/*
 * Read exactly "len" bytes from stdin into the input buffer, starting at
 * inbuf_len.  Returns false on EOF before the first byte when at_boundary;
 * EOF anywhere else is a protocol error.
 */
static bool
fill_input(size_t want, bool at_boundary)
{
	while (inbuf_len - inbuf_pos < want)
	{
		ssize_t		n;

		/* Make room: compact first, then grow. */
		if (inbuf_pos > 0)
		{
			memmove(inbuf, inbuf + inbuf_pos, inbuf_len - inbuf_pos);
			inbuf_len -= inbuf_pos;
			inbuf_pos = 0;
		}
		if (inbuf_size < want)
		{
			size_t		newsize = inbuf_size;

			while (newsize < want)
				newsize *= 2;
			inbuf = repalloc_huge(inbuf, newsize);
			inbuf_size = newsize;
		}

		n = read(STDIN_FILENO, inbuf + inbuf_len, inbuf_size - inbuf_len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(FATAL,
					(errcode_for_socket_access(),
					 errmsg("could not read from stdin: %m")));
		}
		if (n == 0)
		{
			if (at_boundary && inbuf_len == inbuf_pos)
				return false;
			ereport(FATAL,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unexpected EOF on stdin in the middle of a wal-redo message")));
		}
		inbuf_len += n;
	}
	return true;
}

/*
 * Read the next message.  *payload points into the input buffer and stays
 * valid until the next call.  Returns false at a clean EOF.
 *
 * The tag and the length are checked before the payload is read: a length
 * no message of that tag can have is refused at once, instead of being
 * waited for (and allocated).
 */
static bool
read_message(char *tag, char **payload, uint32 *payload_len)
{
	uint32		len;
	bool		valid;

	/*
	 * The previous message is done with: if it was a large one, give its
	 * memory back (keeping whatever was read past it).
	 */
	if (inbuf_size > INBUF_KEEP_SIZE && inbuf_len - inbuf_pos <= INBUF_INITIAL_SIZE)
	{
		memmove(inbuf, inbuf + inbuf_pos, inbuf_len - inbuf_pos);
		inbuf_len -= inbuf_pos;
		inbuf_pos = 0;
		inbuf = repalloc(inbuf, INBUF_INITIAL_SIZE);
		inbuf_size = INBUF_INITIAL_SIZE;
	}

	if (!fill_input(MSG_HEADER_SIZE, true))
		return false;

	*tag = inbuf[inbuf_pos];
	memcpy(&len, inbuf + inbuf_pos + 1, sizeof(len));
	len = pg_ntoh32(len);

	switch (*tag)
	{
		case 'B':
		case 'G':
			valid = (len == MSG_LEN_PAGE_TAG);
			break;
		case 'P':
			valid = (len == MSG_LEN_PUSH_PAGE);
			break;
		case 'H':
			valid = (len == MSG_LEN_PING);
			break;
		case 'A':
			if (len > MSG_LEN_RECORD_MAX)
				ereport(FATAL,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("wal-redo record message of %u bytes is longer than the largest record PostgreSQL 15 can read (%u bytes)",
								len, MAX_RECORD_LEN)));
			valid = (len >= MSG_LEN_RECORD_MIN);
			break;
		default:
			ereport(FATAL,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid wal-redo message tag 0x%02x",
							(unsigned char) *tag)));
			valid = false;		/* keep the compiler quiet */
	}
	if (!valid)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid length %u for wal-redo message '%c'", len, *tag)));
	inbuf_pos += MSG_HEADER_SIZE;

	*payload_len = len - 4;
	fill_input(*payload_len, false);
	*payload = inbuf + inbuf_pos;
	inbuf_pos += *payload_len;
	return true;
}

static uint32
get_be32(const char *p)
{
	uint32		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh32(v);
}

static void
parse_page_tag(const char *p, RelFileLocator *rlocator, ForkNumber *forknum,
			   BlockNumber *blkno)
{
	uint8		fork = (uint8) p[0];

	if (fork > MAX_FORKNUM)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid fork number %u in wal-redo page tag", fork)));
	*forknum = (ForkNumber) fork;
	*rlocator = make_relfile_locator(get_be32(p + 1), get_be32(p + 5),
									 get_be32(p + 9));
	*blkno = get_be32(p + 13);
	if (*blkno >= MaxBlockNumber)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid block number %u in wal-redo page tag", *blkno)));
}

/*
 * B and P: start a request for the target page, with a base image (P) or
 * with an empty page that the first record must initialize (B).
 */
static void
begin_request(const char *tagbytes, const char *page)
{
	Buffer		buf;

	/* A request the pool abandoned without G: forget it. */
	if (request_active)
		end_request();

	parse_page_tag(tagbytes, &target_rlocator, &target_forknum, &target_blkno);
	request_active = true;
	target_has_base = (page != NULL);
	n_request_records = 0;
	n_request_buffers = 0;
	request_io_start = request_io_base = io_blocks();
	request_written_start = pgBufferUsage.shared_blks_written;

	/* Side-fork pages kept from earlier requests: see end_request. */
	if (n_kept_buffers > NBuffers / 2)
		drop_all_buffers();

	reserve_block(target_rlocator, target_forknum, target_blkno);
	buf = place_buffer(target_rlocator, target_forknum, target_blkno);
	if (page != NULL)
		memcpy(BufferGetPage(buf), page, BLCKSZ);
	else
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

static bool
is_target(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno)
{
	return RelFileLocatorEquals(rlocator, target_rlocator) &&
		forknum == target_forknum && blkno == target_blkno;
}

/*
 * A: decode one record and apply it to the target page.  Payload: u64 LSN of
 * the end of the record (big-endian), then the raw XLogRecord.
 */
static void
apply_record(const char *payload, uint32 len)
{
	uint64		end_lsn;
	uint32		reclen = len - sizeof(uint64);
	XLogRecord *record;
	DecodedXLogRecord *decoded;
	char	   *errormsg;
	pg_crc32c	crc;
	int			target_block_id = -1;
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

	/* DecodeXLogRecord wants a MAXALIGNed record; palloc provides that. */
	record = palloc(reclen);
	memcpy(record, payload + sizeof(uint64), reclen);

	current_end_lsn = end_lsn;
	current_rmid = record->xl_rmid;
	current_info = record->xl_info;
	errcallback.callback = apply_error_callback;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

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

	/* A truncation only ever reaches apply_vm_truncate, checked below. */
	vm_truncate = is_smgr_truncate(record->xl_rmid, record->xl_info);
	if (!is_page_record(record->xl_rmid, record->xl_info) && !vm_truncate)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wal-redo refuses a %s record (info 0x%02X): it is not a page record",
						RmgrTable[record->xl_rmid].rm_name, record->xl_info),
				 errdetail("Only records of the page resource managers (Heap, Heap2, Btree, Hash, Gin, Gist, Sequence, SPGist, BRIN, Generic) and full-page images (XLOG FPI and FPI_FOR_HINT) are applied.")));

	decoded = palloc(DecodeXLogRecordRequiredSpace(reclen));

	/*
	 * The protocol carries only the end LSN.  Page redo stamps pages with
	 * EndRecPtr and never uses the start, so an approximate start (exact
	 * unless the record crossed a WAL page header) is enough for messages.
	 */
	if (!DecodeXLogRecord(reader, decoded, record,
						  end_lsn - MAXALIGN(reclen), &errormsg))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decode WAL record: %s", errormsg)));
	decoded->next_lsn = end_lsn;

	/* A truncation is applied to the visibility-map page it cuts into only. */
	if (vm_truncate && !cuts_target_vm_page(decoded))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wal-redo refuses a %s record (info 0x%02X): it is not a page record",
						RmgrTable[record->xl_rmid].rm_name, record->xl_info),
				 errdetail("A Storage TRUNCATE is applied only to the visibility-map page it cuts into, and this target is not that page.")));
	reader->record = decoded;
	reader->ReadRecPtr = decoded->lsn;
	reader->EndRecPtr = end_lsn;

	make_room_for_record(decoded);

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

		reserve_block(decoded_block_relfile(blk), blk->forknum, blk->blkno);
		if (is_target(decoded_block_relfile(blk), blk->forknum, blk->blkno))
		{
			blk->prefetch_buffer = target_buffer;
			target_block_id = block_id;
		}
		else
			blk->prefetch_buffer = make_sentinel(decoded_block_relfile(blk), blk->forknum, blk->blkno);
	}

	if (record->xl_rmid == RM_HEAP_ID || record->xl_rmid == RM_HEAP2_ID)
		place_side_pages(decoded);

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

	if (vm_truncate)
		apply_vm_truncate(decoded);
	else
		RmgrTable[record->xl_rmid].rm_redo(reader);
	n_records_applied++;
	n_request_records++;

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

	/* See REQUEST_WRITE_BUDGET; the pool replaces the process. */
	if (pgBufferUsage.shared_blks_written - request_written_start > REQUEST_WRITE_BUDGET)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the request wrote more than %d MB to the scratch directory",
						REQUEST_WRITE_BUDGET / (1024 * 1024 / BLCKSZ))));

	/* A visibility-map page changed as a side effect has no image here. */
	if (walredo_verify && (record->xl_info & XLR_CHECK_CONSISTENCY) != 0 &&
		target_block_id >= 0)
		verify_target((uint8) target_block_id);

	error_context_stack = errcallback.previous;
	reader->record = NULL;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(request_context);
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
verify_target(uint8 block_id)
{
	DecodedBkpBlock *blk = &reader->record->blocks[block_id];
	RmgrData	rmgr = RmgrTable[reader->record->header.xl_rmid];
	PGAlignedBlock replayed;
	PGAlignedBlock primary;
	Buffer		buf;

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

	buf = ReadBufferWithoutRelcache(target_rlocator, target_forknum, target_blkno,
									RBM_NORMAL, NULL, true);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	memcpy(replayed.data, BufferGetPage(buf), BLCKSZ);
	UnlockReleaseBuffer(buf);

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

/* G: send the target page back and forget everything about the request. */
static void
get_page(const char *tagbytes)
{
	RelFileLocator rlocator;
	ForkNumber	forknum;
	BlockNumber blkno;
	PGAlignedBlock page;
	Buffer		buf;

	parse_page_tag(tagbytes, &rlocator, &forknum, &blkno);
	if (!request_active || !is_target(rlocator, forknum, blkno))
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("GetPage for %u/%u/%u fork %d blk %u does not match the request in progress",
						relfile_spc_oid(rlocator), relfile_db_oid(rlocator),
						relfile_number(rlocator), forknum, blkno)));

	buf = ReadBufferWithoutRelcache(rlocator, forknum, blkno, RBM_NORMAL, NULL, true);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	memcpy(page.data, BufferGetPage(buf), BLCKSZ);
	UnlockReleaseBuffer(buf);

	end_request();
	write_page(page.data);
}

/*
 * End the request: drop the main-fork and init-fork buffers of every
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
 *   no file can grow past SCRATCH_FILE_LIMIT (limit_scratch).
 */
static void
end_request(void)
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
	request_active = false;
	target_buffer = InvalidBuffer;
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
		SMgrRelation smgr = smgropen(touched_rels[i], INVALID_PROC_NUMBER);

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

/*
 * Close these relations and remove all their files (every fork, every
 * segment).  Their buffers must be gone already.  Done by hand rather than
 * with smgrdounlinkall, which would probe each fork's size, truncate every
 * file before unlinking it and queue shared invalidation messages: none of
 * that is needed in a process that is alone with its scratch directory.
 */
static void
remove_rel_files(RelFileLocator *rlocators, int n)
{
	for (int i = 0; i < n; i++)
	{
		smgrclose(smgropen(rlocators[i], INVALID_PROC_NUMBER));

		for (ForkNumber forknum = 0; forknum <= MAX_FORKNUM; forknum++)
		{
			char	   *path = relpathperm_palloc(rlocators[i], forknum);

			if (unlink(path) == 0)
			{
				/* Segments beyond the first, if any, are path.1, path.2, ... */
				for (uint32 segno = 1;; segno++)
				{
					char	   *segpath = psprintf("%s.%u", path, segno);
					bool		gone = (unlink(segpath) != 0);

					pfree(segpath);
					if (gone)
						break;
				}
			}
			else if (errno != ENOENT)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove file \"%s\": %m", path)));
			pfree(path);
		}
	}
}

/*
 * Remove the database directories (and, for other tablespaces than the
 * default and global ones, the tablespace directories) that smgrcreate made
 * for these relations, where they are empty: in redo mode it creates every
 * missing level, so each new database or tablespace OID would leave one.
 * unlinkat(AT_REMOVEDIR) because that is what the sandbox allows; a
 * directory still in use is simply not empty.
 */
static void
remove_rel_dirs(RelFileLocator *rlocators, int n)
{
	for (int i = 0; i < n; i++)
	{
		RelFileLocator rlocator = rlocators[i];
		bool		seen = false;
		char	   *path;

		if (relfile_spc_oid(rlocator) == GLOBALTABLESPACE_OID)
			continue;			/* "global" holds pg_control */
		for (int j = 0; j < i && !seen; j++)
			seen = (relfile_spc_oid(rlocators[j]) == relfile_spc_oid(rlocator) &&
					relfile_db_oid(rlocators[j]) == relfile_db_oid(rlocator));
		if (seen)
			continue;

		path = GetDatabasePath(relfile_db_oid(rlocator), relfile_spc_oid(rlocator));
		(void) unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
		pfree(path);
		if (relfile_spc_oid(rlocator) != DEFAULTTABLESPACE_OID)
		{
			char		dir[MAXPGPATH];

			snprintf(dir, sizeof(dir), "pg_tblspc/%u/%s",
					 relfile_spc_oid(rlocator), TABLESPACE_VERSION_DIRECTORY);
			(void) unlinkat(AT_FDCWD, dir, AT_REMOVEDIR);
			snprintf(dir, sizeof(dir), "pg_tblspc/%u", relfile_spc_oid(rlocator));
			(void) unlinkat(AT_FDCWD, dir, AT_REMOVEDIR);
		}
	}
}

/* Blocks the buffer manager has read from or written to storage so far. */
static int64
io_blocks(void)
{
	return pgBufferUsage.shared_blks_read + pgBufferUsage.shared_blks_written;
}

static void
write_page(const char *page)
{
	size_t		done = 0;

	while (done < BLCKSZ)
	{
		ssize_t		n = write(STDOUT_FILENO, page + done, BLCKSZ - done);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(FATAL,
					(errcode_for_socket_access(),
					 errmsg("could not write page to stdout: %m")));
		}
		done += n;
	}
}

static void
remember_rel(RelFileLocator rlocator)
{
	for (int i = 0; i < n_touched_rels; i++)
	{
		if (RelFileLocatorEquals(touched_rels[i], rlocator))
			return;
	}
	if (n_touched_rels >= MAX_TOUCHED_RELS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a wal-redo request may touch at most %d relations",
						MAX_TOUCHED_RELS)));
	touched_rels[n_touched_rels++] = rlocator;
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
	SMgrRelation smgr;

	remember_rel(rlocator);
	smgr = smgropen(rlocator, INVALID_PROC_NUMBER);

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
 * A buffer for this block, exclusively locked and pinned, zeroed if it was
 * not in the pool; counts the buffers the request takes from the free list.
 */
static Buffer
place_buffer(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno)
{
	int64		hits = pgBufferUsage.shared_blks_hit;
	Buffer		buf;

	buf = ReadBufferWithoutRelcache(rlocator, forknum, blkno, RBM_ZERO_AND_LOCK,
									NULL, true);
	if (pgBufferUsage.shared_blks_hit == hits)
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

	buf = place_buffer(rlocator, forknum, blkno);
	page = BufferGetPage(buf);
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

	/* The target, or a block of the record: already in the pool. */
	if (is_target(rlocator, forknum, blkno) ||
		is_block_of(decoded, rlocator, forknum, blkno))
		return;

	/*
	 * Placed before and still there?  Side pages stay in the pool between
	 * requests (see end_request), and looking at the buffer's header costs
	 * far less than asking the buffer manager.  Unlocked, which is exact in
	 * this process: no other backend, no background writer, no checkpointer.
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
	slot->buffer = place_buffer(rlocator, forknum, blkno);
	UnlockReleaseBuffer(slot->buffer);
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
static void
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
static void
make_room_for_record(DecodedXLogRecord *decoded)
{
	RmgrId		rmid = decoded->header.xl_rmid;
	int			per_block = (rmid == RM_HEAP_ID || rmid == RM_HEAP2_ID) ? 3 : 1;
	int			need = (decoded->max_block_id + 1) * per_block + REDO_BUFFER_SLACK;
	int64		used = n_request_buffers + n_kept_buffers + (io_blocks() - request_io_base);
	PGAlignedBlock copy;
	Buffer		buf;

	if (used + need < NBuffers)
		return;

	buf = ReadBufferWithoutRelcache(target_rlocator, target_forknum, target_blkno,
									RBM_NORMAL, NULL, true);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	memcpy(copy.data, BufferGetPage(buf), BLCKSZ);
	UnlockReleaseBuffer(buf);

	drop_all_buffers();
	n_request_buffers = 0;
	request_io_base = io_blocks();

	buf = place_buffer(target_rlocator, target_forknum, target_blkno);
	memcpy(BufferGetPage(buf), copy.data, BLCKSZ);
	MarkBufferDirty(buf);
	target_buffer = buf;
	UnlockReleaseBuffer(buf);
}

static void
apply_error_callback(void *arg)
{
	const char *rmname = RmgrIdIsValid(current_rmid) && RmgrTable[current_rmid].rm_name ?
		RmgrTable[current_rmid].rm_name : "unknown";

	errcontext("wal-redo of %s record (info 0x%02X) ending at %X/%X on block %u/%u/%u fork %d blk %u",
			   rmname, current_info, LSN_FORMAT_ARGS(current_end_lsn),
			   relfile_spc_oid(target_rlocator), relfile_db_oid(target_rlocator), relfile_number(target_rlocator),
			   target_forknum, target_blkno);
}

/*
 * pg_walredo.test_on_ping: misbehave on purpose, to show that the sandbox
 * stops it.  Each action reports a FATAL "sandbox breach" if what it tries
 * works; the sandbox's answer is to kill the process (SIGSYS), or to make the
 * call fail, after which the ping is answered as usual.
 */
static void
sandbox_test(const char *what)
{
	if (strcmp(what, "getppid") == 0)
		(void) syscall(SYS_getppid);	/* not allowed: the filter kills us */
	else if (strncmp(what, "open:", 5) == 0)
	{
		int			fd = open(what + 5, O_RDONLY);

		if (fd >= 0)
			ereport(FATAL,
					(errmsg("sandbox breach: opened \"%s\"", what + 5)));
	}
	else if (strncmp(what, "tgkill:", 7) == 0)
	{
		/* Signal 0 only checks that the signal could be delivered. */
		pid_t		pid = (pid_t) atoi(what + 7);

		if (syscall(SYS_tgkill, pid, pid, 0) == 0)
			ereport(FATAL,
					(errmsg("sandbox breach: could signal process %d", (int) pid)));
	}
	else if (strncmp(what, "shmctl:", 7) == 0)
	{
		int			shmid = atoi(what + 7);

		if (shmctl(shmid, IPC_RMID, NULL) == 0)
			ereport(FATAL,
					(errmsg("sandbox breach: removed shared memory segment %d", shmid)));
	}
	else if (strcmp(what, "mmap-exec") == 0)
	{
		void	   *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC,
							 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p != MAP_FAILED)
			ereport(FATAL,
					(errmsg("sandbox breach: mapped executable memory")));
	}
	else if (strcmp(what, "fsize") == 0)
	{
		/*
		 * One byte at the file size limit, in a file of the scratch
		 * directory: must fail with EFBIG (SIGXFSZ being ignored).
		 * (getrlimit is not among the allowed system calls.)
		 */
		int			fd;
		ssize_t		n;
		int			save_errno;

		fd = open("pg_walredo_fsize_probe", O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			ereport(FATAL,
					(errmsg("could not create the file size probe: %m")));
		n = pwrite(fd, "x", 1, (off_t) SCRATCH_FILE_LIMIT);
		save_errno = errno;
		close(fd);
		unlink("pg_walredo_fsize_probe");
		if (n >= 0 || save_errno != EFBIG)
		{
			errno = save_errno;
			ereport(FATAL,
					(errmsg("sandbox breach: a write at the file size limit did not fail with EFBIG: %m")));
		}
	}
}
