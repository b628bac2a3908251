/* Execution context: memory plan, layer dispatch, timing.
 *
 * Activations live in a few reusable buffers: a value's buffer returns to the free list
 * after its last reader, so a deep network needs about as much memory as its widest few
 * layers, not the sum of all of them. The plan depends only on the model, so it is computed
 * the same way for bnn_model_workspace_bytes and bnn_ctx_create.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_internal.h"
#include "kernels.h"
#include "layers.h"
#include "threadpool.h"
#include "timing.h"

const char *bnn_version(void)
{
    return BNN_VERSION;
}

const char *bnn_kernel_isa(void)
{
    return bnn_kernels()->isa;
}

typedef struct {
    uint32_t *buf_of;   /* value id -> buffer index */
    uint64_t *buf_size; /* floats per buffer */
    uint32_t nbufs;
    uint64_t bits_words;    /* shared packed-bit buffer */
    uint64_t scratch_bytes; /* per thread */
    uint64_t padded_floats; /* shared zero-padded conv input (fconv.c) */
} plan;

static void plan_free(plan *p)
{
    free(p->buf_of);
    free(p->buf_size);
}

/* fz: how each layer runs (bnn_fuse); skipped layers and values nobody writes get no
 * buffer, and a binary conv fed bits by its producer does not read its float input. */
static int plan_build(const bnn_model *m, const bnn_kernel_table *k, const bnn_fusion *fz,
                      plan *p)
{
    memset(p, 0, sizeof *p);
    const uint32_t nv = m->n_values;
    int64_t *last_use = malloc(nv * sizeof *last_use);
    uint8_t *in_use = calloc(nv + 1, 1); /* per buffer; at most one buffer per value + 1 */
    p->buf_of = malloc(nv * sizeof *p->buf_of);
    p->buf_size = calloc(nv + 1, sizeof *p->buf_size);
    if (!last_use || !in_use || !p->buf_of || !p->buf_size) {
        free(last_use);
        free(in_use);
        plan_free(p);
        return BNN_ENOMEM;
    }
    for (uint32_t v = 0; v < nv; v++) {
        last_use[v] = -1;
        p->buf_of[v] = UINT32_MAX;
    }
    for (uint32_t l = 0; l < m->n_layers; l++) {
        /* a layer fed bits, or the caller's NCHW input (fuse.c, pattern 4), reads no float
         * buffer for them: an input read that way alone gets one only for the moment */
        const uint32_t first = fz[l].nchw_in ? m->layers[l].n_in : fz[l].bits_in;
        for (uint32_t i = first; !fz[l].skip && i < m->layers[l].n_in; i++)
            last_use[m->layers[l].in[i]] = l;
        if (fz[l].residual != BNN_NO_VALUE)
            last_use[fz[l].residual] = l;
    }
    last_use[m->output_id] = INT64_MAX;

    /* Best fit among free buffers; else grow the largest free one; else a new buffer. */
#define ASSIGN(value, floats)                                                                 \
    do {                                                                                      \
        uint64_t need_ = (floats);                                                            \
        int64_t best_ = -1, big_ = -1;                                                        \
        for (uint32_t b_ = 0; b_ < p->nbufs; b_++) {                                         \
            if (in_use[b_])                                                                   \
                continue;                                                                     \
            if (p->buf_size[b_] >= need_ &&                                                   \
                (best_ < 0 || p->buf_size[b_] < p->buf_size[best_]))                          \
                best_ = b_;                                                                   \
            if (big_ < 0 || p->buf_size[b_] > p->buf_size[big_])                              \
                big_ = b_;                                                                    \
        }                                                                                     \
        if (best_ < 0)                                                                        \
            best_ = big_ >= 0 ? big_ : (int64_t)p->nbufs++;                                   \
        if (p->buf_size[best_] < need_)                                                       \
            p->buf_size[best_] = need_;                                                       \
        in_use[best_] = 1;                                                                    \
        p->buf_of[value] = (uint32_t)best_;                                                   \
    } while (0)

    ASSIGN(m->input_id, bnn_shape_count(&m->input_shape));
    if (last_use[m->input_id] < 0) /* input read by nobody: free at once */
        in_use[p->buf_of[m->input_id]] = 0;
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const bnn_layer *L = &m->layers[l];
        if (fz[l].skip)
            continue;
        const uint32_t out = fz[l].write, res = fz[l].residual;
        /* A folded residual add read for the last time here writes its sum over it: every
         * output element is computed from the same element of it (bconv.c), and the lines
         * it overwrites are in cache, where a fresh buffer's would be fetched first. */
        const int in_place = out != BNN_NO_VALUE && res != BNN_NO_VALUE &&
                             last_use[res] == (int64_t)l && res != m->input_id &&
                             bnn_shape_count(&m->shapes[res]) == bnn_shape_count(&m->shapes[out]);
        if (in_place)
            p->buf_of[out] = p->buf_of[res];
        else if (out != BNN_NO_VALUE)
            ASSIGN(out, bnn_shape_count(&m->shapes[out]));
        for (uint32_t i = fz[l].bits_in; i < L->n_in; i++) /* (in place: x may be res) */
            if (last_use[L->in[i]] == (int64_t)l && !(in_place && L->in[i] == res))
                in_use[p->buf_of[L->in[i]]] = 0;
        if (res != BNN_NO_VALUE && last_use[res] == (int64_t)l && !in_place)
            in_use[p->buf_of[res]] = 0;
        if (out != BNN_NO_VALUE && last_use[out] < 0)
            in_use[p->buf_of[out]] = 0;
        uint64_t s = 0;
        if (L->op == OP_CONV2D_F32 || L->op == OP_GEMM) {
            s = bnn_fconv_scratch_bytes(L, k);
            const uint64_t pad = bnn_fconv_padded_floats(L);
            if (pad > p->padded_floats)
                p->padded_floats = pad;
        }
        if (L->op == OP_CONV2D_BIN) {
            uint64_t w = bnn_bconv_bits_words(L);
            if (w == 0) {
                free(last_use);
                free(in_use);
                plan_free(p);
                return BNN_ENOMEM;
            }
            s = bnn_bconv_scratch_bytes(L);
            if (w > p->bits_words)
                p->bits_words = w;
        }
        if (s > p->scratch_bytes)
            p->scratch_bytes = s;
    }
