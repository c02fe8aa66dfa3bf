/*
 * pool.c
 *		The backend's pool of wal-redo processes, and waiting for a call.
 *
 * One pool per backend, made by the first call that needs it (never in the
 * postmaster: the pool starts threads) and freed by an on_proc_exit callback,
 * which also runs after FATAL, pg_terminate_backend and postmaster death.
 * Freeing the pool kills and reaps its processes and removes their scratch
 * directories.  A backend killed outright leaves that to the library: its
 * processes get PR_SET_PDEATHSIG, and the next pool anywhere removes dead
 * hosts' scratch directories.
 *
 * A request is a walredo_call: the backend waits on its descriptor together
 * with its latch, so a cancel or statement_timeout is seen at once.  The
 * library never calls back during a call.
 */
#include "walredo_inspect.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "access/xlog.h"

static walredo_pool *pool = NULL;
static int	pool_processes = 0;
static int	pool_timeout_ms = 0;
static char pool_scratch_dir[MAXPGPATH];
static bool exit_registered = false;

/* The call being waited for, if any: cancelled on ERROR and at exit. */
static walredo_call *current_call = NULL;

static void
cancel_current_call(void)
{
	walredo_call *call = current_call;

	current_call = NULL;
	walredo_call_cancel(call);
}

/* on_proc_exit: nothing of the library outlives the backend. */
static void
inspect_exit(int code, Datum arg)
{
	cancel_current_call();
	inspect_plan_release();
	inspect_wal_release();
	if (pool != NULL)
	{
		walredo_pool *p = pool;

		pool = NULL;
		walredo_pool_free(p);
	}
}

void
inspect_register_exit(void)
{
	if (!exit_registered)
	{
		on_proc_exit(inspect_exit, (Datum) 0);
		exit_registered = true;
	}
}

static void
config_set(walredo_config *cfg, const char *key, const char *value)
{
	int			rc = walredo_config_set(cfg, key, value);

	if (rc != WALREDO_OK)
	{
		char	   *message = pstrdup(walredo_last_error());

		walredo_config_free(cfg);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not configure the wal-redo pool: %s", message),
				 errdetail("Setting \"%s\" to \"%s\".", key, value)));
	}
}

walredo_pool *
inspect_get_pool(void)
{
	walredo_config *cfg;
	char		bindir[MAXPGPATH];
	char		extension[MAXPGPATH];
	char		number[32];
	char		scratch_dir[MAXPGPATH];
	int			rc;

	/* Threads in the postmaster would break every backend it forks. */
	if (IsPostmasterEnvironment && !IsUnderPostmaster)
		elog(ERROR, "walredo_inspect cannot run in the postmaster");

	/*
	 * The scratch root: walredo_inspect.scratch_dir, or one in the data
	 * directory (the server's alone; pg_basebackup and pg_rewind skip names
	 * that start with pgsql_tmp).
	 */
	if (inspect_scratch_dir != NULL && inspect_scratch_dir[0] != '\0')
		strlcpy(scratch_dir, inspect_scratch_dir, sizeof(scratch_dir));
	else
		snprintf(scratch_dir, sizeof(scratch_dir), "%s/%s", DataDir, INSPECT_SCRATCH_DEFAULT);

	/* A changed setting takes effect with a new pool, between calls. */
	if (pool != NULL &&
		(pool_processes != inspect_processes || pool_timeout_ms != inspect_timeout_ms ||
		 strcmp(pool_scratch_dir, scratch_dir) != 0))
	{
		walredo_pool *p = pool;

		pool = NULL;
		walredo_pool_free(p);
	}
	if (pool != NULL)
		return pool;

	inspect_register_exit();

	/* The server's own programs: those of this backend's installation. */
	strlcpy(bindir, my_exec_path, sizeof(bindir));
	get_parent_directory(bindir);
	snprintf(extension, sizeof(extension), "%s/pg_walredo.so", pkglib_path);

	cfg = walredo_config_new();
	if (cfg == NULL)
		inspect_library_error(WALREDO_INTERNAL, "could not configure the wal-redo pool");
	snprintf(number, sizeof(number), "%d", inspect_processes);
	config_set(cfg, "processes", number);
	snprintf(number, sizeof(number), "%d", inspect_timeout_ms);
	config_set(cfg, "timeout_ms", number);
	config_set(cfg, "pg_bindir", bindir);
	config_set(cfg, "extension_path", extension);
	config_set(cfg, "scratch_dir", scratch_dir);
	/* Redo must behave as it did on this cluster. */
	config_set(cfg, "data_checksums", DataChecksumsEnabled() ? "on" : "off");
	config_set(cfg, "wal_log_hints", wal_log_hints ? "on" : "off");

	rc = walredo_pool_new(cfg, &pool);
	walredo_config_free(cfg);
	if (rc != WALREDO_OK)
	{
		pool = NULL;
		inspect_library_error(rc, "could not start the wal-redo pool");
	}
	pool_processes = inspect_processes;
	pool_timeout_ms = inspect_timeout_ms;
	strlcpy(pool_scratch_dir, scratch_dir, sizeof(pool_scratch_dir));
	return pool;
}

/*
 * Rebuild tag's page from plan, applied to base_page (NULL: none), into page
 * (BLCKSZ bytes).  Waits on the call's
 * descriptor and the latch; an interrupt that raises an ERROR cancels the
 * call first (PG_CATCH), a FATAL leaves it to inspect_exit.  Only C frames
 * are on the stack when CHECK_FOR_INTERRUPTS runs.
 */
void
inspect_redo(const walredo_page_tag *tag, const uint8 *base_page, walredo_plan *plan,
			 uint8 *page)
{
	walredo_pool *p = inspect_get_pool();
	walredo_call *call;
	char		key[16];
	int			key_len;
	int			rc;
	int			fd;

	Assert(current_call == NULL);

	/*
	 * Each database is a tenant of its own: a wal-redo process started for
	 * one database's pages never gets another's (shared catalogs are
	 * "db-0").
	 */
	key_len = snprintf(key, sizeof(key), "db-%u", tag->dbnode);
	rc = walredo_call_start_keyed(p, (const uint8 *) key, key_len, tag, base_page,
								  walredo_plan_records(plan),
								  walredo_plan_n_records(plan), &call);
	if (rc != WALREDO_OK)
		inspect_library_error(rc, "could not rebuild the page");
	current_call = call;

	fd = walredo_call_fd(call);
	if (fd < 0)
	{
		cancel_current_call();
		inspect_library_error(WALREDO_INTERNAL, "could not wait for the wal-redo process");
	}

	PG_TRY();
	{
		for (;;)
		{
			rc = walredo_call_finish(current_call, page);
			if (rc != WALREDO_IN_PROGRESS)
			{
				/* finished: the library freed the call */
				current_call = NULL;
				break;
			}
			/* The timeout only guards against a missed wake-up. */
			(void) WaitLatchOrSocket(MyLatch,
									 WL_LATCH_SET | WL_SOCKET_READABLE |
									 WL_EXIT_ON_PM_DEATH | WL_TIMEOUT,
									 fd, 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		cancel_current_call();
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (rc != WALREDO_OK)
		inspect_library_error(rc, "could not rebuild the page");
}
