/* AVX-512F SGEMM micro-kernels: an 8 x 16 register tile (one B panel) and an 8 x 32 one
 * (two panels side by side).
 *
 * Same contract as bnn_sgemm_ukernel_portable (kernels.h), MR = BNN_SGEMM_MR_AVX512 = 8.
 * Per k step: one load of each B panel's row (16 floats, one zmm) and 8 FMAs per panel, each
 * with its A value broadcast from memory ({1to16}). The one-panel tile has 8 independent
 * chains, just the FMA latency (4 cycles) times its throughput (2 per cycle on cores with
 * two 512-bit FMA units), and 9 loads per 8 FMAs; the two-panel tile (fconv.c uses it
 * wherever two full panels remain) has 16 chains and 10 loads per 16 FMAs, so neither the
 * latency nor the load ports hold it back.
 *
 * Every C element is one FMA chain over k in the caller's order, started from zero, then
 * added to C (or the bias) and clamped, exactly as in the AVX2 kernel: all give the same
 * floats bit for bit, so the "avx512" and "avx2" kernel sets compute identical outputs.
 *
 * The direct variants (kernels.h) read A in place through a table of tap offsets.
 * Compiled for avx512f via target attributes on these functions only; kernels.c selects
 * them with the AVX-512 binary kernel. With BNN_AVX512_EMULATE (tests only,
 * tests/avx512_emu.h) the same code runs on plain C stand-ins. Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include "avx512.h"

#define TGT BNN_AVX512_TARGET("avx512f")

#define MR BNN_SGEMM_MR_AVX512
#define NR BNN_SGEMM_NR

/* The tile's sums t (MR x np * NR, row stride np * NR) into C with the bias and clamp of
 * kernels.h; out of line so its pointers and constants do not take registers from the k
 * loop. */
static __attribute__((noinline)) TGT void finish(const float *t, int np, float *c, size_t ldc,
                                                 const float *bias, const float *lim)
{
    const __m512 lo = _mm512_set1_ps(lim ? lim[0] : 0.0f), hi = _mm512_set1_ps(lim ? lim[1] : 0.0f);
    for (int i = 0; i < MR; i++)
        for (int p = 0; p < np; p++) {
            float *ci = c + i * ldc + p * NR;
            __m512 v = _mm512_add_ps(_mm512_loadu_ps(bias ? bias + p * NR : ci),
                                     _mm512_load_ps(t + (i * np + p) * NR));
            if (lim)
                v = bnn_clip16(v, lo, hi);
            _mm512_storeu_ps(ci, v);
        }
}

/* One k step: row k of each B panel times column k of A, whose row i is at a_i[x], into
 * the accumulators (panel 0: c0-c7, panel 1: d0-d7); each A value is a {1to16} broadcast
 * operand of its FMA, once per panel. */
#define FMA8(acc, bk, x)                                                                    \
    acc##0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[x]), bk, acc##0);                            \
    acc##1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[x]), bk, acc##1);                            \
    acc##2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[x]), bk, acc##2);                            \
    acc##3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[x]), bk, acc##3);                            \
    acc##4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[x]), bk, acc##4);                            \
    acc##5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[x]), bk, acc##5);                            \
    acc##6 = _mm512_fmadd_ps(_mm512_set1_ps(a6[x]), bk, acc##6);                            \
    acc##7 = _mm512_fmadd_ps(_mm512_set1_ps(a7[x]), bk, acc##7)
#define STEP(k, x)                                                                          \
    do {                                                                                    \
        const __m512 bk = _mm512_loadu_ps(b + (k) * NR);                                     \
        FMA8(c, bk, x);                                                                     \
        if (np == 2) {                                                                      \
            const __m512 bk1 = _mm512_loadu_ps(b1 + (k) * NR);                               \
            FMA8(d, bk1, x);                                                                \
        }                                                                                   \
    } while (0)

