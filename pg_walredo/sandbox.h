/*-------------------------------------------------------------------------
 *
 * sandbox.h
 *	  Confinement of a wal-redo process (see sandbox.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_SANDBOX_H
#define WALREDO_SANDBOX_H

/*
 * RLIMIT_FSIZE of the process: no scratch file grows past this.  It is far
 * below a relation segment (1 GB), so no second segment can ever be created
 * either: that takes padding the first one to its full size.  Set by
 * limit_scratch (pg_walredo.c), probed by walredo_sandbox_test.
 */
#define SCRATCH_FILE_LIMIT	(64 * 1024 * 1024)

/*
 * Close inherited descriptors, apply Landlock and seccomp.  FATAL on failure,
 * and when Landlock is missing unless require_landlock is false.
 */
extern void walredo_enter_sandbox(bool require_landlock);

/*
 * Mark this process's System V segment for removal as soon as it exists, so
 * that the kernel frees it with the process however it dies.
 */
extern void walredo_release_segment(void);

/*
 * The template process's own confinement (see sandbox.c), inherited by the
 * processes it forks until they enter theirs.
 */
extern void walredo_confine_template(void);

/*
 * No other process of the same account may open this one's memory (see
 * sandbox.c): called as the extension loads, before any WAL.
 */
extern void walredo_make_undumpable(void);

/*
 * pg_walredo.test_on_ping: misbehave as "what" says, to show that the
 * sandbox stops it (FATAL if it does not).
 */
extern void walredo_sandbox_test(const char *what);

#endif							/* WALREDO_SANDBOX_H */
