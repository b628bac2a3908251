/* AVX2 row kernel of the binary convolution.
 *
 * Same contract as bnn_bconv_row_portable (kernels.h), but vectorized over output channels:
 * a 256-bit vector holds one 64-bit weight word of 4 channels (a->wp, interleaved by 16
 * channels: bnn_bconv_prepack_avx2 below), the activation word is broadcast, and a lane's
 * popcount is that channel's. So any channel count and stride runs without tails or masked
 * lanes, and no horizontal reduction is ever needed.
 *
 * Popcount: vpshufb nibble lookup gives per-byte counts (<= 8) that are summed in byte
 * accumulators (vpaddb); only every 31 words (31 * 8 = 248 < 256) are they widened with
 * vpsadbw, whose 64-bit lane sums are exactly the 4 channels' counts. The weights are
 * stored already split into their low and high nibbles (two planes, built once per model), and the
 * activation word is split once per word for all 4 vectors, because the XOR of two
 * nibbles is the nibble of the XOR. That leaves 6 vector ops per 256 bit pairs (2 vpxor,
 * 2 vpshufb, 2 vpaddb) plus 3 per word shared by the 4 vectors, against 8 for splitting
 * each XOR (vpxor, 2 vpand, vpsrlw, 2 vpshufb, 2 vpaddb): 1.08-1.12x on single layers in
 * a harness alternating both (Zen 3). Splitting the activations once per strip of columns
 * instead, which saves the 3 ops per word, measured 0.95-1.05x and was not kept.
 * Tile: one output column x 16 channels = 4 byte accumulators, 4 widened totals, 2
 * constants, the split activation and temporaries within the 16 ymm registers.
 *
 * Compiled for AVX2 via target attributes on these functions only; kernels.c selects it
 * when cpuid reports avx2 (with OS support for the ymm state). Empty off x86-64.
 */
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "clip_avx2.h"

#define TGT __attribute__((target("avx2,popcnt")))
#define INL static inline __attribute__((always_inline))

enum { NV = 4, OB = 4 * NV, FLUSH = 31 };

/* The weight layout this kernel reads (BNN_WLAYOUT_NIBBLE16): the file's bits interleaved
 * by 16 output channels and split into nibble planes, [o/16][i][j][word][plane][o%16], plane
 * 0 = bits & 0x0f.. and plane 1 = (bits >> 4) & 0x0f.. per byte, out_c padded to a multiple
 * of 16 with zero words. Twice the file layout's size: built only for a model that an AVX2
 * context runs (bnn_model_prepack), never on a CPU without AVX2. Plain C, no AVX2 needed. */
static size_t nibble16_words(uint32_t out_c, size_t kwords)
{
    return ((size_t)out_c + OB - 1) / OB * OB * kwords * 2;
}

static void nibble16_fill(const uint64_t *w, uint32_t out_c, size_t kwords, uint64_t *dst)
{
    const uint64_t lo = 0x0f0f0f0f0f0f0f0full;
    const size_t oc16 = ((size_t)out_c + OB - 1) / OB * OB;
    for (size_t o = 0; o < oc16; o++)
        for (size_t k = 0; k < kwords; k++) {
            const uint64_t v = o < out_c ? w[o * kwords + k] : 0;
            uint64_t *d = dst + ((o / OB) * kwords + k) * 2 * OB + o % OB;
            d[0] = v & lo;
            d[OB] = v >> 4 & lo;
        }
}

const bnn_bconv_prepack bnn_bconv_prepack_avx2 = {BNN_WLAYOUT_NIBBLE16, nibble16_words,
                                                  nibble16_fill};

/* Popcounts of output column x for channels [o, o + 16) into dst[0, 16). off[k]: offset of
 * the window's k-th word from its first (kernel row i, word t of the row), so the word loop
 * has no row/column bookkeeping. */
INL TGT void tile(const bnn_bconv_row_args *a, const size_t *off, size_t kwords, uint32_t x,
                  uint32_t o, int32_t *dst)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1,
                                         1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    __m256i acc[NV], tot[NV];
    for (int v = 0; v < NV; v++)
        tot[v] = zero;
    const uint64_t *wk = a->wp + (size_t)(o / OB) * kwords * 2 * OB;
    const uint64_t *in0 = a->in + (size_t)x * a->x_stride;
    /* chunks of FLUSH words (one chunk up to 192 channels at 3x3), widened after each */
    for (size_t k0 = 0; k0 < kwords; k0 += FLUSH) {
        const size_t k1 = kwords - k0 < FLUSH ? kwords : k0 + FLUSH;
        for (int v = 0; v < NV; v++)
            acc[v] = zero;
        for (size_t k = k0; k < k1; k++, wk += 2 * OB) {
            const __m256i b = _mm256_set1_epi64x((long long)in0[off[k]]);
            const __m256i blo = _mm256_and_si256(b, low);
            const __m256i bhi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
            for (int v = 0; v < NV; v++) {
                const __m256i wlo = _mm256_load_si256((const __m256i *)(wk + 4 * v));
                const __m256i whi = _mm256_load_si256((const __m256i *)(wk + OB + 4 * v));
                acc[v] = _mm256_add_epi8(acc[v],
                                         _mm256_shuffle_epi8(lut, _mm256_xor_si256(blo, wlo)));
                acc[v] = _mm256_add_epi8(acc[v],
                                         _mm256_shuffle_epi8(lut, _mm256_xor_si256(bhi, whi)));
            }
        }
        for (int v = 0; v < NV; v++)
            tot[v] = _mm256_add_epi64(tot[v], _mm256_sad_epu8(acc[v], zero));
    }
    /* 64-bit lane sums (< 2^31) -> int32: the low halves, lanes 0, 2, 4, 6 */
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    for (int v = 0; v < NV; v++)
        _mm_storeu_si128((__m128i *)(dst + 4 * v),
                         _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(tot[v], even)));
}

