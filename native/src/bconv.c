/* Binary convolution driver.
 *
 * 1. Pack sign(x - threshold) of the NHWC input into a zero-padded bit image
 *    [n][H + pt + pb][W + pl + pr][words] (bit 1 = -1; padding words are 0, i.e. +1).
 * 2. For each (image, output row, block of output channels) run the ISA row kernel, which
 *    XOR-popcounts every kernel window against the weights, padded taps included.
 * 3. Epilogue, exact zero padding: with a = activation bits and w = weight bits,
 *    a.w summed over a tap set T equals |T|*in_c - 2*popcount(a ^ w). A padded tap reads
 *    a = 0, so it adds popcount(w_tap) to the kernel's count; we subtract those (wpop,
 *    precomputed per output channel and tap at load time) and use only the valid taps in
 *    |T|. Interior windows, the vast majority, need no correction at all.
 *    Weight tail bits are 0 (the loader enforces it) and so are activation tail bits, so
 *    channels past in_c never count.
 * 4. Output: floats scale * dot + bias (then plus a folded residual add's other input and
 *    clamped by a folded clip, each optional), or, when the context fused this conv with
 *    the next binary conv (fuse.c), those same floats packed straight into the next conv's
 *    padded bit image by the ISA's bitpack -- so step 1 is skipped there and the bits are
 *    identical to packing the float tensor. Interior windows skip the floats too: fuse.c
 *    turned BN, clip and the next sign into one integer bound per channel on the counts.
 */
#include <string.h>

#include "layers.h"

/* output channels per task: whole 64-bit words when packing for the next conv; late small
 * layers still split into rows x blocks across threads */
#define OCH BNN_BCONV_OCH

size_t bnn_bconv_scratch_bytes(const bnn_layer *L)
{
    /* popcounts [ow][OCH] + one pixel's float outputs when packing them + one pixel's
     * border-corrected counts */
    return ((size_t)L->out_shape.w + 2) * OCH * sizeof(int32_t);
}

uint64_t bnn_bconv_bits_words(const bnn_layer *L)
{
    const bnn_bconv *b = &L->p.bconv;
    const bnn_shape *in = &L->in_shape;
    uint64_t ph = (uint64_t)in->h + b->g.pt + b->g.pb, pw = (uint64_t)in->w + b->g.pl + b->g.pr;
    uint64_t words;
    if (!bnn_mul_u64(ph * pw, (uint64_t)in->n * b->words, &words) || words > SIZE_MAX / 8)
        return 0;
    return words;
}

typedef struct {
    const bnn_exec *ex;
    const bnn_layer *L;
    const bnn_fusion *fz;
    const float *x;
    const float *res; /* a folded residual add's other input, or NULL */
    float *y;
    const uint64_t *bits; /* this layer's padded packed input */
    size_t ph, pw, o_blocks;
    /* when packing for the next binary conv (fz->bits_to >= 0): that layer, its image */
    const bnn_layer *next;
    uint64_t *nbits;
    size_t nph, npw;
} bconv_job;

/* Row `task` (= image * ph + padded row) of layer Lb's zero-padded packed input: padding
 * words are zeroed, the interior is packed from x unless x is NULL (then another layer
 * writes it). */
static void pack_row(const bnn_exec *ex, const bnn_layer *Lb, const float *x, uint64_t *bits,
                     size_t ph, size_t pw, size_t task)
{
    const bnn_bconv *b = &Lb->p.bconv;
    const bnn_shape *in = &Lb->in_shape;
    const size_t words = b->words, py = task % ph, n = task / ph;
    uint64_t *row = bits + task * pw * words;
    if (py < b->g.pt || py >= b->g.pt + (size_t)in->h) {
        memset(row, 0, pw * words * sizeof(uint64_t));
        return;
    }
    memset(row, 0, (size_t)b->g.pl * words * sizeof(uint64_t));
    memset(row + ((size_t)b->g.pl + in->w) * words, 0, (size_t)b->g.pr * words * sizeof(uint64_t));
    if (!x)
        return;
    const float *src = x + ((n * in->h) + (py - b->g.pt)) * (size_t)in->w * b->in_c;
    ex->k->bitpack(src, b->threshold, b->in_c, b->words, in->w, row + (size_t)b->g.pl * words,
                   words);
}

