/* Portable XOR-popcount row kernel of the binary convolution.
 *
 * For each output column it XORs the packed input window with the packed weights of four
 * output channels at once (each input word is loaded once and reused four times) and sums
 * __builtin_popcountll. Padded taps read 0 bits here; the driver (bconv.c) corrects them.
 */
#include "kernels.h"

void bnn_bconv_row_portable(const bnn_bconv_row_args *a)
{
    const uint32_t nout = a->o_end - a->o_begin;
    const uint32_t tw = a->tap_words;
    for (uint32_t x = 0; x < a->ow; x++) {
        const uint64_t *win = a->in + (size_t)x * a->x_stride;
        int32_t *pop = a->pop + (size_t)x * nout;
        uint32_t o = a->o_begin;
        for (; o + 4 <= a->o_end; o += 4) {
            const uint64_t *w0 = a->w + (size_t)o * a->w_stride;
            const uint64_t *w1 = w0 + a->w_stride;
            const uint64_t *w2 = w1 + a->w_stride;
            const uint64_t *w3 = w2 + a->w_stride;
            uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (uint32_t i = 0; i < a->kh; i++) {
                const uint64_t *in = win + (size_t)i * a->row_stride;
                const size_t wo = (size_t)i * tw;
                for (uint32_t t = 0; t < tw; t++) {
                    const uint64_t v = in[t];
                    s0 += (uint32_t)__builtin_popcountll(v ^ w0[wo + t]);
                    s1 += (uint32_t)__builtin_popcountll(v ^ w1[wo + t]);
                    s2 += (uint32_t)__builtin_popcountll(v ^ w2[wo + t]);
                    s3 += (uint32_t)__builtin_popcountll(v ^ w3[wo + t]);
                }
            }
            pop[o - a->o_begin + 0] = (int32_t)s0;
            pop[o - a->o_begin + 1] = (int32_t)s1;
            pop[o - a->o_begin + 2] = (int32_t)s2;
            pop[o - a->o_begin + 3] = (int32_t)s3;
        }
        for (; o < a->o_end; o++) {
            const uint64_t *w0 = a->w + (size_t)o * a->w_stride;
            uint32_t s0 = 0;
            for (uint32_t i = 0; i < a->kh; i++) {
                const uint64_t *in = win + (size_t)i * a->row_stride;
                const size_t wo = (size_t)i * tw;
                for (uint32_t t = 0; t < tw; t++)
                    s0 += (uint32_t)__builtin_popcountll(in[t] ^ w0[wo + t]);
            }
            pop[o - a->o_begin] = (int32_t)s0;
        }
    }
}
