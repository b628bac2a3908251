/* The clock and the sample order of the engine's timings, one definition for the library
 * (bnn_benchmark, bnn_profile), the CLI and the bench tools, so that their milliseconds are
 * the same measurement. Include after defining _POSIX_C_SOURCE (clock_gettime). */
#ifndef BNN_TIMING_H
#define BNN_TIMING_H

#include <time.h>

/* CLOCK_MONOTONIC in milliseconds. */
static inline double bnn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* qsort comparison of doubles, ascending. */
static inline int bnn_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
