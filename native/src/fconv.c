/* FP32 convolution and GEMM: NHWC im2col fused into the packing of a cache-blocked GEMM.
 *
 * C[M x out_c] = A[M x K] * B[K x out_c] with M = N*OH*OW output pixels and K = kh*kw*in_c
 * ordered (i, j, c), so a kernel row of an NHWC image (kw taps of in_c channels) is one
 * contiguous run of A. B is prepacked at load time into NR-column panels. A task owns a block
 * of mc pixel rows (a whole number of MR panels) and nc output channels; for each KC slice
 * of the depth it packs its rows (im2col happens here, zeros for padded taps: exact zero
 * padding) and sweeps the micro-kernel over the block, so the B panel stays in L1 and the A
 * block in L2.
 *
 * Determinism: every output element is bias + the KC-slice partial sums in slice order,
 * each slice summed by the micro-kernel in k order, whichever tile or task computes it.
 * KC is a constant, so the result does not depend on mc / nc, which are therefore free to
 * shrink when a small layer would otherwise give too few tasks for the threads.
 *
 * A single output row (M = 1: the FC of a batch-1 classifier) is a GEMV: a 6-row tile would
 * waste 5/6 of its FMAs, and the layer is bound by streaming the weights anyway, so it gets
 * a plain loop over the prepacked panels instead (gemv_task).
 *
 * Interior panels skip the packing: when an MR-row panel's windows lie in one output row
 * and wholly inside the image, row i of A is the window at a fixed stride sw * in_c from row
 * 0, and depth k is at a fixed offset koff[k] from a window's top-left, so the direct
 * micro-kernel reads them in place (kernels.h). A padded conv runs as the unpadded conv of
 * a zero-padded copy of its input (bnn_fconv_forward), so only panels that span two output
 * rows are packed: none of a 224x224 stem's at MR 8, about 75 of 2091 at MR 6 (without the
 * copy, the 202 that touch the padding were). Same products in the same order as packed:
 * bit-identical.
 *
 * Where the kernel set has a two-panel micro-kernel (AVX-512: an 8 x 32 tile), each pair of
 * whole NR panels is one tile; the products and their order per output are the same.
 *
 * The bias and a CLIP folded into the layer (fuse.c) are applied by the micro-kernel as it
 * writes its tile: the bias with the first depth slice, the clip after the last one, with
 * the roundings of separate passes (kernels.h); the GEMV adds them per task.
 */
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "layers.h"

#define KC 256       /* depth slice: fixed, it sets the summation order */
#define MC_PANELS 12 /* MR panels per task: 72 rows at MR 6 (A block 72 KiB at KC 256) */
#define NC 128       /* output channels per task at most: a multiple of NR */
#define NR BNN_SGEMM_NR
#define PACKA_FLOATS ((size_t)MC_PANELS * BNN_SGEMM_MR_MAX * KC)

size_t bnn_fconv_scratch_bytes(const bnn_layer *L, const bnn_kernel_table *k)
{
    (void)L;
    /* packed A, an edge tile, then the direct kernel's tap offsets of one depth slice */
    return (PACKA_FLOATS + (size_t)k->sgemm_mr * NR) * sizeof(float) + KC * sizeof(size_t);
}

typedef struct {
    const bnn_exec *ex;
    const bnn_layer *L;
    const bnn_fusion *fz; /* a folded clip (fz->clamp), or NULL */
    const float *x;
    float *y;
    size_t m;        /* rows of C: output pixels */
    size_t mc, nc;   /* rows / channels per task */
    size_t n_blocks; /* channel blocks: task = m block * n_blocks + n block */
} fconv_job;

/* The GEMV's epilogue of a folded CLIP (fuse.c): rows x [n0, n1) of y, row stride no. */
static void clamp_block(const fconv_job *j, size_t m0, size_t rows, size_t n0, size_t n1)
{
    if (!j->fz || !j->fz->clamp)
        return;
    const float lo = j->fz->lo, hi = j->fz->hi;
    const size_t no = j->L->p.fconv.out_c;
    for (size_t r = 0; r < rows; r++) {
        float *y = j->y + (m0 + r) * no;
        for (size_t n = n0; n < n1; n++)
            y[n] = bnn_clip(y[n], lo, hi);
    }
}

