/* C unit tests of the kernels, run under ASan/UBSan by `make -C native test`.
 *
 * Models are built in memory in the .bnn format and run through the public API, so the
 * whole path (loader prepacking, bit packing, row kernel, padding correction, GEMM tiling,
 * thread pool) is compared against plain reference implementations:
 *   - binary conv: bnn_bconv_reference (FORMAT.md semantics, skips out-of-image taps);
 *     results must be bit-identical, since both compute scale * (float)dot + bias;
 *   - FP32 conv / GEMM: a naive NCHW loop nest in double, within float rounding.
 * Every model buffer is malloc'ed at its exact size so ASan sees any over-read.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn.h"
#include "kernels.h"

static int failures = 0, checks = 0;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        checks++;                                                                             \
        if (!(cond)) {                                                                        \
            failures++;                                                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                              \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x1234567887654321ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
/* Uniform in [-1, 1), never exactly 0 (sign(0) is a documented special case). */
static float rndf(void)
{
    float v = (float)((double)(rnd() >> 40) / (double)(1u << 24) * 2.0 - 1.0);
    return v == 0.0f ? 0.25f : v;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            perror("realloc");
            exit(2);
        }
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put_u32(buf *b, uint32_t v)
{
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, le, 4);
}
static void put_f32(buf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_u64(buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void header(buf *b, uint32_t n_values, uint32_t n_layers, uint32_t out_id,
                   const uint32_t dims[4])
{
    put(b, "BNNB", 4);
    put_u32(b, 1);
    put_u32(b, 0);
    put_u32(b, n_values);
    put_u32(b, n_layers);
    put_u32(b, 0);
    put_u32(b, out_id);
    put_u32(b, 4);
    for (int i = 0; i < 4; i++)
        put_u32(b, dims[i]);
    put_u32(b, 2);
    put(b, "{}", 2);
}

static void layer(buf *b, uint32_t op, uint32_t in, uint32_t out, const buf *params)
{
    put_u32(b, op);
    put_u32(b, 1);
    put_u32(b, in);
    put_u32(b, out);
    put_u32(b, 4);
    put(b, "test", 4);
    put_u32(b, (uint32_t)params->len);
    put(b, params->p, params->len);
}

static bnn_model *load(const buf *b, char *err)
{
    /* Exact-size copy: ASan flags any read past the end. */
    uint8_t *copy = malloc(b->len ? b->len : 1);
    memcpy(copy, b->p, b->len);
    bnn_model *m = NULL;
    int rc = bnn_model_load_buffer(copy, b->len, &m, err, BNN_ERR_LEN);
    free(copy);
    return rc == BNN_OK ? m : NULL;
}

/* ------------------------------------------------------------------ binary conv */

typedef struct {
    uint32_t n, c, h, w, oc, k, s, pt, pl, pb, pr;
    int thr;
} bcase;

/* The leading parameters of a conv layer: in_c, out_c and the kernel geometry. */
static void put_conv_head(buf *p, uint32_t c, uint32_t oc, uint32_t k, uint32_t s, uint32_t pt,
                          uint32_t pl, uint32_t pb, uint32_t pr)
{
    const uint32_t head[10] = {c, oc, k, k, s, s, pt, pl, pb, pr};
    for (int i = 0; i < 10; i++)
        put_u32(p, head[i]);
}

/* A one-layer binary conv model of case t with random input, weights and parameters, and
 * its output from the reference implementation. */
typedef struct {
    buf file;     /* the .bnn model */
    float *x;     /* input, NCHW */
    float *ref;   /* bnn_bconv_reference's output */
    size_t ny;    /* output elements */
} bconv_data;

static void bconv_data_make(const bcase *t, bconv_data *d)
{
    const uint32_t words = (t->c + 63) / 64, taps = t->k * t->k;
    const size_t nx = (size_t)t->n * t->c * t->h * t->w, nwb = (size_t)t->oc * taps * words;
    float *x = malloc(nx * 4), *thr = malloc(t->c * 4), *scale = malloc(t->oc * 4),
          *bias = malloc(t->oc * 4);
    uint64_t *wb = calloc(nwb, 8);
    for (size_t i = 0; i < nx; i++)
        x[i] = rndf();
    for (uint32_t i = 0; i < t->c; i++)
        thr[i] = t->thr ? rndf() * 0.5f : 0.0f;
    /* Thresholds equal to some inputs would make x - t == 0 exactly: fine, both sides
     * define sign(0) = +1, and this exercises it. */
    if (t->thr && nx > 0)
        thr[0] = x[0];
    for (uint32_t o = 0; o < t->oc; o++) {
        scale[o] = 0.5f + (float)(rnd() % 100) / 50.0f;
        bias[o] = rndf();
    }
    for (size_t i = 0; i < nwb; i++) {
        const uint32_t wd = (uint32_t)(i % words);
        const uint32_t valid = t->c - wd * 64 >= 64 ? 64 : t->c - wd * 64;
        wb[i] = rnd() & (valid == 64 ? ~0ull : (1ull << valid) - 1);
    }

    buf p = {0};
    *d = (bconv_data){{0}, x, NULL, 0};
    put_conv_head(&p, t->c, t->oc, t->k, t->s, t->pt, t->pl, t->pb, t->pr);
    put_u32(&p, 0);
    put_u32(&p, (uint32_t)t->thr);
    if (t->thr)
        for (uint32_t i = 0; i < t->c; i++)
            put_f32(&p, thr[i]);
    for (size_t i = 0; i < nwb; i++)
        put_u64(&p, wb[i]);
    for (uint32_t o = 0; o < t->oc; o++)
        put_f32(&p, scale[o]);
    for (uint32_t o = 0; o < t->oc; o++)
        put_f32(&p, bias[o]);
    const uint32_t dims[4] = {t->n, t->c, t->h, t->w};
    header(&d->file, 2, 1, 1, dims);
    layer(&d->file, 2, 0, 1, &p);

    const uint32_t oh = (t->h + t->pt + t->pb - t->k) / t->s + 1;
    const uint32_t ow = (t->w + t->pl + t->pr - t->k) / t->s + 1;
    d->ny = (size_t)t->n * t->oc * oh * ow;
    d->ref = malloc(d->ny * 4);
    bnn_bconv_reference(x, t->n, t->c, t->h, t->w, t->thr ? thr : NULL, wb, t->oc, t->k, t->k,
                        t->s, t->s, t->pt, t->pl, t->pb, t->pr, scale, bias, d->ref);
    free(p.p);
    free(thr);
    free(scale);
    free(bias);
    free(wb);
}

static void bconv_data_free(bconv_data *d)
{
    free(d->file.p);
    free(d->x);
    free(d->ref);
}

/* Outputs of a context of model m (the current kernel set, `threads` threads) that differ
 * from d's reference, bit for bit; all of them when the context cannot be created or run. */
static size_t bconv_mismatches(const bnn_model *m, int threads, const bconv_data *d)
{
    char err[BNN_ERR_LEN];
    bnn_ctx *ctx = bnn_ctx_create(m, threads, err, sizeof err);
    CHECK(ctx, "ctx: %s", err);
    if (!ctx)
        return d->ny;
    CHECK(bnn_model_output_count(m) == d->ny, "output count");
    float *y = malloc(d->ny * 4);
    memset(y, 0xff, d->ny * 4);
    size_t bad = d->ny;
    if (bnn_run(ctx, d->x, y) == BNN_OK)
        for (size_t i = bad = 0; i < d->ny; i++)
            bad += memcmp(&y[i], &d->ref[i], 4) != 0;
    free(y);
    bnn_ctx_free(ctx);
    return bad;
}

static void run_bconv_case(const bcase *t, const int *threads, int nthreads_list)
{
    bconv_data d;
    bconv_data_make(t, &d);
    char err[BNN_ERR_LEN];
    bnn_model *m = load(&d.file, err);
    CHECK(m, "bconv load failed: %s", err);
    for (int ti = 0; m && ti < nthreads_list; ti++) {
        const size_t bad = bconv_mismatches(m, threads[ti], &d);
        CHECK(bad == 0,
              "bconv n=%u c=%u %ux%u oc=%u k=%u s=%u pads=%u,%u,%u,%u thr=%d threads=%d: "
              "%zu of %zu outputs differ from the reference",
              t->n, t->c, t->h, t->w, t->oc, t->k, t->s, t->pt, t->pl, t->pb, t->pr, t->thr,
              threads[ti], bad, d.ny);
    }
    bnn_model_free(m);
    bconv_data_free(&d);
}

static void test_bconv(void)
{
    static const uint32_t chans[] = {1, 3, 63, 64, 65, 130};
    static const uint32_t outs[] = {1, 6, 37}; /* 37: crosses the 32-channel task block */
    const int few[] = {1, 3};
    int n_cases = 0;
    for (size_t ci = 0; ci < sizeof chans / sizeof *chans; ci++)
        for (size_t oi = 0; oi < sizeof outs / sizeof *outs; oi++)
            for (uint32_t k = 1; k <= 3; k += 2)
                for (uint32_t s = 1; s <= 2; s++)
                    for (uint32_t pad = 0; pad <= 1; pad++)
                        for (int thr = 0; thr <= 1; thr++) {
                            const bcase t = {1 + (uint32_t)(n_cases % 2), chans[ci], 7, 6,
                                             outs[oi], k, s, pad, pad, pad, pad, thr};
                            run_bconv_case(&t, few, 2);
                            n_cases++;
                        }
    /* Asymmetric and large pads (whole windows in the padding), more thread counts. */
    const int many[] = {1, 2, 3, 4, 7, 16};
    const bcase extra[] = {
        {1, 65, 9, 8, 40, 3, 1, 1, 0, 0, 1, 1}, {2, 130, 5, 7, 9, 3, 2, 2, 1, 0, 2, 1},
        {1, 3, 4, 4, 5, 1, 1, 2, 2, 2, 2, 0},   {1, 64, 3, 3, 64, 3, 1, 3, 3, 3, 3, 1},
        {1, 200, 6, 5, 33, 5, 2, 2, 2, 2, 2, 1}, {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
        {1, 256, 5, 7, 70, 3, 1, 1, 1, 1, 1, 1}, /* tap_words 12: whole 256/512-bit vectors */
        {1, 448, 3, 4, 9, 3, 2, 1, 1, 1, 1, 0},  /* 7 words a tap */
        /* one word a pixel, stride 1, >= 8 output columns (AVX2 column-vector tile) */
        {2, 64, 5, 19, 37, 3, 1, 1, 1, 1, 1, 1}, {1, 3, 4, 12, 9, 1, 1, 0, 0, 0, 0, 0},
        {1, 63, 6, 17, 6, 3, 1, 2, 0, 1, 2, 1},
    };
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        run_bconv_case(&extra[i], many, 6);
    printf("binary conv: %d grid cases + %zu extra cases\n", n_cases,
           sizeof extra / sizeof *extra);
}

/* ------------------------------------------------------------------ FP32 conv and GEMM */

typedef struct {
    uint32_t n, c, h, w, oc, k, s, pad, has_bias;
    uint32_t clip; /* 1: a CLIP [-0.5, 0.5] follows, which the context folds into the conv */
} fcase;

static void run_fconv_case(const fcase *t)
{
    const size_t nx = (size_t)t->n * t->c * t->h * t->w;
    const size_t nw = (size_t)t->oc * t->c * t->k * t->k;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *bias = malloc(t->oc * 4);
    for (size_t i = 0; i < nx; i++)
        x[i] = rndf();
    for (size_t i = 0; i < nw; i++)
        wt[i] = rndf();
    for (uint32_t o = 0; o < t->oc; o++)
        bias[o] = t->has_bias ? rndf() : 0.0f;
    buf p = {0}, b = {0};
    put_conv_head(&p, t->c, t->oc, t->k, t->s, t->pad, t->pad, t->pad, t->pad);
    put_u32(&p, t->has_bias);
    for (size_t i = 0; i < nw; i++)
        put_f32(&p, wt[i]);
    if (t->has_bias)
        for (uint32_t o = 0; o < t->oc; o++)
            put_f32(&p, bias[o]);
    const uint32_t dims[4] = {t->n, t->c, t->h, t->w};
    const float clo = -0.5f, chi = 0.5f;
    header(&b, t->clip ? 3 : 2, t->clip ? 2 : 1, t->clip ? 2 : 1, dims);
    layer(&b, 1, 0, 1, &p);
    buf cp = {0};
    if (t->clip) {
        put_f32(&cp, clo);
        put_f32(&cp, chi);
        layer(&b, 4, 1, 2, &cp);
    }
    char err[BNN_ERR_LEN];
    bnn_model *m = load(&b, err);
    CHECK(m, "fconv load failed: %s", err);
    if (m) {
        const long oh = ((long)t->h + 2 * t->pad - t->k) / t->s + 1;
        const long ow = ((long)t->w + 2 * t->pad - t->k) / t->s + 1;
        const size_t ny = bnn_model_output_count(m);
        CHECK(ny == (size_t)t->n * t->oc * oh * ow, "output count");
        float *y = malloc(ny * 4), *y1 = malloc(ny * 4);
        double max_err = 0;
        /* 3 and 16 threads make the driver shrink its blocks differently (more tasks) */
        const int threads[] = {1, 3, 16};
        for (int ti = 0; ti < 3; ti++) {
            bnn_ctx *ctx = bnn_ctx_create(m, threads[ti], err, sizeof err);
            CHECK(ctx && bnn_run(ctx, x, ti ? y1 : y) == BNN_OK, "fconv run: %s", err);
            bnn_ctx_free(ctx);
            if (ti)
                CHECK(memcmp(y, y1, ny * 4) == 0, "fconv output differs at %d threads",
                      threads[ti]);
        }
        for (uint32_t nb = 0; nb < t->n; nb++)
            for (uint32_t o = 0; o < t->oc; o++)
                for (long oy = 0; oy < oh; oy++)
                    for (long ox = 0; ox < ow; ox++) {
                        double acc = bias[o], mag = fabs(bias[o]);
                        for (uint32_t c = 0; c < t->c; c++)
                            for (uint32_t i = 0; i < t->k; i++)
                                for (uint32_t j = 0; j < t->k; j++) {
                                    long iy = oy * t->s + i - (long)t->pad;
                                    long ix = ox * t->s + j - (long)t->pad;
                                    if (iy < 0 || iy >= (long)t->h || ix < 0 || ix >= (long)t->w)
                                        continue;
                                    const size_t xi =
                                        (((size_t)nb * t->c + c) * t->h + iy) * t->w + ix;
                                    const size_t wi =
                                        (((size_t)o * t->c + c) * t->k + i) * t->k + j;
                                    double v = (double)x[xi] * wt[wi];
                                    acc += v;
                                    mag += fabs(v);
                                }
                        if (t->clip)
                            acc = acc < clo ? clo : acc > chi ? chi : acc;
                        const float got = y[(((size_t)nb * t->oc + o) * oh + oy) * ow + ox];
                        /* float accumulation error is bounded by ~K * eps * sum |terms| */
                        const double e = fabs(got - acc) / (mag + 1e-30);
                        if (e > max_err)
                            max_err = e;
                    }
        CHECK(max_err < 2e-5, "fconv n=%u c=%u %ux%u oc=%u k=%u s=%u pad=%u clip=%u: rel err %g",
              t->n, t->c, t->h, t->w, t->oc, t->k, t->s, t->pad, t->clip, max_err);
        free(y);
        free(y1);
        bnn_model_free(m);
    }
    free(p.p);
    free(cp.p);
    free(b.p);
    free(x);
    free(wt);
    free(bias);
}

static void test_fconv(void)
{
    /* n, c, h, w, out_c, k, stride, pad, has_bias, clip */
    static const fcase cases[] = {
        {1, 1, 5, 5, 1, 1, 1, 0, 0, 0},
        {1, 3, 9, 7, 7, 3, 1, 1, 1, 0},
        {2, 3, 11, 11, 16, 7, 2, 3, 1, 0},
        {1, 17, 6, 6, 33, 3, 2, 1, 0, 0},
        {1, 64, 12, 12, 130, 3, 1, 1, 1, 0}, /* K = 576 > KC, M = 144 > MC, out_c > NC */
        {1, 5, 4, 4, 3, 3, 1, 2, 1, 0},
        {1, 300, 2, 2, 17, 1, 1, 0, 1, 0},
        {3, 2, 1, 1, 5, 1, 1, 0, 1, 0},
        /* MR = 6 edges: M = 7*7 = 49 and 5*5*2 = 50 (not multiples of 6), out_c 16k + r */
        {1, 8, 7, 7, 20, 3, 1, 1, 1, 0},
        {2, 4, 5, 5, 47, 3, 1, 1, 0, 0},
        {1, 13, 13, 13, 161, 1, 1, 0, 1, 0}, /* M = 169 > MC at MR 4 and 6, out_c > NC */
        {1, 260, 5, 5, 18, 3, 2, 1, 1, 0},   /* K = 2340: 9 KC slices, the last partial */
        {1, 64, 9, 9, 32, 1, 2, 0, 1, 0},    /* 1x1 stride-2 downsample, M = 25 */
        {1, 3, 23, 21, 64, 7, 2, 3, 1, 0},   /* the RGB 7x7/2 pad-3 stem at a small size */
        {2, 3, 8, 8, 70, 7, 2, 3, 0, 0},     /* stem taps mostly in the padding, N = 2 */
        {1, 520, 1, 1, 1000, 1, 1, 0, 1, 0}, /* FC, M = 1: the GEMV path, 3 KC slices */
        {1, 300, 3, 3, 21, 3, 1, 0, 1, 0},   /* one output pixel: GEMV through im2col */
        {2, 40, 1, 1, 9, 1, 1, 0, 0, 0},     /* FC, M = 2 */
        {1, 3, 23, 21, 64, 7, 2, 3, 1, 1},   /* stem + folded clip */
        {1, 520, 1, 1, 100, 1, 1, 0, 1, 1},  /* GEMV + folded clip */
        /* panels read in place (direct kernel) next to packed ones: */
        {1, 3, 64, 70, 64, 7, 2, 3, 1, 0},   /* stem, 32 x 35 outputs: mostly interior */
        {1, 24, 24, 24, 32, 1, 2, 0, 1, 0},  /* 1x1/2, rows of 12 = whole panels */
        {1, 16, 14, 30, 48, 3, 1, 1, 1, 1},  /* 3x3 pad 1, rows of 30, folded clip */
        {1, 300, 6, 14, 32, 3, 1, 0, 1, 0},  /* K = 2700: slices of the tap offsets */
        {1, 260, 5, 5, 18, 3, 2, 1, 1, 1},   /* bias on slice 1, clip after slice 9, edges */
        {1, 300, 6, 14, 32, 3, 1, 0, 1, 1},  /* the same in place */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_fconv_case(&cases[i]);
    printf("[%s] fp32 conv: %zu cases\n", bnn_kernel_isa(), sizeof cases / sizeof *cases);
}

/* ------------------------------------------------------------------ bit packing */

static void test_bitpack(void)
{
    const bnn_kernel_table *k = bnn_kernels();
    float x[70];
    for (int i = 0; i < 70; i++)
        x[i] = (i % 3 == 0) ? -1.0f : 1.0f;
    x[1] = 0.0f;  /* sign(0) = +1 -> bit 0 */
    x[2] = -0.0f; /* -0 >= 0 as well */
    uint64_t out[2] = {~0ull, ~0ull};
    k->bitpack(x, NULL, 70, 2, 1, out, 2);
    uint64_t want0 = 0, want1 = 0;
    for (int i = 0; i < 64; i++)
        want0 |= (uint64_t)(i % 3 == 0) << i;
    for (int i = 64; i < 70; i++)
        want1 |= (uint64_t)(i % 3 == 0) << (i - 64);
    CHECK(out[0] == want0 && out[1] == want1, "bitpack bits %llx %llx",
          (unsigned long long)out[0], (unsigned long long)out[1]);
    CHECK((out[1] >> 6) == 0, "bitpack tail bits must be 0");
    float t[70];
    for (int i = 0; i < 70; i++)
        t[i] = x[i];
    k->bitpack(x, t, 70, 2, 1, out, 2); /* x - t == 0 everywhere: all +1 */
    CHECK(out[0] == 0 && out[1] == 0, "bitpack with x == threshold must give +1");
}

/* Integer-bound bits (threshold_counts) against a plain evaluation of the contract, for
 * every count n <= 64 (vector bodies and tails), both signs, bounds at and around p; 1 and
 * 5 pixels per call (a row of windows: counts at p + i * n, words at dst + i * stride). */
static void test_threshold_counts(void)
{
    const bnn_kernel_table *k = bnn_kernels();
    enum { PX = 5, STRIDE = 3 };
    int32_t p[PX * 64], neg[64], bound[64];
    size_t cases = 0;
    for (uint32_t n = 1; n <= 64; n++)
        for (int rep = 0; rep < 8; rep++) {
            uint64_t want[PX] = {0}, got[PX * STRIDE];
            for (uint32_t j = 0; j < n; j++) {
                const uint64_t s = rnd();
                neg[j] = (s >> 20) & 1 ? -1 : 0;
                const int32_t p0 = (int32_t)(s % 4609); /* 0 .. 9 * 512 */
                bound[j] = (neg[j] ? -p0 : p0) + (int32_t)((s >> 24) % 3) - 1;
            }
            for (uint32_t i = 0; i < PX; i++)
                for (uint32_t j = 0; j < n; j++) {
                    /* around the bound for the first pixel, anywhere for the others */
                    const int32_t v = i == 0 ? (neg[j] ? -bound[j] : bound[j]) +
                                                   (int32_t)(rnd() % 3) - 1
                                             : (int32_t)(rnd() % 4609);
                    p[i * n + j] = v;
                    want[i] |= (uint64_t)((neg[j] ? -v : v) > bound[j]) << j;
                }
            for (size_t i = 0; i < PX * STRIDE; i++)
                got[i] = 0x5a5a5a5a5a5a5a5aull; /* words between the pixels' stay as they are */
            const size_t npix = rep & 1 ? PX : 1;
            k->threshold_counts(p, neg, bound, n, npix, got, STRIDE);
            for (size_t i = 0; i < PX; i++) {
                CHECK(got[i * STRIDE] == (i < npix ? want[i] : 0x5a5a5a5a5a5a5a5aull),
                      "threshold_counts n=%u pixel %zu of %zu: %llx, want %llx", n, i, npix,
                      (unsigned long long)got[i * STRIDE], (unsigned long long)want[i]);
                CHECK(got[i * STRIDE + 1] == 0x5a5a5a5a5a5a5a5aull,
                      "threshold_counts n=%u wrote between pixels", n);
            }
            cases++;
        }
    printf("[%s] threshold counts: %zu cases\n", bnn_kernel_isa(), cases);
}

/* Float outputs (bconv_out) bit for bit against the portable kernel: every count up to 70
 * (vector bodies and tails) and 64 (the register-resident block), with and without a
 * residual and a clamp, NaN and +-0 inside; 1 and 3 pixels per call (counts at p + i * count,
 * residual and output rows y_stride apart), and in place (y = res). */
static void test_bconv_out(void)
{
    const bnn_kernel_table *k = bnn_kernels();
    enum { C = 70, PX = 3, YS = 75 };
    int32_t p[PX * C];
    float sc[C], bi[C], res[PX * YS], got[PX * YS], want[PX * YS];
    const float lim[2] = {-0.75f, 0.5f};
    for (int i = 0; i < C; i++) {
        sc[i] = rndf();
        bi[i] = rndf();
    }
    for (int i = 0; i < PX * C; i++)
        p[i] = (int32_t)(rnd() % 577);
    for (int i = 0; i < PX * YS; i++)
        res[i] = rndf();
    sc[3] = NAN;
    bi[9] = -0.0f;
    sc[9] = 0.0f; /* value -0 + ... */
    res[20] = NAN;
    res[YS + 40] = -0.0f;
    size_t cases = 0;
    for (uint32_t n = 1; n <= C; n++)
        for (int mode = 0; mode < 8; mode++) {
            const float *r = mode & 1 ? res : NULL, *l = mode & 2 ? lim : NULL;
            const size_t npix = mode & 4 ? PX : 1;
            for (int i = 0; i < PX * YS; i++)
                got[i] = want[i] = -7.0f; /* outside the pixels' channels: untouched */
            k->bconv_out(p, 576, sc, bi, r, l, got, n, npix, YS);
            for (size_t i = 0; i < npix; i++) /* the contract, one pixel at a time */
                bnn_bconv_out_portable(p + i * n, 576, sc, bi, r ? r + i * YS : NULL, l,
                                       want + i * YS, n, 1, 0);
            CHECK(!memcmp(got, want, sizeof got), "bconv_out n=%u res=%d clamp=%d npix=%zu", n,
                  mode & 1, (mode >> 1) & 1, npix);
            if (r) { /* in place, y = res: the same floats */
                float io[PX * YS];
                memcpy(io, res, sizeof io);
                k->bconv_out(p, 576, sc, bi, io, l, io, n, npix, YS);
                for (size_t i = 0; i < npix; i++)
                    CHECK(!memcmp(io + i * YS, want + i * YS, n * sizeof(float)),
                          "bconv_out in place n=%u clamp=%d pixel %zu", n, (mode >> 1) & 1, i);
            }
            cases++;
        }
    printf("[%s] bconv float outputs: %zu cases\n", bnn_kernel_isa(), cases);
}

/* ------------------------------------------------------------------ SGEMM micro-kernels */

/* The table's SGEMM micro-kernels (packed and direct) against the contract evaluated in
 * plain C, bit for bit: each C element is a chain over k from 0, either separate multiply
 * and add (portable, popcnt, ARMv7 VMLA) or one fmaf per step (AVX2, AVX-512, AArch64
 * FMLA, ARMv7 VFMA), then bias or C + the sum, then the clip. Which of the two a set uses
 * is stated per set below; a kernel must match its own reference everywhere (the two differ
 * in most outputs here, which the test checks too). The direct kernel reads A in place
 * through tap offsets and must give the packed kernel's floats. kc covers 1, odd lengths
 * and a full KC slice; C has a row stride > NR and an odd offset; a NaN in A must reach C
 * through the clip (it passes). Inputs are normal floats: ARMv7 NEON flushes subnormals. */
static int sgemm_uses_fma(const char *isa)
{
    if (!strcmp(isa, "avx2") || !strcmp(isa, "avx512"))
        return 1;
#if defined(__aarch64__)
    if (!strcmp(isa, "neon"))
        return 1;
#endif
#if defined(__arm__)
    /* VFMA on VFPv4 CPUs (kernels.c: HWCAP_VFPv4), else VMLA: -1 = either, reported */
    if (!strcmp(isa, "neon"))
        return -1;
#endif
    return 0;
}

static int same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof a);
}

static void test_sgemm(void)
{
    const bnn_kernel_table *k = bnn_kernels();
    const int want_fma = sgemm_uses_fma(k->isa);
    enum { NR = BNN_SGEMM_NR, KMAX = 256, LDC = NR + 5, RS = 7 };
    const size_t mr = k->sgemm_mr;
    CHECK(mr >= 1 && mr <= BNN_SGEMM_MR_MAX, "sgemm_mr %zu", mr);
    static const size_t kcs[] = {1, 2, 3, 5, 16, 37, KMAX};
    /* A in place: row i of depth t at ain[koff[t] + i * RS]; packed: ap[t * mr + i] */
    float *ain = malloc((KMAX * 3 + BNN_SGEMM_MR_MAX * RS + 8) * sizeof(float));
    float *ap = malloc(KMAX * BNN_SGEMM_MR_MAX * sizeof(float));
    float *bp = malloc(KMAX * NR * sizeof(float));
    size_t *koff = malloc(KMAX * sizeof(size_t));
    float c0[BNN_SGEMM_MR_MAX * LDC + 1], cp[BNN_SGEMM_MR_MAX * LDC + 1],
        cd[BNN_SGEMM_MR_MAX * LDC + 1], wfma[BNN_SGEMM_MR_MAX * LDC + 1],
        wmul[BNN_SGEMM_MR_MAX * LDC + 1], bias[NR];
    const float lim[2] = {-0.6f, 0.7f};
    size_t cases = 0, differ = 0, as_fma = 0, as_mul = 0;
    for (size_t ki = 0; ki < sizeof kcs / sizeof *kcs; ki++)
        for (int mode = 0; mode < 4; mode++) {
            const size_t kc = kcs[ki];
            const int with_bias = mode & 1, with_lim = (mode >> 1) & 1;
            for (size_t i = 0; i < KMAX * 3 + BNN_SGEMM_MR_MAX * RS + 8; i++)
                ain[i] = rndf();
            for (size_t t = 0; t < kc; t++) /* increasing, with gaps: taps of a window */
                koff[t] = t * 3 - t % 2;
            if (kc > 3)
                ain[koff[2] + 1 * RS] = NAN; /* row 1: NaN from depth 2 on */
            for (size_t t = 0; t < kc; t++)
                for (size_t i = 0; i < mr; i++)
                    ap[t * mr + i] = ain[koff[t] + i * RS];
            for (size_t i = 0; i < kc * NR; i++)
                bp[i] = rndf();
            for (int n = 0; n < NR; n++)
                bias[n] = rndf();
            for (size_t i = 0; i < mr * LDC + 1; i++)
                c0[i] = rndf();
            float *c = c0 + 1, *ccp = cp + 1, *ccd = cd + 1; /* C at an odd float offset */
            memcpy(cp, c0, sizeof c0);
            memcpy(cd, c0, sizeof c0);
            memcpy(wfma, c0, sizeof c0);
            memcpy(wmul, c0, sizeof c0);
            for (size_t i = 0; i < mr; i++)
                for (int n = 0; n < NR; n++) {
                    float sf = 0.0f, sm = 0.0f;
                    for (size_t t = 0; t < kc; t++) {
                        const float av = ap[t * mr + i], bv = bp[t * NR + n];
                        sf = fmaf(av, bv, sf);
                        const float prod = av * bv;
                        sm = sm + prod;
                    }
                    const float base = with_bias ? bias[n] : c[i * LDC + n];
                    float vf = base + sf, vm = base + sm;
                    if (with_lim) {
                        vf = bnn_clip(vf, lim[0], lim[1]);
                        vm = bnn_clip(vm, lim[0], lim[1]);
                    }
                    wfma[1 + i * LDC + n] = vf;
                    wmul[1 + i * LDC + n] = vm;
                    differ += !same_float(vf, vm);
                }
            k->sgemm_ukernel(kc, ap, bp, ccp, LDC, with_bias ? bias : NULL,
                             with_lim ? lim : NULL);
            k->sgemm_ukernel_direct(kc, ain, koff, RS, bp, ccd, LDC, with_bias ? bias : NULL,
                                    with_lim ? lim : NULL);
            int eq_fma = 1, eq_mul = 1, eq_direct = 1;
            for (size_t i = 0; i < mr * LDC + 1; i++) {
                eq_fma &= same_float(cp[i], wfma[i]);
                eq_mul &= same_float(cp[i], wmul[i]);
                eq_direct &= same_float(cd[i], cp[i]);
            }
            as_fma += eq_fma;
            as_mul += eq_mul;
            CHECK(want_fma == 1 ? eq_fma : want_fma == 0 ? eq_mul : (eq_fma || eq_mul),
                  "sgemm kc=%zu bias=%d clip=%d: not the %s reference (fma %d, mul+add %d)", kc,
                  with_bias, with_lim, want_fma == 1 ? "fma" : want_fma ? "either" : "mul+add",
                  eq_fma, eq_mul);
            CHECK(eq_direct, "sgemm direct != packed, kc=%zu bias=%d clip=%d", kc, with_bias,
                  with_lim);
            CHECK(isnan(cp[1 + 1 * LDC]) == (kc > 3), "sgemm kc=%zu: NaN in A lost or made",
                  kc);
            cases++;
        }
    /* the two references must differ, or this test could not tell the kernels apart */
    CHECK(differ > 100, "fma and mul+add references differ in only %zu outputs", differ);
    /* a run of "either" must have matched one of them throughout, not a mix */
    CHECK(as_fma == cases || as_mul == cases, "sgemm matched fma in %zu, mul+add in %zu of %zu",
          as_fma, as_mul, cases);
    printf("[%s] sgemm %zux%d packed+direct: %zu cases, rounding %s\n", k->isa, mr, NR, cases,
           as_fma == cases ? "fma" : "mul+add");
    free(ain);
    free(ap);
    free(bp);
    free(koff);
}

/* ------------------------------------------------------------------ max pool */

/* The table's max pool of one pixel bit for bit against the portable kernel: every channel
 * count up to 70 (16- and 4-wide bodies, tails), windows 1x1 to 3x3, NaN taps (skipped),
 * -inf, +0 and -0 (the first of equal taps is kept, so -0 then +0 gives -0), a window all
 * NaN (-inf out), strided pixels and rows. */
static void test_maxpool(void)
{
    const bnn_kernel_table *k = bnn_kernels();
    enum { C = 70, PXS = 73, W = 4, H = 3 };
    float *x = malloc(H * W * PXS * sizeof(float));
    float got[C + 1], want[C + 1];
    size_t cases = 0;
    for (uint32_t n = 1; n <= C; n++)
        for (uint32_t kh = 1; kh <= H; kh++)
            for (uint32_t kw = 1; kw <= 3; kw++) {
                for (size_t i = 0; i < H * W * PXS; i++) {
                    const uint64_t r = rnd() % 16;
                    x[i] = r == 0 ? NAN : r == 1 ? -INFINITY : r == 2 ? 0.0f : r == 3 ? -0.0f
                                                                                   : rndf();
                }
                if (n > 5) /* channel 5: every tap NaN */
                    for (size_t i = 0; i < H * W; i++)
                        x[i * PXS + 5] = NAN;
                for (uint32_t i = 0; i <= C; i++)
                    got[i] = want[i] = 42.0f; /* beyond y[n - 1]: must stay */
                k->maxpool_px(x, W * PXS, PXS, kh, kw, n, got);
                bnn_maxpool_px_portable(x, W * PXS, PXS, kh, kw, n, want);
                CHECK(!memcmp(got, want, sizeof got), "maxpool n=%u %ux%u differs", n, kh, kw);
                if (n > 5)
                    CHECK(got[5] == -INFINITY, "maxpool: an all-NaN window gives %g", got[5]);
                cases++;
            }
    printf("[%s] max pool: %zu cases\n", k->isa, cases);
    free(x);
}

/* ------------------------------------------------------------------ loader robustness */

static void test_loader(void)
{
    /* A two-layer model; every prefix must be rejected without reading past it. */
    buf p = {0}, b = {0};
    put_conv_head(&p, 65, 2, 3, 1, 1, 1, 1, 1);
    put_u32(&p, 0);
    put_u32(&p, 0);
    for (int i = 0; i < 2 * 9 * 2; i++)
        put_u64(&p, i % 2 ? 1ull : 0x8000000000000001ull);
    for (int i = 0; i < 4; i++)
        put_f32(&p, 1.0f);
    const uint32_t dims[4] = {1, 65, 5, 5};
    header(&b, 3, 2, 2, dims);
    layer(&b, 2, 0, 1, &p);
    buf q = {0};
    layer(&b, 7, 1, 2, &q);
    char err[BNN_ERR_LEN];
    bnn_model *m = load(&b, err);
    CHECK(m, "valid model rejected: %s", err);
    bnn_model_free(m);
    size_t rejected = 0;
    for (size_t len = 0; len < b.len; len++) {
        buf pre = {b.p, len, len};
        m = load(&pre, err);
        rejected += m == NULL && err[0] != '\0';
        bnn_model_free(m);
    }
    CHECK(rejected == b.len, "only %zu of %zu truncations rejected with a message", rejected,
          b.len);
    /* Trailing byte. */
    put(&b, "x", 1);
    m = load(&b, err);
    CHECK(!m && strstr(err, "trailing"), "trailing byte: %s", err);
    /* Thread counts outside 1..16. */
    b.len--;
    m = load(&b, err);
    CHECK(bnn_ctx_create(m, 0, err, sizeof err) == NULL && strstr(err, "threads"), "0 threads");
    CHECK(bnn_ctx_create(m, 17, err, sizeof err) == NULL, "17 threads");
    bnn_model_free(m);
    free(p.p);
    free(b.p);
}

/* Every kernel set this build may have; the bit-packing, binary-conv and FP32 conv tests
 * run on each one the CPU supports and report the others as not run. */
static const char *const isas[] = {"portable", "popcnt", "avx2", "avx512", "neon"};

/* ------------------------------------------------------------------ kernel weight layouts */

/* What bnn_aligned_alloc takes for n bytes (the model counts its parameters that way). */
static uint64_t al64(uint64_t n)
{
    return (n + 63) / 64 * 64;
}

/* Bytes of the weight layout kernel set `isa` reads beyond the file layout (kernels.h),
 * for out_c channels of kwords words: AVX2 nibble planes, AVX-512 whole words, both
 * interleaved by 16 channels; none for the others. */
static uint64_t layout_bytes(const char *isa, uint32_t out_c, uint64_t kwords)
{
    const uint64_t oc16 = (out_c + 15) / 16 * 16;
    if (!strcmp(isa, "avx2"))
        return al64(oc16 * kwords * 16);
    if (!strcmp(isa, "avx512"))
        return al64(oc16 * kwords * 8);
    return 0;
}

typedef struct {
    const bnn_model *m;
    int ok;
} ctx_job;

static void *create_and_free(void *arg)
{
    ctx_job *j = arg;
    bnn_ctx *c = bnn_ctx_create(j->m, 1, NULL, 0);
    j->ok = c != NULL;
    bnn_ctx_free(c);
    return NULL;
}

/* A kernel set's own weight layout is built in the model by the set's first context, never
 * at load time nor for sets that do not run, once however many contexts follow (also when
 * they are created at the same time), and a model loaded under one set runs bit-identically
 * under every other (bnn_set_isa between load and context). */
static void test_prepack(void)
{
    const bcase t = {2, 130, 7, 6, 37, 3, 1, 1, 1, 1, 1, 1};
    const uint64_t kwords = (uint64_t)t.k * t.k * ((t.c + 63) / 64);
    /* threshold, file-layout bits, per-tap popcounts, scale, bias */
    const uint64_t loaded = al64(t.c * 4) + al64(t.oc * kwords * 8) +
                            al64((uint64_t)t.k * t.k * t.oc * 4) + 2 * al64(t.oc * 4);
    bconv_data d;
    bconv_data_make(&t, &d);
    char err[BNN_ERR_LEN];
    const char *dflt = bnn_kernel_isa();
    CHECK(bnn_set_isa("portable") == BNN_OK, "bnn_set_isa(portable)");
    bnn_model *m = load(&d.file, err);
    CHECK(m, "prepack model: %s", err);
    if (!m)
        goto out;
    CHECK(bnn_model_weight_bytes(m) == loaded, "after load: %llu weight bytes, want %llu",
          (unsigned long long)bnn_model_weight_bytes(m), (unsigned long long)loaded);
    uint64_t want = loaded;
    size_t ran = 0;
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        if (bnn_set_isa(isas[i]) != BNN_OK)
            continue;
        for (int rep = 0; rep < 2; rep++) { /* the second context finds the layout built */
            CHECK(bconv_mismatches(m, 1 + rep, &d) == 0, "[%s] model loaded under portable: "
                  "outputs differ from the reference", isas[i]);
            if (rep == 0)
                want += layout_bytes(isas[i], t.oc, kwords);
            CHECK(bnn_model_weight_bytes(m) == want, "[%s] context %d: %llu weight bytes, "
                  "want %llu", isas[i], rep + 1, (unsigned long long)bnn_model_weight_bytes(m),
                  (unsigned long long)want);
        }
        ran++;
    }
    bnn_model_free(m);

    /* contexts created at once, on a fresh model, by 4 threads: one layout */
    CHECK(bnn_set_isa(dflt) == BNN_OK, "restoring %s", dflt);
    m = load(&d.file, err);
    CHECK(m, "prepack model: %s", err);
    if (!m)
        goto out;
    pthread_t th[4];
    ctx_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (ctx_job){m, 0};
        CHECK(pthread_create(&th[i], NULL, create_and_free, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].ok, "concurrent context %d not created", i);
    }
    want = loaded + layout_bytes(dflt, t.oc, kwords);
    CHECK(bnn_model_weight_bytes(m) == want, "[%s] 4 concurrent contexts: %llu weight bytes, "
          "want %llu", dflt, (unsigned long long)bnn_model_weight_bytes(m),
          (unsigned long long)want);
    CHECK(bconv_mismatches(m, 2, &d) == 0, "[%s] after concurrent contexts", dflt);
    bnn_model_free(m);
    CHECK(bnn_model_weight_bytes(NULL) == 0, "bnn_model_weight_bytes(NULL)");
    printf("kernel weight layouts: built at the first context of each of %zu sets, %s: "
           "%llu bytes loaded\n", ran, dflt, (unsigned long long)loaded);
out:
    CHECK(bnn_set_isa(dflt) == BNN_OK, "restoring %s", dflt);
    bconv_data_free(&d);
}

