/*
 * base.c
 *		The base backup named by walredo_inspect.base_backup: where its WAL
 *		starts, and its copy of a block.
 *
 * A pg_basebackup of this cluster in plain format (a directory with
 * backup_label).  Pages that no WAL record since the backup's start
 * initializes are rebuilt from the backup's copy plus the block's records
 * since then (walredo_wal_plan_on_base), as PostgreSQL's recovery of that
 * backup would.  The backup is read in place, never written.
 */
#include "walredo_inspect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/pg_control.h"
#include "common/relpath.h"
#include "storage/fd.h"

/* What backup_label says, and which directory it was read from. */
static InspectBase base;
static bool base_read = false;

/* A file of the backup, for messages. */
static char *
base_file(const char *dir, const char *name)
{
	return psprintf("%s/%s", dir, name);
}

/* The whole of a small file of the backup (NULL: it does not exist). */
static char *
read_small_file(const char *path, size_t most, size_t *len)
{
	int			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	char	   *data;
	ssize_t		n;

	if (fd < 0)
	{
		if (errno == ENOENT)
			return NULL;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	}
	data = palloc(most + 1);
	n = read(fd, data, most);
	if (n < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", path)));
	CloseTransientFile(fd);
	data[n] = '\0';
	*len = (size_t) n;
	return data;
}

/* Check the backup directory and read its backup_label into base. */
static void
read_base(const char *dir)
{
	char	   *label_path = base_file(dir, "backup_label");
	char	   *control_path = base_file(dir, XLOG_CONTROL_FILE);
	char	   *label;
	char	   *control;
	char	   *line;
	size_t		len;
	uint32		hi,
				lo;
	struct stat st;
	uint64		system_id;

	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("walredo_inspect.base_backup \"%s\" is not a directory", dir)));
	label = read_small_file(label_path, 64 * 1024, &len);
	if (label == NULL)
	{
		char	   *tar = base_file(dir, "base.tar");

		if (stat(tar, &st) == 0 || stat(psprintf("%s.gz", tar), &st) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("walredo_inspect.base_backup \"%s\" is a tar-format backup", dir),
					 errhint("Unpack its base.tar into a directory of its own (tar -xf) and "
							 "name that directory.")));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("walredo_inspect.base_backup \"%s\" has no backup_label", dir),
				 errdetail("Only a base backup (pg_basebackup, plain format) says where its WAL "
						   "starts.")));
	}
	line = strstr(label, "START WAL LOCATION: ");
	if (line == NULL || sscanf(line, "START WAL LOCATION: %X/%X", &hi, &lo) != 2 ||
		((uint64) hi << 32 | lo) == InvalidXLogRecPtr)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid backup_label \"%s\": no START WAL LOCATION", label_path)));

	/* The backup's pg_control: another cluster's backup is refused. */
	control = read_small_file(control_path, sizeof(ControlFileData), &len);
	if (control == NULL || len < sizeof(uint64))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("walredo_inspect.base_backup \"%s\" has no %s", dir, XLOG_CONTROL_FILE)));
	memcpy(&system_id, control, sizeof(system_id));
	if (system_id != GetSystemIdentifier())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("walredo_inspect.base_backup \"%s\" is a backup of another cluster", dir),
				 errdetail("Its system identifier is " UINT64_FORMAT ", this cluster's "
						   UINT64_FORMAT ".", system_id, GetSystemIdentifier())));

	strlcpy(base.dir, dir, sizeof(base.dir));
	base.start_lsn = (uint64) hi << 32 | lo;
	base_read = true;
}

/*
 * The base backup walredo_inspect.base_backup names, checked (ERROR when it
 * is not a base backup of this cluster); NULL when it is not set.  Read
 * again when the setting changes.
 */
const InspectBase *
inspect_base(void)
{
	const char *dir = inspect_base_backup;

	if (dir == NULL || dir[0] == '\0')
		return NULL;
	if (!base_read || strcmp(base.dir, dir) != 0)
	{
		base_read = false;
		read_base(dir);
	}
	return &base;
}

/*
 * The backup's copy of tag's block into page (BLCKSZ bytes).  ERROR when the
 * backup lacks it (its file is missing or shorter): no WAL since the backup
 * made the block, so nothing can rebuild it.
 */
void
inspect_base_page(const InspectBase *b, const walredo_page_tag *tag, uint8 *page)
{
	RelFileLocator loc;
	char	   *rel;
	char	   *path;
	BlockNumber segno = tag->blkno / RELSEG_SIZE;
	off_t		offset = (off_t) (tag->blkno % RELSEG_SIZE) * BLCKSZ;
	int			fd;
	ssize_t		n;

	relfile_spc_oid(loc) = tag->spcnode;
	relfile_db_oid(loc) = tag->dbnode;
	relfile_number(loc) = tag->relnode;
	rel = relpathperm_palloc(loc, (ForkNumber) tag->forknum);
	path = segno == 0 ? psprintf("%s/%s", b->dir, rel) :
		psprintf("%s/%s.%u", b->dir, rel, segno);

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0 && errno != ENOENT)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	n = fd < 0 ? 0 : pg_pread(fd, page, BLCKSZ, offset);
	if (n < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read block %u of file \"%s\": %m", tag->blkno, path)));
	if (fd >= 0)
		CloseTransientFile(fd);
	if (n != BLCKSZ)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the base backup has no block %u of relation file %s", tag->blkno, rel),
				 errdetail("No WAL record since the backup's start, %X/%X, initializes the page, "
						   "so its copy in the backup (\"%s\") is needed.",
						   LSN_FORMAT_ARGS(b->start_lsn), path)));
}
