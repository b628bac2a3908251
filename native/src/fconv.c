/* FP32 convolution and GEMM: NHWC im2col fused into the packing of a cache-blocked GEMM.
 *
 * C[M x out_c] = A[M x K] * B[K x out_c] with M = N*OH*OW output pixels and K = kh*kw*in_c
 * ordered (i, j, c), so a kernel row of an NHWC image is a contiguous run of A. B is
 * prepacked at load time into NR-column panels. A task owns a block of MC pixel rows and NC
 * output channels; for each KC slice of the depth it packs its rows (im2col happens here,
 * zeros for padded taps: exact zero padding) and sweeps the micro-kernel over the block, so
 * the B panel stays in L1 and the A block in L2. The depth is always summed in the same
 * order, so the output does not depend on the thread count.
 */
#include <string.h>

#include "layers.h"

#define MC 64  /* pixel rows per task (the last MR panel may run past it, zero-filled) */
#define PACKA_FLOATS ((size_t)(MC + BNN_SGEMM_MR_MAX) * KC)
#define KC 256 /* depth slice */
#define NC 128 /* output channels per task: a multiple of NR */
#define NR BNN_SGEMM_NR

size_t bnn_fconv_scratch_bytes(const bnn_layer *L, const bnn_kernel_table *k)
{
    (void)L;
    return (PACKA_FLOATS + (size_t)k->sgemm_mr * NR) * sizeof(float);
}

typedef struct {
    const bnn_exec *ex;
    const bnn_layer *L;
    const float *x;
    float *y;
    size_t m, n_blocks;
} fconv_job;

/* Pack rows [m0, m0 + rows) and depth [k0, k0 + kc) of the virtual im2col matrix into
 * MR-row panels laid out [panel][k][MR]; rows past `rows` are zero. */
static void pack_a(const fconv_job *j, size_t m0, size_t rows, size_t k0, size_t kc,
                   uint32_t mr, float *dst)
{
    const bnn_fconv *f = &j->L->p.fconv;
    const bnn_shape *in = &j->L->in_shape, *out = &j->L->out_shape;
    const size_t C = f->in_c, ohw = (size_t)out->h * out->w;
    const size_t padded_rows = (rows + mr - 1) / mr * mr;
    for (size_t r = 0; r < padded_rows; r++) {
        float *d = dst + (r / mr) * kc * mr + r % mr;
        if (r >= rows) {
            for (size_t k = 0; k < kc; k++)
                d[k * mr] = 0.0f;
            continue;
        }
        const size_t m = m0 + r, b = m / ohw, rem = m % ohw;
        const long y0 = (long)(rem / out->w) * f->g.sh - (long)f->g.pt;
        const long x0 = (long)(rem % out->w) * f->g.sw - (long)f->g.pl;
        const float *img = j->x + (size_t)b * in->h * in->w * C;
        /* Walk the depth run by run (one kernel tap's channels each) with incremental
         * indices: with few channels (an RGB stem) divisions per run would dominate. */
        size_t c = k0 % C, tap = k0 / C;
        long ti = (long)(tap / f->g.kw), tj = (long)(tap % f->g.kw);
        size_t k = k0;
        const size_t kend = k0 + kc;
        while (k < kend) {
            const size_t run = (C - c < kend - k) ? C - c : kend - k;
            const long iy = y0 + ti, ix = x0 + tj;
            float *dd = d + (k - k0) * mr;
            if (iy < 0 || iy >= (long)in->h || ix < 0 || ix >= (long)in->w) {
                for (size_t t = 0; t < run; t++)
                    dd[t * mr] = 0.0f;
            } else {
                const float *s = img + ((size_t)iy * in->w + (size_t)ix) * C + c;
                for (size_t t = 0; t < run; t++)
                    dd[t * mr] = s[t];
            }
            k += run;
            c = 0;
            if (++tj == (long)f->g.kw) {
                tj = 0;
                ti++;
            }
        }
    }
}

static void fconv_task(void *arg, size_t task, int thread)
{
    const fconv_job *j = arg;
    const bnn_fconv *f = &j->L->p.fconv;
    const bnn_kernel_table *kt = j->ex->k;
    const uint32_t mr = kt->sgemm_mr;
    const size_t no = f->out_c, K = f->k;
    const size_t mb = task / j->n_blocks, nb = task % j->n_blocks;
    const size_t m0 = mb * MC, rows = j->m - m0 < MC ? j->m - m0 : MC;
    const size_t n0 = nb * NC, n1 = n0 + NC < no ? n0 + NC : no;
    float *packa = j->ex->tscratch[thread];
    float *tile = packa + PACKA_FLOATS;

    for (size_t r = 0; r < rows; r++)
        memcpy(j->y + (m0 + r) * no + n0, f->bias + n0, (n1 - n0) * sizeof(float));
    for (size_t k0 = 0; k0 < K; k0 += KC) {
        const size_t kc = K - k0 < KC ? K - k0 : KC;
        pack_a(j, m0, rows, k0, kc, mr, packa);
        for (size_t n = n0; n < n1; n += NR) {
            const float *bp = f->wpacked + (n / NR) * K * NR + k0 * NR;
            const size_t ncols = n1 - n < NR ? n1 - n : NR;
            for (size_t r = 0; r < rows; r += mr) {
                const float *ap = packa + (r / mr) * kc * mr;
                float *c = j->y + (m0 + r) * no + n;
                const size_t nrows = rows - r < mr ? rows - r : mr;
                if (nrows == mr && ncols == NR) {
                    kt->sgemm_ukernel(kc, ap, bp, c, no);
                } else {
                    memset(tile, 0, (size_t)mr * NR * sizeof(float));
                    kt->sgemm_ukernel(kc, ap, bp, tile, NR);
                    for (size_t i = 0; i < nrows; i++)
                        for (size_t t = 0; t < ncols; t++)
                            c[i * no + t] += tile[i * NR + t];
                }
            }
        }
    }
}

void bnn_fconv_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y)
{
    const bnn_shape *out = &L->out_shape;
    fconv_job j = {ex, L, x, y, (size_t)out->n * out->h * out->w,
                   ((size_t)L->p.fconv.out_c + NC - 1) / NC};
    const size_t m_blocks = (j.m + MC - 1) / MC;
    bnn_pool_parallel_for(ex->pool, m_blocks * j.n_blocks, fconv_task, &j);
}
