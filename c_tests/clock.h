/*
 * clock.h: the C tests' clock: monotonic time in seconds or milliseconds,
 * and a sleep that resumes after signals.
 */
#ifndef WALREDO_C_TESTS_CLOCK_H
#define WALREDO_C_TESTS_CLOCK_H

#include <errno.h>
#include <time.h>

static inline double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static inline double
now_ms(void)
{
    return now_s() * 1e3;
}

static inline void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

#endif