int main(void)
{
    const char *dflt = bnn_kernel_isa();
    printf("bnn %s, default kernels: %s\n", bnn_version(), dflt);
    int ran = 0;
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        if (!bnn_isa_supported(isas[i])) {
            printf("[%s] NOT RUN: not built for or not supported by this CPU\n", isas[i]);
            continue;
        }
        CHECK(bnn_set_isa(isas[i]) == BNN_OK, "bnn_set_isa(%s)", isas[i]);
        CHECK(!strcmp(bnn_kernel_isa(), isas[i]), "kernel isa %s after set %s", bnn_kernel_isa(),
              isas[i]);
        const int before = failures;
        printf("[%s] ", isas[i]);
        test_bitpack();
        test_threshold_counts();
        test_bconv_out();
        test_bconv();
        test_sgemm();
        test_maxpool();
        test_fconv();
        printf("[%s] %s\n", isas[i], failures == before ? "ok" : "FAILED");
        ran++;
    }
    CHECK(ran >= 1, "no kernel set ran");
    CHECK(bnn_set_isa("no-such-isa") == BNN_EARG, "unknown ISA accepted");
    CHECK(bnn_set_isa(NULL) == BNN_OK && bnn_isa_supported(bnn_kernel_isa()),
          "bnn_set_isa(NULL) gives %s", bnn_kernel_isa());
    CHECK(bnn_set_isa(dflt) == BNN_OK, "restoring %s", dflt);
    test_loader();
    test_prepack();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
