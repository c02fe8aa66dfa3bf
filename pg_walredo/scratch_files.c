/*-------------------------------------------------------------------------
 *
 * scratch_files.c
 *	  Removing the files and directories redo made in the scratch data
 *	  directory for relations (buffers_end_request in buffers.c decides
 *	  when).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "catalog/pg_tablespace_d.h"
#include "common/relpath.h"
#include "storage/smgr.h"

#include "scratch_files.h"

/*
 * Close these relations and remove all their files (every fork, every
 * segment).  Their buffers must be gone already.  Done by hand rather than
 * with smgrdounlinkall, which would probe each fork's size, truncate every
 * file before unlinking it and queue shared invalidation messages: none of
 * that is needed in a process that is alone with its scratch directory.
 */
void
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
void
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