enum { MAX_KWORDS = 1024 }; /* kh * kw * words of the window; 5x5 at 2560 channels */

/* Windows longer than MAX_KWORDS words (never in practice): the portable kernel. */
TGT void bnn_bconv_row_avx2(const bnn_bconv_row_args *a)
{
    const size_t kwords = (size_t)a->kh * a->tap_words;
    if (kwords > MAX_KWORDS) {
        bnn_bconv_row_portable(a);
        return;
    }
    size_t off[MAX_KWORDS];
    for (uint32_t i = 0, k = 0; i < a->kh; i++)
        for (uint32_t t = 0; t < a->tap_words; t++)
            off[k++] = i * a->row_stride + t;
    const uint32_t nout = a->o_end - a->o_begin;
    int32_t buf[OB];
    /* channel group outer, columns inner: the group's weights (kwords * 256 bytes, 18 KB
     * for 512 channels at 3x3) stay in L1 across the row */
    for (uint32_t o = a->o_begin; o < a->o_end; o += OB) {
        const uint32_t n = a->o_end - o < OB ? a->o_end - o : OB;
        for (uint32_t x = 0; x < a->ow; x++) {
            int32_t *dst = a->pop + (size_t)x * nout + (o - a->o_begin);
            if (n == OB) { /* whole 16-channel group: straight into pop */
                tile(a, off, kwords, x, o, dst);
                continue;
            }
            tile(a, off, kwords, x, o, buf);
            memcpy(dst, buf, n * sizeof(int32_t));
        }
    }
}

/* Sign packing (same contract as bnn_bitpack_portable): 8 channels per compare, whose
 * vmovmskps byte lands at its place in the word. The compare is x - t < 0 exactly as in the
 * portable code (not a sign-bit test: -0.0 must give +1), so the bits are identical. */
TGT void bnn_bitpack_avx2(const float *x, const float *thr, uint32_t c, uint32_t words,
                          size_t npix, uint64_t *out, size_t out_stride)
{
    const __m256 zero = _mm256_setzero_ps();
    for (size_t p = 0; p < npix; p++) {
        const float *xp = x + p * c;
        uint64_t *op = out + p * out_stride;
        for (uint32_t wd = 0; wd < words; wd++) {
            const uint32_t c0 = wd * 64u, n = c - c0 < 64u ? c - c0 : 64u, nv = n & ~7u;
            uint64_t bits = 0;
            uint32_t j = 0;
            for (; j < nv; j += 8) {
                __m256 v = _mm256_loadu_ps(xp + c0 + j);
                if (thr)
                    v = _mm256_sub_ps(v, _mm256_loadu_ps(thr + c0 + j));
                const uint32_t m = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ));
                bits |= (uint64_t)m << j;
            }
            op[wd] = bits | bnn_sign_bits(xp + c0, thr ? thr + c0 : NULL, j, n);
        }
    }
}

/* Same contract as bnn_bconv_out_portable, 8 channels per step: vcvtdq2ps, vmulps, vaddps
 * as separate ops (no FMA, which would round once and differ from the portable floats), the
 * clamp by bnn_clip8. */
TGT void bnn_bconv_out_avx2(const int32_t *p, int32_t n, const float *scale, const float *bias,
                            const float *res, const float *lim, float *y, uint32_t count,
                            size_t npix, size_t y_stride)
{
    const __m256i nv = _mm256_set1_epi32(n);
    const __m256 lo = _mm256_set1_ps(lim ? lim[0] : 0.0f), hi = _mm256_set1_ps(lim ? lim[1] : 0.0f);
    for (size_t i = 0; i < npix; i++, p += count, y += y_stride) {
        const float *r = res ? res + i * y_stride : NULL;
        uint32_t o = 0;
        for (; o + 8 <= count; o += 8) {
            const __m256i pv = _mm256_loadu_si256((const __m256i *)(p + o));
            const __m256 d = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_sub_epi32(nv, pv), pv));
            __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(scale + o), d),
                                     _mm256_loadu_ps(bias + o));
            if (r)
                v = _mm256_add_ps(v, _mm256_loadu_ps(r + o));
            if (lim)
                v = bnn_clip8(v, lo, hi);
            _mm256_storeu_ps(y + o, v);
        }
        if (o < count)
            bnn_bconv_out_portable(p + o, n, scale + o, bias + o, r ? r + o : NULL, lim, y + o,
                                   count - o, 1, 0);
    }
}

/* Same contract as bnn_threshold_counts_portable: 8 channels per compare, negated where
 * neg = -1 ((p ^ -1) + 1 = -p), whose vmovmskps byte lands at its place in the word. */
TGT void bnn_threshold_counts_avx2(const int32_t *p, const int32_t *neg, const int32_t *bound,
                                   uint32_t n, size_t npix, uint64_t *dst, size_t dst_stride)
{
    for (size_t i = 0; i < npix; i++, p += n) {
        uint64_t bits = 0;
        uint32_t j = 0;
        for (; j + 8 <= n; j += 8) {
            const __m256i s = _mm256_loadu_si256((const __m256i *)(neg + j));
            const __m256i v = _mm256_sub_epi32(
                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + j)), s), s);
            const __m256i gt =
                _mm256_cmpgt_epi32(v, _mm256_loadu_si256((const __m256i *)(bound + j)));
            bits |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(gt)) << j;
        }
        if (j < n)
            bits |= bnn_threshold_bits(p + j, neg + j, bound + j, n - j) << j;
        dst[i * dst_stride] = bits;
    }
}

#else
typedef int bnn_bconv_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
