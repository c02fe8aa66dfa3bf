/*-------------------------------------------------------------------------
 *
 * pg_walredo.c
 *	  Turn a stock PostgreSQL single-user backend (14 to 18) into a wal-redo
 *	  process: the module, its settings, and the request loop.
 *
 * The process is started as
 *
 *	  postgres --single -D <scratch> -c shared_preload_libraries=pg_walredo ...
 *
 * and, instead of reading SQL from stdin, speaks the wal-redo pipe protocol
 * (tags B, P, A, G and H; protocol.h lists them): it receives a target page,
 * optionally its base image, and WAL records, applies the records with
 * PostgreSQL's own resource manager redo routines, and writes the resulting
 * page to stdout.
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
 * on that; the sentinels are rebuilt before every record (buffers.c).
 *
 * PostgreSQL 14 differs in how the library gets in: its single-user backend
 * loads no shared_preload_libraries, so the library starts 14's processes
 * with this file in LD_PRELOAD, and a constructor installs the same
 * shmem_startup_hook (see "PostgreSQL 14" below).
 *
 * The other files, by concern, are listed in pg_walredo.h.
 *
 * Failure model: any ERROR here has no handler and so is promoted to FATAL;
 * the process exits and the pool sees EOF on stdout, reads the message from
 * stderr, and decides what to do.  Nothing but page images is ever written to
 * stdout.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <sys/resource.h>

#include "access/xlog.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/smgr.h"
#include "storage/sync.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "buffers.h"
#include "pg_walredo.h"
#include "protocol.h"
#include "redo.h"
#include "sandbox.h"
#include "template.h"

PG_MODULE_MAGIC;

extern PGDLLEXPORT void _PG_init(void);

/* GUC: compare each applied record with its consistency image. */
bool		walredo_verify = false;

/* GUC: confine the process (sandbox.c); off for debugging only. */
static bool walredo_sandbox = true;

/* GUC: refuse to serve when Landlock is missing (sandbox.c). */
static bool walredo_require_landlock = true;

/*
 * GUC, for the sandbox's tests only: what a ping does before it answers
 * (see walredo_sandbox_test): "getppid", "open:PATH", "tgkill:PID",
 * "shmctl:ID", "mmap-exec" or "fsize".
 */
static char *walredo_test_on_ping = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* State of the request in progress (between B/P and G): see pg_walredo.h. */
bool		request_active = false;
RelFileLocator target_rlocator;
ForkNumber	target_forknum;
BlockNumber target_blkno;
Buffer		target_buffer = InvalidBuffer;
bool		target_has_base = false;	/* P, not B */
int			n_request_records = 0;

static void walredo_shmem_startup(void);
static void walredo_main(void) pg_attribute_noreturn();
#if PG_VERSION_NUM < 150000
static void walredo_preload(int argc, char **argv) __attribute__((constructor));
static void walredo_preloaded_startup(void);
#endif
static void limit_scratch(void);
static void begin_request(const char *tagbytes, const char *page);
static void get_page(const char *tagbytes);
static void end_request(void);

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

#if PG_VERSION_NUM < 150000
/*
 * PostgreSQL 14: a single-user backend never loads shared_preload_libraries
 * (from 15 on, PostgresSingleUserMain does), and nothing else it does before
 * it opens a database loads a library.  So the library starts 14's wal-redo
 * processes with this file in LD_PRELOAD.  The dynamic loader runs this
 * constructor before main(), when nothing of PostgreSQL has run: it only
 * sets the hook.  Loaded any other way (LOAD, a postmaster's
 * shared_preload_libraries), it does nothing and _PG_init runs as usual.
 */
static void
walredo_preload(int argc, char **argv)
{
	if (TopMemoryContext != NULL || argc < 2 || strcmp(argv[1], "--single") != 0)
		return;
	/* Nothing this process might run is to get it too. */
	unsetenv("LD_PRELOAD");
	shmem_startup_hook = walredo_preloaded_startup;
}

