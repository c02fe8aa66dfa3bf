/*
 * wal.c
 *		The backend's WAL handle: replay plans and block history.
 *
 * One walredo_wal per backend, kept between calls, so the library's index of
 * the WAL (every record by the blocks it changes) is built once and read on
 * into the WAL flushed since, not rebuilt on every lookup: a lookup then
 * reads only its block's records.  It
 * reads the server's pg_wal and then walredo_inspect.archive_dir's directories, in place,
 * then what walredo_inspect.restore_command fetches into a directory of this
 * backend's (pgsql_tmp_walredo_restore.PID in the data directory: skipped by
 * pg_basebackup, removed at exit).  Reopened when the archive directory, the
 * restore command or the timeline changes.
 *
 * The library reads only up to the LSN it is given, which must be WAL that is
 * flushed (on a standby: replayed), so it never sees a half-written record.
 */
#include "walredo_inspect.h"

#include <stdlib.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#if PG_VERSION_NUM >= 150000
#include "access/xlogrecovery.h"
#endif
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/varlena.h"

static walredo_wal *wal = NULL;
static char *wal_archive_dir = NULL;	/* malloc'd: what wal was opened with */
static char *wal_restore_command = NULL;	/* malloc'd, likewise */
static TimeLineID wal_timeline = 0;

/* This backend's restore cache directory. */
static void
restore_cache_path(char *path, size_t size)
{
	snprintf(path, size, "%s/pgsql_tmp_walredo_restore.%d", DataDir, (int) MyProcPid);
}

/* Remove the restore cache directory and its files, if any. */
static void
restore_cache_remove(void)
{
	char		path[MAXPGPATH];

	restore_cache_path(path, sizeof(path));
	(void) rmtree(path, true);
}

/* The plan of the current lookup, if any: released on ERROR and at exit. */
static walredo_plan *current_plan = NULL;

/* The newest WAL position that may be read, and its timeline. */
static XLogRecPtr
flush_limit(TimeLineID *tli)
{
	if (RecoveryInProgress())
		return GetXLogReplayRecPtr(tli);
#if PG_VERSION_NUM < 150000
	/* 14: RecoveryInProgress, false, has set this backend's timeline. */
	*tli = ThisTimeLineID;
	return GetFlushRecPtr();
#else
	*tli = GetWALInsertionTimeLine();
	return GetFlushRecPtr(NULL);
#endif
}

XLogRecPtr
inspect_flush_limit(void)
{
	TimeLineID	tli;

	return flush_limit(&tli);
}

void
inspect_wal_release(void)
{
	walredo_wal *w = wal;

	wal = NULL;
	walredo_wal_free(w);
	free(wal_archive_dir);
	wal_archive_dir = NULL;
	free(wal_restore_command);
	wal_restore_command = NULL;
	restore_cache_remove();
}

void
inspect_plan_release(void)
{
	walredo_plan *p = current_plan;

	current_plan = NULL;
	walredo_plan_free(p);
}