static void zero_stride(float *d, size_t n, size_t mr)
{
    for (size_t t = 0; t < n; t++)
        d[t * mr] = 0.0f;
}

/* Where output row m reads the input: its image and the top-left tap (y0, x0). */
typedef struct {
    const float *img;
    long y0, x0;
} win;

/* One row of the im2col matrix, depth [k0, k0 + kc), to d with stride mr. Works a kernel row
 * at a time: the in-bounds taps of a kernel row are one contiguous run of the NHWC input
 * (kw * in_c floats), the out-of-bounds taps at its ends are zeros. */
static inline void pack_row(const bnn_fconv *f, const bnn_shape *in, win w, size_t k0,
                            size_t kc, const size_t mr, float *d)
{
    const size_t C = f->in_c, kw = f->g.kw, row_len = kw * C, kend = k0 + kc;
    const long H = (long)in->h, W = (long)in->w;
    /* in-bounds taps of every kernel row: j in [jlo, jhi) */
    const long jlo = w.x0 < 0 ? -w.x0 : 0;
    long jhi = W - w.x0 < (long)kw ? W - w.x0 : (long)kw;
    if (jhi < jlo)
        jhi = jlo;
    for (size_t ki = k0 / row_len; ki * row_len < kend; ki++) {
        const size_t base = ki * row_len;
        const size_t s0 = base > k0 ? base : k0;
        const size_t s1 = base + row_len < kend ? base + row_len : kend;
        const long iy = w.y0 + (long)ki;
        if (iy < 0 || iy >= H) {
            zero_stride(d + (s0 - k0) * mr, s1 - s0, mr);
            continue;
        }
        /* valid depth range of this kernel row, clipped to the slice */
        size_t v0 = base + (size_t)jlo * C, v1 = base + (size_t)jhi * C;
        v0 = v0 < s0 ? s0 : v0 > s1 ? s1 : v0;
        v1 = v1 < v0 ? v0 : v1 > s1 ? s1 : v1;
        zero_stride(d + (s0 - k0) * mr, v0 - s0, mr);
        /* input offset of depth k: (iy * W + x0) * C + (k - base), >= 0 for valid k */
        const float *s = w.img + (size_t)((iy * W + w.x0) * (long)C + (long)(v0 - base));
        float *dv = d + (v0 - k0) * mr;
        for (size_t t = 0; t < v1 - v0; t++)
            dv[t * mr] = s[t];
        zero_stride(d + (v1 - k0) * mr, s1 - v1, mr);
    }
}

/* dd[t * mr + i] = src[i][t] for t < n, i < mr: a small transpose. With SSE (baseline on
 * x86-64) 4 depth indices at a time: 4x4 transposes of rows 0-3 (and 4-7 for MR 8), rows
 * 4-5 of MR 6 interleaved in pairs; a third of the loads and stores of the scalar loop. */
static inline void copy_lockstep(float *dd, const float *const *src, size_t n, const size_t mr)
{
    size_t t = 0;
#if defined(__SSE2__)
    if (mr == 4 || mr == 6 || mr == 8)
        for (; t + 4 <= n; t += 4) {
            float *o = dd + t * mr;
            for (size_t q = 0; q + 4 <= mr; q += 4) {
                __m128 r0 = _mm_loadu_ps(src[q] + t), r1 = _mm_loadu_ps(src[q + 1] + t);
                __m128 r2 = _mm_loadu_ps(src[q + 2] + t), r3 = _mm_loadu_ps(src[q + 3] + t);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3); /* r0 = rows q..q+3 at t, r1 at t + 1 */
                _mm_storeu_ps(o + q, r0);
                _mm_storeu_ps(o + mr + q, r1);
                _mm_storeu_ps(o + 2 * mr + q, r2);
                _mm_storeu_ps(o + 3 * mr + q, r3);
            }
            if (mr == 6) {
                const __m128 r4 = _mm_loadu_ps(src[4] + t), r5 = _mm_loadu_ps(src[5] + t);
                const __m128 lo = _mm_unpacklo_ps(r4, r5), hi = _mm_unpackhi_ps(r4, r5);
                _mm_storel_pi((__m64 *)(o + 4), lo); /* rows 4, 5 at t */
                _mm_storeh_pi((__m64 *)(o + 10), lo);
                _mm_storel_pi((__m64 *)(o + 16), hi);
                _mm_storeh_pi((__m64 *)(o + 22), hi);
            }
        }