/* All four kernels: np (1 or 2) panels of B, the second at b + b_ps; A(k, i) = a_i[x(k)]
 * with row pointers a_i = a + i * rs and x(k) = k * MR (packed, rs = 1) or koff[k] (read in
 * place), so each broadcast is one base + scaled index address: 8 row pointers fit the
 * general registers, which is why MR stays 8 (computing a + x + i * rs per FMA instead left
 * the direct kernel a chain of 7 scalar adds per 8 FMAs). Inlined into each with np and
 * koff's NULL-ness constant. */
static inline __attribute__((always_inline)) TGT void
body(const int np, size_t kc, const float *a, const size_t *koff, size_t rs, const float *b,
     size_t b_ps, float *c, size_t ldc, const float *bias, const float *lim)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
           c7 = c0;
    __m512 d0 = c0, d1 = c0, d2 = c0, d3 = c0, d4 = c0, d5 = c0, d6 = c0, d7 = c0;
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs,
                *a5 = a + 5 * rs, *a6 = a + 6 * rs, *a7 = a + 7 * rs;
    const float *b1 = b + b_ps;
    /* C is written (and maybe read) only after the k loop: ask for its lines now (a 32-float
     * row of two panels spans two lines, or three unaligned) */
    for (int i = 0; i < MR; i++) {
        __builtin_prefetch(c + i * ldc, 1, 3);
        if (np == 2)
            __builtin_prefetch(c + i * ldc + 2 * NR - 1, 1, 3);
    }
#define X(k) (koff ? koff[k] : (k) * MR)
    size_t k = 0;
    /* unrolled by 4 without changing the order of the k steps */
    for (; k + 4 <= kc; k += 4, b += 4 * NR, b1 += 4 * NR) {
        STEP(0, X(k));
        STEP(1, X(k + 1));
        STEP(2, X(k + 2));
        STEP(3, X(k + 3));
    }
    for (; k < kc; k++, b += NR, b1 += NR)
        STEP(0, X(k));
#undef X
    const __m512 acc[2 * MR] = {c0, d0, c1, d1, c2, d2, c3, d3,
                                c4, d4, c5, d5, c6, d6, c7, d7};
    if (!bias && !lim) {
        for (int i = 0; i < MR; i++)
            for (int p = 0; p < np; p++) {
                float *ci = c + i * ldc + p * NR;
                _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), acc[2 * i + p]));
            }
        return;
    }
    _Alignas(64) float t[MR * 2 * NR];
    for (int i = 0; i < MR; i++)
        for (int p = 0; p < np; p++)
            _mm512_store_ps(t + (i * np + p) * NR, acc[2 * i + p]);
    finish(t, np, c, ldc, bias, lim);
}
#undef STEP
#undef FMA8

TGT void bnn_sgemm_ukernel_avx512(size_t kc, const float *a, const float *b, float *c,
                                  size_t ldc, const float *bias, const float *lim)
{
    body(1, kc, a, NULL, 1, b, 0, c, ldc, bias, lim);
}

TGT void bnn_sgemm_ukernel_direct_avx512(size_t kc, const float *a, const size_t *koff,
                                         size_t a_rs, const float *b, float *c, size_t ldc,
                                         const float *bias, const float *lim)
{
    if (!koff) /* never: lets the compiler drop the packed addressing from this copy */
        __builtin_unreachable();
    body(1, kc, a, koff, a_rs, b, 0, c, ldc, bias, lim);
}

TGT void bnn_sgemm_ukernel2_avx512(size_t kc, const float *a, const float *b, size_t b_ps,
                                   float *c, size_t ldc, const float *bias, const float *lim)
{
    body(2, kc, a, NULL, 1, b, b_ps, c, ldc, bias, lim);
}

TGT void bnn_sgemm_ukernel2_direct_avx512(size_t kc, const float *a, const size_t *koff,
                                          size_t a_rs, const float *b, size_t b_ps, float *c,
                                          size_t ldc, const float *bias, const float *lim)
{
    if (!koff)
        __builtin_unreachable();
    body(2, kc, a, koff, a_rs, b, b_ps, c, ldc, bias, lim);
}
#else
typedef int bnn_sgemm_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
