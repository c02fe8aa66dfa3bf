/*
 * walredo_inspect.h
 *		Shared declarations of the walredo_inspect extension.
 *
 * The extension runs inside a PostgreSQL backend and calls the walredo
 * library.  Files by concern:
 *		walredo_inspect.c	module set-up, settings, library errors
 *		pool.c				the backend's pool and its lifetime; waiting for a call
 *		wal.c				the backend's WAL handle: replay plans, block history
 *		base.c				the base backup (walredo_inspect.base_backup)
 *		functions.c			the SQL functions of inspection
 *		repair.c			repair_page
 */
#ifndef WALREDO_INSPECT_H
#define WALREDO_INSPECT_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "common/relpath.h"
#include "storage/block.h"

#include "pg_common/compat.h"

#include "walredo.h"

/* settings (walredo_inspect.c) */
extern int	inspect_processes;
extern int	inspect_timeout_ms;
extern char *inspect_archive_dir;
extern char *inspect_restore_command;
extern char *inspect_scratch_dir;
extern char *inspect_base_backup;

/* The scratch root in the data directory when walredo_inspect.scratch_dir is empty. */
#define INSPECT_SCRATCH_DEFAULT "pgsql_tmp_walredo"

/*
 * ereport(ERROR) for a failed library call: the library's own message, an
 * errcode that fits the status.  Never returns.
 */
extern void inspect_library_error(int status, const char *context) pg_attribute_noreturn();

/*
 * The same, with not_found_hint (if not NULL) as the hint of a page the WAL
 * cannot rebuild (WALREDO_NOT_FOUND, WALREDO_NOT_IN_WAL) in place of the
 * default one (an archive directory, wal_keep_size).
 */
extern void inspect_library_error_hint(int status, const char *context,
									   const char *not_found_hint) pg_attribute_noreturn();

/* Whether a pending interrupt can be acted on now: library callbacks stop. */
extern int	inspect_interrupt_pending(void *userdata);

/* functions.c: arguments, checked with PostgreSQL's errors */
extern ForkNumber inspect_fork_argument(text *fork);
extern BlockNumber inspect_block_argument(int64 blkno);
extern void inspect_relation_tag(Oid relid, ForkNumber forknum, BlockNumber blkno,
								 walredo_page_tag *tag, bool *rewritten, const char *verb);

/* pool.c */
extern walredo_pool *inspect_get_pool(void);
extern void inspect_redo(const walredo_page_tag *tag, const uint8 *base_page,
						 walredo_plan *plan, uint8 *page);
extern void inspect_register_exit(void);

/* base.c */
typedef struct InspectBase
{
	char		dir[MAXPGPATH];	/* as walredo_inspect.base_backup names it */
	XLogRecPtr	start_lsn;		/* backup_label's START WAL LOCATION */
} InspectBase;

extern const InspectBase *inspect_base(void);
extern void inspect_base_page(const InspectBase *base, const walredo_page_tag *tag,
							  uint8 *page);

/* wal.c */
extern XLogRecPtr inspect_flush_limit(void);

/*
 * The page of tag as of lsn (flushed) into page, from the WAL and, when
 * walredo_inspect.base_backup is set and no record since its start
 * initializes the page, the backup's copy.  What it did, for reports:
 */
typedef struct InspectRebuild
{
	int			records;		/* records replayed */
	XLogRecPtr	first_lsn;		/* start of the first one, or the backup's */
	bool		from_base;		/* started from the base backup's copy */
} InspectRebuild;

extern void inspect_rebuild(const walredo_page_tag *tag, XLogRecPtr lsn,
							const char *not_found_hint, uint8 *page,
							InspectRebuild *what);

typedef struct InspectHistoryEntry
{
	XLogRecPtr	start_lsn;
	XLogRecPtr	end_lsn;
	uint32		xid;
	bool		has_image;
	bool		will_init;
	char		rmgr[32];
	char		record_type[48];
} InspectHistoryEntry;

typedef struct InspectHistory
{
	InspectHistoryEntry *entries;	/* malloc'd: filled by a library callback */
	size_t		n;
	size_t		cap;
	bool		out_of_memory;
} InspectHistory;

extern void inspect_history(const walredo_page_tag *tag, XLogRecPtr end_lsn,
							InspectHistory *history);
extern void inspect_wal_release(void);
extern void inspect_plan_release(void);

#endif							/* WALREDO_INSPECT_H */
