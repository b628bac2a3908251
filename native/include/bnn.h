/* bnnbench native inference engine: public C API.
 *
 * A model (bnn_model) is immutable once loaded, but for the kernel sets' weight layouts its
 * contexts add (thread-safely, see bnn_ctx_create), and may be shared by several contexts; a
 * context (bnn_ctx) owns a thread pool and all scratch memory and runs one inference at a
 * time. The model must outlive every context created from it. The thread count is a
 * property of the context, never a global.
 *
 * Errors: functions returning int give BNN_OK (0) on success and a negative BNN_E* code on
 * failure; when `err`/`errlen` are given, a one-line, NUL-terminated message is written.
 */
#ifndef BNN_H
#define BNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BNN_API __attribute__((visibility("default")))
#else
#define BNN_API
#endif

#define BNN_VERSION "0.1.0"
#define BNN_FORMAT_VERSION 1
#define BNN_MAX_THREADS 16
#define BNN_ERR_LEN 256 /* a buffer this size always holds a full message */

enum {
    BNN_OK = 0,
    BNN_EFORMAT = -1, /* malformed or unsupported model */
    BNN_EIO = -2,     /* file could not be read */
    BNN_ENOMEM = -3,  /* allocation failed or a size does not fit this platform */
    BNN_EARG = -4     /* bad argument (NULL pointer, thread count, run count, ...) */
};

typedef struct bnn_model bnn_model;
typedef struct bnn_ctx bnn_ctx;

/* Library version, e.g. "0.1.0". */
BNN_API const char *bnn_version(void);
/* Name of the kernel set new contexts use: the best this CPU supports ("avx512", "avx2",
 * "popcnt" or "portable" on x86-64), unless BNNBENCH_ISA or bnn_set_isa chose another. */
BNN_API const char *bnn_kernel_isa(void);
/* Choose the kernel set for contexts created from now on (existing ones keep theirs);
 * NULL or "" picks the best supported. BNN_EARG if the name is unknown or the CPU lacks it.
 * Process-wide; not meant to race with bnn_ctx_create in other threads. */
BNN_API int bnn_set_isa(const char *name);
/* 1 if `name` is a kernel set this build has and this CPU runs, else 0. */
BNN_API int bnn_isa_supported(const char *name);

/* Load a model from a file or from memory (the buffer is copied; it may be freed after). */
BNN_API int bnn_model_load_file(const char *path, bnn_model **out, char *err, size_t errlen);
BNN_API int bnn_model_load_buffer(const void *data, size_t size, bnn_model **out, char *err,
                                  size_t errlen);
BNN_API void bnn_model_free(bnn_model *model);

/* Shapes: rank is 4 (NCHW) or 2 (N x F); dims receives `rank` entries. */
BNN_API int bnn_model_input_rank(const bnn_model *model);
BNN_API int bnn_model_output_rank(const bnn_model *model);
BNN_API void bnn_model_input_dims(const bnn_model *model, uint32_t dims[4]);
BNN_API void bnn_model_output_dims(const bnn_model *model, uint32_t dims[4]);
BNN_API size_t bnn_model_input_count(const bnn_model *model);  /* elements, not bytes */
BNN_API size_t bnn_model_output_count(const bnn_model *model);
BNN_API uint32_t bnn_model_num_layers(const bnn_model *model);
/* Layer `l` (file order): its op code (FORMAT.md), its first input's and its output's shapes
 * as N, C, H, W (H = W = 1 for rank-2 tensors) and its kernel kh, kw (1, 1 for layers
 * without one). BNN_EARG if l is out of range. */
BNN_API int bnn_model_layer_info(const bnn_model *model, uint32_t l, uint32_t *op,
                                 uint32_t in_dims[4], uint32_t out_dims[4], uint32_t kernel[2]);
