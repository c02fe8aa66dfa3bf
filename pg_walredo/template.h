/*-------------------------------------------------------------------------
 *
 * template.h
 *	  The template process that forks wal-redo processes (see template.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_TEMPLATE_H
#define WALREDO_TEMPLATE_H

/*
 * Define pg_walredo.template and install the hook that turns the process
 * into a template when it is on.  Call from _PG_init, before
 * MarkGUCPrefixReserved.
 */
extern void walredo_template_init(void);

#endif							/* WALREDO_TEMPLATE_H */
