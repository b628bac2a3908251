/* bnn_clip (kernels.h) on 8 lanes, for the AVX2 kernel files: the same compares in the same
 * order, so NaN passes and the results equal the scalar ones bit for bit. */
#ifndef BNN_CLIP_AVX2_H
#define BNN_CLIP_AVX2_H

#include <immintrin.h>

static inline __attribute__((always_inline, target("avx2"))) __m256 bnn_clip8(__m256 v,
                                                                                __m256 lo,
                                                                                __m256 hi)
{
    const __m256 below = _mm256_cmp_ps(v, lo, _CMP_LT_OQ);
    v = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(v, lo, below);
}

#endif
