/* Persistent pthread pool.
 *
 * Workers spin briefly on a generation counter before sleeping on a condition variable: a
 * network runs dozens of short layers back to back, and waking sleeping threads for each
 * one would cost more than many small layers take.
 *
 * Each thread owns a contiguous share of the tasks, [i * n / T, (i + 1) * n / T), claimed
 * through its own atomic counter; a thread done with its share takes what is left of the
 * others' (same counters), so a stalled or shared core holds no one up. The drivers number
 * tasks in image order (rows of pixels), so with even shares a thread works on the same
 * region in consecutive layers and reads what it wrote from its own cache, where handing
 * out tasks from one counter scattered rows over the cores (the next layer then read half
 * its input from another core's cache). The split of work never depends on timing, only
 * which thread runs a task does; every task writes disjoint outputs, so results are
 * identical for any thread count.
 */
#define _POSIX_C_SOURCE 200809L
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bnn.h"

#define SPIN_ITERS 20000

struct bnn_pool {
    int nthreads;
    pthread_t threads[BNN_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    int sleeping; /* workers blocked on work_cv (under mu) */
    atomic_int stop;
    atomic_uint generation;
    atomic_int pending; /* workers still inside the current job */
    /* per thread: the next task of its share and the share's end, a cache line each */
    struct {
        _Alignas(64) atomic_size_t next;
        size_t end;
    } share[BNN_MAX_THREADS];
    /* The current job; written before generation is bumped. */
    bnn_task_fn fn;
    void *arg;
};

/* Thread id's own share first, then whatever is left of the next threads' shares. */
static void run_tasks(bnn_pool *p, int id)
{
    const int nt = p->nthreads;
    for (int k = 0; k < nt; k++) {
        const int s = (id + k) % nt;
        const size_t end = p->share[s].end;
        for (;;) {
            const size_t t = atomic_fetch_add_explicit(&p->share[s].next, 1,
                                                       memory_order_relaxed);
            if (t >= end)
                break;
            p->fn(p->arg, t, id);
        }
    }
}

typedef struct {
    bnn_pool *pool;
    int id;
} start_info;

static void *worker_main(void *v)
{
    start_info *si = v;
    bnn_pool *p = si->pool;
    const int id = si->id;
    free(si);
    /* Generation 0 is the state at creation: a job posted before this thread got going
     * must still be seen as new. */
    unsigned seen = 0;
    for (;;) {
        unsigned g = seen;
        for (int i = 0; i < SPIN_ITERS; i++) {
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
            if (g != seen)
                break;
            if (i % 64 == 63)
                sched_yield(); /* be polite when threads outnumber cores */
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            p->sleeping++;
            while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->work_cv, &p->mu);
            p->sleeping--;
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        seen = g;
        run_tasks(p, id);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

bnn_pool *bnn_pool_create(int nthreads)
{
    if (nthreads < 1 || nthreads > BNN_MAX_THREADS)
        return NULL;
    /* aligned: the shares sit on cache lines of their own */
    void *mem = NULL;
    if (posix_memalign(&mem, 64, sizeof(bnn_pool)))
        return NULL;
    bnn_pool *p = memset(mem, 0, sizeof(bnn_pool));
    p->nthreads = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->generation, 0);
    for (int i = 0; i < BNN_MAX_THREADS; i++)
        atomic_init(&p->share[i].next, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    for (int i = 1; i < nthreads; i++) {
        start_info *si = malloc(sizeof *si);
        if (!si)
            goto fail;
        si->pool = p;
        si->id = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, si) != 0) {
            free(si);
            goto fail;
        }
        p->nthreads = i + 1;
    }
    return p;
fail:
    bnn_pool_free(p);
    return NULL;
}

void bnn_pool_free(bnn_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int bnn_pool_threads(const bnn_pool *p)
{
    return p->nthreads;
}

void bnn_pool_parallel_for(bnn_pool *p, size_t ntasks, bnn_task_fn fn, void *arg)
{
    if (ntasks == 0)
        return;
    if (p->nthreads == 1 || ntasks == 1) {
        for (size_t t = 0; t < ntasks; t++)
            fn(arg, t, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    for (int i = 0; i < p->nthreads; i++) {
        atomic_store_explicit(&p->share[i].next, ntasks * (size_t)i / (size_t)p->nthreads,
                              memory_order_relaxed);
        p->share[i].end = ntasks * (size_t)(i + 1) / (size_t)p->nthreads;
    }
    atomic_store_explicit(&p->pending, p->nthreads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    /* Release: workers that see the new generation also see the job fields above. */
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (p->sleeping)
        pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0)
            return;
        if (i % 64 == 63)
            sched_yield();
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
