/*-------------------------------------------------------------------------
 *
 * redo.h
 *	  Applying one WAL record to the target page (redo.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_REDO_H
#define WALREDO_REDO_H

/*
 * Start the resource managers and allocate the WAL reader: once, at
 * start-up, before the first record.
 */
extern void redo_init(void);

/* A: decode one record and apply it to the target page. */
extern void apply_record(const char *payload, uint32 len);

/* Log what pg_walredo.verify checked, at exit. */
extern void report_verification(void);

#endif							/* WALREDO_REDO_H */