#endif
    for (; t < n; t++)
        for (size_t i = 0; i < mr; i++)
            dd[t * mr + i] = src[i][t];
}

/* Pack rows [m0, m0 + rows) and depth [k0, k0 + kc) of the virtual im2col matrix into
 * MR-row panels laid out [panel][k][MR]; rows past `rows` up to the next multiple of MR are
 * zero. With `direct` non-NULL, a panel the direct kernel can read in place (see the top) is
 * not packed: direct[panel] gets its row 0 window's top-left instead (NULL for the others).
 * Inline with a constant `mr` at each call site (pack_a below), so the strides are
 * constants. A full panel whose windows all lie inside the image horizontally (most of
 * them: all for an unpadded 1x1 conv, ~97% for a 224x224 7x7 stem) is copied with the MR
 * rows in lockstep, MR contiguous stores per depth index from MR source streams, instead of
 * row by row with strided stores: packing is a transpose, and this is its cheap case. */
static inline void pack_a_mr(const fconv_job *j, size_t m0, size_t rows, size_t k0, size_t kc,
                             const size_t mr, float *dst, const float **direct)
{
    const bnn_fconv *f = &j->L->p.fconv;
    const bnn_shape *in = &j->L->in_shape, *out = &j->L->out_shape;
    const size_t C = f->in_c, kw = f->g.kw, row_len = kw * C, kend = k0 + kc;
    const long H = (long)in->h, W = (long)in->w;
    const size_t ohw = (size_t)out->h * out->w;
    /* Pixel coordinates of row m0, then stepped incrementally: no divisions per row. */
    size_t b = m0 / ohw, oy = m0 % ohw / out->w, ox = m0 % out->w;
    win wins[BNN_SGEMM_MR_MAX];
    for (size_t r0 = 0; r0 < rows; r0 += mr) {
        float *d = dst + (r0 / mr) * kc * mr;
        const size_t nrows = rows - r0 < mr ? rows - r0 : mr;
        int inside = nrows == mr;
        for (size_t i = 0; i < nrows; i++) {
            wins[i].img = j->x + b * (size_t)(H * W) * C;
            wins[i].y0 = (long)(oy * f->g.sh) - (long)f->g.pt;
            wins[i].x0 = (long)(ox * f->g.sw) - (long)f->g.pl;
            inside &= wins[i].x0 >= 0 && wins[i].x0 + (long)kw <= W;
            if (++ox == out->w) {
                ox = 0;
                if (++oy == out->h) {
                    oy = 0;
                    b++;
                }
            }
        }
        if (direct) {
            /* one output row (same image and top row, consecutive columns), no padding */
            int in_place = inside && wins[0].y0 >= 0 && wins[0].y0 + (long)f->g.kh <= H;
            for (size_t i = 1; i < nrows && in_place; i++)
                in_place = wins[i].img == wins[0].img && wins[i].y0 == wins[0].y0;
            direct[r0 / mr] =
                in_place ? wins[0].img + (size_t)((wins[0].y0 * W + wins[0].x0) * (long)C) : NULL;
            if (in_place)
                continue;
        }
        if (!inside) {
            for (size_t i = 0; i < nrows; i++)
                pack_row(f, in, wins[i], k0, kc, mr, d + i);
            for (size_t i = nrows; i < mr; i++)
                zero_stride(d + i, kc, mr);
            continue;
        }
        for (size_t ki = k0 / row_len; ki * row_len < kend; ki++) {
            const size_t base = ki * row_len;
            const size_t s0 = base > k0 ? base : k0;
            const size_t s1 = base + row_len < kend ? base + row_len : kend;
            const float *src[BNN_SGEMM_MR_MAX];
            int rows_in = 1;
            for (size_t i = 0; i < mr; i++) {
                const long iy = wins[i].y0 + (long)ki;
                rows_in &= iy >= 0 && iy < H;
                if (rows_in)
                    src[i] = wins[i].img +
                             (size_t)((iy * W + wins[i].x0) * (long)C + (long)(s0 - base));
            }
            float *dd = d + (s0 - k0) * mr;
            if (!rows_in) { /* some window's kernel row is in the vertical padding */
                for (size_t i = 0; i < mr; i++) {
                    const long iy = wins[i].y0 + (long)ki;
                    if (iy < 0 || iy >= H) {
                        zero_stride(dd + i, s1 - s0, mr);
                    } else {
                        const float *s = wins[i].img + (size_t)((iy * W + wins[i].x0) * (long)C +
                                                                (long)(s0 - base));
                        for (size_t t = 0; t < s1 - s0; t++)
                            dd[t * mr + i] = s[t];
                    }
                }
                continue;
            }
            copy_lockstep(dd, src, s1 - s0, mr);
        }
    }
}

