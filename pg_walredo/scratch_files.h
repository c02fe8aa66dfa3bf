/*-------------------------------------------------------------------------
 *
 * scratch_files.h
 *	  Removing what redo made in the scratch data directory
 *	  (scratch_files.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_SCRATCH_FILES_H
#define WALREDO_SCRATCH_FILES_H

#include "pg_common/compat.h"

/*
 * Close these relations and remove all their files (every fork, every
 * segment).  Their buffers must be gone already.
 */
extern void remove_rel_files(RelFileLocator *rlocators, int n);

/*
 * Remove the database (and tablespace) directories made for these
 * relations, where they are empty.
 */
extern void remove_rel_dirs(RelFileLocator *rlocators, int n);

#endif							/* WALREDO_SCRATCH_FILES_H */
