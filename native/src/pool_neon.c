/* NEON max-pool kernel for one output pixel (same contract as bnn_maxpool_px_portable,
 * kernels.h), AArch64 and ARMv7 alike: 16 channels at a time in 4 q registers, maxed over
 * all taps and stored once, then 4 at a time, then the portable loop for the last < 4.
 *
 * Each step is the portable expression "v > m ? v : m" as a compare and a bit select
 * (vcgtq_f32 + vbslq_f32), not FMAX / VMAX: those return NaN for a NaN tap (the contract
 * skips it) and may order -0 / +0 the other way. So the results are bit-identical to the
 * portable kernel on AArch64; on ARMv7, NEON compares flush subnormals to zero, so two
 * subnormal (or subnormal and zero) taps of one channel compare equal and the earlier one
 * is kept, the only difference. Compiled with -mfpu=neon on ARMv7 (cross.mk), where
 * kernels.c uses it only on CPUs with HWCAP_NEON; empty on other architectures.
 */
#include "kernels.h"

#if (defined(__aarch64__) || defined(__arm__)) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <math.h>

/* m = v > m ? v : m, lane by lane */
static inline float32x4_t max_step(float32x4_t v, float32x4_t m)
{
    return vbslq_f32(vcgtq_f32(v, m), v, m);
}

void bnn_maxpool_px_neon(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                         uint32_t kw, uint32_t n, float *y)
{
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    uint32_t c = 0;
    for (; c + 16 <= n; c += 16) {
        float32x4_t m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        for (uint32_t i = 0; i < kh; i++)
            for (uint32_t j = 0; j < kw; j++) {
                const float *xi = x + i * row_stride + j * px_stride + c;
                m0 = max_step(vld1q_f32(xi), m0);
                m1 = max_step(vld1q_f32(xi + 4), m1);
                m2 = max_step(vld1q_f32(xi + 8), m2);
                m3 = max_step(vld1q_f32(xi + 12), m3);
            }
        vst1q_f32(y + c, m0);
        vst1q_f32(y + c + 4, m1);
        vst1q_f32(y + c + 8, m2);
        vst1q_f32(y + c + 12, m3);
    }
    for (; c + 4 <= n; c += 4) {
        float32x4_t m = ninf;
        for (uint32_t i = 0; i < kh; i++)
            for (uint32_t j = 0; j < kw; j++)
                m = max_step(vld1q_f32(x + i * row_stride + j * px_stride + c), m);
        vst1q_f32(y + c, m);
    }
    if (c < n)
        bnn_maxpool_px_portable(x + c, row_stride, px_stride, kh, kw, n - c, y + c);
}
#else
typedef int bnn_pool_neon_unused; /* ISO C forbids an empty translation unit */
#endif