static void pack_a(const fconv_job *j, size_t m0, size_t rows, size_t k0, size_t kc,
                   size_t mr, float *dst, const float **direct)
{
    /* one inlined copy per MR of the kernel sets (kernels.h), and 1 for the GEMV, each with
     * its constant MR; any other MR takes the generic copy */
#define PACK_MR(m)                                                                           \
    case m:                                                                                  \
        pack_a_mr(j, m0, rows, k0, kc, m, dst, direct);                                      \
        return;
    switch (mr) {
        PACK_MR(1)
        PACK_MR(4)
        PACK_MR(6)
        PACK_MR(8)
    }
#undef PACK_MR
    pack_a_mr(j, m0, rows, k0, kc, mr, dst, direct);
}

/* koff[t] for depth k0 + t, t < kc: offset of depth (i, j, c) from a window's top-left in
 * the NHWC input, i * W * C + (j * C + c) */
static void tap_offsets(const bnn_layer *L, size_t k0, size_t kc, size_t *koff)
{
    const size_t row_len = (size_t)L->p.fconv.g.kw * L->p.fconv.in_c;
    const size_t row_stride = (size_t)L->in_shape.w * L->p.fconv.in_c;
    for (size_t t = 0; t < kc; t++) {
        const size_t k = k0 + t, i = k / row_len;
        koff[t] = i * row_stride + (k - i * row_len);
    }
}

/* A tile at the edge of C (nrows < MR rows or ncols < NR columns of one panel): the sums
 * into a scratch tile (0 + sum == sum, but for the sign of a zero), then the same (bias or
 * C) + sum and clamp as the micro-kernel's, here. */
static void edge_tile(const bnn_kernel_table *kt, size_t kc, const float *ap, const float *bp,
                      float *tile, float *c, size_t ldc, const float *bias, const float *lim,
                      size_t nrows, size_t ncols)
{
    memset(tile, 0, kt->sgemm_mr * NR * sizeof(float));
    kt->sgemm_ukernel(kc, ap, bp, tile, NR, NULL, NULL);
    for (size_t i = 0; i < nrows; i++)
        for (size_t t = 0; t < ncols; t++) {
            const float v = (bias ? bias[t] : c[i * ldc + t]) + tile[i * NR + t];
            c[i * ldc + t] = lim ? bnn_clip(v, lim[0], lim[1]) : v;
        }
}

