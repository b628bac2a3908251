/* Internal model representation shared by the loader, the engine and the tests. */
#ifndef BNN_INTERNAL_H
#define BNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bnn.h"
#include "kernels.h"

enum {
    OP_CONV2D_F32 = 1,
    OP_CONV2D_BIN = 2,
    OP_AFFINE = 3,
    OP_CLIP = 4,
    OP_MAXPOOL = 5,
    OP_AVGPOOL = 6,
    OP_GLOBAL_AVGPOOL = 7,
    OP_ADD = 8,
    OP_FLATTEN = 9,
    OP_GEMM = 10
};

#define BNN_MAX_DIM 65536u
#define BNN_MAX_ELEMS (1ull << 31)
#define BNN_MAX_VALUES 65536u
#define BNN_MAX_LAYERS 65536u
#define BNN_MAX_META (1u << 20)
#define BNN_MAX_NAME 1024u
#define BNN_ALIGN 64

/* Every tensor is kept as N x C x H x W; rank-2 tensors (N x F) have C = F, H = W = 1, so
 * the engine's internal NHWC layout of a rank-2 tensor is its plain row-major layout. */
typedef struct {
    uint32_t rank; /* 2 or 4: what the format sees */
    uint32_t n, c, h, w;
} bnn_shape;

static inline size_t bnn_shape_count(const bnn_shape *s)
{
    return (size_t)s->n * s->c * s->h * s->w; /* loader guarantees <= 2^31 */
}

typedef struct {
    uint32_t kh, kw, sh, sw, pt, pl, pb, pr;
} bnn_geom;

/* FP32 conv and GEMM share one implementation: GEMM is a 1x1 conv over a 1x1 image. */
typedef struct {
    uint32_t in_c, out_c;
    bnn_geom g;
    uint32_t k;      /* kh * kw * in_c: the GEMM depth, ordered (i, j, c) like NHWC im2col */
    float *bias;     /* out_c, zeros when the file has none */
    float *wpacked;  /* ceil(out_c / NR) panels of k x NR floats, zero-padded columns */
} bnn_fconv;

typedef struct {
    uint32_t in_c, out_c, words; /* words = ceil(in_c / 64) per tap */
    bnn_geom g;
    float *threshold;   /* in_c, or NULL for plain sign(x) */
    uint64_t *w[BNN_WLAYOUTS]; /* the weight bits per layout (kernels.h): w[BNN_WLAYOUT_FILE]
                                  = [o][i][j][word] as in the file, tail bits 0, from load
                                  time; the others NULL until a context of the kernel set
                                  that reads one is created (bnn_model_prepack) */
    int32_t *wpop;      /* [i*kw+j][o]: popcount of the tap's weight bits, for padding
                           (channel-minor, so the border correction vectorizes) */
    float *scale, *bias;
} bnn_bconv;

typedef struct {
    uint32_t c;
    float *scale, *bias;
} bnn_affine;

typedef struct {
    uint32_t op;
    uint32_t n_in;
    uint32_t in[2];
    uint32_t out;
    char *name; /* NUL-terminated copy */
    uint64_t param_bytes; /* memory its parameters hold, prepacked layouts included
                             (bnn_model_weight_bytes): the loader's, then bnn_model_prepack's
                             under its lock */
    bnn_shape in_shape, out_shape;
    union {
        bnn_fconv fconv; /* CONV2D_F32 and GEMM */
        bnn_bconv bconv;
        bnn_affine affine;
        struct {
            float lo, hi;
        } clip;
        struct {
            bnn_geom g;
            uint32_t count_include_pad;
        } pool;
    } p;
} bnn_layer;

struct bnn_model {
    uint32_t n_values, n_layers, input_id, output_id;
    bnn_shape input_shape;
    bnn_shape *shapes; /* per value id */
    bnn_layer *layers;
    char *meta;
    size_t meta_len;
};

const char *bnn_op_name(uint32_t op);

/* Builds the binary convs' weights in the layout kernel set k reads (its bconv_prepack),
 * once per model: the first context of a set builds them, later ones find them. Called by
 * bnn_ctx_create; thread-safe (contexts of one model may be created concurrently, and
 * running contexts only read the layouts they were created with). BNN_ENOMEM on failure. */
int bnn_model_prepack(const bnn_model *m, const bnn_kernel_table *k);

/* 64-byte aligned allocation; sizes are rounded up. NULL on failure or size 0 overflow. */
void *bnn_aligned_alloc(size_t bytes);
void bnn_aligned_free(void *p);

/* Checked arithmetic: 0 on overflow. */
static inline int bnn_mul_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    if (a != 0 && b > UINT64_MAX / a)
        return 0;
    *r = a * b;
    return 1;
}
static inline int bnn_add_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    if (b > UINT64_MAX - a)
        return 0;
    *r = a + b;
    return 1;
}

#endif
