/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  Which records a wal-redo process applies, and to which pages
 *	  (policy.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_POLICY_H
#define WALREDO_POLICY_H

#include "access/rmgr.h"
#include "access/xlogreader.h"

/*
 * Each refuses (ERROR) what the policy does not allow; apply_record (redo.c)
 * calls them in this order.
 */

/*
 * Only records that change nothing but pages; returns whether the record is
 * a Storage TRUNCATE, which check_truncate_target must then see.
 */
extern bool check_page_record(XLogRecord *record);

/* A truncation only where it cuts into the target visibility-map page. */
extern void check_truncate_target(DecodedXLogRecord *decoded);

/* Only a record that changes the target (target_block_id: -1 if no block). */
extern void check_changes_target(DecodedXLogRecord *decoded, bool vm_truncate,
								 int target_block_id);

/* Without a base page, the first record must initialize the target. */
extern void check_initializes_target(DecodedXLogRecord *decoded,
									 int target_block_id);

#endif							/* WALREDO_POLICY_H */