/* The metadata JSON blob as stored (not NUL-terminated; *len receives its length). */
BNN_API const char *bnn_model_metadata(const bnn_model *model, size_t *len);
/* Bytes a context with `nthreads` threads will allocate (activations + scratch); lets a
 * caller refuse a model too big for the device before creating a context. 0 on bad args. */
BNN_API uint64_t bnn_model_workspace_bytes(const bnn_model *model, int nthreads);
/* Bytes the model's parameters hold now: weights, biases and folded BN as loaded, plus the
 * binary weights in each kernel set's own layout (AVX2, AVX-512) that a context of that set
 * has needed so far: the first context of such a set builds them in the model (about 1x or
 * 2x the binary weights), later ones share them. 0 for NULL. */
BNN_API uint64_t bnn_model_weight_bytes(const bnn_model *model);

/* Create a context with `nthreads` threads (1..BNN_MAX_THREADS) for the current kernel set
 * (bnn_kernel_isa); its first context builds that set's weight layout in the model
 * (bnn_model_weight_bytes). Contexts of one model may be created concurrently. NULL on
 * error. */
BNN_API bnn_ctx *bnn_ctx_create(const bnn_model *model, int nthreads, char *err,
                                size_t errlen);
/* bnn_ctx_create with flags: BNN_CTX_NO_FUSION runs every layer as written, without folding
 * clips into their producers or packing binary conv outputs for the next binary conv (the
 * results are identical; for tests and per-layer profiles of the unfused graph). */
#define BNN_CTX_NO_FUSION 1u
BNN_API bnn_ctx *bnn_ctx_create_ex(const bnn_model *model, int nthreads, unsigned flags,
                                   char *err, size_t errlen);
BNN_API void bnn_ctx_free(bnn_ctx *ctx);
BNN_API int bnn_ctx_threads(const bnn_ctx *ctx);

/* How the context runs layer `layer` (fusion, native/src/fuse.c), as BNN_FUSED_* bits in
 * *flags; 0: as written. For tests and tools that check a pattern still fuses. */
#define BNN_FUSED_SKIPPED 1u    /* folded into the layer before it: not run */
#define BNN_FUSED_BITS_IN 2u    /* binary conv: its input arrives packed from the one before */
#define BNN_FUSED_BITS_OUT 4u   /* binary conv: packs its output for the next binary conv */
#define BNN_FUSED_RESIDUAL 8u   /* binary conv: adds a residual (a folded Add) */
#define BNN_FUSED_CLIP 16u      /* clamps its output (a folded Clip) */
#define BNN_FUSED_NCHW_INPUT 32u /* FP32 conv: reads the NCHW model input into its padded copy */
BNN_API int bnn_ctx_layer_fusion(const bnn_ctx *ctx, uint32_t layer, unsigned *flags);

/* One inference. `in` is NCHW (or N x F) float32 with bnn_model_input_count elements,
 * `out` receives bnn_model_output_count elements in the output's NCHW (or N x F) order. */
BNN_API int bnn_run(bnn_ctx *ctx, const float *in, float *out);

/* `warmup` untimed runs, then `runs` timed ones; samples_ms[i] is the CLOCK_MONOTONIC time
 * of run i in milliseconds, measured around the inference only. */
BNN_API int bnn_benchmark(bnn_ctx *ctx, const float *in, int warmup, int runs,
                          double *samples_ms);

/* Per-layer timing: `warmup` untimed runs, then `runs` runs with a CLOCK_MONOTONIC stamp
 * around every layer; layer_ms (bnn_model_num_layers + 1 entries) receives each layer's
 * median over the runs, the last entry the model-boundary NCHW<->NHWC transposes. A layer the
 * context folded into the one before it (a clip; see BNN_CTX_NO_FUSION) reads 0. The stamps
 * cost ~50 ns per layer, so use bnn_benchmark for end-to-end latency. */
BNN_API int bnn_profile(bnn_ctx *ctx, const float *in, int warmup, int runs,
                        double *layer_ms);

#ifdef __cplusplus
}
#endif

#endif /* BNN_H */
