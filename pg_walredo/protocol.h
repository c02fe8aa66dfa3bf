/*-------------------------------------------------------------------------
 *
 * protocol.h
 *	  The wal-redo pipe protocol, as pg_walredo speaks it (protocol.c).
 *
 * The host writes messages to the process's stdin; the process writes
 * nothing to stdout but whole pages (BLCKSZ bytes), in answer to G and H.
 * Every message is a tag byte, then a big-endian uint32 length that counts
 * its own four bytes and the payload, then the payload.  A page tag is 17
 * bytes: the fork number (uint8), then the tablespace, database and
 * relation numbers and the block number (big-endian uint32 each).
 *
 *	tag  payload                                 reply
 *	B    page tag                                none: begins a request whose
 *	                                             target page starts as zeros
 *	                                             (the first record must
 *	                                             initialize it)
 *	P    page tag, the base page (BLCKSZ bytes)  none: begins a request from
 *	                                             that page
 *	A    end LSN of the record (big-endian       none: applies the record to
 *	     uint64), the record (XLogRecord,        the target page
 *	     xl_tot_len bytes)
 *	G    page tag (the request's target)         the target page; ends the
 *	                                             request
 *	H    none                                    a page of zeros (a ping)
 *
 * A B or P while a request is open abandons it.  Any error (an unknown tag,
 * a length no message of that tag has, a record that is corrupt or refused)
 * ends the process: the host sees EOF on stdout and reads why on stderr.
 * The same protocol is written by the library's src/process/protocol.rs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_PROTOCOL_H
#define WALREDO_PROTOCOL_H

#include "access/xlogrecord.h"
#include "storage/block.h"
#include "utils/memutils.h"

#include "pg_common/compat.h"

#define PAGE_TAG_SIZE		17	/* forknum u8, spc, db, rel, blkno u32 */

/*
 * The longest record accepted, on every version: the longest PostgreSQL
 * 15's own WAL reader can hold.  Version 15 has no XLogRecordMaxSize (that
 * came with 16, and is smaller); what bounds xl_tot_len there is
 * allocate_recordbuf(), which rounds the length up past the next
 * XLOG_BLCKSZ boundary and pallocs that, so it must stay within
 * MaxAllocSize.  An A message carries the end LSN and the record.
 */
#define MAX_RECORD_LEN		((uint32) ((MaxAllocSize / XLOG_BLCKSZ) * XLOG_BLCKSZ - 1))

/* Allocate the input buffer; once, before the first read_message. */
extern void protocol_init(void);

/*
 * The next message from stdin, its tag and length checked; false at a clean
 * EOF.  *payload stays valid until the next call.
 */
extern bool read_message(char *tag, char **payload, uint32 *payload_len);

/* The page tag at p (PAGE_TAG_SIZE bytes); FATAL if it names no block. */
extern void parse_page_tag(const char *p, RelFileLocator *rlocator,
						   ForkNumber *forknum, BlockNumber *blkno);

/* Write one page (BLCKSZ bytes) to stdout. */
extern void write_page(const char *page);

#endif							/* WALREDO_PROTOCOL_H */
