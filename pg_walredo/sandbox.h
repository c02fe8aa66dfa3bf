/*-------------------------------------------------------------------------
 *
 * sandbox.h
 *	  Confinement of a wal-redo process (see sandbox.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_SANDBOX_H
#define WALREDO_SANDBOX_H

/* Close inherited descriptors, apply Landlock and seccomp. FATAL on failure. */
extern void walredo_enter_sandbox(void);

#endif							/* WALREDO_SANDBOX_H */
