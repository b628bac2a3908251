/* AVX-512F SGEMM micro-kernel: an 8 x 16 register tile.
 *
 * Same contract as bnn_sgemm_ukernel_portable (kernels.h), MR = BNN_SGEMM_MR_AVX512 = 8.
 * Per k step: one load of the B row (16 floats, one zmm) and 8 FMAs, each with its A value
 * broadcast from memory ({1to16}), into 8 zmm accumulators. 8 independent chains cover
 * the FMA latency (4 cycles) times its throughput (2 per cycle on cores with two 512-bit
 * FMA units), and 9 loads per 8 FMAs stay within the load ports. The AVX2 kernel does 96
 * multiply-adds per 6 cycles; this one 128 per 4.
 *
 * Every C element is one FMA chain over k in the caller's order, started from zero, then
 * added to C (or the bias) and clamped, exactly as in the AVX2 kernel: both give the same
 * floats bit for bit, so the "avx512" and "avx2" kernel sets compute identical outputs.
 *
 * The direct variant (kernels.h) reads A in place through a table of tap offsets.
 * Compiled for avx512f via target attributes on these functions only; kernels.c selects
 * it with the AVX-512 binary kernel. With BNN_AVX512_EMULATE (tests only,
 * tests/avx512_emu.h) the same code runs on plain C stand-ins. Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include "avx512.h"

#define TGT BNN_AVX512_TARGET("avx512f")

#define MR BNN_SGEMM_MR_AVX512
#define NR BNN_SGEMM_NR

/* The tile's sums t (MR x NR) into C with the bias and clamp of kernels.h; out of line so
 * its pointers and constants do not take registers from the k loop. */
static __attribute__((noinline)) TGT void finish(const float *t, float *c, size_t ldc,
                                                 const float *bias, const float *lim)
{
    const __m512 lo = _mm512_set1_ps(lim ? lim[0] : 0.0f), hi = _mm512_set1_ps(lim ? lim[1] : 0.0f);
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(bias ? bias : ci), _mm512_load_ps(t + i * NR));
        if (lim)
            v = bnn_clip16(v, lo, hi);
        _mm512_storeu_ps(ci, v);
    }
}

/* One k step: row k of B times column k of A, whose row i is at a_i[x], into the 8
 * accumulators; each A value is a {1to16} broadcast operand of its FMA. */
#define STEP(k, x)                                                                          \
    do {                                                                                    \
        const __m512 bk = _mm512_loadu_ps(b + (k) * NR);                                     \
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[x]), bk, c0);                                \
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[x]), bk, c1);                                \
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[x]), bk, c2);                                \
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[x]), bk, c3);                                \
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[x]), bk, c4);                                \
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[x]), bk, c5);                                \
        c6 = _mm512_fmadd_ps(_mm512_set1_ps(a6[x]), bk, c6);                                \
        c7 = _mm512_fmadd_ps(_mm512_set1_ps(a7[x]), bk, c7);                                \
    } while (0)

/* Both kernels: A(k, i) = a_i[x(k)] with row pointers a_i = a + i * rs and x(k) = k * MR
 * (packed, rs = 1) or koff[k] (read in place), so each broadcast is one base + scaled index
 * address: 8 row pointers fit the general registers, which is why MR stays 8 (computing
 * a + x + i * rs per FMA instead left the direct kernel a chain of 7 scalar adds per 8
 * FMAs). Inlined into each with koff constant NULL or not. */
static inline __attribute__((always_inline)) TGT void
body(size_t kc, const float *a, const size_t *koff, size_t rs, const float *b, float *c,
     size_t ldc, const float *bias, const float *lim)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
           c7 = c0;
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs,
                *a5 = a + 5 * rs, *a6 = a + 6 * rs, *a7 = a + 7 * rs;
    /* C is written (and maybe read) only after the k loop: ask for its lines now */
    for (int i = 0; i < MR; i++)
        __builtin_prefetch(c + i * ldc, 1, 3);
#define X(k) (koff ? koff[k] : (k) * MR)
    size_t k = 0;
    /* unrolled by 4 without changing the order of the k steps */
    for (; k + 4 <= kc; k += 4, b += 4 * NR) {
        STEP(0, X(k));
        STEP(1, X(k + 1));
        STEP(2, X(k + 2));
        STEP(3, X(k + 3));
    }
    for (; k < kc; k++, b += NR)
        STEP(0, X(k));
#undef X
    const __m512 acc[MR] = {c0, c1, c2, c3, c4, c5, c6, c7};
    if (!bias && !lim) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + i * ldc;
            _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), acc[i]));
        }
        return;
    }
    _Alignas(64) float t[MR * NR];
    for (int i = 0; i < MR; i++)
        _mm512_store_ps(t + i * NR, acc[i]);
    finish(t, c, ldc, bias, lim);
}
#undef STEP

TGT void bnn_sgemm_ukernel_avx512(size_t kc, const float *a, const float *b, float *c,
                                  size_t ldc, const float *bias, const float *lim)
{
    body(kc, a, NULL, 1, b, c, ldc, bias, lim);
}

TGT void bnn_sgemm_ukernel_direct_avx512(size_t kc, const float *a, const size_t *koff,
                                         size_t a_rs, const float *b, float *c, size_t ldc,
                                         const float *bias, const float *lim)
{
    if (!koff) /* never: lets the compiler drop the packed addressing from this copy */
        __builtin_unreachable();
    body(kc, a, koff, a_rs, b, c, ldc, bias, lim);
}
#else
typedef int bnn_sgemm_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