static void pack_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const bconv_job *j = arg;
    pack_row(j->ex, j->L, j->x, (uint64_t *)j->bits, j->ph, j->pw, task);
}

static void border_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const bconv_job *j = arg;
    pack_row(j->ex, j->next, NULL, j->nbits, j->nph, j->npw, task);
}

bnn_bconv_row_args bnn_bconv_row_setup(const bnn_kernel_table *k, const bnn_layer *L,
                                       const uint64_t *bits, size_t n, size_t oy, uint32_t o0,
                                       uint32_t o1, int32_t *pop)
{
    const bnn_bconv *b = &L->p.bconv;
    const bnn_geom *g = &b->g;
    const size_t words = b->words, ph = (size_t)L->in_shape.h + g->pt + g->pb;
    const size_t pw = (size_t)L->in_shape.w + g->pl + g->pr;
    return (bnn_bconv_row_args){
        .in = bits + ((n * ph) + oy * g->sh) * pw * words,
        .row_stride = pw * words,
        .x_stride = (size_t)g->sw * words,
        .w = b->w[BNN_WLAYOUT_FILE],
        .wp = b->w[bnn_kernel_wlayout(k)], /* built when the context was (bnn_model_prepack) */
        .w_stride = (size_t)g->kh * g->kw * words,
        .kh = g->kh,
        .tap_words = (uint32_t)(g->kw * words),
        .ow = L->out_shape.w,
        .o_begin = o0,
        .o_end = o1,
        .pop = pop,
    };
}

static void row_task(void *arg, size_t task, int thread)
{
    const bconv_job *j = arg;
    const bnn_bconv *b = &j->L->p.bconv;
    const bnn_fusion *fz = j->fz;
    const bnn_shape *in = &j->L->in_shape, *out = &j->L->out_shape;
    const bnn_geom *g = &b->g;
    const size_t ob = task % j->o_blocks, rowi = task / j->o_blocks;
    const size_t oy = rowi % out->h, n = rowi / out->h;
    const uint32_t o0 = (uint32_t)(ob * OCH);
    const uint32_t o1 = o0 + OCH < b->out_c ? o0 + OCH : b->out_c;
    const uint32_t nout = o1 - o0;
    const size_t taps = (size_t)g->kh * g->kw;
    int32_t *pop = j->ex->tscratch[thread];
    float *vals = (float *)(pop + (size_t)out->w * OCH); /* one pixel, when packing */
    int32_t *padq = (int32_t *)(vals + OCH);              /* one pixel's corrected counts */

    const bnn_bconv_row_args a =
        bnn_bconv_row_setup(j->ex->k, j->L, j->bits, n, oy, o0, o1, pop);
    j->ex->k->bconv_row(&a);

    /* Valid kernel rows [i0, i1) for this output row; columns per output column below. */
    const long top = (long)(oy * g->sh) - (long)g->pt;
    const long i0 = top < 0 ? -top : 0;
    const long i1 = top + (long)g->kh > (long)in->h ? (long)in->h - top : (long)g->kh;
    const float *sc = b->scale + o0, *bi = b->bias + o0;
    float *yrow = j->y ? j->y + ((n * out->h + oy) * out->w) * (size_t)b->out_c : NULL;
    const bnn_bconv *nb = yrow ? NULL : &j->next->p.bconv;
    const float clip[2] = {fz->lo, fz->hi}, *lim = fz->clamp ? clip : NULL;
    const int32_t full = (int32_t)(taps * b->in_c); /* <= 2^30: loader limit */
    /* next-layer bit words at this row (when packing for the next conv), pixel ox at
     * nrow + ox * nb->words */
    uint64_t *nrow = yrow ? NULL
                          : j->nbits + ((n * j->nph + oy + nb->g.pt) * j->npw + nb->g.pl) *
                                           (size_t)nb->words + o0 / 64;
    const float *rrow =
        j->res ? j->res + ((n * out->h + oy) * out->w) * (size_t)b->out_c + o0 : NULL;

    /* The interior windows of the row, [xa, xb): one kernel call for all of them, bits
     * straight from the counts (fuse.c) or floats. Not when packing without bounds (a
     * parameter that is not finite): then every pixel takes the per-pixel float path. */
    size_t xa = 0, xb = 0;
    if (i0 == 0 && i1 == (long)g->kh && (yrow || fz->bounds)) {
        xa = (g->pl + g->sw - 1) / g->sw; /* first ox with ox * sw >= pl */
        xb = in->w + g->pl >= g->kw ? ((size_t)in->w + g->pl - g->kw) / g->sw + 1 : 0;
        if (xb > out->w)
            xb = out->w;
        if (xa >= xb)
            xa = xb = 0;
    }
    if (xa < xb && !yrow)
        j->ex->k->threshold_counts(pop + xa * nout, fz->bounds + o0, fz->bounds + b->out_c + o0,
                                   nout, xb - xa, nrow + xa * nb->words, nb->words);
    else if (xa < xb)
        j->ex->k->bconv_out(pop + xa * nout, full, sc, bi, rrow ? rrow + xa * b->out_c : NULL,
                            lim, yrow + xa * b->out_c + o0, nout, xb - xa, b->out_c);

    for (uint32_t ox = 0; ox < out->w; ox++) {
        if (ox == xa && xa < xb) {
            ox = (uint32_t)xb - 1;
            continue;
        }
        const long left = (long)ox * g->sw - (long)g->pl;
        const long j0 = left < 0 ? -left : 0;
        const long j1 = left + (long)g->kw > (long)in->w ? (long)in->w - left : (long)g->kw;
        const int32_t *p = pop + (size_t)ox * nout;
        float *yo = yrow ? yrow + (size_t)ox * b->out_c + o0 : vals;
        const float *r = rrow ? rrow + (size_t)ox * b->out_c : NULL;
        const int interior = i0 == 0 && i1 == (long)g->kh && j0 == 0 && j1 == (long)g->kw;
        if (interior) {
            j->ex->k->bconv_out(p, full, sc, bi, r, lim, yo, nout, 1, 0);
        } else {
            /* border window: subtract what the padded taps added, channel-vectorized */
            const int32_t nvc = (int32_t)((i1 > i0 && j1 > j0) ? (i1 - i0) * (j1 - j0) : 0) *
                                (int32_t)b->in_c;
            int32_t *q = padq;
            memcpy(q, p, nout * sizeof *q);
            for (long i = 0; i < (long)g->kh; i++)
                for (long jj = 0; jj < (long)g->kw; jj++)
                    if (i < i0 || i >= i1 || jj < j0 || jj >= j1) {
                        const int32_t *wp = b->wpop + (size_t)(i * g->kw + jj) * b->out_c + o0;
                        for (uint32_t o = 0; o < nout; o++)
                            q[o] -= wp[o];
                    }
            j->ex->k->bconv_out(q, nvc, sc, bi, r, lim, yo, nout, 1, 0);
        }
        if (nrow) /* the next conv's packing, on the same floats */
            j->ex->k->bitpack(vals, nb->threshold ? nb->threshold + o0 : NULL, nout, 1, 1,
                              nrow + (size_t)ox * nb->words, 1);
    }
}

