/* Portable SGEMM micro-kernel: a 4 x 16 register tile.
 *
 * GCC/Clang generic vectors map to whatever SIMD the target has (SSE2, NEON, ...) and keep
 * the 16 accumulators in registers; plain loops are the fallback for other compilers. The
 * k loop order is fixed, so results do not depend on how the caller tiles or threads.
 */
#include <string.h>

#include "kernels.h"

#define MR BNN_SGEMM_MR_PORTABLE
#define NR BNN_SGEMM_NR

/* Column k of A: packed at a + k * MR (row stride 1), or in place at a + koff[k] with row
 * stride rs (the direct kernel, kernels.h). */
#define COL(k) (koff ? a + koff[k] : a + (k) * MR)

/* the folded clip on the finished tile */
static void clamp_tile(float *c, size_t ldc, const float *lim)
{
    for (int m = 0; m < MR; m++)
        for (int n = 0; n < NR; n++)
            c[m * ldc + n] = bnn_clip(c[m * ldc + n], lim[0], lim[1]);
}

#if defined(__GNUC__) || defined(__clang__)
typedef float v4f __attribute__((vector_size(16)));
#define NV (NR / 4)

static inline __attribute__((always_inline)) void
body(size_t kc, const float *a, const size_t *koff, size_t rs, const float *b, float *c,
     size_t ldc, const float *bias, const float *lim)
{
    v4f acc[MR][NV];
    for (int m = 0; m < MR; m++)
        for (int v = 0; v < NV; v++)
            acc[m][v] = (v4f){0, 0, 0, 0};
    for (size_t k = 0; k < kc; k++) {
        v4f bv[NV];
        /* memcpy: packed panels are 64-byte aligned, but say nothing about it to the
         * compiler rather than cast-and-hope. */
        for (int v = 0; v < NV; v++)
            memcpy(&bv[v], b + k * NR + v * 4, sizeof(v4f));
        const float *ak = COL(k);
        for (int m = 0; m < MR; m++) {
            const float av = ak[m * rs];
            for (int v = 0; v < NV; v++)
                acc[m][v] += av * bv[v];
        }
    }
    for (int m = 0; m < MR; m++)
        for (int v = 0; v < NV; v++) {
            v4f t;
            memcpy(&t, bias ? bias + v * 4 : c + m * ldc + v * 4, sizeof t);
            t += acc[m][v];
            memcpy(c + m * ldc + v * 4, &t, sizeof t);
        }
    if (lim)
        clamp_tile(c, ldc, lim);
}
#else
static void body(size_t kc, const float *a, const size_t *koff, size_t rs, const float *b,
                 float *c, size_t ldc, const float *bias, const float *lim)
{
    float acc[MR][NR] = {{0}};
    for (size_t k = 0; k < kc; k++) {
        const float *ak = COL(k);
        for (int m = 0; m < MR; m++)
            for (int n = 0; n < NR; n++)
                acc[m][n] += ak[m * rs] * b[k * NR + n];
    }
    for (int m = 0; m < MR; m++)
        for (int n = 0; n < NR; n++)
            c[m * ldc + n] = (bias ? bias[n] : c[m * ldc + n]) + acc[m][n];
    if (lim)
        clamp_tile(c, ldc, lim);
}
#endif

void bnn_sgemm_ukernel_portable(size_t kc, const float *a, const float *b, float *c,
                                size_t ldc, const float *bias, const float *lim)
{
    body(kc, a, NULL, 1, b, c, ldc, bias, lim);
}

void bnn_sgemm_ukernel_direct_portable(size_t kc, const float *a, const size_t *koff,
                                       size_t a_rs, const float *b, float *c, size_t ldc,
                                       const float *bias, const float *lim)
{
    body(kc, a, koff, a_rs, b, c, ldc, bias, lim);
}