#undef ASSIGN
    free(last_use);
    free(in_use);
    return BNN_OK;
}

static uint64_t plan_bytes(const plan *p, int nthreads)
{
    /* Every term is bounded (tensors <= 2^31 floats, <= 65537 buffers): no overflow. */
    uint64_t total = 2 * p->bits_words * 8 + (uint64_t)nthreads * (p->scratch_bytes + BNN_ALIGN) +
                     p->padded_floats * 4 + BNN_ALIGN;
    for (uint32_t b = 0; b < p->nbufs; b++)
        total += p->buf_size[b] * 4 + BNN_ALIGN;
    return total;
}

uint64_t bnn_model_workspace_bytes(const bnn_model *m, int nthreads)
{
    plan p;
    if (!m || nthreads < 1 || nthreads > BNN_MAX_THREADS)
        return 0;
    bnn_fusion *fz = malloc((m->n_layers ? m->n_layers : 1) * sizeof *fz);
    if (!fz || bnn_fuse(m, 1, fz) || plan_build(m, bnn_kernels(), fz, &p)) {
        bnn_fusion_free(fz, m->n_layers);
        return 0;
    }
    bnn_fusion_free(fz, m->n_layers);
    uint64_t total = plan_bytes(&p, nthreads);
    plan_free(&p);
    return total;
}

