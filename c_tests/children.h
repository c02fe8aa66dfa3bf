/*
 * children.h: the test process's own child processes, from /proc, for the
 * C tests that check what the library starts, stops and reaps.
 */
#ifndef WALREDO_C_TESTS_CHILDREN_H
#define WALREDO_C_TESTS_CHILDREN_H

#include <sys/types.h>

/*
 * Pids of our wal-redo processes: our children (ppid == getpid()) but a live
 * template process (spawn_mode=template; the processes it forks are our
 * children too), up to max stored in out. Zombies
 * are listed only when with_zombies is set; *zombies (when not NULL) counts
 * the zombies seen either way. Returns how many were found (may exceed max),
 * or -1 if /proc cannot be read.
 */
int children_list(pid_t *out, int max, int with_zombies, int *zombies);

/* One process's state letter from /proc/PID/stat ('Z' a zombie), or 0 if it
 * is gone. */
char child_state(pid_t pid);

/*
 * Whether a child has become PostgreSQL yet. Between fork and exec a child
 * still runs the library's start-up code; stopping it there would stall the
 * spawn itself (it waits for the exec), which no deadline covers: fault
 * tests hit only processes that are running PostgreSQL.
 */
int child_is_postgres(pid_t pid);

/*
 * Wait up to `seconds` until `n` of our wal-redo processes run PostgreSQL,
 * and return how many do then: for a test that must stop or count a pool's
 * processes together with its spare (spare_process, on by default), which
 * starts a few milliseconds after the pool's first start.
 */
int children_wait_running(int n, double seconds);

#endif