void bnn_bconv_forward(const bnn_exec *ex, const bnn_layer *L, const bnn_fusion *fz,
                       const bnn_layer *next, const float *x, const float *res, float *y)
{
    const bnn_bconv *b = &L->p.bconv;
    const bnn_shape *in = &L->in_shape, *out = &L->out_shape;
    bconv_job j = {
        .ex = ex,
        .L = L,
        .fz = fz,
        .x = x,
        .res = res,
        .y = fz->bits_to >= 0 ? NULL : y,
        .bits = ex->bits[fz->bits_buf],
        .ph = (size_t)in->h + b->g.pt + b->g.pb,
        .pw = (size_t)in->w + b->g.pl + b->g.pr,
        .o_blocks = ((size_t)b->out_c + OCH - 1) / OCH,
    };
    if (!fz->bits_in)
        bnn_pool_parallel_for(ex->pool, (size_t)in->n * j.ph, pack_task, &j);
    if (fz->bits_to >= 0) {
        const bnn_bconv *nb = &next->p.bconv;
        j.next = next;
        j.nbits = ex->bits[1 - fz->bits_buf];
        j.nph = (size_t)next->in_shape.h + nb->g.pt + nb->g.pb;
        j.npw = (size_t)next->in_shape.w + nb->g.pl + nb->g.pr;
        bnn_pool_parallel_for(ex->pool, (size_t)in->n * j.nph, border_task, &j);
    }
    bnn_pool_parallel_for(ex->pool, (size_t)out->n * out->h * j.o_blocks, row_task, &j);
}
