/* Core clock of this machine, measured: a chain of dependent integer adds runs at one add
 * per cycle on every x86-64 and ARM core we target (1-cycle ALU latency), so adds / second
 * is the clock the benchmark actually ran at, boost included -- unlike /proc/cpuinfo, which
 * in a VM often reports the nominal clock. Prints the median MHz of several trials.
 *
 *     build/bnn-clock [trials]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The empty asm ties both values to registers and hides them from the optimizer, so each add
 * stays a real, dependent register-register add (an add of an immediate could be folded by
 * the renamer of some recent cores and run faster than one per cycle). */
#define ADD1 x += one; __asm__ volatile("" : "+r"(x), "+r"(one));
#define ADD10 ADD1 ADD1 ADD1 ADD1 ADD1 ADD1 ADD1 ADD1 ADD1 ADD1
#define ADD100 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int trials = argc > 1 ? atoi(argv[1]) : 9;
    if (trials < 1 || trials > 1000)
        trials = 9;
    double mhz[1000];
    uint64_t x = 0, one = 1;
    __asm__ volatile("" : "+r"(one));
    const long iters = 2000000; /* 2e8 adds: ~60-100 ms per trial */
    for (long i = 0; i < iters / 4; i++) { ADD100 } /* warm up the clock */
    for (int t = 0; t < trials; t++) {
        const double t0 = now_s();
        for (long i = 0; i < iters; i++) {
            ADD100
        }
        mhz[t] = (double)iters * 100.0 / (now_s() - t0) / 1e6;
    }
    qsort(mhz, (size_t)trials, sizeof *mhz, cmp);
    printf("%.0f\n", mhz[trials / 2]);
    return x == 0; /* use x */
}
