/* Reference binary convolution, written straight from FORMAT.md for the tests: float math
 * on +-1 values, taps outside the image skipped (exact zero padding). */
#include "kernels.h"

void bnn_bconv_reference(const float *x, uint32_t n, uint32_t c, uint32_t h, uint32_t w,
                         const float *thr, const uint64_t *wbits, uint32_t out_c, uint32_t kh,
                         uint32_t kw, uint32_t sh, uint32_t sw, uint32_t pt, uint32_t pl,
                         uint32_t pb, uint32_t pr, const float *scale, const float *bias,
                         float *y)
{
    const uint32_t words = (c + 63) / 64;
    const long oh = ((long)h + pt + pb - kh) / sh + 1;
    const long ow = ((long)w + pl + pr - kw) / sw + 1;
    for (uint32_t b = 0; b < n; b++)
        for (uint32_t o = 0; o < out_c; o++)
            for (long oy = 0; oy < oh; oy++)
                for (long ox = 0; ox < ow; ox++) {
                    long dot = 0;
                    for (uint32_t i = 0; i < kh; i++)
                        for (uint32_t j = 0; j < kw; j++) {
                            long iy = oy * sh + i - (long)pt, ix = ox * sw + j - (long)pl;
                            if (iy < 0 || iy >= (long)h || ix < 0 || ix >= (long)w)
                                continue;
                            for (uint32_t ch = 0; ch < c; ch++) {
                                float v = x[(((size_t)b * c + ch) * h + iy) * w + ix];
                                if (thr)
                                    v -= thr[ch];
                                int a = v >= 0.0f ? 1 : -1;
                                uint64_t word =
                                    wbits[(((size_t)o * kh + i) * kw + j) * words + ch / 64];
                                int wt = (word >> (ch % 64)) & 1 ? -1 : 1;
                                dot += a * wt;
                            }
                        }
                    y[(((size_t)b * out_c + o) * oh + oy) * ow + ox] =
                        scale[o] * (float)dot + bias[o];
                }
}
