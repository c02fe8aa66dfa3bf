/*
 * workload.c: see workload.h.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"
#include "workload.h"

#define REDOERS 8
#define SUBMITTERS 2

double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
workload_run(const workload *w, int seconds)
{
    pthread_t redoers[REDOERS], submitters[SUBMITTERS], monkey;
    double started = now_s();

    for (int i = 0; i < REDOERS; i++)
        pthread_create(&redoers[i], NULL, w->redo_loop, (void *) (uintptr_t) (w->redo_seed + i));
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_create(&submitters[i], NULL, w->submit_loop,
                       (void *) (uintptr_t) (w->submit_seed + i));
    pthread_create(&monkey, NULL, w->monkey, (void *) (uintptr_t) w->monkey_seed);
    while (now_s() - started < seconds)
        usleep(100000);
    atomic_store(w->stop, 1);
    pthread_join(monkey, NULL);
    for (int i = 0; i < REDOERS; i++)
        pthread_join(redoers[i], NULL);
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(submitters[i], NULL);
    /* Every submitted request gets its callback, by its deadline. */
    for (int i = 0; i < 3000 && atomic_load(w->callbacks_run) < atomic_load(w->submitted); i++)
        usleep(10000);
}

pid_t
start_cpu_hog(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0)
    {
        volatile unsigned long x = 0;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        /* Never true: it only makes the loop's result used (newer gcc
         * warns about a volatile that is only written). */
        for (;;)
            if (++x == 0)
                _exit(1);
    }
    return pid;
}

void
stop_cpu_hog(pid_t hog)
{
    kill(hog, SIGKILL);
    waitpid(hog, NULL, 0);
}
