/* Binary conv layers: the row kernel alone next to the whole layer, per kernel set.
 *
 *     make -C native tools && native/build/bnn-bconv-kernel MODEL.bnn [RUNS [ISA...]]
 *
 * For every binary conv of the model and every kernel set this CPU runs (or those named), at
 * 1 thread:
 *   layer:  the layer as the engine runs it (bnn_profile's median: sign packing of its
 *           input unless the conv before hands it bits, the row kernel, the epilogue);
 *   kernel: the set's row kernel alone (kernels.h), called exactly as bconv.c calls it
 *           (same rows, 64-channel blocks and arguments: bnn_bconv_row_setup) on a packed
 *           input of the layer's size, one pass over the layer.
 * RUNS rounds, each one profiled inference and then one kernel pass per layer, so a
 * machine's slow spells hit both alike; medians over the rounds, the share being the median
 * of the per-round ratios.
 * Both as ms and binary ops per ns (2 per bit pair, as bench_zoo.py counts them; divide by
 * the clock from build/bnn-clock, in GHz, for ops per cycle), and the kernel's share of the
 * layer. The difference is what packing, padding correction and outputs cost; the kernel's
 * own rate is the ceiling the layer can approach.
 *
 * Links the library's objects (internal headers); a tool, not part of the library.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn.h"
#include "layers.h"
#include "timing.h"

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bnn_cmp_double);
    return v[n / 2];
}

/* Ms of one pass of the row kernel over every output row and channel block of layer L. */
static double kernel_pass(const bnn_kernel_table *k, const bnn_layer *L, const uint64_t *bits,
                          int32_t *pop)
{
    const bnn_bconv *b = &L->p.bconv;
    const double t0 = bnn_now_ms();
    for (size_t n = 0; n < L->out_shape.n; n++)
        for (size_t oy = 0; oy < L->out_shape.h; oy++)
            for (uint32_t o0 = 0; o0 < b->out_c; o0 += BNN_BCONV_OCH) {
                const uint32_t o1 =
                    o0 + BNN_BCONV_OCH < b->out_c ? o0 + BNN_BCONV_OCH : b->out_c;
                const bnn_bconv_row_args a = bnn_bconv_row_setup(k, L, bits, n, oy, o0, o1, pop);
                k->bconv_row(&a);
            }
    return bnn_now_ms() - t0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.bnn [RUNS [ISA...]]\n", argv[0]);
        return 2;
    }
    const int runs = argc > 2 ? atoi(argv[2]) : 21;
    if (runs < 1 || runs > 10000)
        return 2;
    static const char *all[] = {"portable", "popcnt", "avx2", "avx512", "neon"};
    const char *const *isas = argc > 3 ? (const char *const *)argv + 3 : all;
    const size_t n_isas = argc > 3 ? (size_t)argc - 3 : sizeof all / sizeof *all;
    char err[256];
    double *samples = malloc((size_t)runs * sizeof *samples);
    if (!samples)
        return 1;
    printf("%-8s %3s %-26s %9s %9s %7s %11s %12s\n", "isa", "#", "in -> out (stride)", "layer ms",
           "kernel ms", "kernel%", "layer op/ns", "kernel op/ns");
    for (size_t i = 0; i < n_isas; i++) {
        if (!bnn_isa_supported(isas[i]) || bnn_set_isa(isas[i])) {
            if (argc > 3)
                printf("%-8s not supported here\n", isas[i]);
            continue;
        }
        /* loaded per set: the context below builds the set's weight layout in it (and only
         * that set's), which kernel_pass reads */
        bnn_model *m = NULL;
        if (bnn_model_load_file(argv[1], &m, err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", argv[1], err);
            return 1;
        }
        bnn_ctx *c = bnn_ctx_create(m, 1, err, sizeof err);
        const size_t nin = bnn_model_input_count(m);
        double *prof = calloc(m->n_layers + 1, sizeof *prof);
        float *x = malloc(nin * sizeof *x);
        if (!c || !prof || !x) {
            fprintf(stderr, "%s\n", c ? "out of memory" : err);
            return 1;
        }
        for (size_t e = 0; e < nin; e++)
            x[e] = (float)((e * 7919) % 1000) / 500.0f - 1.0f;
        const bnn_kernel_table *k = bnn_kernels();
        /* per binary conv: its packed input (xorshift bits: any pattern times alike) and
         * popcount buffer, and its samples [layer ms, kernel ms, ratio] x runs */
        const uint32_t nl = m->n_layers;
        uint64_t **bits = calloc(nl, sizeof *bits);
        int32_t **pop = calloc(nl, sizeof *pop);
        double *smp = calloc((size_t)nl * 3 * (size_t)runs, sizeof *smp);
        if (!bits || !pop || !smp)
            return 1;
        uint64_t s = 0x9e3779b97f4a7c15ull;
        for (uint32_t l = 0; l < nl; l++) {
            const bnn_layer *L = &m->layers[l];
            if (L->op != OP_CONV2D_BIN)
                continue;
            const uint64_t words = bnn_bconv_bits_words(L);
            bits[l] = bnn_aligned_alloc(words * 8);
            pop[l] = bnn_aligned_alloc((size_t)L->out_shape.w * BNN_BCONV_OCH * 4);
            if (!bits[l] || !pop[l])
                return 1;
            for (uint64_t w = 0; w < words; w++) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                bits[l][w] = s;
            }
        }
        for (int r = -2; r < runs; r++) { /* two warm-up rounds */
            if (bnn_profile(c, x, 0, 1, prof))
                return 1;
            for (uint32_t l = 0; l < nl; l++) {
                if (!bits[l])
                    continue;
                const double kms = kernel_pass(k, &m->layers[l], bits[l], pop[l]);
                if (r < 0)
                    continue;
                double *v = smp + (size_t)l * 3 * (size_t)runs;
                v[r] = prof[l];
                v[runs + r] = kms;
                v[2 * runs + r] = kms / prof[l];
            }
        }
        for (uint32_t l = 0; l < nl; l++) {
            if (!bits[l])
                continue;
            const bnn_layer *L = &m->layers[l];
            const bnn_bconv *b = &L->p.bconv;
            double *v = smp + (size_t)l * 3 * (size_t)runs;
            const double lms = median(v, runs), kms = median(v + runs, runs);
            const double share = median(v + 2 * runs, runs);
            const double ops = 2.0 * L->out_shape.n * b->out_c * L->out_shape.h *
                               L->out_shape.w * b->in_c * b->g.kh * b->g.kw;
            char shape[64];
            snprintf(shape, sizeof shape, "%ux%ux%u -> %ux%ux%u (%u)", b->in_c, L->in_shape.h,
                     L->in_shape.w, b->out_c, L->out_shape.h, L->out_shape.w, b->g.sh);
            printf("%-8s %3u %-26s %9.3f %9.3f %6.1f%% %11.1f %12.1f\n", bnn_kernel_isa(), l,
                   shape, lms, kms, 100.0 * share, ops / (lms * 1e6), ops / (kms * 1e6));
            bnn_aligned_free(bits[l]);
            bnn_aligned_free(pop[l]);
        }
        free(bits);
        free(pop);
        free(smp);
        free(x);
        free(prof);
        bnn_ctx_free(c);
        bnn_model_free(m);
    }
    free(samples);
    return 0;
}
