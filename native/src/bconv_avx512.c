/* AVX-512 VPOPCNTDQ row kernel of the binary convolution.
 *
 * Same contract as bnn_bconv_row_portable (kernels.h), vectorized over output channels like
 * the AVX2 kernel: a 512-bit vector holds one 64-bit weight word of 8 channels (a->wp,
 * whole words interleaved by 16 channels: bnn_bconv_prepack_avx512 below), the activation
 * word is broadcast (folded into vpxorq as {1to8}), and vpopcntq gives each lane's, i.e.
 * each channel's, count. Per 512 bit pairs that is vpxorq + vpopcntq + vpaddq, with no
 * horizontal reduction and no tails in the word loop for any channel count (the weights
 * are zero-padded to 16 channels; lanes past o_end are computed and not stored).
 *
 * Tile: 32 channels (two 16-channel groups, 4 vectors) x 6 output columns = 24 u64
 * accumulators + 4 weight vectors + a temporary within the 32 zmm registers; per word, 4
 * weight loads and 6 broadcasts feed 24 xor/popcount/add triples (72 vector ops, 36 cycles
 * on 2 512-bit pipes), so loads are far from the limit. Channel pairs outer, columns inner:
 * the pair's weights (kwords * 256 bytes, 18 KB for 512 channels at 3x3) stay in L1 along
 * the row. Narrower tails use the same body with 16 channels and/or 4, 2, 1 columns.
 * An earlier kernel reduced horizontally per (channel, column) over words of one kernel row
 * (a 64-channel 3x3 row is 3 words, so 5 of 8 lanes idle): 9-11% of peak on ResNet-18's
 * 64-channel layers, against the AVX2 kernel's 35% on the same Xeon.
 *
 * Also here: the AVX-512 versions of sign packing, threshold counts and float outputs
 * (16 channels per compare, whose mask is the bits).
 *
 * Compiled for avx512f + avx512vpopcntdq via target attributes on these functions only;
 * kernels.c selects it only when cpuid reports both. With BNN_AVX512_EMULATE (tests only,
 * tests/avx512_emu.h) the same code runs on plain C stand-ins for the intrinsics. Empty off
 * x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include "avx512.h"

#define TGT BNN_AVX512_TARGET("avx512f,avx512vpopcntdq")

#define INL static inline __attribute__((always_inline))

enum { OB = 16, NCOL = 6, MAX_KWORDS = 1024 };

/* The weight layout this kernel reads (BNN_WLAYOUT_LANE16): the file's bits interleaved by
 * 16 output channels as whole words (native 64-bit popcount: no nibble planes),
 * [o/16][i][j][word][o%16], out_c padded to a multiple of 16 with zero words. Built only for
 * a model that an AVX-512 context runs (bnn_model_prepack). Plain C: it runs (and the
 * emulated tests build it) on any CPU. */
static size_t lane16_words(uint32_t out_c, size_t kwords)
{
    return ((size_t)out_c + OB - 1) / OB * OB * kwords;
}

static void lane16_fill(const uint64_t *w, uint32_t out_c, size_t kwords, uint64_t *dst)
{
    const size_t oc16 = ((size_t)out_c + OB - 1) / OB * OB;
    for (size_t o = 0; o < oc16; o++)
        for (size_t k = 0; k < kwords; k++)
            dst[((o / OB) * kwords + k) * OB + o % OB] = o < out_c ? w[o * kwords + k] : 0;
}

const bnn_bconv_prepack bnn_bconv_prepack_avx512 = {BNN_WLAYOUT_LANE16, lane16_words,
                                                    lane16_fill};

/* Popcounts of columns [x, x + nc) for channel groups [o, o + 16 * ng) into pop. off[k]:
 * offset of the window's k-th word from its first. mask[g][h]: lanes of group g, half h
 * that exist (o_end cuts the last group). ng and nc are constants after inlining. */
