/*
 * check.h: the C tests' assertions, written once.
 *
 *   FAIL(fmt, ...)             end the test: "PROGRAM: FAILED at FILE:LINE: message", exit 1
 *   CHECK(cond, fmt, ...)      FAIL with the condition and the library's last
 *                              error unless cond holds; counts passed checks in `checks`
 *   CHECK_STATUS(call, want)   CHECK that call returned want, naming both statuses
 *   fail_if_hung_after(s)      the hang detector of a test that may deadlock
 *
 * A test that must clean up before it exits (test_redo kills its children)
 * defines CHECK_CLEANUP() before including this header.
 */
#ifndef WALREDO_C_TESTS_CHECK_H
#define WALREDO_C_TESTS_CHECK_H

#include <errno.h> /* program_invocation_short_name (_GNU_SOURCE) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <walredo.h>

#ifndef CHECK_CLEANUP
#define CHECK_CLEANUP() ((void) 0)
#endif

/* The checks that passed (a test prints the count at its end). */
static int checks __attribute__((unused));

#define FAIL(...)                                                            \
    do {                                                                     \
        fprintf(stderr, "%s: FAILED at %s:%d: ",                             \
                program_invocation_short_name, __FILE__, __LINE__);          \
        fprintf(stderr, __VA_ARGS__);                                        \
        fputc('\n', stderr);                                                 \
        CHECK_CLEANUP();                                                     \
        exit(1);                                                             \
    } while (0)

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s: FAILED at %s:%d: %s\n  ",                   \
                    program_invocation_short_name, __FILE__, __LINE__,       \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n  last error: %s\n", walredo_last_error());   \
            CHECK_CLEANUP();                                                 \
            exit(1);                                                         \
        }                                                                    \
        checks++;                                                            \
    } while (0)

/* Check that a call returned `want`, naming both codes on failure. */
#define CHECK_STATUS(call, want)                                             \
    do {                                                                     \
        int got_ = (call);                                                   \
        CHECK(got_ == (want), "%s returned %s (%d), expected %s", #call,     \
              walredo_status_name(got_), got_, walredo_status_name(want));   \
    } while (0)

/* The hang detector's message, made before it can fire (its signal handler
 * only writes). */
static char hang_message[160] __attribute__((unused));

static inline void
hang_detector_fired(int sig)
{
    (void) sig;
    (void) !write(2, hang_message, strlen(hang_message));
    _exit(1);
}

/* A test that may deadlock: it fails (exit 1) if still running in `seconds`
 * (three times that under valgrind, which runs one thread at a time: the
 * racing threads of test_lifecycle take 85 to 115 s there, close to 120). */
static inline void
fail_if_hung_after(unsigned seconds)
{
    if (getenv("WALREDO_TEST_UNDER_VALGRIND") != NULL)
        seconds *= 3;
    snprintf(hang_message, sizeof hang_message,
             "%s: FAILED: deadlock (no progress for %u s)\n",
             program_invocation_short_name, seconds);
    signal(SIGALRM, hang_detector_fired);
    alarm(seconds);
}

#endif
