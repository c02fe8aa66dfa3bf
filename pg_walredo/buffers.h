/*-------------------------------------------------------------------------
 *
 * buffers.h
 *	  The buffer pool of a wal-redo process: the target's buffer, sentinels,
 *	  side pages, and what bounds the scratch directory (buffers.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_BUFFERS_H
#define WALREDO_BUFFERS_H

#include "access/xlogreader.h"
#include "storage/buf.h"

#include "pg_common/compat.h"

/*
 * A request begins: reset its counters, and drop the side pages kept from
 * earlier ones if they take half the pool.
 */
extern void buffers_begin_request(void);

/*
 * Put the target in the pool: the base page, or zeros when page is NULL.
 * Sets target_buffer.
 */
extern void place_target(const char *page);

/* The target's buffer, pinned and share-locked (UnlockReleaseBuffer it). */
extern Buffer lock_target(void);

/* Copy the target page as it is now into page (BLCKSZ bytes). */
extern void copy_target_page(char *page);

/* Whether buffers_end_request will remove scratch files. */
extern bool buffers_end_removes_files(void);

/*
 * The request ends: drop its buffers, and remove scratch files when they
 * could pile up.
 */
extern void buffers_end_request(void);

/* ERROR when the request wrote more than REQUEST_WRITE_BUDGET blocks. */
extern void check_write_budget(void);

/*
 * Before a record's blocks are placed: make sure the pool has room for them
 * without evicting anything.
 */
extern void make_room_for_record(DecodedXLogRecord *decoded);

/*
 * Put the record's blocks in the pool: the target, sentinels for the others.
 * Returns the target's block id, or -1.
 */
extern int	place_record_blocks(DecodedXLogRecord *decoded);

/* For heap records: the free-space-map and visibility-map pages redo touches. */
extern void place_side_pages(DecodedXLogRecord *decoded);

#endif							/* WALREDO_BUFFERS_H */