INL TGT void tile(const bnn_bconv_row_args *a, const size_t *off, size_t kwords, uint32_t x,
                  uint32_t o, const int ng, const int nc, __mmask8 mask[2][2])
{
    __m512i acc[2][2][NCOL];
    for (int g = 0; g < ng; g++)
        for (int h = 0; h < 2; h++)
            for (int n = 0; n < nc; n++)
                acc[g][h][n] = _mm512_setzero_si512();
    const uint64_t *w = a->wp + (size_t)(o / OB) * kwords * OB;
    const uint64_t *in = a->in + (size_t)x * a->x_stride;
    const size_t xs = a->x_stride, gstride = kwords * OB;
    for (size_t k = 0; k < kwords; k++, w += OB) {
        __m512i wv[2][2];
        for (int g = 0; g < ng; g++)
            for (int h = 0; h < 2; h++)
                wv[g][h] = _mm512_load_si512(w + g * gstride + 8 * h);
        const uint64_t *ik = in + off[k];
        for (int n = 0; n < nc; n++) {
            const __m512i b = _mm512_set1_epi64((long long)ik[n * xs]);
            for (int g = 0; g < ng; g++)
                for (int h = 0; h < 2; h++)
                    acc[g][h][n] = _mm512_add_epi64(
                        acc[g][h][n], _mm512_popcnt_epi64(_mm512_xor_si512(b, wv[g][h])));
        }
    }
    const uint32_t nout = a->o_end - a->o_begin;
    for (int n = 0; n < nc; n++) {
        int32_t *dst = a->pop + (size_t)(x + n) * nout + (o - a->o_begin);
        for (int g = 0; g < ng; g++)
            for (int h = 0; h < 2; h++) /* counts < 2^31: the low halves are the int32s */
                _mm512_mask_cvtepi64_storeu_epi32(dst + OB * g + 8 * h, mask[g][h],
                                                  acc[g][h][n]);
    }
}

/* Columns [0, ow) for one channel block of ng groups: 6 at a time, then 4, 2, 1. */
INL TGT void columns(const bnn_bconv_row_args *a, const size_t *off, size_t kwords, uint32_t o,
                     const int ng, __mmask8 mask[2][2])
{
    uint32_t x = 0;
    for (; x + NCOL <= a->ow; x += NCOL)
        tile(a, off, kwords, x, o, ng, NCOL, mask);
    if (a->ow - x >= 4) {
        tile(a, off, kwords, x, o, ng, 4, mask);
        x += 4;
    }
    if (a->ow - x >= 2) {
        tile(a, off, kwords, x, o, ng, 2, mask);
        x += 2;
    }
    if (x < a->ow)
        tile(a, off, kwords, x, o, ng, 1, mask);
}

/* Lanes of the 16-channel group starting at channel o that are below o_end, as two masks. */
static void group_mask(uint32_t o, uint32_t o_end, __mmask8 m[2])
{
    const uint32_t n = o_end - o >= OB ? OB : o_end - o;
    m[0] = (__mmask8)(n >= 8 ? 0xffu : (1u << n) - 1u);
    m[1] = (__mmask8)(n >= 16 ? 0xffu : n > 8 ? (1u << (n - 8)) - 1u : 0u);
}

/* Windows longer than MAX_KWORDS words (never in practice): the portable kernel. */
TGT void bnn_bconv_row_avx512(const bnn_bconv_row_args *a)
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
    for (uint32_t o = a->o_begin; o < a->o_end;) {
        __mmask8 mask[2][2];
        group_mask(o, a->o_end, mask[0]);
        if (a->o_end - o > OB) { /* two groups (the second may be partial) */
            group_mask(o + OB, a->o_end, mask[1]);
            columns(a, off, kwords, o, 2, mask);
            o += 2 * OB;
        } else {
            mask[1][0] = mask[1][1] = 0;
            columns(a, off, kwords, o, 1, mask);
            o += OB;
        }
    }
}

/* One pixel's 16 channels [j, j + 16) of bnn_threshold_counts_portable: negated where
 * neg = -1 ((p ^ -1) + 1 = -p); the compare's mask is the 16 bits themselves. */
INL TGT uint64_t thr16(const int32_t *p, __m512i s, __m512i bound)
{
    const __m512i v = _mm512_sub_epi32(_mm512_xor_si512(_mm512_loadu_si512(p), s), s);
    return (uint64_t)_mm512_cmpgt_epi32_mask(v, bound);
}

/* Same contract as bnn_threshold_counts_portable. A 64-channel block (every block of a
 * layer whose channels are a multiple of 64) keeps its signs and bounds in 8 registers
 * across the row's pixels. */
TGT void bnn_threshold_counts_avx512(const int32_t *p, const int32_t *neg, const int32_t *bound,
                                     uint32_t n, size_t npix, uint64_t *dst, size_t dst_stride)
{
    if (n == 64) {
        __m512i s[4], b[4];
        for (int q = 0; q < 4; q++) {
            s[q] = _mm512_loadu_si512(neg + 16 * q);
            b[q] = _mm512_loadu_si512(bound + 16 * q);
        }
        for (size_t i = 0; i < npix; i++, p += 64)
            dst[i * dst_stride] = thr16(p, s[0], b[0]) | thr16(p + 16, s[1], b[1]) << 16 |
                                  thr16(p + 32, s[2], b[2]) << 32 |
                                  thr16(p + 48, s[3], b[3]) << 48;
        return;
    }
    for (size_t i = 0; i < npix; i++, p += n) {
        uint64_t bits = 0;
        uint32_t j = 0;
        for (; j + 16 <= n; j += 16)
            bits |= thr16(p + j, _mm512_loadu_si512(neg + j), _mm512_loadu_si512(bound + j))
                    << j;
        if (j < n)
            bits |= bnn_threshold_bits(p + j, neg + j, bound + j, n - j) << j;
        dst[i * dst_stride] = bits;
    }
}

