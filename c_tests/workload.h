/*
 * workload.h: the load test_chaos and test_storm put on a pool: 8 threads
 * that call walredo_redo and 2 that call walredo_submit with random cases of
 * the fixtures that succeed, and the test's monkey thread that hits the
 * pool's wal-redo processes, for some seconds; and CPU-bound processes
 * beside them (a busy machine).
 */
#ifndef WALREDO_C_TESTS_WORKLOAD_H
#define WALREDO_C_TESTS_WORKLOAD_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h"
#include "fixture.h"

typedef struct workload {
    walredo_pool *pool;
    /* Each request is cases[ok_cases[random % n_ok]]. */
    const fixture *cases;
    const int *ok_cases;
    int n_ok;
    /* The test's judgement of one answer: status, page, the library's
     * message, and when the request was made (now_s()). Called on the
     * calling thread (walredo_redo) or in the callback (walredo_submit). */
    void (*answer)(const fixture *c, int status, const uint8_t *page, const char *message,
                   double started);
    void *(*monkey)(void *); /* its argument: (void *) (uintptr_t) monkey_seed */
    /* rand_r seeds: the redo threads get redo_seed + 0..7, the submitters
     * submit_seed + 0..1. */
    unsigned redo_seed, submit_seed, monkey_seed;
    atomic_int *stop;        /* set when the time is up: the loops return */
    atomic_long *submitted, *callbacks_run;
} workload;

/* Once the pool has answered one request (see workload.c), run the threads
 * for `seconds`, stop and join them, then wait (up to 30 s) until every
 * submitted request has had its callback. */
void workload_run(const workload *w, int seconds);

/* A CPU-bound process that dies with us; stop_cpu_hog kills and reaps it. */
pid_t start_cpu_hog(void);
void stop_cpu_hog(pid_t hog);

#endif
