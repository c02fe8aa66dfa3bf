/*-------------------------------------------------------------------------
 *
 * pg_walredo.h
 *	  What the files of pg_walredo share: the request in progress, set by
 *	  the request loop (pg_walredo.c) and read by the others.
 *
 * The files, by concern:
 *	  pg_walredo.c	the module: settings, taking over the single-user
 *					backend, the request loop, a request's start and end
 *	  protocol.c	the wire protocol (its messages are listed in protocol.h)
 *	  redo.c		applying one record to the target page
 *	  policy.c		which records may be applied, to which pages
 *	  buffers.c		the buffer pool: target, sentinels, side pages, and what
 *					bounds the scratch directory
 *	  scratch_files.c	removing relation files and directories redo made
 *	  sandbox.c		confinement: Landlock, seccomp, and its own tests
 *	  template.c	the template process that forks wal-redo processes
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_PG_WALREDO_H
#define WALREDO_PG_WALREDO_H

#include "common/relpath.h"
#include "storage/block.h"
#include "storage/buf.h"

#include "pg_common/compat.h"

/* GUC pg_walredo.verify: compare each applied record with its image. */
extern bool walredo_verify;

/* The request in progress (between B/P and G). */
extern bool request_active;
extern RelFileLocator target_rlocator;
extern ForkNumber target_forknum;
extern BlockNumber target_blkno;
extern Buffer target_buffer;
extern bool target_has_base;	/* P, not B */
extern int	n_request_records;

/* Whether this block is the request's target (asked for every block). */
static inline bool
is_target(RelFileLocator rlocator, ForkNumber forknum, BlockNumber blkno)
{
	return RelFileLocatorEquals(rlocator, target_rlocator) &&
		forknum == target_forknum && blkno == target_blkno;
}

/*
 * Heap blocks per visibility-map page, as in visibilitymap.c (which keeps
 * it to itself): two bits per heap block after the page header.  Needs
 * storage/bufpage.h.
 */
#define VM_HEAPBLOCKS_PER_PAGE	((BLCKSZ - MAXALIGN(SizeOfPageHeaderData)) * (BITS_PER_BYTE / 2))

#endif							/* WALREDO_PG_WALREDO_H */