/*
 * The shmem_startup_hook of a preloaded 14 backend: load the module as
 * process_shared_preload_libraries would have (the settings are all read
 * by now, so _PG_init's GUCs take their values from the command line),
 * then take over as on 15.
 */
static void
walredo_preloaded_startup(void)
{
	shmem_startup_hook = NULL;
	process_shared_preload_libraries_in_progress = true;
	_PG_init();
	process_shared_preload_libraries_in_progress = false;
	if (shmem_startup_hook != NULL)
		shmem_startup_hook();
}
#endif

/*
 * Finish the start-up the single-user backend would have done, then serve
 * requests until stdin ends.  Never returns.
 */
static void
walredo_main(void)
{
	MemoryContextSwitchTo(TopMemoryContext);

#if PG_VERSION_NUM < 150000

	/*
	 * 14: the hook runs in BaseInit, which makes shared memory first.  The
	 * rest of BaseInit, then what PostgresMain does next (InitProcess), and
	 * of InitPostgres what the buffer manager needs (its exit callback).
	 */
	set_max_safe_fds();
	DebugFileOpen();
	InitFileAccess();
	InitSync();
	smgrinit();
	InitBufferPoolAccess();
	InitProcess();
	InitBufferPoolBackend();
#else
	/* What PostgresSingleUserMain does after shared memory exists. */
	set_max_safe_fds();
	InitProcess();

	/* What PostgresMain does first. */
	BaseInit();
#endif
	SetProcessingMode(NormalProcessing);

	/*
	 * Redo routines behave as in crash recovery: no hot-standby conflict
	 * handling, and smgrnblocks() trusts the cached fork sizes we set.
	 */
	InRecovery = true;
	standbyState = STANDBY_DISABLED;

	CurrentResourceOwner = ResourceOwnerCreate(NULL, "pg_walredo");
	redo_init();
	protocol_init();

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
						walredo_sandbox_test(walredo_test_on_ping);
					write_page(zeroes.data);
					break;
				}
		}
	}

	/* stdin is closed: the pool is gone or is retiring us. */
	if (request_active)
		end_request();
	if (walredo_verify)
		report_verification();
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
 * B and P: start a request for the target page, with a base image (P) or
 * with an empty page that the first record must initialize (B).
 */
static void
begin_request(const char *tagbytes, const char *page)
{
	/* A request the pool abandoned without G: forget it. */
	if (request_active)
		end_request();

	parse_page_tag(tagbytes, &target_rlocator, &target_forknum, &target_blkno);
	request_active = true;
	target_has_base = (page != NULL);
	n_request_records = 0;
	buffers_begin_request();
	place_target(page);
}

/*
 * G: send the target page back and forget everything about the request.
 *
 * Mostly the page is written straight from its buffer, and the request's
 * buffers are dropped after the host has it: a page copy less, and the
 * drop off the answer's path.  When the end of the request removes scratch
 * files (see buffers_end_request), that comes first and the page is sent
 * from a copy, so that the host never sees an answer before the scratch
 * directory is clean.
 */
static void
get_page(const char *tagbytes)
{
	RelFileLocator rlocator;
	ForkNumber	forknum;
	BlockNumber blkno;

	parse_page_tag(tagbytes, &rlocator, &forknum, &blkno);
	if (!request_active || !is_target(rlocator, forknum, blkno))
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("GetPage for %u/%u/%u fork %d blk %u does not match the request in progress",
						relfile_spc_oid(rlocator), relfile_db_oid(rlocator),
						relfile_number(rlocator), forknum, blkno)));

	if (buffers_end_removes_files())
	{
		PGAlignedBlock page;

		copy_target_page(page.data);
		end_request();
		write_page(page.data);
	}
	else
	{
		Buffer		buf = lock_target();

		write_page(BufferGetPage(buf));
		UnlockReleaseBuffer(buf);
		end_request();
	}
}

/*
 * End the request: drop its buffers (see buffers_end_request), so nothing
 * leaks into the next one.
 */
static void
end_request(void)
{
	buffers_end_request();
	request_active = false;
	target_buffer = InvalidBuffer;
}
