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

extern bool is_page_record(RmgrId rmid, uint8 info);
extern bool is_smgr_truncate(RmgrId rmid, uint8 info);
extern bool clears_target_vm_bits(DecodedXLogRecord *decoded);
extern bool cuts_target_vm_page(DecodedXLogRecord *decoded);

#endif							/* WALREDO_POLICY_H */
