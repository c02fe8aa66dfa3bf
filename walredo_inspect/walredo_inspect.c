/*
 * walredo_inspect.c
 *		Module set-up: settings, and how library errors become ereports.
 *
 * Nothing here starts a thread or a process: _PG_init may run in the
 * postmaster (shared_preload_libraries), which must stay single-threaded.
 * The pool is made by the first call that needs it, in a backend (pool.c).
 */
#include "walredo_inspect.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/varlena.h"

PG_MODULE_MAGIC;

int			inspect_processes = 1;
int			inspect_timeout_ms = 10000;
char	   *inspect_archive_dir = NULL;
char	   *inspect_restore_command = NULL;
char	   *inspect_scratch_dir = NULL;
char	   *inspect_base_backup = NULL;

void		_PG_init(void);

/* Only absolute paths: a backend's working directory is the data directory. */
static bool
check_absolute_path(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!is_absolute_path(*newval))
	{
		GUC_check_errdetail("It must be an absolute path.");
		return false;
	}
	return true;
}

/* A comma-separated list of absolute paths (quoted when they hold commas). */
static bool
check_absolute_paths(char **newval, void **extra, GucSource source)
{
	List	   *dirs = NIL;
	ListCell   *lc;
	bool		ok = true;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!SplitDirectoriesString(pstrdup(*newval), ',', &dirs))
	{
		GUC_check_errdetail("List syntax is invalid.");
		return false;
	}
	foreach(lc, dirs)
	{
		if (!is_absolute_path((char *) lfirst(lc)))
		{
			GUC_check_errdetail("Every directory must be an absolute path.");
			ok = false;
			break;
		}
	}
	list_free_deep(dirs);
	return ok;
}

void
_PG_init(void)
{
	DefineCustomIntVariable("walredo_inspect.processes",
							"Wal-redo processes each backend may run.",
							"The backend's pool is made on first use with this many processes; "
							"a change takes effect at the next call.",
							&inspect_processes,
							1, 1, 64,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("walredo_inspect.timeout",
							"Deadline of one page's redo, retries included.",
							"A wal-redo process that sends no page for a quarter of it is "
							"taken for hung, killed, and the request retried while the "
							"deadline allows.",
							&inspect_timeout_ms,
							10000, 1, 86400000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("walredo_inspect.archive_dir",
							   "Directories of archived WAL segments read after pg_wal, in order.",
							   "A comma-separated list.  Segments, plain or compressed (.gz, .zst, "
							   ".lz4), are read in place, never copied into pg_wal.",
							   &inspect_archive_dir,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   check_absolute_paths, NULL, NULL);

	/*
	 * A shell command run as the server's user: superuser only, as
	 * PostgreSQL's own restore_command.
	 */
	DefineCustomStringVariable("walredo_inspect.restore_command",
							   "Shell command that fetches an archived WAL file no directory has.",
							   "As restore_command: %f the file name, %p the path to write. Files "
							   "go to pgsql_tmp_walredo_restore.PID in the data directory, removed "
							   "when the backend exits.",
							   &inspect_restore_command,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	/*
	 * Superuser only: the backup holds every database's pages, and
	 * repair_page installs what is rebuilt from it.
	 */
	DefineCustomStringVariable("walredo_inspect.base_backup",
							   "A base backup of this cluster (pg_basebackup, plain format).",
							   "Pages that no WAL record since its start initializes are rebuilt "
							   "from its copy and the records since, so the WAL before the backup "
							   "is never needed.",
							   &inspect_base_backup,
							   "",
							   PGC_SUSET,
							   0,
							   check_absolute_path, NULL, NULL);

	/*
	 * What the wal-redo processes load and start from lives there, so only a
	 * superuser may point it elsewhere; the default is the server's own
	 * (pool.c), never a shared temporary directory where anyone could take
	 * the name first.
	 */
	DefineCustomStringVariable("walredo_inspect.scratch_dir",
							   "Directory of the wal-redo processes' scratch directories.",
							   "Empty: pgsql_tmp_walredo in the data directory. It must belong "
							   "to the server's user and be writable by nobody else.",
							   &inspect_scratch_dir,
							   "",
							   PGC_SUSET,
							   0,
							   check_absolute_path, NULL, NULL);

	MarkGUCPrefixReserved("walredo_inspect");
}

/*
 * Library callbacks run inside the library: they must not longjmp, so they
 * only report whether ProcessInterrupts would have something to do.
 */
int
inspect_interrupt_pending(void *userdata)
{
	return INTERRUPTS_PENDING_CONDITION() && INTERRUPTS_CAN_BE_PROCESSED();
}

void
inspect_library_error(int status, const char *context)
{
	inspect_library_error_hint(status, context, NULL);
}

void
inspect_library_error_hint(int status, const char *context, const char *not_found_hint)
{
	/* Copy first: the message lasts only until the next failing call. */
	char	   *message = pstrdup(walredo_last_error());
	int			code;

	switch (status)
	{
		case WALREDO_INVALID_ARGUMENT:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		case WALREDO_MALFORMED_RECORD:
			code = ERRCODE_DATA_CORRUPTED;
			break;
		case WALREDO_NOT_FOUND:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%s: %s", context, message),
					 not_found_hint ? errhint("%s", not_found_hint) :
					 errhint("Set walredo_inspect.archive_dir to a directory of archived WAL "
							 "segments (plain or compressed), or walredo_inspect.restore_command "
							 "to a command that fetches them, or walredo_inspect.base_backup to "
							 "a base backup of this cluster, or raise wal_keep_size to keep "
							 "more WAL in pg_wal.")));
			pg_unreachable();
		case WALREDO_NO_SUCH_BLOCK:
			/* The block's absence at that LSN, as a missing file would be. */
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FILE),
					 errmsg("%s: %s", context, message),
					 errdetail("The walredo library returned %s.", walredo_status_name(status))));
			pg_unreachable();
		case WALREDO_NOT_IN_WAL:
			/* No archive would help: no hint about one. */
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%s: %s", context, message),
					 errdetail("The walredo library returned %s.", walredo_status_name(status)),
					 not_found_hint ? errhint("%s", not_found_hint) : 0));
			pg_unreachable();
		case WALREDO_REDO_FAILED:
		case WALREDO_TIMEOUT:
			code = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
			break;
		case WALREDO_SPAWN_FAILED:
			code = ERRCODE_SYSTEM_ERROR;
			break;
		case WALREDO_BUSY:
			code = ERRCODE_INSUFFICIENT_RESOURCES;
			break;
		default:
			code = ERRCODE_INTERNAL_ERROR;
			break;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("%s: %s", context, message),
			 errdetail("The walredo library returned %s.", walredo_status_name(status))));
	pg_unreachable();
}
