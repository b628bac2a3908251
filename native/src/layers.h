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
    uint64_t *bits[2];     /* packed-activation buffers for binary convs (see fuse.c) */
    float *padded;         /* a zero-padded input image for padded FP32 convs (fconv.c) */
} bnn_exec;

/* How a context runs each layer (fuse.c). */
#define BNN_NO_VALUE UINT32_MAX
typedef struct {
    uint8_t skip;     /* folded into the layer before it: not run */
    uint8_t clamp;    /* clip the output to [lo, hi] (a folded CLIP) */
    uint8_t bits_in;  /* CONV2D_BIN: the input arrives packed in bits[bits_buf] */
    uint8_t bits_buf; /* CONV2D_BIN: which packed-bit buffer holds its input */
    uint8_t nchw_in;  /* padded CONV2D_F32 on the model input: x is the caller's NCHW
                         input, transposed straight into the zero-padded copy (fconv.c) */
    int32_t bits_to;  /* CONV2D_BIN: packs its output for binary conv layer bits_to; -1 none */
    uint32_t write;   /* value the layer writes; BNN_NO_VALUE when it only writes bits */
    uint32_t residual; /* CONV2D_BIN: value added to its output (a folded ADD), or
                          BNN_NO_VALUE */
    float lo, hi;
    int32_t *bounds; /* CONV2D_BIN with bits_to: the output bits of interior windows as
                        integer bounds on the popcounts, [neg[out_c], bound[out_c]] for the
                        kernel table's threshold_counts; NULL: through floats (fuse.c) */
} bnn_fusion;

/* Fill f[0..n_layers) for model m; with enable == 0 every layer runs as written. On error
 * f still holds only valid pointers (for bnn_fusion_free). */
int bnn_fuse(const bnn_model *m, int enable, bnn_fusion *f);
void bnn_fusion_free(bnn_fusion *f, uint32_t n_layers);

/* FP32 conv / GEMM (fconv.c) */
size_t bnn_fconv_scratch_bytes(const bnn_layer *L, const bnn_kernel_table *k);
/* Floats of the zero-padded copy of the input that a padded FP32 conv reads (0 for none). */
uint64_t bnn_fconv_padded_floats(const bnn_layer *L);
void bnn_fconv_forward(const bnn_exec *ex, const bnn_layer *L, const bnn_fusion *fz,
                       const float *x, float *y);

/* Binary conv (bconv.c) */
#define BNN_BCONV_OCH 64 /* output channels per row task */
size_t bnn_bconv_scratch_bytes(const bnn_layer *L);
/* Kernel set k's row kernel arguments for output row oy of image n, channels [o0, o1),
 * popcounts to pop, reading the padded packed input image `bits` (bench/bconv_kernel.c uses
 * it too). The weights in k's layout must exist: a context of k was created for the model. */
bnn_bconv_row_args bnn_bconv_row_setup(const bnn_kernel_table *k, const bnn_layer *L,
                                       const uint64_t *bits, size_t n, size_t oy, uint32_t o0,
                                       uint32_t o1, int32_t *pop);
/* Words of the zero-padded packed input; 0 if it does not fit in size_t. */
uint64_t bnn_bconv_bits_words(const bnn_layer *L);
/* y: the float output, or NULL when fz->bits_to packs it for `next` (that layer);
 * res: the tensor a folded add adds to it (fz->residual), else NULL. */
void bnn_bconv_forward(const bnn_exec *ex, const bnn_layer *L, const bnn_fusion *fz,
                       const bnn_layer *next, const float *x, const float *res, float *y);

/* Pools (pool.c) */
void bnn_maxpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_avgpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_global_avgpool_forward(const bnn_exec *ex, const bnn_layer *L, const float *x,
                                float *y);

/* Element-wise ops and layout changes (eltwise.c) */
void bnn_affine_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_clip_forward(const bnn_exec *ex, const bnn_layer *L, const float *x, float *y);
void bnn_add_forward(const bnn_exec *ex, const bnn_layer *L, const bnn_fusion *fz,
                     const float *a, const float *b, float *y);
/* y[n][c][p] = x[n][p][c] for p < hw: NHWC -> NCHW (also FLATTEN's order), and with
 * (hw, c) swapped NCHW -> NHWC. */
void bnn_transpose_batched(const bnn_exec *ex, const float *x, float *y, size_t n,
                           size_t rows, size_t cols);

#endif
