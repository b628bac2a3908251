/* What the AVX-512 kernel files share: their intrinsics (<immintrin.h>, or with
 * BNN_AVX512_EMULATE, tests only, the plain C stand-ins of tests/avx512_emu.h and no target
 * attribute) and bnn_clip16, bnn_clip (kernels.h) on 16 lanes. */
#ifndef BNN_AVX512_H
#define BNN_AVX512_H

#if defined(BNN_AVX512_EMULATE)
#include "avx512_emu.h"
#define BNN_AVX512_TARGET(features)
#else
#include <immintrin.h>
#define BNN_AVX512_TARGET(features) __attribute__((target(features)))
#endif

/* CLIP's compares in bnn_clip's order, so NaN passes and results equal the scalar ones */
static inline __attribute__((always_inline)) BNN_AVX512_TARGET("avx512f") __m512
bnn_clip16(__m512 v, __m512 lo, __m512 hi)
{
    const __mmask16 below = _mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ);
    v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), v, hi);
    return _mm512_mask_blend_ps(below, v, lo);
}

#endif
