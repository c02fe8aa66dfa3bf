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

/* A loop's workload and its rand_r seed. */
typedef struct loop_arg {
    const workload *w;
    unsigned seed;
} loop_arg;

static const fixture *
random_case(const workload *w, unsigned *seed)
{
    return &w->cases[w->ok_cases[rand_r(seed) % w->n_ok]];
}

static void *
redo_loop(void *arg)
{
    const workload *w = ((loop_arg *) arg)->w;
    unsigned seed = ((loop_arg *) arg)->seed;
    uint8_t page[WALREDO_PAGE_SIZE];

    while (!atomic_load(w->stop))
    {
        const fixture *c = random_case(w, &seed);
        double started = now_s();
        int rc = walredo_redo(w->pool, &c->tag, c->base_page, c->records, c->n_records, page);

        w->answer(c, rc, page, walredo_last_error(), started);
    }
    return NULL;
}

typedef struct submitted_request {
    const workload *w;
    const fixture *c;
    double started;
} submitted_request;

static void
on_done(void *userdata, int status, const uint8_t *page, const char *message)
{
    submitted_request *r = userdata;

    const workload *w = r->w;

    w->answer(r->c, status, page, message, r->started);
    free(r);
    atomic_fetch_add(w->callbacks_run, 1);
}

static void *
submit_loop(void *arg)
{
    const workload *w = ((loop_arg *) arg)->w;
    unsigned seed = ((loop_arg *) arg)->seed;

    while (!atomic_load(w->stop))
    {
        submitted_request *r = malloc(sizeof *r);
        int rc;

        if (r == NULL)
            FAIL("out of memory");
        r->w = w;
        r->c = random_case(w, &seed);
        r->started = now_s();
        rc = walredo_submit(w->pool, &r->c->tag, r->c->base_page, r->c->records,
                            r->c->n_records, on_done, r);
        if (rc == WALREDO_OK)
            atomic_fetch_add(w->submitted, 1);
        else
        {
            free(r);
            if (rc == WALREDO_BUSY)
                usleep(1000);
            else
                FAIL("submit: %s %s", walredo_status_name(rc), walredo_last_error());
        }
        /* Keep the queue from filling up with our requests alone. */
        while (atomic_load(w->submitted) - atomic_load(w->callbacks_run) > 64 &&
               !atomic_load(w->stop))
            usleep(200);
    }
    return NULL;
}

void
workload_run(const workload *w, int seconds)
{
    pthread_t redoers[REDOERS], submitters[SUBMITTERS], monkey;
    loop_arg redo_args[REDOERS], submit_args[SUBMITTERS];
    const fixture *first = &w->cases[w->ok_cases[0]];
    uint8_t page[WALREDO_PAGE_SIZE];
    double started;

    /*
     * The monkeys tell the pool's template process (spawn_mode=template)
     * from its wal-redo processes by the name it takes once PostgreSQL has
     * started in it (pg_walredo/template.c); until then it looks like one,
     * and a fresh template killed fails its requests at once (as a spawn
     * failure). So the load starts once the pool has answered a request:
     * its template, if any, is up and named.
     */
    if (walredo_redo(w->pool, &first->tag, first->base_page, first->records, first->n_records,
                     page) != WALREDO_OK)
        FAIL("the pool's first request: %s", walredo_last_error());
    started = now_s();
    for (int i = 0; i < REDOERS; i++)
    {
        redo_args[i] = (loop_arg) {w, w->redo_seed + i};
        pthread_create(&redoers[i], NULL, redo_loop, &redo_args[i]);
    }
    for (int i = 0; i < SUBMITTERS; i++)
    {
        submit_args[i] = (loop_arg) {w, w->submit_seed + i};
        pthread_create(&submitters[i], NULL, submit_loop, &submit_args[i]);
    }
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