static walredo_wal *
get_wal(void)
{
	const char *archive = inspect_archive_dir ? inspect_archive_dir : "";
	const char *restore = inspect_restore_command ? inspect_restore_command : "";
	const char **dirs;
	List	   *archives = NIL;
	ListCell   *lc;
	char		pg_wal[MAXPGPATH];
	size_t		n_dirs = 0;
	TimeLineID	tli;
	int			rc;

	(void) flush_limit(&tli);
	if (wal != NULL &&
		(strcmp(wal_archive_dir, archive) != 0 ||
		 strcmp(wal_restore_command, restore) != 0 || wal_timeline != tli))
		inspect_wal_release();
	if (wal != NULL)
		return wal;

	inspect_register_exit();
	wal_archive_dir = strdup(archive);
	wal_restore_command = strdup(restore);
	if (wal_archive_dir == NULL || wal_restore_command == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	/* pg_wal, then the archive directories in the order given. */
	if (!SplitDirectoriesString(pstrdup(archive), ',', &archives))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in walredo_inspect.archive_dir")));
	dirs = palloc((1 + list_length(archives)) * sizeof(char *));
	snprintf(pg_wal, sizeof(pg_wal), "%s/%s", DataDir, XLOGDIR);
	dirs[n_dirs++] = pg_wal;
	foreach(lc, archives)
		dirs[n_dirs++] = (const char *) lfirst(lc);

	rc = walredo_wal_open(dirs, n_dirs, tli, &wal);
	/* An archive of another cluster with the same segment names: refused. */
	if (rc == WALREDO_OK)
		rc = walredo_wal_expect_system(wal, GetSystemIdentifier());
	if (rc == WALREDO_OK && restore[0] != '\0')
	{
		char		cache[MAXPGPATH];

		restore_cache_path(cache, sizeof(cache));
		rc = walredo_wal_set_restore_command(wal, restore, cache, 0, 0);
	}
	if (rc != WALREDO_OK)
	{
		walredo_wal_free(wal);
		wal = NULL;
		free(wal_archive_dir);
		wal_archive_dir = NULL;
		free(wal_restore_command);
		wal_restore_command = NULL;
		inspect_library_error(rc, "could not open the WAL");
	}
	wal_timeline = tli;
	return wal;
}

/*
 * The records that rebuild tag as of lsn, to apply to the base backup's copy
 * of the block if walredo_plan_on_base says so (base_lsn: the backup's start;
 * 0: no backup).  The plan stays owned here; the caller releases it with
 * inspect_plan_release (also on ERROR).  A scan stopped for an interrupt is
 * retried when ProcessInterrupts did not raise an error (it may have only
 * handled a barrier or a config reload).
 */
static walredo_plan *
plan_with_base(const walredo_page_tag *tag, XLogRecPtr lsn, XLogRecPtr base_lsn,
			   const char *not_found_hint)
{
	walredo_wal *w = get_wal();
	int			rc;

	inspect_plan_release();
	for (;;)
	{
		walredo_plan *plan = NULL;

		if (base_lsn != InvalidXLogRecPtr)
			rc = walredo_wal_plan_on_base(w, tag, lsn, base_lsn, inspect_interrupt_pending,
										  NULL, &plan);
		else
			rc = walredo_wal_plan(w, tag, lsn, inspect_interrupt_pending, NULL, &plan);
		if (rc == WALREDO_OK)
		{
			current_plan = plan;
			return plan;
		}
		if (rc != WALREDO_CANCELLED)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	inspect_library_error_hint(rc, psprintf("could not rebuild block %u of relation %u/%u/%u as of %X/%X",
											tag->blkno, tag->spcnode, tag->dbnode, tag->relnode,
											LSN_FORMAT_ARGS(lsn)),
							   not_found_hint);
}

void
inspect_rebuild(const walredo_page_tag *tag, XLogRecPtr lsn, const char *not_found_hint,
				uint8 *page, InspectRebuild *what)
{
	const InspectBase *base = inspect_base();
	XLogRecPtr	base_lsn = InvalidXLogRecPtr;

	/* A backup taken after lsn has nothing to say about it. */
	if (base != NULL && base->start_lsn <= lsn)
		base_lsn = base->start_lsn;
	PG_TRY();
	{
		walredo_plan *plan = plan_with_base(tag, lsn, base_lsn, not_found_hint);
		size_t		n = walredo_plan_n_records(plan);
		uint8	   *base_page = NULL;

		what->records = (int) n;
		what->from_base = walredo_plan_on_base(plan) != 0;
		if (what->from_base)
		{
			base_page = palloc(BLCKSZ);
			inspect_base_page(base, tag, base_page);
			what->first_lsn = base->start_lsn;
		}
		else
			what->first_lsn = n > 0 ? walredo_plan_records(plan)[0].end_lsn : InvalidXLogRecPtr;
		inspect_redo(tag, base_page, plan, page);
	}
	PG_FINALLY();
	{
		inspect_plan_release();
	}
	PG_END_TRY();
}

/*
 * Runs inside the library: no palloc, no ereport.  Copies the entry (its
 * strings live only during the call) into malloc'd memory; stops the walk
 * when memory runs out.
 */
static int
collect_entry(void *userdata, const walredo_history_entry *entry)
{
	InspectHistory *h = (InspectHistory *) userdata;
	InspectHistoryEntry *e;

	if (h->n == h->cap)
	{
		size_t		cap = h->cap ? h->cap * 2 : 64;
		InspectHistoryEntry *grown = realloc(h->entries, cap * sizeof(*grown));

		if (grown == NULL)
		{
			h->out_of_memory = true;
			return 1;
		}
		h->entries = grown;
		h->cap = cap;
	}
	e = &h->entries[h->n++];
	e->start_lsn = entry->start_lsn;
	e->end_lsn = entry->end_lsn;
	e->xid = entry->xid;
	e->has_image = entry->has_image;
	e->will_init = entry->will_init;
	strlcpy(e->rmgr, entry->rmgr ? entry->rmgr : "", sizeof(e->rmgr));
	strlcpy(e->record_type, entry->record_type ? entry->record_type : "",
			sizeof(e->record_type));
	return 0;
}

/*
 * Every record up to end_lsn that references tag, oldest first, into
 * history->entries (palloc'd on return; the malloc'd array the callback
 * filled is freed before anything can raise an error).  With
 * walredo_inspect.base_backup, the records since the backup's start, the
 * segments no directory has fetched by the restore command, if any.
 */
void
inspect_history(const walredo_page_tag *tag, XLogRecPtr end_lsn,
				InspectHistory *history)
{
	walredo_wal *w = get_wal();
	const InspectBase *base = inspect_base();
	XLogRecPtr	since = base != NULL ? base->start_lsn : InvalidXLogRecPtr;
	int			rc;

	for (;;)
	{
		InspectHistory h = {0};

		rc = walredo_wal_history_since(w, tag, since, end_lsn, collect_entry, &h,
									   inspect_interrupt_pending, NULL);
		if (rc == WALREDO_OK && !h.out_of_memory)
		{
			history->n = h.n;
			history->entries = palloc_extended(Max(h.n, 1) * sizeof(InspectHistoryEntry),
											   MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
			if (history->entries != NULL && h.n > 0)
				memcpy(history->entries, h.entries, h.n * sizeof(InspectHistoryEntry));
			free(h.entries);
			if (history->entries == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory"),
						 errdetail("Block history of %zu records.", h.n)));
			return;
		}
		free(h.entries);
		if (h.out_of_memory)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Block history of more than %zu records.", h.n)));
		if (rc != WALREDO_CANCELLED)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	inspect_library_error(rc, psprintf("could not read the history of block %u of relation %u/%u/%u",
									   tag->blkno, tag->spcnode, tag->dbnode, tag->relnode));
}
