/* ARMv7 NEON SGEMM micro-kernels: a 4 x 16 tile in two 4 x 8 passes, packed and direct, in
 * two arithmetic flavours picked at run time by kernels.c:
 *   - bnn_sgemm_ukernel*_neon32:     VMLA.F32 (multiply, round, add, round: NEON on every
 *     ARMv7 core with it, Cortex-A8/A9 included);
 *   - bnn_sgemm_ukernel*_neon32fma:  VFMA.F32 (VFPv4: Cortex-A7/A15/A53/A72 in AArch32),
 *     compiled for fpu=neon-vfpv4 by a target attribute on those functions only (GCC; a
 *     clang build has only the VMLA flavour and kernels.c then uses it on every core).
 *
 * Same contract as bnn_sgemm_ukernel_portable (kernels.h), MR = BNN_SGEMM_MR_NEON32 = 4,
 * the portable kernel's MR, so both pack A alike. ARMv7 has 16 q registers: 4 x 16 would
 * need all 16 for accumulators, so the tile is computed as two 4 x 8 halves (8
 * accumulators, 2 B vectors, the A column or its broadcasts: no spills). Each C element is
 * still one chain over k in the caller's order; the A column is read twice (L1-resident).
 *
 * Results: the VMLA flavour rounds like the portable kernel (separate multiply and add in
 * the same order) and is bit-identical to it, except that AArch32 NEON always flushes
 * subnormals to zero (inputs, products or sums below 2^-126). The FMA flavour rounds like
 * the AVX2 / AVX-512 / AArch64 kernels (one rounding per multiply-add), with the same
 * subnormal caveat. Compiled with -mfpu=neon (cross.mk); empty elsewhere.
 */
#include "kernels.h"

#if defined(__arm__) && defined(__ARM_NEON)
#include <arm_neon.h>

/* llvm-mca region markers around the k loops (bench/mca_neon.sh, -DBNN_MCA -S only) */
#ifdef BNN_MCA
#define MCA_BEGIN(name) __asm__ volatile("@ LLVM-MCA-BEGIN " name ::: "memory")
#define MCA_END() __asm__ volatile("@ LLVM-MCA-END" ::: "memory")
#else
#define MCA_BEGIN(name) ((void)0)
#define MCA_END() ((void)0)
#endif

#define MR BNN_SGEMM_MR_NEON32
#define NR BNN_SGEMM_NR
#define HALF 8 /* columns per pass */

/* CLIP (bnn_clip, kernels.h) on 4 lanes by compare and select: VMAX/VMIN would return the
 * default NaN for NaN and order -0 / +0 differently. */
static inline float32x4_t clip4(float32x4_t v, float32x4_t lo, float32x4_t hi)
{
    v = vbslq_f32(vcgtq_f32(v, hi), hi, v);
    return vbslq_f32(vcltq_f32(v, lo), lo, v);
}

/* The tile's sums t (MR x NR) into C with the bias and clamp of kernels.h; out of line so
 * its pointers and constants take no registers from the k loops. */
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

/* The 8 accumulators of a pass into t (row stride NR), columns [h, h + 8). */
#define STORE_HALF(h)                                                                       \
    do {                                                                                    \
        vst1q_f32(t + (h), c00);                                                            \
        vst1q_f32(t + (h) + 4, c01);                                                        \
        vst1q_f32(t + NR + (h), c10);                                                       \
        vst1q_f32(t + NR + (h) + 4, c11);                                                   \
        vst1q_f32(t + 2 * NR + (h), c20);                                                   \
        vst1q_f32(t + 2 * NR + (h) + 4, c21);                                               \
        vst1q_f32(t + 3 * NR + (h), c30);                                                   \
        vst1q_f32(t + 3 * NR + (h) + 4, c31);                                               \
    } while (0)
#define ACC_DECL                                                                            \
    float32x4_t c00 = vdupq_n_f32(0.0f), c01 = c00, c10 = c00, c11 = c00, c20 = c00,        \
                c21 = c00, c30 = c00, c31 = c00

/* Packed A: column k is 4 contiguous floats, one load; A(k, i) is lane i & 1 of its low
 * (i < 2) or high d half. acc += A(k, i) * b: VMLA by scalar, or VFMA of a VDUP of the lane
 * (VFMA has no by-scalar form in AArch32). */
#define LANE_MLA(acc, b, ad, l) vmlaq_lane_f32(acc, b, ad, l)
#define LANE_FMA(acc, b, ad, l) vfmaq_f32(acc, b, vdupq_lane_f32(ad, l))
/* One pass of the packed kernel: columns [h, h + 8) over all of kc, into t. Unrolled by 2
 * (the k order is unchanged): llvm-mca's A57 model in AArch32, 5.5 instead of 6.0 cycles
 * per k step with VMLA (bench/mca_neon.sh). */
#define PASS_PACKED(LMAC, h, NAME)                                                          \
    do {                                                                                    \
        ACC_DECL;                                                                           \
        const float *bk = b + (h), *ak = a;                                                 \
        MCA_BEGIN(NAME);                                                                    \
        _Pragma("GCC unroll 2") for (size_t k = 0; k < kc; k++, bk += NR, ak += MR)         \
        {                                                                                   \
            const float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32(bk + 4), av = vld1q_f32(ak); \
            const float32x2_t lo = vget_low_f32(av), hi = vget_high_f32(av);                \
            c00 = LMAC(c00, b0, lo, 0);                                                     \
            c01 = LMAC(c01, b1, lo, 0);                                                     \
            c10 = LMAC(c10, b0, lo, 1);                                                     \
            c11 = LMAC(c11, b1, lo, 1);                                                     \
            c20 = LMAC(c20, b0, hi, 0);                                                     \
            c21 = LMAC(c21, b1, hi, 0);                                                     \
            c30 = LMAC(c30, b0, hi, 1);                                                     \
            c31 = LMAC(c31, b1, hi, 1);                                                     \
        }                                                                                   \
        MCA_END();                                                                          \
        STORE_HALF(h);                                                                      \
    } while (0)

