/* Element-wise ops (affine, clip, add) and the NCHW <-> NHWC transposes. Work is split into
 * fixed-size chunks, independent of the thread count. */
#include <string.h>

#include "layers.h"

#define CHUNK 16384 /* floats per task */

typedef struct {
    const bnn_layer *L;
    const bnn_fusion *fz; /* add: a folded clip */
    const float *a, *b;
    float *y;
    size_t count, chunk; /* chunk: elements per task (a multiple of C for affine) */
} elt_job;

static size_t n_tasks(size_t count, size_t chunk)
{
    return (count + chunk - 1) / chunk;
}

static void affine_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const elt_job *j = arg;
    const bnn_affine *af = &j->L->p.affine;
    const size_t C = af->c, e0 = task * j->chunk;
    const size_t e1 = e0 + j->chunk < j->count ? e0 + j->chunk : j->count;
    for (size_t e = e0; e < e1; e += C)
        for (size_t c = 0; c < C; c++)
            j->y[e + c] = j->a[e + c] * af->scale[c] + af->bias[c];
}

static void clip_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const elt_job *j = arg;
    const float lo = j->L->p.clip.lo, hi = j->L->p.clip.hi;
    const size_t e0 = task * j->chunk, e1 = e0 + j->chunk < j->count ? e0 + j->chunk : j->count;
    for (size_t e = e0; e < e1; e++)
        j->y[e] = bnn_clip(j->a[e], lo, hi);
}

static void add_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const elt_job *j = arg;
    const size_t e0 = task * j->chunk, e1 = e0 + j->chunk < j->count ? e0 + j->chunk : j->count;
    if (j->fz && j->fz->clamp) {
        const float lo = j->fz->lo, hi = j->fz->hi;
        for (size_t e = e0; e < e1; e++)
            j->y[e] = bnn_clip(j->a[e] + j->b[e], lo, hi);
        return;
    }
    for (size_t e = e0; e < e1; e++)
        j->y[e] = j->a[e] + j->b[e];
}

void bnn_affine_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y)
{
    const size_t C = L->p.affine.c;
    const size_t per = CHUNK / C > 0 ? CHUNK / C : 1; /* whole pixels per task */
    elt_job j = {L, NULL, x, NULL, y, bnn_shape_count(&L->in_shape), per * C};
    bnn_pool_parallel_for(ex->pool, n_tasks(j.count, j.chunk), affine_task, &j);
}

void bnn_clip_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y)
{
    elt_job j = {L, NULL, x, NULL, y, bnn_shape_count(&L->in_shape), CHUNK};
    bnn_pool_parallel_for(ex->pool, n_tasks(j.count, j.chunk), clip_task, &j);
}

void bnn_add_forward(const bnn_exec *ex, const bnn_layer *L, const bnn_fusion *fz,
                     const float *a, const float *b, float *y)
{
    elt_job j = {L, fz, a, b, y, bnn_shape_count(&L->in_shape), CHUNK};
    bnn_pool_parallel_for(ex->pool, n_tasks(j.count, j.chunk), add_task, &j);
}

/* ------------------------------------------------------------------ transposes */

#define TB 32 /* tile edge: a 32x32 float tile of source and destination fits in L1 */

typedef struct {
    const float *x;
    float *y;
    size_t rows, cols, row_tiles, col_tiles, tiles_per_task, n_tiles;
} tr_job;

/* Columns [c0, c1) of all `rows` rows; inlined with a constant `rows`, so each output
 * pixel is `rows` stores in a row instead of a loop (the model input's NCHW -> NHWC took
 * 2% of ResNet-18 on an AVX-512 Xeon with the generic tile loop). */
static inline __attribute__((always_inline)) void transpose_cols(const float *x, float *y,
                                                                 const size_t rows,
                                                                 size_t cols, size_t c0,
                                                                 size_t c1)
{
    for (size_t c = c0; c < c1; c++)
        for (size_t r = 0; r < rows; r++)
            y[c * rows + r] = x[r * cols + c];
}

/* Tiles [task * tiles_per_task, ...) of the batch, tile index = (image, row tile, col tile):
 * with few rows (an RGB input: 3 x 32 floats a tile) one tile per task would be all
 * scheduling overhead. */
static void transpose_task(void *arg, size_t task, int thread)
{
    (void)thread;
    const tr_job *j = arg;
    const size_t per_img = j->row_tiles * j->col_tiles;
    const size_t t0 = task * j->tiles_per_task;
    const size_t t1 = t0 + j->tiles_per_task < j->n_tiles ? t0 + j->tiles_per_task : j->n_tiles;
    for (size_t tt = t0; tt < t1; tt++) {
        const size_t n = tt / per_img, t = tt % per_img;
        const size_t r0 = t / j->col_tiles * TB, c0 = t % j->col_tiles * TB;
        const size_t r1 = r0 + TB < j->rows ? r0 + TB : j->rows;
        const size_t c1 = c0 + TB < j->cols ? c0 + TB : j->cols;
        const float *x = j->x + n * j->rows * j->cols;
        float *y = j->y + n * j->rows * j->cols;
        if (j->rows == 3) /* an RGB input: whole pixels, a constant trip count */
            transpose_cols(x, y, 3, j->cols, c0, c1);
        else
            for (size_t c = c0; c < c1; c++)
                for (size_t r = r0; r < r1; r++)
                    y[c * j->rows + r] = x[r * j->cols + c];
    }
}

void bnn_transpose_batched(const bnn_exec *ex, const float *x, float *y, size_t n, size_t rows,
                           size_t cols)
{
    if (rows == 1 || cols == 1) {
        memcpy(y, x, n * rows * cols * sizeof(float));
        return;
    }
    const size_t row_tiles = (rows + TB - 1) / TB, col_tiles = (cols + TB - 1) / TB;
    const size_t tile_elems = (rows < TB ? rows : TB) * (cols < TB ? cols : TB);
    const size_t per_task = CHUNK / tile_elems > 0 ? CHUNK / tile_elems : 1;
    const size_t n_tiles = n * row_tiles * col_tiles;
    tr_job j = {x, y, rows, cols, row_tiles, col_tiles, per_task, n_tiles};
    bnn_pool_parallel_for(ex->pool, (n_tiles + per_task - 1) / per_task, transpose_task, &j);
}
