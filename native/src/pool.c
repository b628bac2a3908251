/* Max, average and global average pooling on NHWC: the channel loop is innermost, so every
 * window tap is one contiguous, vectorizable row of channels. Tasks are output rows. */
#include <math.h>
#include <string.h>

#include "layers.h"

typedef struct pool_job pool_job;
struct pool_job {
    const bnn_layer *L;
    const float *x;
    float *y;
    const bnn_kernel_table *k;
    /* window pools, one output pixel: the valid taps of its window, rows x cols pixels
     * from x (its first valid tap) in the NHWC input, into y (maxpool_px, avgpool_px) */
    void (*px)(const pool_job *j, const float *x, uint32_t rows, uint32_t cols, float *y);
};

/* Valid window [lo, hi) along one axis for output position o. */
static void window(long o, uint32_t stride, uint32_t pad, uint32_t k, uint32_t size, long *lo,
                   long *hi)
{
    const long start = o * (long)stride - (long)pad;
    *lo = start < 0 ? 0 : start;
    *hi = start + (long)k > (long)size ? (long)size : start + (long)k;
}

/* Same contract as bnn_maxpool_px_fn (kernels.h). Output channels are read, maxed and
 * stored once per tap; the vector versions keep them in registers instead. */
void bnn_maxpool_px_portable(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                             uint32_t kw, uint32_t n, float *y)
{
    for (uint32_t c = 0; c < n; c++)
        y[c] = -INFINITY;
    for (uint32_t i = 0; i < kh; i++)
        for (uint32_t j = 0; j < kw; j++) {
            const float *xi = x + i * row_stride + j * px_stride;
            for (uint32_t c = 0; c < n; c++)
                y[c] = xi[c] > y[c] ? xi[c] : y[c];
        }
}

/* Output row `task` (= image * out_h + row) of a window pool, pixel by pixel. */
static void window_pool_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const pool_job *j = arg;
    const bnn_geom *g = &j->L->p.pool.g;
    const bnn_shape *in = &j->L->in_shape, *out = &j->L->out_shape;
    const size_t C = in->c, oy = task % out->h, n = task / out->h;
    long y0, y1;
    window((long)oy, g->sh, g->pt, g->kh, in->h, &y0, &y1);
    for (size_t ox = 0; ox < out->w; ox++) {
        long x0, x1;
        window((long)ox, g->sw, g->pl, g->kw, in->w, &x0, &x1);
        /* Padded taps are ignored (ONNX); the loader guarantees a non-empty window. */
        j->px(j, j->x + ((n * in->h + (size_t)y0) * in->w + (size_t)x0) * C,
              (uint32_t)(y1 - y0), (uint32_t)(x1 - x0),
              j->y + ((n * out->h + oy) * out->w + ox) * C);
    }
}

static void maxpool_px(const pool_job *j, const float *x, uint32_t rows, uint32_t cols,
                       float *y)
{
    const size_t C = j->L->in_shape.c;
    j->k->maxpool_px(x, (size_t)j->L->in_shape.w * C, C, rows, cols, (uint32_t)C, y);
}

static void avgpool_px(const pool_job *j, const float *x, uint32_t rows, uint32_t cols,
                       float *y)
{
    const bnn_geom *g = &j->L->p.pool.g;
    const size_t C = j->L->in_shape.c, row_stride = (size_t)j->L->in_shape.w * C;
    memset(y, 0, C * sizeof(float));
    for (uint32_t i = 0; i < rows; i++)
        for (uint32_t t = 0; t < cols; t++) {
            const float *xi = x + i * row_stride + t * C;
            for (size_t c = 0; c < C; c++)
                y[c] += xi[c];
        }
    /* count_include_pad counts padded taps too (with floor output size and explicit pads
     * a window never extends past the padding, so that is kh*kw). */
    const float count = j->L->p.pool.count_include_pad ? (float)g->kh * (float)g->kw
                                                        : (float)((uint64_t)rows * cols);
    for (size_t c = 0; c < C; c++)
        y[c] /= count;
}

#define GAP_CHUNK 64

static void gap_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const pool_job *j = arg;
    const bnn_shape *in = &j->L->in_shape;
    const size_t C = in->c, hw = (size_t)in->h * in->w;
    const size_t chunks = (C + GAP_CHUNK - 1) / GAP_CHUNK;
    const size_t n = task / chunks, c0 = task % chunks * GAP_CHUNK;
    const size_t nc = C - c0 < GAP_CHUNK ? C - c0 : GAP_CHUNK;
    double acc[GAP_CHUNK] = {0}; /* double: a 56x56 mean summed in float loses digits */
    const float *x = j->x + n * hw * C + c0;
    for (size_t p = 0; p < hw; p++)
        for (size_t c = 0; c < nc; c++)
            acc[c] += x[p * C + c];
    for (size_t c = 0; c < nc; c++)
        j->y[n * C + c0 + c] = (float)(acc[c] / (double)hw);
}

void bnn_maxpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y)
{
    pool_job j = {L, x, y, ex->k, maxpool_px};
    bnn_pool_parallel_for(ex->pool, (size_t)L->out_shape.n * L->out_shape.h, window_pool_task,
                          &j);
}

void bnn_avgpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y)
{
    pool_job j = {L, x, y, ex->k, avgpool_px};
    bnn_pool_parallel_for(ex->pool, (size_t)L->out_shape.n * L->out_shape.h, window_pool_task,
                          &j);
}

void bnn_global_avgpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x,
                                float *y)
{
    pool_job j = {L, x, y, ex->k, NULL};
    const size_t chunks = ((size_t)L->in_shape.c + GAP_CHUNK - 1) / GAP_CHUNK;
    bnn_pool_parallel_for(ex->pool, (size_t)L->in_shape.n * chunks, gap_task, &j);
}
