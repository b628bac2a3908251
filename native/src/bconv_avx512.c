/* AVX-512 VPOPCNTDQ row kernel of the binary convolution.
 *
 * Same contract as bnn_bconv_row_portable (kernels.h). Each contiguous kernel row of
 * tap_words u64 is processed 8 words (512 bits) at a time; the last partial vector uses a
 * zero-masked load (masked lanes are 0 on both sides and add 0). vpopcntq counts each 64-bit
 * lane, added into u64 accumulators; one horizontal reduction per (channel, column) at the
 * end. Register tile: 4 output channels x 2 output columns.
 *
 * Compiled for avx512f + avx512vpopcntdq via target attributes on these functions only;
 * kernels.c selects it only when cpuid reports both. Empty off x86-64.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512vpopcntdq")))
#define INL static inline __attribute__((always_inline))

enum { MR = 4, NR = 2 };

INL TGT void tile(const bnn_bconv_row_args *a, uint32_t nout, uint32_t o, uint32_t x,
                  const int mr, const int nr, __mmask8 tail)
{
    __m512i acc[MR][NR];
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++)
            acc[m][n] = _mm512_setzero_si512();
    const uint32_t tw = a->tap_words;
    const uint64_t *in0 = a->in + (size_t)x * a->x_stride;
    const uint64_t *w0 = a->w + (size_t)o * a->w_stride;
    for (uint32_t i = 0; i < a->kh; i++) {
        const uint64_t *ip = in0 + (size_t)i * a->row_stride;
        const uint64_t *wp = w0 + (size_t)i * tw;
        for (uint32_t t = 0; t < tw; t += 8) {
            const __mmask8 k = tw - t >= 8 ? (__mmask8)0xff : tail;
            __m512i v[NR];
            for (int n = 0; n < nr; n++)
                v[n] = _mm512_maskz_loadu_epi64(k, ip + (size_t)n * a->x_stride + t);
            for (int m = 0; m < mr; m++) {
                const __m512i w = _mm512_maskz_loadu_epi64(k, wp + (size_t)m * a->w_stride + t);
                for (int n = 0; n < nr; n++)
                    acc[m][n] = _mm512_add_epi64(acc[m][n],
                                                 _mm512_popcnt_epi64(_mm512_xor_si512(v[n], w)));
            }
        }
    }
    for (int n = 0; n < nr; n++)
        for (int m = 0; m < mr; m++)
            a->pop[(size_t)(x + n) * nout + (o - a->o_begin) + m] =
                (int32_t)_mm512_reduce_add_epi64(acc[m][n]);
}

TGT void bnn_bconv_row_avx512(const bnn_bconv_row_args *a)
{
    const uint32_t nout = a->o_end - a->o_begin;
    const __mmask8 tail = (__mmask8)((1u << (a->tap_words & 7u)) - 1u);
    uint32_t x = 0;
    for (; x + NR <= a->ow; x += NR) {
        uint32_t o = a->o_begin;
        for (; o + MR <= a->o_end; o += MR)
            tile(a, nout, o, x, MR, NR, tail);
        for (; o < a->o_end; o++)
            tile(a, nout, o, x, 1, NR, tail);
    }
    for (; x < a->ow; x++) {
        uint32_t o = a->o_begin;
        for (; o + MR <= a->o_end; o += MR)
            tile(a, nout, o, x, MR, 1, tail);
        for (; o < a->o_end; o++)
            tile(a, nout, o, x, 1, 1, tail);
    }
}

#else
typedef int bnn_bconv_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
