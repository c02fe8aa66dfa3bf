/*
 * walredo_contract.h
 *		Declarations of the C ABI additions walredo_inspect needs
 *		(/work/inspect-contract/API.md), until include/walredo.h has them.
 *
 * Branches inspect-call and inspect-wal add these to src/ffi/; once they are
 * merged, include/walredo.h declares them and this file declares nothing
 * (WALREDO_IN_PROGRESS tells which header is the newer one).
 */
#ifndef WALREDO_CONTRACT_H
#define WALREDO_CONTRACT_H

#include <stdbool.h>
#include "walredo.h"

#ifndef WALREDO_IN_PROGRESS

#define WALREDO_IN_PROGRESS 10
#define WALREDO_CANCELLED   11
#define WALREDO_NOT_FOUND   12

typedef struct walredo_call walredo_call;
typedef struct walredo_wal walredo_wal;
typedef struct walredo_plan walredo_plan;

typedef int (*walredo_interrupt_fn) (void *userdata);

typedef struct walredo_history_entry
{
	uint64_t	start_lsn;
	uint64_t	end_lsn;
	uint32_t	xid;
	uint8_t		rmid;
	uint8_t		info;
	bool		has_image;
	bool		will_init;
	const char *rmgr;
	const char *record_type;
} walredo_history_entry;

typedef int (*walredo_history_fn) (void *userdata,
								   const walredo_history_entry *entry);

extern int	walredo_call_start(walredo_pool *pool, const walredo_page_tag *tag,
							   const uint8_t *base_page,
							   const walredo_record *records, size_t n_records,
							   walredo_call **out);
extern int	walredo_call_fd(const walredo_call *call);
extern int	walredo_call_finish(walredo_call *call, uint8_t *out_page);
extern void walredo_call_cancel(walredo_call *call);

extern int	walredo_wal_open(const char *const *dirs, size_t n_dirs,
							 uint32_t timeline, walredo_wal **out);
extern void walredo_wal_free(walredo_wal *wal);
extern int	walredo_wal_plan(walredo_wal *wal, const walredo_page_tag *tag,
							 uint64_t lsn, walredo_interrupt_fn interrupt,
							 void *userdata, walredo_plan **out);
extern size_t walredo_plan_n_records(const walredo_plan *plan);
extern const walredo_record *walredo_plan_records(const walredo_plan *plan);
extern void walredo_plan_free(walredo_plan *plan);
extern int	walredo_wal_history(walredo_wal *wal, const walredo_page_tag *tag,
								uint64_t end_lsn, walredo_history_fn each,
								void *each_userdata,
								walredo_interrupt_fn interrupt,
								void *interrupt_userdata);
extern int	walredo_wal_bounds(walredo_wal *wal, uint64_t end_lsn,
							   uint64_t *oldest_start, uint64_t *newest_end);

#endif							/* WALREDO_IN_PROGRESS */

#endif							/* WALREDO_CONTRACT_H */
