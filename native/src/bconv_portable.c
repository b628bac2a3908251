/* Portable XOR-popcount row kernel of the binary convolution.
 *
 * For each output column it XORs the packed input window with the packed weights of four
 * output channels at once (each input word is loaded once and reused four times). Padded
 * taps read 0 bits here; the driver (bconv.c) corrects them.
 *
 * Counting: where the compiler targets a hardware popcount (__POPCNT__ on x86 builds with
 * -mpopcnt or -march=..., always on AArch64), __builtin_popcountll is one instruction.
 * Otherwise (a baseline x86-64 build) it becomes a libgcc call per word, about 4x slower
 * than this SWAR version, which keeps per-byte counts (<= 8 each) and adds up to 31 words
 * before widening, so a byte never overflows. Picking a popcnt kernel at run time is the
 * job of the ISA kernels behind kernels.c.
 */
#include "kernels.h"

#if defined(__POPCNT__) || defined(__aarch64__) || defined(__ARM_FEATURE_SVE)
#define HW_POPCOUNT 1
#else
#define HW_POPCOUNT 0
#endif

#if HW_POPCOUNT
static inline uint32_t xorpop(const uint64_t *a, const uint64_t *w, uint32_t n)
{
    uint32_t s = 0;
    for (uint32_t t = 0; t < n; t++)
        s += (uint32_t)__builtin_popcountll(a[t] ^ w[t]);
    return s;
}
#else
static inline uint64_t byte_counts(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    return (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
}

static inline uint32_t widen_sum(uint64_t bytes)
{
    uint64_t x = (bytes & 0x00ff00ff00ff00ffull) + ((bytes >> 8) & 0x00ff00ff00ff00ffull);
    return (uint32_t)((x * 0x0001000100010001ull) >> 48);
}

static inline uint32_t xorpop(const uint64_t *a, const uint64_t *w, uint32_t n)
{
    uint32_t s = 0;
    uint32_t t = 0;
    while (t < n) {
        const uint32_t end = n - t > 31 ? t + 31 : n;
        uint64_t acc = 0;
        for (; t < end; t++)
            acc += byte_counts(a[t] ^ w[t]);
        s += widen_sum(acc);
    }
    return s;
}
#endif

void bnn_bconv_row_portable(const bnn_bconv_row_args *a)
{
    const uint32_t nout = a->o_end - a->o_begin;
    const uint32_t tw = a->tap_words;
    for (uint32_t x = 0; x < a->ow; x++) {
        const uint64_t *win = a->in + (size_t)x * a->x_stride;
        int32_t *pop = a->pop + (size_t)x * nout;
        for (uint32_t o = a->o_begin; o < a->o_end; o++) {
            const uint64_t *w = a->w + (size_t)o * a->w_stride;
            uint32_t s = 0;
            for (uint32_t i = 0; i < a->kh; i++)
                s += xorpop(win + (size_t)i * a->row_stride, w + (size_t)i * tw, tw);
            pop[o - a->o_begin] = (int32_t)s;
        }
    }
}

void bnn_bconv_out_portable(const int32_t *p, int32_t n, const float *scale, const float *bias,
                            const float *res, const float *lim, float *y, uint32_t count,
                            size_t npix, size_t y_stride)
{
    for (size_t i = 0; i < npix; i++, p += count, y += y_stride) {
        const float *r = res ? res + i * y_stride : NULL;
        /* simple passes, so each loop vectorizes for the baseline ISA; r is read in the pass
         * that writes y, as y may be r (in place) */
        if (r)
            for (uint32_t o = 0; o < count; o++)
                y[o] = bnn_bconv_value(scale[o], bias[o], n, p[o]) + r[o];
        else
            for (uint32_t o = 0; o < count; o++)
                y[o] = bnn_bconv_value(scale[o], bias[o], n, p[o]);
        if (lim)
            for (uint32_t o = 0; o < count; o++)
                y[o] = bnn_clip(y[o], lim[0], lim[1]);
    }
}