/* One pixel's 16 channels of bnn_bconv_out_portable: vcvtdq2ps, vmulps, vaddps as separate
 * ops (no FMA, which would round once and differ from the portable floats), the clamp by
 * bnn_clip16. r is read before y is written (in place). */
INL TGT void out16(const int32_t *p, __m512i nv, __m512 scale, __m512 bias, const float *r,
                   int clamp, __m512 lo, __m512 hi, float *y)
{
    const __m512i pv = _mm512_loadu_si512(p);
    const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_sub_epi32(nv, pv), pv));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(scale, d), bias);
    if (r)
        v = _mm512_add_ps(v, _mm512_loadu_ps(r));
    if (clamp)
        v = bnn_clip16(v, lo, hi);
    _mm512_storeu_ps(y, v);
}

/* Same contract as bnn_bconv_out_portable, 16 channels per step; a 64-channel block keeps
 * its scales and biases in registers across the row's pixels. */
TGT void bnn_bconv_out_avx512(const int32_t *p, int32_t n, const float *scale, const float *bias,
                              const float *res, const float *lim, float *y, uint32_t count,
                              size_t npix, size_t y_stride)
{
    const __m512i nv = _mm512_set1_epi32(n);
    const __m512 lo = _mm512_set1_ps(lim ? lim[0] : 0.0f), hi = _mm512_set1_ps(lim ? lim[1] : 0.0f);
    const int clamp = lim != NULL;
    if (count == 64) {
        __m512 sc[4], bi[4];
        for (int q = 0; q < 4; q++) {
            sc[q] = _mm512_loadu_ps(scale + 16 * q);
            bi[q] = _mm512_loadu_ps(bias + 16 * q);
        }
        for (size_t i = 0; i < npix; i++, p += 64, y += y_stride) {
            const float *r = res ? res + i * y_stride : NULL;
            for (int q = 0; q < 4; q++)
                out16(p + 16 * q, nv, sc[q], bi[q], r ? r + 16 * q : NULL, clamp, lo, hi,
                      y + 16 * q);
        }
        return;
    }
    for (size_t i = 0; i < npix; i++, p += count, y += y_stride) {
        const float *r = res ? res + i * y_stride : NULL;
        uint32_t o = 0;
        for (; o + 16 <= count; o += 16)
            out16(p + o, nv, _mm512_loadu_ps(scale + o), _mm512_loadu_ps(bias + o),
                  r ? r + o : NULL, clamp, lo, hi, y + o);
        if (o < count)
            bnn_bconv_out_portable(p + o, n, scale + o, bias + o, r ? r + o : NULL, lim, y + o,
                                   count - o, 1, 0);
    }
}

/* Sign packing (same contract as bnn_bitpack_portable): 16 channels per compare, whose mask
 * is their 16 bits. The compare is x - t < 0 exactly as in the portable code (not a
 * sign-bit test: -0.0 must give +1), so the bits are identical. */
TGT void bnn_bitpack_avx512(const float *x, const float *thr, uint32_t c, uint32_t words,
                            size_t npix, uint64_t *out, size_t out_stride)
{
    const __m512 zero = _mm512_setzero_ps();
    for (size_t px = 0; px < npix; px++) {
        const float *xp = x + px * c;
        uint64_t *op = out + px * out_stride;
        for (uint32_t wd = 0; wd < words; wd++) {
            const uint32_t c0 = wd * 64u, n = c - c0 < 64u ? c - c0 : 64u, nv = n & ~15u;
            uint64_t bits = 0;
            uint32_t j = 0;
            for (; j < nv; j += 16) {
                __m512 v = _mm512_loadu_ps(xp + c0 + j);
                if (thr)
                    v = _mm512_sub_ps(v, _mm512_loadu_ps(thr + c0 + j));
                bits |= (uint64_t)_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ) << j;
            }
            op[wd] = bits | bnn_sign_bits(xp + c0, thr ? thr + c0 : NULL, j, n);
        }
    }
}

#else
typedef int bnn_bconv_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
