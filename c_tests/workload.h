/*
 * workload.h: the load test_chaos and test_storm put on a pool: 8 threads
 * that call walredo_redo, 2 that call walredo_submit and a monkey thread
 * that hits the pool's wal-redo processes, for some seconds; and CPU-bound
 * processes beside them (a busy machine).
 */
#ifndef WALREDO_C_TESTS_WORKLOAD_H
#define WALREDO_C_TESTS_WORKLOAD_H

#include <stdatomic.h>
#include <sys/types.h>

/* The test's own loops and counters; each thread gets its seed as its
 * argument ((void *) (uintptr_t) seed). */
typedef struct workload {
    void *(*redo_loop)(void *);   /* 8 threads: seeds redo_seed, redo_seed + 1, ... */
    void *(*submit_loop)(void *); /* 2 threads: seeds submit_seed, submit_seed + 1 */
    void *(*monkey)(void *);      /* 1 thread: seed monkey_seed */
    unsigned redo_seed, submit_seed, monkey_seed;
    atomic_int *stop;             /* set when the time is up: the loops return */
    atomic_long *submitted, *callbacks_run;
} workload;

/* Run the threads for `seconds`, stop and join them, then wait (up to 30 s)
 * until every submitted request has had its callback. */
void workload_run(const workload *w, int seconds);

/* CLOCK_MONOTONIC in seconds. */
double now_s(void);

/* A CPU-bound process that dies with us; stop_cpu_hog kills and reaps it. */
pid_t start_cpu_hog(void);
void stop_cpu_hog(pid_t hog);

#endif
