/* Practical ceiling of the AVX2 binary-conv instruction sequence on this core: the inner
 * step of bconv_avx2.c (broadcast, vpxor, nibble-LUT popcount, byte accumulate; 4
 * independent accumulators, widened every 16 steps) on L1-resident data, with nothing else.
 * Prints binary ops per ns; divide by the clock (build/bnn-clock, GHz) for ops per cycle, to
 * set next to the 256 ops/cycle assumed in machine.PEAKS (8 ops per 256 bit pairs on 4 pipes).
 *
 *     gcc -O3 -std=c11 native/bench/peak_avx2.c -o /tmp/peak_avx2 && /tmp/peak_avx2
 *
 * x86-64 with AVX2 only; not part of the build.
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

__attribute__((target("avx2"))) int main(void)
{
    static uint64_t w[16 * 16] __attribute__((aligned(64)));
    static uint64_t in[16];
    for (int i = 0; i < 16 * 16; i++)
        w[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 16; i++)
        in[i] = (uint64_t)i * 0x1234567ull;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(15);
    __m256i acc[4], tot = _mm256_setzero_si256();
    for (int v = 0; v < 4; v++)
        acc[v] = _mm256_setzero_si256();
    const long iters = 20000000;
    const double t0 = now();
    for (long it = 0; it < iters; it++) {
        const int k = (int)(it & 15);
        const __m256i b = _mm256_set1_epi64x((long long)in[k]);
        for (int v = 0; v < 4; v++) {
            const __m256i wv = _mm256_load_si256((const __m256i *)(w + k * 16 + 4 * v));
            const __m256i x = _mm256_xor_si256(b, wv);
            const __m256i lo = _mm256_and_si256(x, low);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
            acc[v] = _mm256_add_epi8(acc[v], _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo),
                                                             _mm256_shuffle_epi8(lut, hi)));
        }
        if (k == 15)
            for (int v = 0; v < 4; v++) {
                tot = _mm256_add_epi64(tot, _mm256_sad_epu8(acc[v], _mm256_setzero_si256()));
                acc[v] = _mm256_setzero_si256();
            }
    }
    const double dt = now() - t0;
    long long r[4];
    _mm256_storeu_si256((__m256i *)r, tot);
    const double vectors = (double)iters * 4.0; /* 256 bit pairs = 512 binary ops each */
    printf("%.3f ns per 256-bit step, %.1f binary ops/ns (checksum %lld)\n",
           dt / vectors * 1e9, vectors * 512 / dt / 1e9, r[0]);
    return 0;
}