struct bnn_ctx {
    const bnn_model *m;
    const bnn_kernel_table *k;
    bnn_pool *pool;
    int nthreads;
    uint32_t nbufs;
    float **bufs;
    float **val; /* value id -> its buffer */
    void *tscratch[BNN_MAX_THREADS];
    uint64_t *bits[2];
    float *padded;
    bnn_fusion *fz; /* per layer */
};

void bnn_ctx_free(bnn_ctx *c)
{
    if (!c)
        return;
    bnn_pool_free(c->pool);
    if (c->bufs)
        for (uint32_t b = 0; b < c->nbufs; b++)
            bnn_aligned_free(c->bufs[b]);
    free(c->bufs);
    free(c->val);
    for (int t = 0; t < BNN_MAX_THREADS; t++)
        bnn_aligned_free(c->tscratch[t]);
    bnn_aligned_free(c->bits[0]);
    bnn_aligned_free(c->bits[1]);
    bnn_aligned_free(c->padded);
    if (c->fz)
        bnn_fusion_free(c->fz, c->m->n_layers);
    free(c);
}

static bnn_ctx *ctx_fail(bnn_ctx *c, plan *p, char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    bnn_ctx_free(c);
    if (p)
        plan_free(p);
    return NULL;
}

bnn_ctx *bnn_ctx_create(const bnn_model *m, int nthreads, char *err, size_t errlen)
{
    return bnn_ctx_create_ex(m, nthreads, 0, err, errlen);
}

bnn_ctx *bnn_ctx_create_ex(const bnn_model *m, int nthreads, unsigned flags, char *err,
                           size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!m)
        return ctx_fail(NULL, NULL, err, errlen, "no model");
    if (nthreads < 1 || nthreads > BNN_MAX_THREADS) {
        if (err && errlen)
            snprintf(err, errlen, "threads must be 1..%d, got %d", BNN_MAX_THREADS, nthreads);
        return NULL;
    }
    plan p;
    const bnn_kernel_table *k = bnn_kernels();
    if (bnn_kernels_env_error()) {
        if (err && errlen)
            snprintf(err, errlen, "%s", bnn_kernels_env_error());
        return NULL;
    }
    bnn_fusion *fz = malloc((m->n_layers ? m->n_layers : 1) * sizeof *fz);
    if (!fz || bnn_fuse(m, !(flags & BNN_CTX_NO_FUSION), fz) || plan_build(m, k, fz, &p)) {
        bnn_fusion_free(fz, m->n_layers);
        return ctx_fail(NULL, NULL, err, errlen, "out of memory planning buffers");
    }
    if (plan_bytes(&p, nthreads) > SIZE_MAX) {
        bnn_fusion_free(fz, m->n_layers);
        return ctx_fail(NULL, &p, err, errlen, "model needs more memory than this platform "
                                               "can address");
    }
    bnn_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        bnn_fusion_free(fz, m->n_layers);
        return ctx_fail(NULL, &p, err, errlen, "out of memory");
    }
    c->fz = fz;
    c->m = m;
    c->k = k;
    /* the weights in k's layout, built by the model's first context of k; the layouts of
     * sets that never run are never built */
    if (bnn_model_prepack(m, k))
        return ctx_fail(c, &p, err, errlen, "out of memory for prepacked weights");
    c->nthreads = nthreads;
    c->nbufs = p.nbufs;
    c->bufs = calloc(p.nbufs ? p.nbufs : 1, sizeof *c->bufs);
    c->val = calloc(m->n_values, sizeof *c->val);
    if (!c->bufs || !c->val)
        return ctx_fail(c, &p, err, errlen, "out of memory");
    for (uint32_t b = 0; b < p.nbufs; b++)
        if (!(c->bufs[b] = bnn_aligned_alloc((size_t)p.buf_size[b] * sizeof(float))))
            return ctx_fail(c, &p, err, errlen, "out of memory for activations");
    /* Values nobody writes (after fusion) keep a NULL buffer; none of them is read. */
    for (uint32_t v = 0; v < m->n_values; v++)
        if (p.buf_of[v] != UINT32_MAX)
            c->val[v] = c->bufs[p.buf_of[v]];
    for (int t = 0; t < nthreads; t++)
        if (!(c->tscratch[t] = bnn_aligned_alloc((size_t)p.scratch_bytes)))
            return ctx_fail(c, &p, err, errlen, "out of memory for scratch");
    for (int i = 0; i < 2; i++)
        if (!(c->bits[i] = bnn_aligned_alloc((size_t)p.bits_words * 8)))
            return ctx_fail(c, &p, err, errlen, "out of memory for packed activations");
    if (p.padded_floats && !(c->padded = bnn_aligned_alloc((size_t)p.padded_floats * 4)))
        return ctx_fail(c, &p, err, errlen, "out of memory for a padded conv input");
    if (!(c->pool = bnn_pool_create(nthreads)))
        return ctx_fail(c, &p, err, errlen, "cannot start worker threads");
    plan_free(&p);
    return c;
}

