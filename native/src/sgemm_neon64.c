/* AArch64 NEON SGEMM micro-kernels: a 6 x 16 register tile, packed and direct.
 *
 * Same contract as bnn_sgemm_ukernel_portable (kernels.h), MR = BNN_SGEMM_MR_NEON64 = 6.
 * NR is fixed at 16 for every kernel set (weights are prepacked at load time), so a row of
 * the tile is 4 q registers: 8 x 16 would need all 32 for accumulators, 6 x 16 takes 24,
 * leaving 4 for the B row and 2 for the A column (q + d, 6 floats) with nothing spilled.
 * Per k step: 2 LDP of B, 3 loads of A (GCC 12 loads rows 4-5 as two scalars; direct: 6
 * scalar loads), 24 FMLA by element (vfmaq_laneq_f32: no separate broadcast of A). 24
 * independent chains cover FMLA latency x throughput on every core we target (Neoverse N1:
 * 4 cycles x 2 pipes; the Cortex-A57 model LLVM uses for A72/A76: 10 x 1). llvm-mca puts
 * both loops at 100 % of the FMLA peak on those models (bench/mca_neon.sh, README).
 *
 * Every C element is one FMA chain over k in the caller's order, started from zero, then
 * added to C (or the bias) and clamped: the same floats, bit for bit, as the AVX2 / AVX-512
 * kernels (one rounding per multiply-add), and within float rounding of the portable kernel
 * (which rounds the product and the sum separately).
 *
 * native/bench/mca_neon.sh cuts the k loops out of the -DBNN_MCA assembly (LLVM-MCA region
 * markers around them) and analyses them with llvm-mca. Empty off AArch64.
 */
#include "kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#ifdef BNN_MCA
#define MCA_BEGIN(name) __asm__ volatile("# LLVM-MCA-BEGIN " name ::: "memory")
#define MCA_END() __asm__ volatile("# LLVM-MCA-END" ::: "memory")
#else
#define MCA_BEGIN(name) ((void)0)
#define MCA_END() ((void)0)
#endif

#define MR BNN_SGEMM_MR_NEON64
#define NR BNN_SGEMM_NR

/* CLIP (bnn_clip, kernels.h) on 4 lanes: compares and selects, not fmin/fmax, which would
 * turn NaN into NaN of another payload and -0 vs +0 the other way round. */
static inline float32x4_t clip4(float32x4_t v, float32x4_t lo, float32x4_t hi)
{
    v = vbslq_f32(vcgtq_f32(v, hi), hi, v);
    return vbslq_f32(vcltq_f32(v, lo), lo, v);
}

/* The tile's sums t (MR x NR) into C with the bias and clamp of kernels.h; out of line so
 * its pointers and constants do not take registers from the k loop. */
static __attribute__((noinline)) void finish(const float *t, float *c, size_t ldc,
                                             const float *bias, const float *lim)
{
    const float32x4_t lo = vdupq_n_f32(lim ? lim[0] : 0.0f), hi = vdupq_n_f32(lim ? lim[1] : 0.0f);
    for (int i = 0; i < MR; i++)
        for (int h = 0; h < NR; h += 4) {
            float *ci = c + i * ldc + h;
            float32x4_t v = vaddq_f32(vld1q_f32(bias ? bias + h : ci), vld1q_f32(t + i * NR + h));
            if (lim)
                v = clip4(v, lo, hi);
            vst1q_f32(ci, v);
        }
}

/* Row i of the tile += A(k, i) * B row k (b0..b3); A(k, i) is lane l of vector av. */
#define FMA_ROW(i, lanefn, av, l)                                                           \
    do {                                                                                    \
        c##i##0 = lanefn(c##i##0, b0, av, l);                                               \
        c##i##1 = lanefn(c##i##1, b1, av, l);                                               \
        c##i##2 = lanefn(c##i##2, b2, av, l);                                               \
        c##i##3 = lanefn(c##i##3, b3, av, l);                                               \
    } while (0)

#define LOAD_B(bk)                                                                          \
    const float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32((bk) + 4), b2 = vld1q_f32((bk) + 8), \
                      b3 = vld1q_f32((bk) + 12)

/* One packed k step: A column k is 6 contiguous floats at ak (rows 0-3 in a q, 4-5 in a d). */
#define STEP_PACKED(ak, bk)                                                                 \
    do {                                                                                    \
        LOAD_B(bk);                                                                         \
        const float32x4_t a03 = vld1q_f32(ak);                                              \
        const float32x2_t a45 = vld1_f32((ak) + 4);                                         \
        FMA_ROW(0, vfmaq_laneq_f32, a03, 0);                                                \
        FMA_ROW(1, vfmaq_laneq_f32, a03, 1);                                                \
        FMA_ROW(2, vfmaq_laneq_f32, a03, 2);                                                \
        FMA_ROW(3, vfmaq_laneq_f32, a03, 3);                                                \
        FMA_ROW(4, vfmaq_lane_f32, a45, 0);                                                 \
        FMA_ROW(5, vfmaq_lane_f32, a45, 1);                                                 \
    } while (0)

/* Row i of the tile += a_i[x] * B row k: FMLA by element 0 of a scalar load. */
#define FMA_ROW_N(i, x)                                                                     \
    do {                                                                                    \
        const float s = a##i[x];                                                            \
        c##i##0 = vfmaq_n_f32(c##i##0, b0, s);                                              \
        c##i##1 = vfmaq_n_f32(c##i##1, b1, s);                                              \
        c##i##2 = vfmaq_n_f32(c##i##2, b2, s);                                              \
        c##i##3 = vfmaq_n_f32(c##i##3, b3, s);                                              \
    } while (0)

