/* AVX2 + FMA SGEMM micro-kernel: a 6 x 16 register tile.
 *
 * Same contract as bnn_sgemm_ukernel_portable (kernels.h), MR = BNN_SGEMM_MR_AVX2 = 6.
 * Per k step: 2 loads of the B row (16 floats, two ymm), 6 broadcasts of the A column and
 * 12 FMAs into 12 ymm accumulators. 12 + 2 + 1 = 15 of the 16 ymm registers, so nothing
 * spills, and 12 independent FMA chains cover the FMA latency (4 cycles) times its
 * throughput (2 per cycle) on Zen 3 / Skylake-class cores: the kernel is FMA-bound, not
 * latency- or load-bound (3 loads per 12 FMAs counting the broadcasts, which come straight
 * from memory as vbroadcastss and use only a load port).
 *
 * The accumulators start at zero and are added to C (or to the bias) once at the end, then
 * clamped if asked, like the portable kernel: with the k order fixed by the caller, results
 * do not depend on tiling or threads.
 *
 * The direct variant (kernels.h) reads A in place through a table of tap offsets instead
 * of from a packed panel: one more load per k step, no im2col copy.
 *
 * Compiled for AVX2 + FMA via target attributes on these functions only; kernels.c selects it
 * when cpuid reports both. Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "clip_avx2.h"

#define TGT __attribute__((target("avx2,fma")))
#define MR BNN_SGEMM_MR_AVX2
#define NR BNN_SGEMM_NR

/* Row i of the tile += A(k, i), at a_i[x], times row k of B (b0, b1). */
#define FMA_ROW(i, x)                                                                       \
    do {                                                                                    \
        const __m256 av = _mm256_broadcast_ss(a##i + (x));                                  \
        c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);                                         \
        c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);                                         \
    } while (0)

/* One k step: row k of B times column k of A into the 12 accumulators, rows in order. */
#define STEP(k, x)                                                                          \
    do {                                                                                    \
        const __m256 b0 = _mm256_loadu_ps(b + (k) * NR), b1 = _mm256_loadu_ps(b + (k) * NR + 8); \
        FMA_ROW(0, x);                                                                      \
        FMA_ROW(1, x);                                                                      \
        FMA_ROW(2, x);                                                                      \
        FMA_ROW(3, x);                                                                      \
        FMA_ROW(4, x);                                                                      \
        FMA_ROW(5, x);                                                                      \
    } while (0)

/* C row i += (lo, hi): unaligned, C is an NHWC activation row at any channel offset. */
#define ADD_ROW(i, lo, hi)                                                                  \
    do {                                                                                    \
        float *ci = c + (i) * ldc;                                                          \
        _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), lo));                       \
        _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi));               \
    } while (0)

/* The tile's sums t (MR x NR) into C with the bias and clamp of kernels.h. Out of line so
 * that its pointers and constants do not take registers from the k loop (GCC spilled an
 * accumulator when they were in the same function). */
static __attribute__((noinline)) TGT void finish(const float *t, float *c, size_t ldc,
                                                 const float *bias, const float *lim)
{
    const __m256 lo = _mm256_set1_ps(lim ? lim[0] : 0.0f), hi = _mm256_set1_ps(lim ? lim[1] : 0.0f);
    for (int i = 0; i < MR; i++)
        for (int h = 0; h < NR; h += 8) {
            float *ci = c + i * ldc + h;
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(bias ? bias + h : ci),
                                     _mm256_load_ps(t + i * NR + h));
            if (lim)
                v = bnn_clip8(v, lo, hi);
            _mm256_storeu_ps(ci, v);
        }
}

/* Both kernels: A(k, i) = a_i[x(k)] with row pointers a_i = a + i * rs and x(k) = k * MR
 * (packed, rs = 1) or koff[k] (read in place), so each broadcast is one base + scaled index
 * address; inlined into each with koff constant NULL or not. */
static inline __attribute__((always_inline)) TGT void
body(size_t kc, const float *a, const size_t *koff, size_t rs, const float *b, float *c,
     size_t ldc, const float *bias, const float *lim)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs,
                *a5 = a + 5 * rs;
#define X(k) (koff ? koff[k] : (k) * MR)
    /* C is written (and maybe read) only after the k loop: ask for its lines now, so their
     * misses overlap the loop instead of stalling the stores (a stem's output is MBs). */
    for (int i = 0; i < MR; i++)
        __builtin_prefetch(c + i * ldc, 1, 3);
    size_t k = 0;
    /* Unrolled by 4: fewer loop branches and pointer bumps per FMA; the order of the
     * k steps is unchanged, so the unroll does not affect the result. */
    for (; k + 4 <= kc; k += 4, b += 4 * NR) {
        STEP(0, X(k));
        STEP(1, X(k + 1));
        STEP(2, X(k + 2));
        STEP(3, X(k + 3));
    }
    for (; k < kc; k++, b += NR)
        STEP(0, X(k));
#undef X
    if (!bias && !lim) {
        ADD_ROW(0, c00, c01);
        ADD_ROW(1, c10, c11);
        ADD_ROW(2, c20, c21);
        ADD_ROW(3, c30, c31);
        ADD_ROW(4, c40, c41);
        ADD_ROW(5, c50, c51);
        return;
    }
    _Alignas(32) float t[MR * NR];
    const __m256 acc[2 * MR] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (int v = 0; v < 2 * MR; v++)
        _mm256_store_ps(t + 8 * v, acc[v]);
    finish(t, c, ldc, bias, lim);
}

TGT void bnn_sgemm_ukernel_avx2(size_t kc, const float *a, const float *b, float *c,
                                size_t ldc, const float *bias, const float *lim)
{
    body(kc, a, NULL, 1, b, c, ldc, bias, lim);
}

TGT void bnn_sgemm_ukernel_direct_avx2(size_t kc, const float *a, const size_t *koff,
                                       size_t a_rs, const float *b, float *c, size_t ldc,
                                       const float *bias, const float *lim)
{
    body(kc, a, koff, a_rs, b, c, ldc, bias, lim);
}
#else
typedef int bnn_sgemm_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
