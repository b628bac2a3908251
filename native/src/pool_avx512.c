/* AVX-512F max-pool kernel for one output pixel (same contract as bnn_maxpool_px_portable,
 * kernels.h): 64 channels at a time in 4 zmm registers, maxed over all taps and stored
 * once; vmaxps has the portable expression's semantics, so results are bit-identical.
 * Fewer than 16 channels left: the AVX kernel.
 *
 * Compiled for avx512f via target attributes on this function only. With
 * BNN_AVX512_EMULATE (tests only, tests/avx512_emu.h) the same code runs on plain C
 * stand-ins. Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <math.h>

#include "avx512.h"

#define TGT BNN_AVX512_TARGET("avx512f")

TGT void bnn_maxpool_px_avx512(const float *x, size_t row_stride, size_t px_stride,
                               uint32_t kh, uint32_t kw, uint32_t n, float *y)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    uint32_t c = 0;
    for (; c + 64 <= n; c += 64) {
        __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        for (uint32_t i = 0; i < kh; i++)
            for (uint32_t j = 0; j < kw; j++) {
                const float *xi = x + i * row_stride + j * px_stride + c;
                m0 = _mm512_max_ps(_mm512_loadu_ps(xi), m0);
                m1 = _mm512_max_ps(_mm512_loadu_ps(xi + 16), m1);
                m2 = _mm512_max_ps(_mm512_loadu_ps(xi + 32), m2);
                m3 = _mm512_max_ps(_mm512_loadu_ps(xi + 48), m3);
            }
        _mm512_storeu_ps(y + c, m0);
        _mm512_storeu_ps(y + c + 16, m1);
        _mm512_storeu_ps(y + c + 32, m2);
        _mm512_storeu_ps(y + c + 48, m3);
    }
    for (; c + 16 <= n; c += 16) {
        __m512 m = ninf;
        for (uint32_t i = 0; i < kh; i++)
            for (uint32_t j = 0; j < kw; j++)
                m = _mm512_max_ps(_mm512_loadu_ps(x + i * row_stride + j * px_stride + c), m);
        _mm512_storeu_ps(y + c, m);
    }
    if (c < n)
        bnn_maxpool_px_avx2(x + c, row_stride, px_stride, kh, kw, n - c, y + c);
}

#else
typedef int bnn_pool_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