static void fconv_task(void *arg, size_t task, int thread)
{
    const fconv_job *j = arg;
    const bnn_fconv *f = &j->L->p.fconv;
    const bnn_kernel_table *kt = j->ex->k;
    const size_t mr = kt->sgemm_mr, no = f->out_c, K = f->k;
    const size_t mb = task / j->n_blocks, nb = task % j->n_blocks;
    const size_t m0 = mb * j->mc, rows = j->m - m0 < j->mc ? j->m - m0 : j->mc;
    const size_t n0 = nb * j->nc, n1 = n0 + j->nc < no ? n0 + j->nc : no;
    float *packa = j->ex->tscratch[thread];
    float *tile = packa + PACKA_FLOATS;
    size_t *koff = (size_t *)(tile + mr * NR);
    const float *direct[MC_PANELS];
    /* in place only where every tile of the panel is a full one (edge tiles go through the
     * packed scratch tile) */
    const int allow_direct = (n1 - n0) % NR == 0;
    const size_t a_rs = (size_t)f->g.sw * f->in_c;

    /* a folded clip, applied by the micro-kernel on the last depth slice */
    const float clip[2] = {j->fz ? j->fz->lo : 0.0f, j->fz ? j->fz->hi : 0.0f};
    const float *lim_all = j->fz && j->fz->clamp ? clip : NULL;
    for (size_t k0 = 0; k0 < K; k0 += KC) {
        const size_t kc = K - k0 < KC ? K - k0 : KC;
        const int first = k0 == 0;
        const float *lim = k0 + kc == K ? lim_all : NULL;
        pack_a(j, m0, rows, k0, kc, mr, packa, allow_direct ? direct : NULL);
        if (allow_direct)
            tap_offsets(j->L, k0, kc, koff);
        for (size_t n = n0; n < n1;) {
            const float *bp = f->wpacked + (n / NR) * K * NR + k0 * NR;
            const float *bias = first ? f->bias + n : NULL;
            /* two whole panels per tile where the set has that wider kernel (kernels.h) */
            const size_t np = kt->sgemm_ukernel2 && n1 - n >= 2 * NR ? 2 : 1;
            const size_t ncols = n1 - n < NR ? n1 - n : NR;
            for (size_t r = 0; r < rows; r += mr) {
                const float *ap = packa + (r / mr) * kc * mr;
                float *c = j->y + (m0 + r) * no + n;
                const size_t nrows = rows - r < mr ? rows - r : mr;
                if (allow_direct && direct[r / mr]) {
                    if (np == 2)
                        kt->sgemm_ukernel2_direct(kc, direct[r / mr], koff, a_rs, bp, K * NR, c,
                                                  no, bias, lim);
                    else
                        kt->sgemm_ukernel_direct(kc, direct[r / mr], koff, a_rs, bp, c, no,
                                                 bias, lim);
                } else if (nrows == mr && ncols == NR) {
                    if (np == 2)
                        kt->sgemm_ukernel2(kc, ap, bp, K * NR, c, no, bias, lim);
                    else
                        kt->sgemm_ukernel(kc, ap, bp, c, no, bias, lim);
                } else {
                    for (size_t p = 0; p < np; p++) /* ncols == NR when np == 2 */
                        edge_tile(kt, kc, ap, bp + p * K * NR, tile, c + p * NR, no,
                                  bias ? bias + p * NR : NULL, lim, nrows, ncols);
                }
            }
            n += np * NR;
        }
    }
}

/* acc[NR] = sum over k < kc of a[k] * b[k][:] for one prepacked NR-column panel. Two
 * accumulator sets (even / odd k, added at the end) halve the add dependency chain. GCC /
 * Clang generic vectors, so the baseline ISA (SSE2 on x86-64) does 4 columns per op; that
 * keeps up with the weight stream, which bounds a GEMV. */
