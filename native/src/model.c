/* Loader for the .bnn format (FORMAT.md, version 1).
 *
 * Every read goes through a cursor that checks the remaining byte count first, every size
 * is computed in checked 64-bit arithmetic, and every field is validated before use; shapes
 * are propagated through the graph here so the engine never has to re-check anything.
 * Weights are copied into aligned memory and prepacked into the layouts every kernel set
 * reads (FP32 panels, the binary file layout); a kernel set's own binary weight layout is
 * built later, for the sets that run (bnn_model_prepack, at context creation).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_internal.h"
#include "kernels.h"

/* What bnn_aligned_alloc allocates for `bytes`; 0 if that does not fit in size_t. */
static size_t aligned_size(size_t bytes)
{
    if (bytes == 0)
        bytes = 1;
    if (bytes > SIZE_MAX - BNN_ALIGN)
        return 0;
    return (bytes + BNN_ALIGN - 1) / BNN_ALIGN * BNN_ALIGN;
}

void *bnn_aligned_alloc(size_t bytes)
{
    const size_t size = aligned_size(bytes);
    return size ? aligned_alloc(BNN_ALIGN, size) : NULL;
}

/* A parameter array of layer L: counted in L->param_bytes (bnn_model_weight_bytes). */
static void *param_alloc(bnn_layer *L, size_t bytes)
{
    void *p = bnn_aligned_alloc(bytes);
    if (p)
        L->param_bytes += aligned_size(bytes);
    return p;
}

void bnn_aligned_free(void *p)
{
    free(p);
}

const char *bnn_op_name(uint32_t op)
{
    static const char *names[] = {"?",       "CONV2D_F32", "CONV2D_BIN",     "AFFINE",
                                  "CLIP",    "MAXPOOL",    "AVGPOOL",        "GLOBAL_AVGPOOL",
                                  "ADD",     "FLATTEN",    "GEMM"};
    return op >= 1 && op <= 10 ? names[op] : "?";
}

/* ------------------------------------------------------------------ errors */

typedef struct {
    char *buf;
    size_t len;
    uint32_t layer; /* UINT32_MAX: header */
    const char *op;
    char name[48];
} errctx;

