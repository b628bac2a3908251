/* Portable sign-bit packing: float activations (NHWC) -> one bit per channel. */
#include "kernels.h"

void bnn_bitpack_portable(const float *x, const float *thr, uint32_t c, uint32_t words,
                          size_t npix, uint64_t *out, size_t out_stride)
{
    for (size_t p = 0; p < npix; p++) {
        const float *xp = x + p * c;
        uint64_t *op = out + p * out_stride;
        for (uint32_t wd = 0; wd < words; wd++) {
            uint32_t c0 = wd * 64u;
            uint32_t n = c - c0 < 64u ? c - c0 : 64u;
            uint64_t bits = 0;
            /* x - t < 0 (not x < t) is the definition; the two agree for finite floats, and
             * computing the difference keeps us bit-identical to the reference semantics. */
            if (thr) {
                for (uint32_t j = 0; j < n; j++)
                    bits |= (uint64_t)(xp[c0 + j] - thr[c0 + j] < 0.0f) << j;
            } else {
                for (uint32_t j = 0; j < n; j++)
                    bits |= (uint64_t)(xp[c0 + j] < 0.0f) << j;
            }
            op[wd] = bits;
        }
    }
}
