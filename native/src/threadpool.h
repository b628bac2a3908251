/* A small persistent thread pool with one operation: a parallel-for over [0, ntasks). */
#ifndef BNN_THREADPOOL_H
#define BNN_THREADPOOL_H

#include <stddef.h>

/* `thread` is in [0, nthreads): index per-thread scratch with it. */
typedef void (*bnn_task_fn)(void *arg, size_t task, int thread);

typedef struct bnn_pool bnn_pool;

/* nthreads in 1..BNN_MAX_THREADS; the calling thread is worker 0, so nthreads - 1 threads
 * are started. NULL on failure. */
bnn_pool *bnn_pool_create(int nthreads);
void bnn_pool_free(bnn_pool *pool);
int bnn_pool_threads(const bnn_pool *pool);

/* Run fn(arg, t, thread) for every t in [0, ntasks) and return when all are done. Thread i
 * starts on its own contiguous share of the tasks (so consecutive layers numbered alike keep
 * a region on one core) and then helps with what is left of the others'. Not re-entrant: one
 * parallel_for per pool at a time. */
void bnn_pool_parallel_for(bnn_pool *pool, size_t ntasks, bnn_task_fn fn, void *arg);

#endif