/* One direct k step: A(k, i) = a_i[x], six scalar loads, each next to its 4 FMLA so that
 * at most a few are live (24 accumulators + 4 B + all 6 would be 34 registers). */
#define STEP_DIRECT(x, bk)                                                                  \
    do {                                                                                    \
        LOAD_B(bk);                                                                         \
        const size_t x_ = (x);                                                              \
        FMA_ROW_N(0, x_);                                                                   \
        FMA_ROW_N(1, x_);                                                                   \
        FMA_ROW_N(2, x_);                                                                   \
        FMA_ROW_N(3, x_);                                                                   \
        FMA_ROW_N(4, x_);                                                                   \
        FMA_ROW_N(5, x_);                                                                   \
    } while (0)

#define ACC_DECL                                                                            \
    float32x4_t c00 = vdupq_n_f32(0.0f), c01 = c00, c02 = c00, c03 = c00, c10 = c00,          \
                c11 = c00, c12 = c00, c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00,  \
                c30 = c00, c31 = c00, c32 = c00, c33 = c00, c40 = c00, c41 = c00, c42 = c00,  \
                c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00

/* The accumulators into C: C += sums directly (the common inner depth slices), else
 * through a scratch tile and finish() (bias and/or clamp). */
#define ADD_ROW(i)                                                                          \
    do {                                                                                    \
        float *ci = c + (i) * ldc;                                                          \
        vst1q_f32(ci, vaddq_f32(vld1q_f32(ci), c##i##0));                                   \
        vst1q_f32(ci + 4, vaddq_f32(vld1q_f32(ci + 4), c##i##1));                           \
        vst1q_f32(ci + 8, vaddq_f32(vld1q_f32(ci + 8), c##i##2));                           \
        vst1q_f32(ci + 12, vaddq_f32(vld1q_f32(ci + 12), c##i##3));                         \
    } while (0)
#define STORE_ROW(i)                                                                        \
    do {                                                                                    \
        vst1q_f32(t + (i) * NR, c##i##0);                                                   \
        vst1q_f32(t + (i) * NR + 4, c##i##1);                                               \
        vst1q_f32(t + (i) * NR + 8, c##i##2);                                               \
        vst1q_f32(t + (i) * NR + 12, c##i##3);                                              \
    } while (0)
#define WRITE_TILE                                                                          \
    do {                                                                                    \
        if (!bias && !lim) {                                                                \
            ADD_ROW(0);                                                                     \
            ADD_ROW(1);                                                                     \
            ADD_ROW(2);                                                                     \
            ADD_ROW(3);                                                                     \
            ADD_ROW(4);                                                                     \
            ADD_ROW(5);                                                                     \
            return;                                                                         \
        }                                                                                   \
        _Alignas(16) float t[MR * NR];                                                      \
        STORE_ROW(0);                                                                       \
        STORE_ROW(1);                                                                       \
        STORE_ROW(2);                                                                       \
        STORE_ROW(3);                                                                       \
        STORE_ROW(4);                                                                       \
        STORE_ROW(5);                                                                       \
        finish(t, c, ldc, bias, lim);                                                       \
    } while (0)

void bnn_sgemm_ukernel_neon64(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                              const float *bias, const float *lim)
{
    ACC_DECL;
    /* C is written (and maybe read) only after the k loop: start its misses now */
    for (int i = 0; i < MR; i++)
        __builtin_prefetch(c + i * ldc, 1, 3);
    /* One k step per iteration: the loop control is 4 of ~35 instructions per 24 FMLA,
     * and GCC 12 spilled accumulators when the source was unrolled (its scheduler hoists
     * the later steps' loads). */
    MCA_BEGIN("sgemm_neon64_packed");
    for (size_t k = 0; k < kc; k++, a += MR, b += NR)
        STEP_PACKED(a, b);
    MCA_END();
    WRITE_TILE;
}

/* GCC 12's first scheduling pass hoists all six A loads of a step above the FMLAs and then
 * spills three accumulators (6 stack accesses per step); without it the loads stay next
 * to their FMLAs and nothing spills (bench/mca_neon.sh shows the loop). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns")))
#endif
void bnn_sgemm_ukernel_direct_neon64(size_t kc, const float *a, const size_t *koff, size_t a_rs,
                                     const float *b, float *c, size_t ldc, const float *bias,
                                     const float *lim)
{
    ACC_DECL;
    /* row pointers: each scalar load is one base + scaled-index address */
    const float *a0 = a, *a1 = a + a_rs, *a2 = a + 2 * a_rs, *a3 = a + 3 * a_rs,
                *a4 = a + 4 * a_rs, *a5 = a + 5 * a_rs;
    for (int i = 0; i < MR; i++)
        __builtin_prefetch(c + i * ldc, 1, 3);
    MCA_BEGIN("sgemm_neon64_direct");
    for (size_t k = 0; k < kc; k++, b += NR)
        STEP_DIRECT(koff[k], b);
    MCA_END();
    WRITE_TILE;
}
#else
typedef int bnn_sgemm_neon64_unused; /* ISO C forbids an empty translation unit */
#endif
