/* AVX max-pool kernel for one output pixel (same contract as bnn_maxpool_px_portable,
 * kernels.h): 32 channels at a time in 4 ymm registers, maxed over all taps and stored once,
 * instead of a load-max-store of the output row per tap. vmaxps(v, m) is "v > m ? v : m"
 * (NaN v keeps m), the portable expression, so the results are bit-identical.
 *
 * Compiled for AVX via target attributes on this function only; the AVX2 and AVX-512
 * kernel sets use it. Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#define TGT __attribute__((target("avx")))

TGT void bnn_maxpool_px_avx2(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                             uint32_t kw, uint32_t n, float *y)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    uint32_t c = 0;
    for (; c + 32 <= n; c += 32) {
        __m256 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        for (uint32_t i = 0; i < kh; i++)
            for (uint32_t j = 0; j < kw; j++) {
                const float *xi = x + i * row_stride + j * px_stride + c;
                m0 = _mm256_max_ps(_mm256_loadu_ps(xi), m0);
                m1 = _mm256_max_ps(_mm256_loadu_ps(xi + 8), m1);
                m2 = _mm256_max_ps(_mm256_loadu_ps(xi + 16), m2);
                m3 = _mm256_max_ps(_mm256_loadu_ps(xi + 24), m3);
            }
        _mm256_storeu_ps(y + c, m0);
        _mm256_storeu_ps(y + c + 8, m1);
        _mm256_storeu_ps(y + c + 16, m2);
        _mm256_storeu_ps(y + c + 24, m3);
    }
    for (; c + 8 <= n; c += 8) {
        __m256 m = ninf;
        for (uint32_t i = 0; i < kh; i++)
            for (uint32_t j = 0; j < kw; j++)
                m = _mm256_max_ps(_mm256_loadu_ps(x + i * row_stride + j * px_stride + c), m);
        _mm256_storeu_ps(y + c, m);
    }
    if (c < n)
        bnn_maxpool_px_portable(x + c, row_stride, px_stride, kh, kw, n - c, y + c);
}

#else
typedef int bnn_pool_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