static int fail(errctx *e, int code, const char *fmt, ...)
{
    if (e->buf && e->len > 0) {
        char msg[BNN_ERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (e->layer == UINT32_MAX)
            snprintf(e->buf, e->len, "%s", msg);
        else
            snprintf(e->buf, e->len, "layer %u '%s' (%s): %s", e->layer, e->name, e->op, msg);
    }
    return code;
}

/* A printable, bounded copy of a layer name for messages (names are untrusted bytes). */
static void set_err_name(errctx *e, const uint8_t *name, size_t len)
{
    size_t n = len < sizeof e->name - 4 ? len : sizeof e->name - 4;
    for (size_t i = 0; i < n; i++)
        e->name[i] = (name[i] >= 0x20 && name[i] < 0x7f && name[i] != '\'') ? (char)name[i] : '?';
    if (n < len) {
        memcpy(e->name + n, "...", 3);
        n += 3;
    }
    e->name[n] = '\0';
}

/* ------------------------------------------------------------------ cursor */

typedef struct {
    const uint8_t *p;
    size_t size, pos;
} cursor;

static size_t cur_left(const cursor *c)
{
    return c->size - c->pos;
}

static int cur_bytes(cursor *c, size_t n, const uint8_t **out)
{
    if (n > cur_left(c))
        return 0;
    *out = c->p + c->pos;
    c->pos += n;
    return 1;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int cur_u32(cursor *c, uint32_t *v)
{
    const uint8_t *b;
    if (!cur_bytes(c, 4, &b))
        return 0;
    *v = le32(b);
    return 1;
}

/* Arrays are copied element by element from little-endian bytes: endian-independent and
 * free of alignment assumptions about the file. Callers check the length beforehand. */
static void copy_f32(const uint8_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = le32(src + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
}

static float *read_f32_array(cursor *c, bnn_layer *L, size_t n)
{
    const uint8_t *b;
    if (!cur_bytes(c, n * 4, &b))
        return NULL;
    float *dst = param_alloc(L, n * 4);
    if (dst)
        copy_f32(b, dst, n);
    return dst;
}

/* ------------------------------------------------------------------ shapes */

static int check_shape(errctx *e, const bnn_shape *s, const char *what)
{
    const uint32_t d[4] = {s->n, s->c, s->h, s->w};
    uint64_t count = 1;
    for (int i = 0; i < 4; i++) {
        if (d[i] < 1 || d[i] > BNN_MAX_DIM)
            return fail(e, BNN_EFORMAT, "%s dimension %d is %u (allowed 1..%u)", what, i, d[i],
                        BNN_MAX_DIM);
        count *= d[i]; /* <= 2^16 per factor, checked below before it can overflow */
        if (count > BNN_MAX_ELEMS)
            return fail(e, BNN_EFORMAT, "%s has more than 2^31 elements", what);
    }
    return BNN_OK;
}

static int read_geom(errctx *e, cursor *c, bnn_geom *g)
{
    uint32_t v[8];
    for (int i = 0; i < 8; i++)
        if (!cur_u32(c, &v[i]))
            return fail(e, BNN_EFORMAT, "parameter block too short");
    g->kh = v[0], g->kw = v[1], g->sh = v[2], g->sw = v[3];
    g->pt = v[4], g->pl = v[5], g->pb = v[6], g->pr = v[7];
    for (int i = 0; i < 4; i++)
        if (v[i] < 1 || v[i] > BNN_MAX_DIM)
            return fail(e, BNN_EFORMAT, "%s is %u (allowed 1..%u)",
                        (const char *[]){"kernel_h", "kernel_w", "stride_h", "stride_w"}[i],
                        v[i], BNN_MAX_DIM);
    for (int i = 4; i < 8; i++)
        if (v[i] > BNN_MAX_DIM)
            return fail(e, BNN_EFORMAT, "padding %u exceeds %u", v[i], BNN_MAX_DIM);
    return BNN_OK;
}

/* Output spatial size of a window op; rejects windows larger than the padded input. */
static int geom_out(errctx *e, const bnn_geom *g, const bnn_shape *in, bnn_shape *out)
{
    uint64_t ph = (uint64_t)in->h + g->pt + g->pb, pw = (uint64_t)in->w + g->pl + g->pr;
    if (ph < g->kh || pw < g->kw)
        return fail(e, BNN_EFORMAT, "kernel %ux%u larger than padded input %llux%llu", g->kh,
                    g->kw, (unsigned long long)ph, (unsigned long long)pw);
    uint64_t oh = (ph - g->kh) / g->sh + 1, ow = (pw - g->kw) / g->sw + 1;
    if (oh > BNN_MAX_DIM || ow > BNN_MAX_DIM)
        return fail(e, BNN_EFORMAT, "output %llux%llu exceeds dimension limit",
                    (unsigned long long)oh, (unsigned long long)ow);
    out->rank = 4;
    out->n = in->n;
    out->h = (uint32_t)oh;
    out->w = (uint32_t)ow;
    return BNN_OK;
}

/* Implementation limit on kh*kw*in_c, so the kernels' int32 dot products cannot overflow
 * (real networks stay below 2^16). */
static int check_depth(errctx *e, uint64_t depth)
{
    if (depth > (1u << 30))
        return fail(e, BNN_EFORMAT, "kernel window kh*kw*in_c = %llu exceeds 2^30",
                    (unsigned long long)depth);
    return BNN_OK;
}

static int need_rank4(errctx *e, const bnn_shape *in)
{
    if (in->rank != 4)
        return fail(e, BNN_EFORMAT, "needs a rank-4 (NCHW) input, got rank %u", in->rank);
    return BNN_OK;
}

/* Expected parameter length: fixed head bytes plus a list of counts * element sizes. */
static int expect_len(errctx *e, uint32_t param_len, uint64_t head, int n, ...)
{
    uint64_t total = head;
    va_list ap;
    va_start(ap, n);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        uint64_t count = va_arg(ap, uint64_t), size = va_arg(ap, uint64_t), bytes;
        if (!bnn_mul_u64(count, size, &bytes) || !bnn_add_u64(total, bytes, &total))
            ok = 0;
    }
    va_end(ap);
    if (!ok)
        return fail(e, BNN_EFORMAT, "declared parameter sizes overflow 64 bits");
    if (total != param_len)
        return fail(e, BNN_EFORMAT, "param_len is %u but the parameters need %llu bytes",
                    param_len, (unsigned long long)total);
    return BNN_OK;
}

static int read_flag(errctx *e, cursor *c, const char *what, uint32_t *v)
{
    if (!cur_u32(c, v))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    if (*v > 1)
        return fail(e, BNN_EFORMAT, "%s must be 0 or 1, got %u", what, *v);
    return BNN_OK;
}

/* ------------------------------------------------------------------ per-op parsing */

/* The leading in/out counts of a conv's or GEMM's parameters (into *in, *out). */
static int read_io(errctx *e, cursor *c, uint32_t *in, uint32_t *out)
{
    if (!cur_u32(c, in) || !cur_u32(c, out))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    return BNN_OK;
}

/* Those counts against layer L's input: `in` must be its channel count (a GEMM's features,
 * named in_f / out_f in messages), out 1..BNN_MAX_DIM. */
static int check_io(errctx *e, const bnn_layer *L, uint32_t in, uint32_t out, int gemm)
{
    if (in != L->in_shape.c)
        return fail(e, BNN_EFORMAT, "%s %u does not match input %s %u", gemm ? "in_f" : "in_c",
                    in, gemm ? "features" : "channels", L->in_shape.c);
    if (out < 1 || out > BNN_MAX_DIM)
        return fail(e, BNN_EFORMAT, "%s %u (allowed 1..%u)", gemm ? "out_f" : "out_c", out,
                    BNN_MAX_DIM);
    return BNN_OK;
}

/* Shared by CONV2D_F32 and GEMM: prepack OIHW weights into NR-column panels of the
 * (i, j, c)-ordered GEMM depth used by the NHWC im2col. */
static int fconv_pack(errctx *e, bnn_layer *L, const uint8_t *wsrc, cursor *c,
                      uint32_t has_bias)
{
    bnn_fconv *f = &L->p.fconv;
    const uint32_t kh = f->g.kh, kw = f->g.kw, ic = f->in_c, oc = f->out_c, nr = BNN_SGEMM_NR;
    const size_t k = (size_t)kh * kw * ic;
    const size_t panels = ((size_t)oc + nr - 1) / nr;
    uint64_t bytes;
    if (!bnn_mul_u64((uint64_t)panels * nr, k, &bytes) || !bnn_mul_u64(bytes, 4, &bytes) ||
        bytes > SIZE_MAX)
        return fail(e, BNN_ENOMEM, "weights too large for this platform");
    f->k = (uint32_t)k;
    f->wpacked = param_alloc(L, (size_t)bytes);
    f->bias = param_alloc(L, (size_t)oc * 4);
    if (!f->wpacked || !f->bias)
        return fail(e, BNN_ENOMEM, "out of memory for weights");
    memset(f->wpacked, 0, (size_t)bytes);
    for (uint32_t o = 0; o < oc; o++) {
        float *panel = f->wpacked + (size_t)(o / nr) * k * nr + o % nr;
        for (uint32_t ch = 0; ch < ic; ch++)
            for (uint32_t i = 0; i < kh; i++)
                for (uint32_t j = 0; j < kw; j++) {
                    size_t src = (((size_t)o * ic + ch) * kh + i) * kw + j;
                    size_t kk = ((size_t)i * kw + j) * ic + ch;
                    copy_f32(wsrc + 4 * src, &panel[kk * nr], 1);
                }
    }
    if (has_bias) {
        const uint8_t *b;
        if (!cur_bytes(c, (size_t)oc * 4, &b))
            return fail(e, BNN_EFORMAT, "parameter block too short");
        copy_f32(b, f->bias, oc);
    } else {
        memset(f->bias, 0, (size_t)oc * 4);
    }
    return BNN_OK;
}

static int parse_conv_f32(errctx *e, cursor *c, uint32_t plen, bnn_layer *L)
{
    bnn_fconv *f = &L->p.fconv;
    uint32_t has_bias = 0;
    int rc;
    if ((rc = read_io(e, c, &f->in_c, &f->out_c)) || (rc = read_geom(e, c, &f->g)) ||
        (rc = read_flag(e, c, "has_bias", &has_bias)) || (rc = need_rank4(e, &L->in_shape)) ||
        (rc = check_io(e, L, f->in_c, f->out_c, 0)))
        return rc;
    uint64_t nw = (uint64_t)f->out_c * f->in_c; /* <= 2^32: no overflow yet */
    if ((rc = expect_len(e, plen, 44, 2, nw * f->g.kh, (uint64_t)4 * f->g.kw,
                         (uint64_t)(has_bias ? f->out_c : 0), (uint64_t)4)))
        return rc;
    if ((rc = geom_out(e, &f->g, &L->in_shape, &L->out_shape)))
        return rc;
    if ((rc = check_depth(e, (uint64_t)f->g.kh * f->g.kw * f->in_c)))
        return rc;
    L->out_shape.c = f->out_c;
    const uint8_t *w;
    /* Length already matches param_len, which lies inside the file. */
    if (!cur_bytes(c, (size_t)(nw * f->g.kh * f->g.kw * 4), &w))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    return fconv_pack(e, L, w, c, has_bias);
}

static int parse_gemm(errctx *e, cursor *c, uint32_t plen, bnn_layer *L)
{
    bnn_fconv *f = &L->p.fconv;
    uint32_t has_bias = 0;
    int rc;
    if ((rc = read_io(e, c, &f->in_c, &f->out_c)) ||
        (rc = read_flag(e, c, "has_bias", &has_bias)))
        return rc;
    const bnn_shape *in = &L->in_shape;
    if (in->rank == 4 && (in->h != 1 || in->w != 1))
        return fail(e, BNN_EFORMAT, "rank-4 input must have H = W = 1, got %ux%u", in->h,
                    in->w);
    if ((rc = check_io(e, L, f->in_c, f->out_c, 1)))
        return rc;
    if ((rc = expect_len(e, plen, 12, 2, (uint64_t)f->out_c * f->in_c, (uint64_t)4,
                         (uint64_t)(has_bias ? f->out_c : 0), (uint64_t)4)))
        return rc;
    f->g = (bnn_geom){1, 1, 1, 1, 0, 0, 0, 0};
    L->out_shape = (bnn_shape){2, in->n, f->out_c, 1, 1};
    const uint8_t *w;
    if (!cur_bytes(c, (size_t)f->out_c * f->in_c * 4, &w))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    return fconv_pack(e, L, w, c, has_bias);
}

static int parse_conv_bin(errctx *e, cursor *c, uint32_t plen, bnn_layer *L)
{
    bnn_bconv *b = &L->p.bconv;
    uint32_t pad_mode = 0, has_thr = 0;
    int rc;
    if ((rc = read_io(e, c, &b->in_c, &b->out_c)) || (rc = read_geom(e, c, &b->g)))
        return rc;
    if (!cur_u32(c, &pad_mode))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    if (pad_mode != 0)
        return fail(e, BNN_EFORMAT, "pad_mode %u unsupported (v1 has only 0 = zero padding)",
                    pad_mode);
    if ((rc = read_flag(e, c, "has_threshold", &has_thr)) ||
        (rc = need_rank4(e, &L->in_shape)) || (rc = check_io(e, L, b->in_c, b->out_c, 0)))
        return rc;
    b->words = (b->in_c + 63) / 64;
    const uint64_t taps = (uint64_t)b->g.kh * b->g.kw; /* <= 2^32 */
    uint64_t nbits_words;
    if (!bnn_mul_u64(taps, (uint64_t)b->out_c * b->words, &nbits_words))
        return fail(e, BNN_EFORMAT, "weight size overflows");
    if ((rc = expect_len(e, plen, 48, 3, (uint64_t)(has_thr ? b->in_c : 0), (uint64_t)4,
                         nbits_words, (uint64_t)8, (uint64_t)b->out_c * 2, (uint64_t)4)))
        return rc;
    if ((rc = geom_out(e, &b->g, &L->in_shape, &L->out_shape)))
        return rc;
    if ((rc = check_depth(e, taps * b->in_c)))
        return rc;
    L->out_shape.c = b->out_c;
    if (has_thr && !(b->threshold = read_f32_array(c, L, b->in_c)))
        return fail(e, BNN_ENOMEM, "out of memory");
    const uint8_t *wb;
    if (!cur_bytes(c, (size_t)nbits_words * 8, &wb))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    uint64_t *wbits = b->w[BNN_WLAYOUT_FILE] = param_alloc(L, (size_t)nbits_words * 8);
    b->wpop = param_alloc(L, (size_t)(taps * b->out_c) * 4);
    if (!wbits || !b->wpop)
        return fail(e, BNN_ENOMEM, "out of memory for weights");
    const uint64_t tail_mask = b->in_c % 64 ? ~0ull << (b->in_c % 64) : 0;
    for (size_t t = 0; t < taps * b->out_c; t++) {
        int32_t pop = 0;
        for (uint32_t wd = 0; wd < b->words; wd++) {
            const uint8_t *p = wb + 8 * (t * b->words + wd);
            uint64_t v = (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
            if (wd == b->words - 1 && (v & tail_mask))
                return fail(e, BNN_EFORMAT,
                            "weight bits set beyond in_c (output channel %zu, tap %zu)",
                            (size_t)(t / taps), (size_t)(t % taps));
            wbits[t * b->words + wd] = v;
            pop += __builtin_popcountll(v);
        }
        b->wpop[(t % taps) * b->out_c + t / taps] = pop; /* t = o * taps + tap */
    }
    if (!(b->scale = read_f32_array(c, L, b->out_c)) ||
        !(b->bias = read_f32_array(c, L, b->out_c)))
        return fail(e, BNN_ENOMEM, "out of memory");
    return BNN_OK;
}

static int parse_affine(errctx *e, cursor *c, uint32_t plen, bnn_layer *L)
{
    bnn_affine *a = &L->p.affine;
    int rc;
    if (!cur_u32(c, &a->c))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    if (a->c != L->in_shape.c)
        return fail(e, BNN_EFORMAT, "c %u does not match input channels %u", a->c,
                    L->in_shape.c);
    if ((rc = expect_len(e, plen, 4, 1, (uint64_t)a->c * 2, (uint64_t)4)))
        return rc;
    if (!(a->scale = read_f32_array(c, L, a->c)) || !(a->bias = read_f32_array(c, L, a->c)))
        return fail(e, BNN_ENOMEM, "out of memory");
    L->out_shape = L->in_shape;
    return BNN_OK;
}

static int parse_clip(errctx *e, cursor *c, uint32_t plen, bnn_layer *L)
{
    int rc;
    if ((rc = expect_len(e, plen, 8, 0)))
        return rc;
    const uint8_t *b;
    if (!cur_bytes(c, 8, &b))
        return fail(e, BNN_EFORMAT, "parameter block too short");
    copy_f32(b, &L->p.clip.lo, 1);
    copy_f32(b + 4, &L->p.clip.hi, 1);
    if (isnan(L->p.clip.lo) || isnan(L->p.clip.hi) || L->p.clip.lo > L->p.clip.hi)
        return fail(e, BNN_EFORMAT, "bad clip range [%g, %g]", (double)L->p.clip.lo,
                    (double)L->p.clip.hi);
    L->out_shape = L->in_shape;
    return BNN_OK;
}

static int parse_pool(errctx *e, cursor *c, uint32_t plen, bnn_layer *L, int avg)
{
    int rc;
    if ((rc = expect_len(e, plen, avg ? 36 : 32, 0)))
        return rc;
    bnn_geom *g = &L->p.pool.g;
    if ((rc = read_geom(e, c, g)))
        return rc;
    if (avg && (rc = read_flag(e, c, "count_include_pad", &L->p.pool.count_include_pad)))
        return rc;
    if ((rc = need_rank4(e, &L->in_shape)))
        return rc;
    /* As ONNX requires: then every window overlaps the image, so no window is empty. */
    if (g->pt >= g->kh || g->pb >= g->kh || g->pl >= g->kw || g->pr >= g->kw)
        return fail(e, BNN_EFORMAT, "pool padding must be smaller than the kernel");
    if ((rc = geom_out(e, g, &L->in_shape, &L->out_shape)))
        return rc;
    L->out_shape.c = L->in_shape.c;
    return BNN_OK;
}

static int parse_params(errctx *e, cursor *c, uint32_t plen, bnn_layer *L)
{
    const bnn_shape *in = &L->in_shape;
    int rc;
    switch (L->op) {
    case OP_CONV2D_F32:
        return parse_conv_f32(e, c, plen, L);
    case OP_CONV2D_BIN:
        return parse_conv_bin(e, c, plen, L);
    case OP_AFFINE:
        return parse_affine(e, c, plen, L);
    case OP_CLIP:
        return parse_clip(e, c, plen, L);
    case OP_MAXPOOL:
        return parse_pool(e, c, plen, L, 0);
    case OP_AVGPOOL:
        return parse_pool(e, c, plen, L, 1);
    case OP_GEMM:
        return parse_gemm(e, c, plen, L);
    case OP_GLOBAL_AVGPOOL:
        if ((rc = expect_len(e, plen, 0, 0)) || (rc = need_rank4(e, in)))
            return rc;
        L->out_shape = (bnn_shape){4, in->n, in->c, 1, 1};
        return BNN_OK;
    case OP_ADD:
        if ((rc = expect_len(e, plen, 0, 0)))
            return rc;
        L->out_shape = L->in_shape;
        return BNN_OK;
    case OP_FLATTEN:
        if ((rc = expect_len(e, plen, 0, 0)))
            return rc;
        if (in->rank == 2) {
            L->out_shape = *in;
            return BNN_OK;
        }
        {
            uint64_t f = (uint64_t)in->c * in->h * in->w; /* <= 2^31 (element limit) */
            if (f > BNN_MAX_DIM)
                return fail(e, BNN_EFORMAT, "flattened size %llu exceeds dimension limit %u",
                            (unsigned long long)f, BNN_MAX_DIM);
            L->out_shape = (bnn_shape){2, in->n, (uint32_t)f, 1, 1};
        }
        return BNN_OK;
    default:
        return fail(e, BNN_EFORMAT, "unknown op");
    }
}

/* ------------------------------------------------------------------ model */

static void free_layer(bnn_layer *L)
{
    free(L->name);
    switch (L->op) {
    case OP_CONV2D_F32:
    case OP_GEMM:
        bnn_aligned_free(L->p.fconv.bias);
        bnn_aligned_free(L->p.fconv.wpacked);
        break;
    case OP_CONV2D_BIN:
        bnn_aligned_free(L->p.bconv.threshold);
        for (int i = 0; i < BNN_WLAYOUTS; i++)
            bnn_aligned_free(L->p.bconv.w[i]);
        bnn_aligned_free(L->p.bconv.wpop);
        bnn_aligned_free(L->p.bconv.scale);
        bnn_aligned_free(L->p.bconv.bias);
        break;
    case OP_AFFINE:
        bnn_aligned_free(L->p.affine.scale);
        bnn_aligned_free(L->p.affine.bias);
        break;
    default:
        break;
    }
}

void bnn_model_free(bnn_model *m)
{
    if (!m)
        return;
    if (m->layers)
        for (uint32_t i = 0; i < m->n_layers; i++)
            free_layer(&m->layers[i]);
    free(m->layers);
    free(m->shapes);
    free(m->meta);
    free(m);
}

static int parse_layer(errctx *e, cursor *c, bnn_model *m, uint8_t *defined, uint32_t idx)
{
    bnn_layer *L = &m->layers[idx];
    uint32_t op, n_in, name_len, plen;
    const uint8_t *name, *params;
    e->layer = idx;
    e->op = "?";
    snprintf(e->name, sizeof e->name, "?");
    if (!cur_u32(c, &op) || !cur_u32(c, &n_in))
        return fail(e, BNN_EFORMAT, "truncated layer record at byte %zu", c->pos);
    if (op < 1 || op > 10)
        return fail(e, BNN_EFORMAT, "unknown op code %u", op);
    L->op = op;
    e->op = bnn_op_name(op);
    const uint32_t want_in = op == OP_ADD ? 2 : 1;
    if (n_in != want_in)
        return fail(e, BNN_EFORMAT, "n_inputs is %u, the op takes %u", n_in, want_in);
    L->n_in = n_in;
    for (uint32_t i = 0; i < n_in; i++)
        if (!cur_u32(c, &L->in[i]))
            return fail(e, BNN_EFORMAT, "truncated layer record at byte %zu", c->pos);
    if (!cur_u32(c, &L->out) || !cur_u32(c, &name_len))
        return fail(e, BNN_EFORMAT, "truncated layer record at byte %zu", c->pos);
    if (name_len > BNN_MAX_NAME)
        return fail(e, BNN_EFORMAT, "name_len %u exceeds %u", name_len, BNN_MAX_NAME);
    if (!cur_bytes(c, name_len, &name))
        return fail(e, BNN_EFORMAT, "truncated layer name at byte %zu", c->pos);
    set_err_name(e, name, name_len);
    if (!(L->name = malloc((size_t)name_len + 1)))
        return fail(e, BNN_ENOMEM, "out of memory");
    memcpy(L->name, name, name_len);
    L->name[name_len] = '\0';
    if (!cur_u32(c, &plen))
        return fail(e, BNN_EFORMAT, "truncated layer record at byte %zu", c->pos);
    if (!cur_bytes(c, plen, &params))
        return fail(e, BNN_EFORMAT, "param_len %u runs past the end of the file", plen);
    for (uint32_t i = 0; i < n_in; i++) {
        if (L->in[i] >= m->n_values)
            return fail(e, BNN_EFORMAT, "input value id %u out of range (n_values %u)",
                        L->in[i], m->n_values);
        if (!defined[L->in[i]])
            return fail(e, BNN_EFORMAT, "input value %u is not defined yet", L->in[i]);
    }
    if (L->out >= m->n_values)
        return fail(e, BNN_EFORMAT, "output value id %u out of range (n_values %u)", L->out,
                    m->n_values);
    if (defined[L->out])
        return fail(e, BNN_EFORMAT, "output value %u is already defined", L->out);
    L->in_shape = m->shapes[L->in[0]];
    if (op == OP_ADD) {
        const bnn_shape *a = &m->shapes[L->in[0]], *b = &m->shapes[L->in[1]];
        if (a->rank != b->rank || a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
            return fail(e, BNN_EFORMAT, "inputs have different shapes");
    }
    cursor pc = {params, plen, 0};
    int rc = parse_params(e, &pc, plen, L);
    if (rc)
        return rc;
    if (pc.pos != plen) /* expect_len makes this unreachable; kept as a tripwire */
        return fail(e, BNN_EFORMAT, "%zu unused parameter bytes", plen - pc.pos);
    if ((rc = check_shape(e, &L->out_shape, "output")))
        return rc;
    m->shapes[L->out] = L->out_shape;
    defined[L->out] = 1;
    return BNN_OK;
}

static int parse_model(errctx *e, const uint8_t *data, size_t size, bnn_model **out)
{
    cursor c = {data, size, 0};
    const uint8_t *magic, *meta;
    uint32_t h[6], rank, dims[4], meta_len;
    if (!cur_bytes(&c, 4, &magic) || memcmp(magic, "BNNB", 4) != 0)
        return fail(e, BNN_EFORMAT, "not a bnnbench native model (bad magic)");
    for (int i = 0; i < 6; i++)
        if (!cur_u32(&c, &h[i]))
            return fail(e, BNN_EFORMAT, "truncated header");
    if (h[0] != BNN_FORMAT_VERSION)
        return fail(e, BNN_EFORMAT, "unsupported format version %u (this engine reads %d)",
                    h[0], BNN_FORMAT_VERSION);
    if (h[1] != 0)
        return fail(e, BNN_EFORMAT, "flags must be 0, got 0x%x", h[1]);
    const uint32_t n_values = h[2], n_layers = h[3], input_id = h[4], output_id = h[5];
    if (n_values < 1 || n_values > BNN_MAX_VALUES)
        return fail(e, BNN_EFORMAT, "n_values %u (allowed 1..%u)", n_values, BNN_MAX_VALUES);
    if (n_layers > BNN_MAX_LAYERS)
        return fail(e, BNN_EFORMAT, "n_layers %u exceeds %u", n_layers, BNN_MAX_LAYERS);
    if (input_id >= n_values || output_id >= n_values)
        return fail(e, BNN_EFORMAT, "input_id %u / output_id %u out of range (n_values %u)",
                    input_id, output_id, n_values);
    if (!cur_u32(&c, &rank))
        return fail(e, BNN_EFORMAT, "truncated header");
    for (int i = 0; i < 4; i++)
        if (!cur_u32(&c, &dims[i]))
            return fail(e, BNN_EFORMAT, "truncated header");
    if (rank != 4 && rank != 2)
        return fail(e, BNN_EFORMAT, "input_rank %u (must be 4 or 2)", rank);
    if (rank == 2 && (dims[2] != 1 || dims[3] != 1))
        return fail(e, BNN_EFORMAT, "rank-2 input must have trailing dims 1, got %u, %u",
                    dims[2], dims[3]);
    bnn_shape in = {rank, dims[0], dims[1], dims[2], dims[3]};
    int rc = check_shape(e, &in, "input");
    if (rc)
        return rc;
    if (!cur_u32(&c, &meta_len))
        return fail(e, BNN_EFORMAT, "truncated header");
    if (meta_len > BNN_MAX_META)
        return fail(e, BNN_EFORMAT, "meta_len %u exceeds 1 MiB", meta_len);
    if (!cur_bytes(&c, meta_len, &meta))
        return fail(e, BNN_EFORMAT, "meta_len %u runs past the end of the file", meta_len);
    /* Smallest layer record is 6 u32 (op, n_inputs, input, output, name_len, param_len). */
    if ((uint64_t)n_layers * 24 > cur_left(&c))
        return fail(e, BNN_EFORMAT, "file too short for %u layers", n_layers);

    bnn_model *m = calloc(1, sizeof *m);
    uint8_t *defined = calloc(n_values, 1);
    if (!m || !defined) {
        free(m);
        free(defined);
        return fail(e, BNN_ENOMEM, "out of memory");
    }
    m->n_values = n_values;
    m->n_layers = n_layers;
    m->input_id = input_id;
    m->output_id = output_id;
    m->input_shape = in;
    m->meta_len = meta_len;
    m->shapes = calloc(n_values, sizeof *m->shapes);
    m->layers = calloc(n_layers ? n_layers : 1, sizeof *m->layers);
    m->meta = malloc(meta_len ? meta_len : 1);
    if (!m->shapes || !m->layers || !m->meta) {
        rc = fail(e, BNN_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(m->meta, meta, meta_len);
    m->shapes[input_id] = in;
    defined[input_id] = 1;
    for (uint32_t i = 0; i < n_layers; i++)
        if ((rc = parse_layer(e, &c, m, defined, i)))
            goto out;
    e->layer = UINT32_MAX;
    if (cur_left(&c) != 0) {
        rc = fail(e, BNN_EFORMAT, "%zu trailing bytes after the last layer", cur_left(&c));
        goto out;
    }
    if (!defined[output_id]) {
        rc = fail(e, BNN_EFORMAT, "output value %u is never defined", output_id);
        goto out;
    }
out:
    free(defined);
    if (rc) {
        bnn_model_free(m);
        return rc;
    }
    *out = m;
    return BNN_OK;
}

int bnn_model_load_buffer(const void *data, size_t size, bnn_model **out, char *err,
                          size_t errlen)
{
    errctx e = {err, errlen, UINT32_MAX, "", ""};
    if (err && errlen)
        err[0] = '\0';
    if (!out || (!data && size))
        return fail(&e, BNN_EARG, "bad arguments");
    *out = NULL;
    return parse_model(&e, data ? data : "", size, out);
}

int bnn_model_load_file(const char *path, bnn_model **out, char *err, size_t errlen)
{
    errctx e = {err, errlen, UINT32_MAX, "", ""};
    if (err && errlen)
        err[0] = '\0';
    if (!out || !path)
        return fail(&e, BNN_EARG, "bad arguments");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(&e, BNN_EIO, "cannot open %s", path);
    /* Read in chunks rather than trusting ftell: works for pipes and reports directories. */
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    int rc = BNN_OK;
    while (buf) {
        if (len == cap) {
            uint8_t *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                rc = fail(&e, BNN_ENOMEM, "out of memory reading %s", path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                rc = fail(&e, BNN_EIO, "cannot read %s", path);
            break;
        }
    }
    if (!buf)
        rc = fail(&e, BNN_ENOMEM, "out of memory reading %s", path);
    fclose(f);
    if (rc == BNN_OK) {
        /* Exact size: then a sanitizer sees any read past the end of the file's bytes. */
        uint8_t *exact = realloc(buf, len ? len : 1);
        if (exact)
            buf = exact;
        rc = parse_model(&e, buf, len, out);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ kernel layouts */

/* One lock for every model: it is taken only at context creation and by
 * bnn_model_weight_bytes, never on the inference path. */
static pthread_mutex_t prepack_lock = PTHREAD_MUTEX_INITIALIZER;

int bnn_model_prepack(const bnn_model *m, const bnn_kernel_table *k)
{
    const bnn_bconv_prepack *pp = k->bconv_prepack;
    if (!pp)
        return BNN_OK; /* the set reads the file layout, which the loader built */
    int rc = BNN_OK;
    pthread_mutex_lock(&prepack_lock);
    /* The layer array is the model's own memory (m->layers points to non-const layers):
     * the one part of a loaded model that changes, slot by slot, under the lock. A slot
     * goes from NULL to its final value once, before any context that reads it exists. */
    for (uint32_t l = 0; l < m->n_layers && rc == BNN_OK; l++) {
        bnn_layer *L = &m->layers[l];
        bnn_bconv *b = &L->p.bconv;
        if (L->op != OP_CONV2D_BIN || b->w[pp->slot])
            continue;
        const size_t kwords = (size_t)b->g.kh * b->g.kw * b->words;
        /* at most twice the file layout's words: < 2^48 (out_c <= 2^16, kwords <= 2^30;
         * the sets with a layout of their own run on 64-bit CPUs) */
        const size_t words = pp->words(b->out_c, kwords);
        uint64_t *dst = param_alloc(L, words * sizeof *dst);
        if (!dst) {
            rc = BNN_ENOMEM;
            break;
        }
        pp->fill(b->w[BNN_WLAYOUT_FILE], b->out_c, kwords, dst);
        b->w[pp->slot] = dst;
    }
    pthread_mutex_unlock(&prepack_lock);
    return rc;
}

uint64_t bnn_model_weight_bytes(const bnn_model *m)
{
    if (!m)
        return 0;
    uint64_t total = 0;
    pthread_mutex_lock(&prepack_lock);
    for (uint32_t l = 0; l < m->n_layers; l++)
        total += m->layers[l].param_bytes;
    pthread_mutex_unlock(&prepack_lock);
    return total;
}

/* ------------------------------------------------------------------ queries */

static void dims_of(const bnn_shape *s, uint32_t dims[4])
{
    dims[0] = s->n, dims[1] = s->c, dims[2] = s->h, dims[3] = s->w;
    if (s->rank == 2)
        dims[2] = dims[3] = 1;
}

int bnn_model_input_rank(const bnn_model *m)
{
    return m ? (int)m->input_shape.rank : 0;
}
int bnn_model_output_rank(const bnn_model *m)
{
    return m ? (int)m->shapes[m->output_id].rank : 0;
}
void bnn_model_input_dims(const bnn_model *m, uint32_t dims[4])
{
    if (m && dims)
        dims_of(&m->input_shape, dims);
}
void bnn_model_output_dims(const bnn_model *m, uint32_t dims[4])
{
    if (m && dims)
        dims_of(&m->shapes[m->output_id], dims);
}
size_t bnn_model_input_count(const bnn_model *m)
{
    return m ? bnn_shape_count(&m->input_shape) : 0;
}
size_t bnn_model_output_count(const bnn_model *m)
{
    return m ? bnn_shape_count(&m->shapes[m->output_id]) : 0;
}
uint32_t bnn_model_num_layers(const bnn_model *m)
{
    return m ? m->n_layers : 0;
}
int bnn_model_layer_info(const bnn_model *m, uint32_t l, uint32_t *op, uint32_t in_dims[4],
                         uint32_t out_dims[4], uint32_t kernel[2])
{
    if (!m || l >= m->n_layers || !op || !in_dims || !out_dims || !kernel)
        return BNN_EARG;
    const bnn_layer *L = &m->layers[l];
    const bnn_geom *g = NULL;
    if (L->op == OP_CONV2D_F32 || L->op == OP_GEMM)
        g = &L->p.fconv.g;
    else if (L->op == OP_CONV2D_BIN)
        g = &L->p.bconv.g;
    else if (L->op == OP_MAXPOOL || L->op == OP_AVGPOOL)
        g = &L->p.pool.g;
    kernel[0] = g ? g->kh : 1;
    kernel[1] = g ? g->kw : 1;
    const bnn_shape *s[2] = {&L->in_shape, &L->out_shape};
    uint32_t *d[2] = {in_dims, out_dims};
    *op = L->op;
    for (int i = 0; i < 2; i++) {
        d[i][0] = s[i]->n, d[i][1] = s[i]->c, d[i][2] = s[i]->h, d[i][3] = s[i]->w;
    }
    return BNN_OK;
}
const char *bnn_model_metadata(const bnn_model *m, size_t *len)
{
    if (len)
        *len = m ? m->meta_len : 0;
    return m ? m->meta : NULL;
}
