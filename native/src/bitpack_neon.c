/* NEON bit packing of the kernel table (same contracts as the portable kernels, kernels.h):
 *   - bnn_bitpack_neon (AArch64): sign packing, 16 channels per step: x - t < 0 per lane
 *     (vcltq_f32, not a sign-bit test: -0.0 gives +1, NaN gives +1, as in portable C);
 *   - bnn_threshold_counts_neon (AArch64 and ARMv7): bits of popcounts against integer
 *     bounds, 16 channels per step, negated where neg = -1 ((p ^ -1) - (-1) = -p).
 * The 16 lane masks become 16 bits by narrowing to bytes, an AND with each byte's bit
 * weight and a horizontal add per 8 bytes (NEON has no movemask). Bit-identical to the
 * portable kernels (the unit tests compare them); tails go through the portable helpers.
 *
 * ARMv7 gets the integer kernel only: AArch32 NEON flushes subnormals to zero, so a float
 * compare there could differ from the portable VFP code for subnormal x - t. Compiled with
 * -mfpu=neon on ARMv7 (cross.mk); empty on other architectures.
 */
#include "kernels.h"

#if (defined(__aarch64__) || defined(__arm__)) && defined(__ARM_NEON)
#include <arm_neon.h>

/* Bit j of the result = lane j of the masks (all-ones or zero), j < 16, m0 holding 0-3. */
static inline uint32_t bits16(uint32x4_t m0, uint32x4_t m1, uint32x4_t m2, uint32x4_t m3)
{
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                        1, 2, 4, 8, 16, 32, 64, 128};
    const uint16x8_t h0 = vcombine_u16(vmovn_u32(m0), vmovn_u32(m1));
    const uint16x8_t h1 = vcombine_u16(vmovn_u32(m2), vmovn_u32(m3));
    const uint8x16_t b = vandq_u8(vcombine_u8(vmovn_u16(h0), vmovn_u16(h1)), vld1q_u8(weights));
#if defined(__aarch64__)
    return (uint32_t)vaddv_u8(vget_low_u8(b)) | (uint32_t)vaddv_u8(vget_high_u8(b)) << 8;
#else
    /* three pairwise adds: byte 0 sums the low 8 bytes, byte 1 the high 8 (disjoint bits) */
    uint8x8_t t = vpadd_u8(vget_low_u8(b), vget_high_u8(b));
    t = vpadd_u8(t, t);
    t = vpadd_u8(t, t);
    return vget_lane_u16(vreinterpret_u16_u8(t), 0);
#endif
}

#if defined(__aarch64__)
void bnn_bitpack_neon(const float *x, const float *thr, uint32_t c, uint32_t words,
                      size_t npix, uint64_t *out, size_t out_stride)
{
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (size_t p = 0; p < npix; p++) {
        const float *xp = x + p * c;
        uint64_t *op = out + p * out_stride;
        for (uint32_t wd = 0; wd < words; wd++) {
            const uint32_t c0 = wd * 64u, n = c - c0 < 64u ? c - c0 : 64u;
            const float *xw = xp + c0, *tw = thr ? thr + c0 : NULL;
            uint64_t bits = 0;
            uint32_t j = 0;
            for (; j + 16 <= n; j += 16) {
                float32x4_t v[4];
                for (int q = 0; q < 4; q++) {
                    v[q] = vld1q_f32(xw + j + 4 * q);
                    if (tw)
                        v[q] = vsubq_f32(v[q], vld1q_f32(tw + j + 4 * q));
                }
                bits |= (uint64_t)bits16(vcltq_f32(v[0], zero), vcltq_f32(v[1], zero),
                                         vcltq_f32(v[2], zero), vcltq_f32(v[3], zero))
                        << j;
            }
            op[wd] = bits | bnn_sign_bits(xw, tw, j, n);
        }
    }
}
#endif

/* (p ^ s) - s > bound on 4 lanes: p > bound where s = 0, -p > bound where s = -1 */
static inline uint32x4_t above(const int32_t *p, const int32_t *s, const int32_t *bound)
{
    const int32x4_t sv = vld1q_s32(s);
    const int32x4_t v = vsubq_s32(veorq_s32(vld1q_s32(p), sv), sv);
    return vcgtq_s32(v, vld1q_s32(bound));
}

void bnn_threshold_counts_neon(const int32_t *p, const int32_t *neg, const int32_t *bound,
                               uint32_t n, size_t npix, uint64_t *dst, size_t dst_stride)
{
    for (size_t i = 0; i < npix; i++, p += n) {
        uint64_t bits = 0;
        uint32_t j = 0;
        for (; j + 16 <= n; j += 16)
            bits |= (uint64_t)bits16(above(p + j, neg + j, bound + j),
                                     above(p + j + 4, neg + j + 4, bound + j + 4),
                                     above(p + j + 8, neg + j + 8, bound + j + 8),
                                     above(p + j + 12, neg + j + 12, bound + j + 12))
                    << j;
        if (j < n)
            bits |= bnn_threshold_bits(p + j, neg + j, bound + j, n - j) << j;
        dst[i * dst_stride] = bits;
    }
}
#else
typedef int bnn_bitpack_neon_unused; /* ISO C forbids an empty translation unit */
#endif