/* Direct A: A(k, i) = a_i[koff[k]], broadcast by a load (VLD1.32 {d[]}, no ALU op) for the
 * vector form of VMLA / VFMA. (VMLA by scalar on scalar loads made GCC 12 move each float
 * through a core register into a d lane and spill an accumulator; unrolling this loop
 * spilled core registers.) */
#define DUP_MLA(acc, b, p) vmlaq_f32(acc, b, vld1q_dup_f32(p))
#define DUP_FMA(acc, b, p) vfmaq_f32(acc, b, vld1q_dup_f32(p))
#define ROW_DIRECT(DMAC, i, x)                                                              \
    do {                                                                                    \
        const float *p_ = a##i + (x);                                                       \
        c##i##0 = DMAC(c##i##0, b0, p_);                                                    \
        c##i##1 = DMAC(c##i##1, b1, p_);                                                    \
    } while (0)
#define PASS_DIRECT(DMAC, h, NAME)                                                          \
    do {                                                                                    \
        ACC_DECL;                                                                           \
        const float *bk = b + (h);                                                          \
        MCA_BEGIN(NAME);                                                                    \
        for (size_t k = 0; k < kc; k++, bk += NR) {                                         \
            const float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32(bk + 4);                   \
            const size_t x_ = koff[k];                                                      \
            ROW_DIRECT(DMAC, 0, x_);                                                        \
            ROW_DIRECT(DMAC, 1, x_);                                                        \
            ROW_DIRECT(DMAC, 2, x_);                                                        \
            ROW_DIRECT(DMAC, 3, x_);                                                        \
        }                                                                                   \
        MCA_END();                                                                          \
        STORE_HALF(h);                                                                      \
    } while (0)

/* The sums of both halves, then C (+)= them: C += directly for inner depth slices, else
 * through finish() (bias and/or clamp). */
#define WRITE_TILE                                                                          \
    do {                                                                                    \
        if (!bias && !lim) {                                                                \
            for (int i = 0; i < MR; i++)                                                    \
                for (int h = 0; h < NR; h += 4)                                             \
                    vst1q_f32(c + i * ldc + h, vaddq_f32(vld1q_f32(c + i * ldc + h),         \
                                                         vld1q_f32(t + i * NR + h)));       \
            return;                                                                         \
        }                                                                                   \
        finish(t, c, ldc, bias, lim);                                                       \
    } while (0)

#define DEFINE_KERNELS(SFX, ATTR, LMAC, DMAC)                                                      \
    ATTR void bnn_sgemm_ukernel_neon32##SFX(size_t kc, const float *a, const float *b,      \
                                            float *c, size_t ldc, const float *bias,        \
                                            const float *lim)                               \
    {                                                                                       \
        _Alignas(16) float t[MR * NR];                                                      \
        PASS_PACKED(LMAC, 0, "sgemm_neon32" #SFX "_packed");                                \
        PASS_PACKED(LMAC, HALF, "sgemm_neon32" #SFX "_packed_hi");                          \
        WRITE_TILE;                                                                         \
    }                                                                                       \
    ATTR void bnn_sgemm_ukernel_direct_neon32##SFX(size_t kc, const float *a,               \
                                                   const size_t *koff, size_t a_rs,         \
                                                   const float *b, float *c, size_t ldc,    \
                                                   const float *bias, const float *lim)     \
    {                                                                                       \
        _Alignas(16) float t[MR * NR];                                                      \
        const float *a0 = a, *a1 = a + a_rs, *a2 = a + 2 * a_rs, *a3 = a + 3 * a_rs;        \
        PASS_DIRECT(DMAC, 0, "sgemm_neon32" #SFX "_direct");                                \
        PASS_DIRECT(DMAC, HALF, "sgemm_neon32" #SFX "_direct_hi");                          \
        WRITE_TILE;                                                                         \
    }

DEFINE_KERNELS(, , LANE_MLA, DUP_MLA)

#if defined(__GNUC__) && !defined(__clang__)
DEFINE_KERNELS(fma, __attribute__((target("fpu=neon-vfpv4"))), LANE_FMA, DUP_FMA)
const int bnn_sgemm_neon32_has_fma = 1;
#else
/* no per-function FPU target: the VMLA flavour stands in (same contract) */
void bnn_sgemm_ukernel_neon32fma(size_t kc, const float *a, const float *b, float *c,
                                 size_t ldc, const float *bias, const float *lim)
{
    bnn_sgemm_ukernel_neon32(kc, a, b, c, ldc, bias, lim);
}
void bnn_sgemm_ukernel_direct_neon32fma(size_t kc, const float *a, const size_t *koff,
                                        size_t a_rs, const float *b, float *c, size_t ldc,
                                        const float *bias, const float *lim)
{
    bnn_sgemm_ukernel_direct_neon32(kc, a, koff, a_rs, b, c, ldc, bias, lim);
}
const int bnn_sgemm_neon32_has_fma = 0;
#endif
#else
typedef int bnn_sgemm_neon32_unused; /* ISO C forbids an empty translation unit */
#endif
