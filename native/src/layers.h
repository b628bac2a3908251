/* Layer drivers: tiling, padding, layouts and threading around the kernels.
 * All float tensors are NHWC here (rank-2 tensors are N x F, the same thing with H=W=1). */
#ifndef BNN_LAYERS_H
#define BNN_LAYERS_H

#include "bnn_internal.h"
#include "kernels.h"
#include "threadpool.h"

typedef struct {
    bnn_pool *pool;
    const bnn_kernel_table *k;
    void *const *tscratch; /* one buffer per thread, sized by the *_scratch_bytes below */
    uint64_t *bits;        /* shared packed-activation buffer for binary convs */
} bnn_exec;

/* FP32 conv / GEMM (fconv.c) */
size_t bnn_fconv_scratch_bytes(const bnn_layer *L, const bnn_kernel_table *k);
void bnn_fconv_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);

/* Binary conv (bconv.c) */
size_t bnn_bconv_scratch_bytes(const bnn_layer *L);
/* Words of the zero-padded packed input; 0 if it does not fit in size_t. */
uint64_t bnn_bconv_bits_words(const bnn_layer *L);
void bnn_bconv_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);

/* Pools (pool.c) */
void bnn_maxpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_avgpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_global_avgpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x,
                                float *y);

/* Element-wise ops and layout changes (eltwise.c) */
void bnn_affine_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_clip_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_add_forward(const bnn_exec *ex, const bnn_layer *L, const float *a, const float *b,
                     float *y);
/* y[n][c][p] = x[n][p][c] for p < hw: NHWC -> NCHW (also FLATTEN's order), and with
 * (hw, c) swapped NCHW -> NHWC. */
void bnn_transpose_batched(const bnn_exec *ex, const float *x, float *y, size_t n,
                           size_t rows, size_t cols);

#endif
