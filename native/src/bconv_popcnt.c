/* x86-64 row kernel of the binary convolution using the hardware POPCNT instruction.
 *
 * Same contract as bnn_bconv_row_portable (kernels.h): raw popcount(input ^ weight) over
 * all kh*kw taps of every window, padded taps included. Register tile: 4 output channels x
 * 2 output columns per micro-kernel, so each input word is loaded once for 4 channels and
 * each weight word once for 2 columns (8 popcounts per 6 loads instead of per 16).
 *
 * Only the functions here are compiled for POPCNT (target attribute); the rest of the
 * library stays baseline x86-64, and kernels.c selects this file only when cpuid reports
 * popcnt. On other architectures the file is empty.
 */
#include "kernels.h"

#if defined(__x86_64__)

#define TGT __attribute__((target("popcnt")))
#define INL static inline __attribute__((always_inline))

enum { MR = 4, NR = 2 };

INL TGT void tile(const bnn_bconv_row_args *a, uint32_t nout, uint32_t o, uint32_t x,
                  const int mr, const int nr)
{
    uint64_t acc[MR][NR] = {{0}};
    const uint32_t tw = a->tap_words;
    const uint64_t *in0 = a->in + (size_t)x * a->x_stride;
    const uint64_t *w0 = a->w + (size_t)o * a->w_stride;
    for (uint32_t i = 0; i < a->kh; i++) {
        const uint64_t *ip = in0 + (size_t)i * a->row_stride;
        const uint64_t *wp = w0 + (size_t)i * tw;
        for (uint32_t t = 0; t < tw; t++) {
            uint64_t v[NR];
            for (int n = 0; n < nr; n++)
                v[n] = ip[(size_t)n * a->x_stride + t];
            for (int m = 0; m < mr; m++) {
                const uint64_t w = wp[(size_t)m * a->w_stride + t];
                for (int n = 0; n < nr; n++)
                    acc[m][n] += (uint64_t)__builtin_popcountll(v[n] ^ w);
            }
        }
    }
    for (int n = 0; n < nr; n++)
        for (int m = 0; m < mr; m++)
            a->pop[(size_t)(x + n) * nout + (o - a->o_begin) + m] = (int32_t)acc[m][n];
}

TGT void bnn_bconv_row_popcnt(const bnn_bconv_row_args *a)
{
    const uint32_t nout = a->o_end - a->o_begin;
    uint32_t x = 0;
    for (; x + NR <= a->ow; x += NR) {
        uint32_t o = a->o_begin;
        for (; o + MR <= a->o_end; o += MR)
            tile(a, nout, o, x, MR, NR);
        for (; o < a->o_end; o++)
            tile(a, nout, o, x, 1, NR);
    }
    for (; x < a->ow; x++) {
        uint32_t o = a->o_begin;
        for (; o + MR <= a->o_end; o += MR)
            tile(a, nout, o, x, MR, 1);
        for (; o < a->o_end; o++)
            tile(a, nout, o, x, 1, 1);
    }
}

#else
typedef int bnn_bconv_popcnt_unused; /* ISO C forbids an empty translation unit */
#endif