int bnn_ctx_threads(const bnn_ctx *c)
{
    return c ? c->nthreads : 0;
}

int bnn_ctx_layer_fusion(const bnn_ctx *c, uint32_t layer, unsigned *flags)
{
    if (!c || !flags || layer >= c->m->n_layers)
        return BNN_EARG;
    const bnn_fusion *f = &c->fz[layer];
    *flags = (f->skip ? BNN_FUSED_SKIPPED : 0u) | (f->bits_in ? BNN_FUSED_BITS_IN : 0u) |
             (f->bits_to >= 0 ? BNN_FUSED_BITS_OUT : 0u) |
             (f->residual != BNN_NO_VALUE ? BNN_FUSED_RESIDUAL : 0u) |
             (f->clamp ? BNN_FUSED_CLIP : 0u) | (f->nchw_in ? BNN_FUSED_NCHW_INPUT : 0u);
    return BNN_OK;
}

/* One inference; with `t` non-NULL, t[l] += milliseconds spent in layer l and
 * t[n_layers] += the time of the two model-boundary layout transposes. */
static int run(bnn_ctx *c, const float *in, float *out, double *t)
{
    const bnn_model *m = c->m;
    const bnn_exec ex = {c->pool, c->k, c->tscratch, {c->bits[0], c->bits[1]}, c->padded};
    const bnn_shape *is = &m->input_shape;
    /* NCHW -> NHWC: a [C][HW] -> [HW][C] transpose per image (a copy for rank 2), unless
     * the first layer reads the NCHW input itself (fuse.c, pattern 4) */
    double t0 = t ? bnn_now_ms() : 0;
    const int nchw_in = m->n_layers && c->fz[0].nchw_in;
    if (!nchw_in)
        bnn_transpose_batched(&ex, in, c->val[m->input_id], is->n, is->c,
                              (size_t)is->h * is->w);
    uint32_t prev = m->n_layers; /* timing slot of the work since t0 */
    for (uint32_t l = 0; l < m->n_layers; l++) {
        const bnn_layer *L = &m->layers[l];
        const bnn_fusion *fz = &c->fz[l];
        if (fz->skip) /* folded into the layer before: its time stays 0 */
            continue;
        if (t) {
            const double t1 = bnn_now_ms();
            t[prev] += t1 - t0;
            t0 = t1;
            prev = l;
        }
        const float *x = fz->nchw_in ? in : c->val[L->in[0]];
        float *y = fz->write == BNN_NO_VALUE ? NULL : c->val[fz->write];
        switch (L->op) {
        case OP_CONV2D_F32:
        case OP_GEMM:
            bnn_fconv_forward(&ex, L, fz, x, y);
            break;
        case OP_CONV2D_BIN:
            bnn_bconv_forward(&ex, L, fz, fz->bits_to >= 0 ? &m->layers[fz->bits_to] : NULL, x,
                              fz->residual != BNN_NO_VALUE ? c->val[fz->residual] : NULL, y);
            break;
        case OP_AFFINE:
            bnn_affine_forward(&ex, L, x, y);
            break;
        case OP_CLIP:
            bnn_clip_forward(&ex, L, x, y);
            break;
        case OP_MAXPOOL:
            bnn_maxpool_forward(&ex, L, x, y);
            break;
        case OP_AVGPOOL:
            bnn_avgpool_forward(&ex, L, x, y);
            break;
        case OP_GLOBAL_AVGPOOL:
            bnn_global_avgpool_forward(&ex, L, x, y);
            break;
        case OP_ADD:
            bnn_add_forward(&ex, L, fz, x, c->val[L->in[1]], y);
            break;
        case OP_FLATTEN: {
            /* The format flattens NCHW order (C, H, W): NHWC -> NCHW per image. */
            const bnn_shape *s = &L->in_shape;
            bnn_transpose_batched(&ex, x, y, s->n, (size_t)s->h * s->w, s->c);
            break;
        }
        default:
            return BNN_EFORMAT; /* unreachable: the loader rejects unknown ops */
        }
    }
    if (t) {
        const double t1 = bnn_now_ms();
        t[prev] += t1 - t0;
        t0 = t1;
    }
    const bnn_shape *os = &m->shapes[m->output_id];
    bnn_transpose_batched(&ex, c->val[m->output_id], out, os->n, (size_t)os->h * os->w, os->c);
    if (t)
        t[m->n_layers] += bnn_now_ms() - t0;
    return BNN_OK;
}