#if defined(__GNUC__) || defined(__clang__)
typedef float v4f __attribute__((vector_size(16)));
static void gemv_panel(size_t kc, const float *a, const float *b, float *acc)
{
    v4f s0[NR / 4], s1[NR / 4];
    for (int v = 0; v < NR / 4; v++)
        s0[v] = s1[v] = (v4f){0, 0, 0, 0};
    size_t k = 0;
    for (; k + 2 <= kc; k += 2, b += 2 * NR) {
        const float a0 = a[k], a1 = a[k + 1];
        for (int v = 0; v < NR / 4; v++) {
            v4f b0, b1;
            memcpy(&b0, b + 4 * v, sizeof b0);
            memcpy(&b1, b + NR + 4 * v, sizeof b1);
            s0[v] += a0 * b0;
            s1[v] += a1 * b1;
        }
    }
    for (int v = 0; v < NR / 4; v++) {
        if (k < kc) {
            v4f b0;
            memcpy(&b0, b + 4 * v, sizeof b0);
            s0[v] += a[k] * b0;
        }
        s0[v] += s1[v];
        memcpy(acc + 4 * v, &s0[v], sizeof s0[v]);
    }
}
#else
static void gemv_panel(size_t kc, const float *a, const float *b, float *acc)
{
    float s0[NR] = {0}, s1[NR] = {0};
    size_t k = 0;
    for (; k + 2 <= kc; k += 2)
        for (int t = 0; t < NR; t++) {
            s0[t] += a[k] * b[k * NR + t];
            s1[t] += a[k + 1] * b[(k + 1) * NR + t];
        }
    for (int t = 0; t < NR; t++)
        acc[t] = (k < kc ? s0[t] + a[k] * b[k * NR + t] : s0[t]) + s1[t];
}
#endif

/* One output row (M = 1), channels [n0, n1): y += a * B per KC slice and NR panel, in
 * fixed order: independent of the thread count. */
static void gemv_task(void *arg, size_t task, int thread)
{
    const fconv_job *j = arg;
    const bnn_fconv *f = &j->L->p.fconv;
    const size_t no = f->out_c, K = f->k;
    const size_t n0 = task * j->nc, n1 = n0 + j->nc < no ? n0 + j->nc : no;
    float *a = j->ex->tscratch[thread];

    memcpy(j->y + n0, f->bias + n0, (n1 - n0) * sizeof(float));
    for (size_t k0 = 0; k0 < K; k0 += KC) {
        const size_t kc = K - k0 < KC ? K - k0 : KC;
        pack_a(j, 0, 1, k0, kc, 1, a, NULL);
        for (size_t n = n0; n < n1; n += NR) {
            float acc[NR];
            gemv_panel(kc, a, f->wpacked + (n / NR) * K * NR + k0 * NR, acc);
            const size_t ncols = n1 - n < NR ? n1 - n : NR;
            for (size_t t = 0; t < ncols; t++)
                j->y[n + t] += acc[t];
        }
    }
    clamp_block(j, 0, 1, n0, n1);
}

uint64_t bnn_fconv_padded_floats(const bnn_layer *L)
{
    const bnn_geom *g = &L->p.fconv.g;
    const bnn_shape *in = &L->in_shape;
    if (L->op != OP_CONV2D_F32 || (g->pt | g->pl | g->pb | g->pr) == 0)
        return 0;
    const uint64_t n = (uint64_t)in->n * ((uint64_t)in->h + g->pt + g->pb) *
                       ((uint64_t)in->w + g->pl + g->pr) * L->p.fconv.in_c;
    return n <= (1ull << 31) ? n : 0; /* absurd pads: pack as before */
}

typedef struct {
    const bnn_layer *L;
    const float *x;
    float *xp;
    int nchw; /* x is the model's NCHW input (fuse.c, pattern 4), else NHWC */
} pad_job;

/* One image row of an NCHW input as an NHWC row: d[x * C + c] = s[c * plane + x]. Inlined
 * with C = 3 for an RGB input: whole pixels of constant size. */
static inline __attribute__((always_inline)) void nchw_row(const float *s, size_t plane,
                                                           size_t w, const size_t C, float *d)
{
    for (size_t x = 0; x < w; x++)
        for (size_t c = 0; c < C; c++)
            d[x * C + c] = s[c * plane + x];
}

