/* Portable sign-bit packing: float activations (NHWC) -> one bit per channel; and the same
 * from a binary conv's popcounts through integer bounds (kernels.h). */
#include "kernels.h"

void bnn_bitpack_portable(const float *x, const float *thr, uint32_t c, uint32_t words,
                          size_t npix, uint64_t *out, size_t out_stride)
{
    for (size_t p = 0; p < npix; p++) {
        const float *xp = x + p * c;
        uint64_t *op = out + p * out_stride;
        for (uint32_t wd = 0; wd < words; wd++) {
            const uint32_t c0 = wd * 64u, n = c - c0 < 64u ? c - c0 : 64u;
            op[wd] = bnn_sign_bits(xp + c0, thr ? thr + c0 : NULL, 0, n);
        }
    }
}

void bnn_threshold_counts_portable(const int32_t *p, const int32_t *neg, const int32_t *bound,
                                   uint32_t n, size_t npix, uint64_t *dst, size_t dst_stride)
{
    for (size_t i = 0; i < npix; i++)
        dst[i * dst_stride] = bnn_threshold_bits(p + i * n, neg, bound, n);
}