int bnn_run(bnn_ctx *c, const float *in, float *out)
{
    if (!c || !in || !out)
        return BNN_EARG;
    return run(c, in, out, NULL);
}

/* The output buffer of timed runs, after `warmup` untimed runs into it; NULL (and no run)
 * when out of memory. */
static float *warm_up(bnn_ctx *c, const float *in, int warmup)
{
    const size_t n_out = bnn_shape_count(&c->m->shapes[c->m->output_id]);
    float *out = bnn_aligned_alloc(n_out * sizeof(float));
    for (int i = 0; out && i < warmup; i++)
        run(c, in, out, NULL);
    return out;
}

int bnn_benchmark(bnn_ctx *c, const float *in, int warmup, int runs, double *samples_ms)
{
    if (!c || !in || !samples_ms || warmup < 0 || runs < 1)
        return BNN_EARG;
    float *out = warm_up(c, in, warmup);
    if (!out)
        return BNN_ENOMEM;
    for (int i = 0; i < runs; i++) {
        const double t0 = bnn_now_ms();
        run(c, in, out, NULL);
        samples_ms[i] = bnn_now_ms() - t0;
    }
    bnn_aligned_free(out);
    return BNN_OK;
}

int bnn_profile(bnn_ctx *c, const float *in, int warmup, int runs, double *layer_ms)
{
    if (!c || !in || !layer_ms || warmup < 0 || runs < 1)
        return BNN_EARG;
    const size_t nl = (size_t)c->m->n_layers + 1;
    double *t = calloc((size_t)runs * nl, sizeof *t), *col = malloc((size_t)runs * sizeof *col);
    float *out = t && col ? warm_up(c, in, warmup) : NULL;
    if (!out) {
        free(t);
        free(col);
        return BNN_ENOMEM;
    }
    for (int i = 0; i < runs; i++)
        run(c, in, out, t + (size_t)i * nl);
    for (size_t l = 0; l < nl; l++) { /* per-layer median over the runs */
        for (int i = 0; i < runs; i++)
            col[i] = t[(size_t)i * nl + l];
        qsort(col, (size_t)runs, sizeof *col, bnn_cmp_double);
        layer_ms[l] = runs % 2 ? col[runs / 2] : 0.5 * (col[runs / 2 - 1] + col[runs / 2]);
    }
    bnn_aligned_free(out);
    free(t);
    free(col);
    return BNN_OK;
}