/* Row `task` (image n, padded row r) of the zero-padded copy. */
static void pad_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const pad_job *j = arg;
    const bnn_geom *g = &j->L->p.fconv.g;
    const bnn_shape *in = &j->L->in_shape;
    const size_t C = j->L->p.fconv.in_c, hp = (size_t)in->h + g->pt + g->pb;
    const size_t wp = (size_t)in->w + g->pl + g->pr, n = task / hp, r = task % hp;
    float *d = j->xp + task * wp * C;
    if (r < g->pt || r >= g->pt + in->h) {
        memset(d, 0, wp * C * sizeof(float));
        return;
    }
    memset(d, 0, (size_t)g->pl * C * sizeof(float));
    const size_t y = r - g->pt, plane = (size_t)in->h * in->w;
    if (!j->nchw)
        memcpy(d + (size_t)g->pl * C, j->x + ((n * in->h) + y) * in->w * C,
               (size_t)in->w * C * sizeof(float));
    else if (C == 3)
        nchw_row(j->x + n * C * plane + y * in->w, plane, in->w, 3, d + (size_t)g->pl * C);
    else
        nchw_row(j->x + n * C * plane + y * in->w, plane, in->w, C, d + (size_t)g->pl * C);
    memset(d + ((size_t)g->pl + in->w) * C, 0, (size_t)g->pr * C * sizeof(float));
}

void bnn_fconv_forward(const bnn_exec *ex, const bnn_layer *L, const bnn_fusion *fz,
                       const float *x, float *y)
{
    const uint64_t padded = bnn_fconv_padded_floats(L);
    if (padded && ex->padded) {
        /* A padded conv runs as the unpadded conv of a zero-padded copy of its input: then
         * every panel inside one output row is read in place by the direct kernel, instead
         * of packing the ~10-20% of a stem's panels that touch the padding through the slow
         * per-row path; the copy costs one pass over the input. The zeros are the ones
         * packing would insert, in the same k order: the outputs are bit-identical. */
        bnn_layer Lp = *L;
        Lp.in_shape.h += L->p.fconv.g.pt + L->p.fconv.g.pb;
        Lp.in_shape.w += L->p.fconv.g.pl + L->p.fconv.g.pr;
        Lp.p.fconv.g.pt = Lp.p.fconv.g.pl = Lp.p.fconv.g.pb = Lp.p.fconv.g.pr = 0;
        pad_job pj = {L, x, ex->padded, fz && fz->nchw_in};
        bnn_pool_parallel_for(ex->pool, (size_t)L->in_shape.n * Lp.in_shape.h, pad_task, &pj);
        bnn_exec e2 = *ex;
        e2.padded = NULL;
        bnn_fconv_forward(&e2, &Lp, fz, ex->padded, y);
        return;
    }
    const bnn_shape *out = &L->out_shape;
    const size_t mr = ex->k->sgemm_mr, no = L->p.fconv.out_c;
    const size_t threads = (size_t)bnn_pool_threads(ex->pool);
    fconv_job j = {ex, L, fz, x, y, (size_t)out->n * out->h * out->w, MC_PANELS * mr, NC, 0};
    /* Small layers: shrink the blocks (channels first, they cost the kernel nothing) until
     * there are about two tasks per thread, for load balance on a busy machine. */
    const size_t want = threads > 1 ? 2 * threads : 1;
#define TASKS(mc, nc) (((j.m + (mc)-1) / (mc)) * ((no + (nc)-1) / (nc)))
    while (j.nc > NR && TASKS(j.mc, j.nc) < want)
        j.nc /= 2;
    while (j.mc > 2 * mr && TASKS(j.mc, j.nc) < want)
        j.mc = (j.mc / mr + 1) / 2 * mr;
#undef TASKS
    j.n_blocks = (no + j.nc - 1) / j.nc;
    if (j.m == 1) {
        bnn_pool_parallel_for(ex->pool, j.n_blocks, gemv_task, &j);
        return;
    }
    const size_t m_blocks = (j.m + j.mc - 1) / j.mc;
    bnn_pool_parallel_for(ex->pool, m_blocks * j.n_blocks, fconv_task, &j);
}
