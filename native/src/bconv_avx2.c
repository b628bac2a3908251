/* AVX2 row kernel of the binary convolution.
 *
 * Same contract as bnn_bconv_row_portable (kernels.h). Each kernel row of a window is
 * tap_words (= kw * words) contiguous u64 in both input and weights; it is processed 4 words
 * (256 bits) at a time, the last partial vector with a masked load (masked lanes read 0 on
 * both sides, so they add 0). Popcount: vpshufb nibble lookup gives per-byte counts (<= 8),
 * vpsadbw against zero sums them into 4 u64 lanes that are added to the accumulator; the
 * horizontal reduction happens once per (channel, column) at the end, not per chunk.
 * Register tile: 4 output channels x 2 output columns (8 accumulators). With one word per
 * pixel and stride 1 (in_c <= 64) a second tile vectorizes over 8 output columns instead.
 *
 * Compiled for AVX2 via target attributes on these functions only; kernels.c selects it
 * when cpuid reports avx2 (with OS support for the ymm state). Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TGT __attribute__((target("avx2,popcnt")))
#define INL static inline __attribute__((always_inline))

enum { MR = 4, NR = 2 };

INL TGT __m256i popcnt_bytes_sad(__m256i v, __m256i lut, __m256i low)
{
    const __m256i lo = _mm256_and_si256(v, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    const __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_sad_epu8(cnt, _mm256_setzero_si256());
}

INL TGT uint64_t hsum64(__m256i v)
{
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}

INL TGT void tile(const bnn_bconv_row_args *a, uint32_t nout, uint32_t o, uint32_t x,
                  const int mr, const int nr, __m256i tail_mask)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1,
                                         1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i acc[MR][NR];
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++)
            acc[m][n] = _mm256_setzero_si256();
    const uint32_t tw = a->tap_words, tv = tw & ~3u;
    const uint64_t *in0 = a->in + (size_t)x * a->x_stride;
    const uint64_t *w0 = a->w + (size_t)o * a->w_stride;
    for (uint32_t i = 0; i < a->kh; i++) {
        const uint64_t *ip = in0 + (size_t)i * a->row_stride;
        const uint64_t *wp = w0 + (size_t)i * tw;
        uint32_t t = 0;
        for (; t < tv; t += 4) {
            __m256i v[NR];
            for (int n = 0; n < nr; n++)
                v[n] = _mm256_loadu_si256((const __m256i *)(ip + (size_t)n * a->x_stride + t));
            for (int m = 0; m < mr; m++) {
                const __m256i w =
                    _mm256_loadu_si256((const __m256i *)(wp + (size_t)m * a->w_stride + t));
                for (int n = 0; n < nr; n++)
                    acc[m][n] = _mm256_add_epi64(
                        acc[m][n], popcnt_bytes_sad(_mm256_xor_si256(v[n], w), lut, low));
            }
        }
        if (t < tw) {
            __m256i v[NR];
            for (int n = 0; n < nr; n++)
                v[n] = _mm256_maskload_epi64(
                    (const long long *)(ip + (size_t)n * a->x_stride + t), tail_mask);
            for (int m = 0; m < mr; m++) {
                const __m256i w = _mm256_maskload_epi64(
                    (const long long *)(wp + (size_t)m * a->w_stride + t), tail_mask);
                for (int n = 0; n < nr; n++)
                    acc[m][n] = _mm256_add_epi64(
                        acc[m][n], popcnt_bytes_sad(_mm256_xor_si256(v[n], w), lut, low));
            }
        }
    }
    for (int n = 0; n < nr; n++)
        for (int m = 0; m < mr; m++)
            a->pop[(size_t)(x + n) * nout + (o - a->o_begin) + m] = (int32_t)hsum64(acc[m][n]);
}

/* Pixel-vectorized tile for one input word per pixel and stride 1 (x_stride == 1, e.g. the
 * 64-channel layers): lane j of a vector is output column x + j, whose window word at tap t
 * is in[x + j + t], so 4 columns load as one contiguous vector and each weight word is
 * broadcast. 8 columns (2 vectors) x mr channels; no masked lanes. */
INL TGT void tile_px(const bnn_bconv_row_args *a, uint32_t nout, uint32_t o, uint32_t x,
                     const int mr)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1,
                                         1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i acc[MR][2];
    for (int m = 0; m < mr; m++)
        acc[m][0] = acc[m][1] = _mm256_setzero_si256();
    const uint32_t tw = a->tap_words;
    const uint64_t *in0 = a->in + x; /* x_stride == 1 */
    const uint64_t *w0 = a->w + (size_t)o * a->w_stride;
    for (uint32_t i = 0; i < a->kh; i++) {
        const uint64_t *ip = in0 + (size_t)i * a->row_stride;
        const uint64_t *wp = w0 + (size_t)i * tw;
        for (uint32_t t = 0; t < tw; t++) {
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(ip + t));
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(ip + t + 4));
            for (int m = 0; m < mr; m++) {
                const __m256i w = _mm256_set1_epi64x((long long)wp[(size_t)m * a->w_stride + t]);
                acc[m][0] = _mm256_add_epi64(
                    acc[m][0], popcnt_bytes_sad(_mm256_xor_si256(v0, w), lut, low));
                acc[m][1] = _mm256_add_epi64(
                    acc[m][1], popcnt_bytes_sad(_mm256_xor_si256(v1, w), lut, low));
            }
        }
    }
    for (int m = 0; m < mr; m++)
        for (int h = 0; h < 2; h++) {
            uint64_t lanes[4];
            _mm256_storeu_si256((__m256i *)lanes, acc[m][h]);
            for (int j = 0; j < 4; j++)
                a->pop[(size_t)(x + 4 * h + j) * nout + (o - a->o_begin) + m] = (int32_t)lanes[j];
        }
}

TGT void bnn_bconv_row_avx2(const bnn_bconv_row_args *a)
{
    const uint32_t nout = a->o_end - a->o_begin;
    const uint32_t rem = a->tap_words & 3u;
    /* lanes [0, rem) enabled: the sign bit of each 64-bit lane selects it */
    const __m256i tail_mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)rem),
                                                 _mm256_setr_epi64x(0, 1, 2, 3));
    uint32_t x = 0;
    if (a->x_stride == 1)
        for (; x + 8 <= a->ow; x += 8) {
            uint32_t o = a->o_begin;
            for (; o + MR <= a->o_end; o += MR)
                tile_px(a, nout, o, x, MR);
            for (; o < a->o_end; o++)
                tile_px(a, nout, o, x, 1);
        }
    for (; x + NR <= a->ow; x += NR) {
        uint32_t o = a->o_begin;
        for (; o + MR <= a->o_end; o += MR)
            tile(a, nout, o, x, MR, NR, tail_mask);
        for (; o < a->o_end; o++)
            tile(a, nout, o, x, 1, NR, tail_mask);
    }
    for (; x < a->ow; x++) {
        uint32_t o = a->o_begin;
        for (; o + MR <= a->o_end; o += MR)
            tile(a, nout, o, x, MR, 1, tail_mask);
        for (; o < a->o_end; o++)
            tile(a, nout, o, x, 1, 1, tail_mask);
    }
}

#else
typedef int bnn_bconv_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
