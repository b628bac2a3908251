/* Practical ceiling of the AVX2 binary-conv instruction sequence on this core: the inner
 * step of bconv_avx2.c (broadcast, nibble split of the activation word shared by 4 vectors,
 * then per vector 2 vpxor with the weights' nibble planes, 2 vpshufb, 2 vpaddb; widened every
 * 16 steps) on L1-resident data, with nothing else. For comparison the step it replaced
 * (vpxor, then the split of every XOR: 8 ops per vector) runs alternately with it, 101
 * rounds, so both see the same machine state. Prints binary ops per ns (medians and best);
 * divide by the clock (build/bnn-clock, GHz) for ops per cycle, to set next to the 341
 * ops/cycle assumed in machine.PEAKS (6 ops per 256 bit pairs on 4 pipes).
 *
 *     make -C native tools && native/build/bnn-peak-avx2 [ROUNDS]
 *
 * x86-64 with AVX2 only (the tools target builds it on x86-64 hosts). bench_zoo.py runs it
 * right after its per-layer profile, to show how far the machine's current state lets the
 * sequence itself go.
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TGT __attribute__((target("avx2"), noinline))

static uint64_t w[2 * 16 * 16] __attribute__((aligned(64))); /* [plane][word][channel] */
static uint64_t in[16];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define LUT                                                                                    \
    _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, \
                     2, 2, 3, 2, 3, 3, 4)

static inline __attribute__((target("avx2"))) __m256i widen(__m256i *acc, __m256i tot)
{
    for (int v = 0; v < 4; v++) {
        tot = _mm256_add_epi64(tot, _mm256_sad_epu8(acc[v], _mm256_setzero_si256()));
        acc[v] = _mm256_setzero_si256();
    }
    return tot;
}

/* planes = 1: the kernel's step, weights pre-split into nibble planes; planes = 0: the
 * former step, the XOR split into nibbles per vector. Inlined with a constant flag. */
static inline __attribute__((always_inline, target("avx2"))) long long run(long iters,
                                                                          const int planes)
{
    const __m256i lut = LUT, low = _mm256_set1_epi8(15);
    __m256i acc[4], tot = _mm256_setzero_si256();
    for (int v = 0; v < 4; v++)
        acc[v] = _mm256_setzero_si256();
    for (long it = 0; it < iters; it++) {
        const int k = (int)(it & 15);
        const __m256i b = _mm256_set1_epi64x((long long)in[k]);
        const __m256i blo = _mm256_and_si256(b, low);
        const __m256i bhi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
        for (int v = 0; v < 4; v++) {
            const __m256i wlo = _mm256_load_si256((const __m256i *)(w + k * 16 + 4 * v));
            if (planes) {
                const __m256i whi = _mm256_load_si256((const __m256i *)(w + 256 + k * 16 + 4 * v));
                acc[v] = _mm256_add_epi8(acc[v], _mm256_shuffle_epi8(lut, _mm256_xor_si256(blo, wlo)));
                acc[v] = _mm256_add_epi8(acc[v], _mm256_shuffle_epi8(lut, _mm256_xor_si256(bhi, whi)));
            } else {
                const __m256i x = _mm256_xor_si256(b, wlo);
                const __m256i lo = _mm256_and_si256(x, low);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
                acc[v] = _mm256_add_epi8(acc[v], _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo),
                                                                 _mm256_shuffle_epi8(lut, hi)));
            }
        }
        if (k == 15)
            tot = widen(acc, tot);
    }
    long long r[4];
    _mm256_storeu_si256((__m256i *)r, tot);
    return r[0];
}

TGT static long long planes(long iters)
{
    return run(iters, 1);
}

TGT static long long split_each(long iters)
{
    return run(iters, 0);
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 101;
    if (rounds < 1 || rounds > 1001) {
        fprintf(stderr, "usage: %s [ROUNDS (1..1001, default 101)]\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 2 * 16 * 16; i++)
        w[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 16; i++)
        in[i] = (uint64_t)i * 0x1234567ull;
    const long iters = 500000; /* x 4 vectors of 256 bit pairs = 512 binary ops each */
    double a[1001], b[1001], r[1001];
    long long sum = 0;
    for (int i = 0; i < rounds; i++) {
        const double t0 = now();
        sum += planes(iters);
        const double t1 = now();
        sum += split_each(iters);
        const double t2 = now();
        a[i] = (double)iters * 4 * 512 / (t1 - t0) / 1e9;
        b[i] = (double)iters * 4 * 512 / (t2 - t1) / 1e9;
        r[i] = a[i] / b[i];
    }
    qsort(a, (size_t)rounds, sizeof(double), cmp);
    qsort(b, (size_t)rounds, sizeof(double), cmp);
    qsort(r, (size_t)rounds, sizeof(double), cmp);
    printf("binary ops/ns, median (best) of %d rounds: nibble planes %.0f (%.0f), split per "
           "vector %.0f (%.0f); ratio %.3f (checksum %lld)\n",
           rounds, a[rounds / 2], a[rounds - 1], b[rounds / 2], b[rounds - 1], r[rounds / 2],
           sum & 0xff);
    return 0;
}
