/* Compute kernels and the one dispatch point that picks them per instruction set.
 *
 * Only the innermost, ISA-sensitive loops sit behind the table (bnn_kernels()): packing
 * floats to sign bits, the XOR-popcount row of a binary conv, its two epilogues (float
 * outputs; bits through integer bounds) and the SGEMM micro-kernel (packed A or in place).
 * Tiling, padding correction, threading and layouts are shared code in the layer drivers;
 * an ISA file provides what it speeds up and takes the portable function for the rest.
 */
#ifndef BNN_KERNELS_H
#define BNN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* SGEMM tile: weights are prepacked at load time into panels of NR columns, so NR is fixed
 * for every kernel set; MR (rows of the packed activations) is chosen at run time. */
#define BNN_SGEMM_NR 16
#define BNN_SGEMM_MR_MAX 8

/* Layouts of a binary conv's weight bits that row kernels read (bnn_bconv_row_args.wp).
 * The loader keeps only the file's layout, [o][i][j][word] (BNN_WLAYOUT_FILE). A kernel set that
 * reads another one names, in its table, the step that builds it from the file layout
 * (bnn_bconv_prepack); a model builds it when the first context of that set is created for
 * it (bnn_model_prepack), so memory and load time go only to the layouts of sets that run:
 * none on ARM, with the portable and POPCNT kernels, or before a context exists. The file
 * layout stays: it is what later prepacks start from, and the AVX2 / AVX-512 kernels fall
 * back to the portable one (which reads it) for windows too long for their tiles. */
enum {
    BNN_WLAYOUT_FILE,     /* [o][i][j][word]: portable, POPCNT, NEON */
    BNN_WLAYOUT_NIBBLE16, /* interleaved by 16 channels, nibble planes: AVX2 (bconv_avx2.c) */
    BNN_WLAYOUT_LANE16,   /* interleaved by 16 channels, whole words: AVX-512 (bconv_avx512.c) */
    BNN_WLAYOUTS
};

/* A kernel set's weight layout: which slot of bnn_bconv.w it fills, its size in u64 words
 * for out_c channels of kwords words each (kh * kw * words), and how it is filled from the
 * file layout w ([o][kwords], tail bits 0) into dst (words() words, 64-byte aligned). */
typedef struct {
    unsigned slot; /* BNN_WLAYOUT_*, never BNN_WLAYOUT_FILE */
    size_t (*words)(uint32_t out_c, size_t kwords);
    void (*fill)(const uint64_t *w, uint32_t out_c, size_t kwords, uint64_t *dst);
} bnn_bconv_prepack;

/* One output row of a binary conv for output channels [o_begin, o_end): raw popcounts of
 * input XOR weight over all kh*kw taps, padded taps included (they read 0 bits). */
typedef struct {
    const uint64_t *in; /* padded packed input at the window's top-left for output column 0 */
    size_t row_stride;  /* u64 words between padded input rows */
    size_t x_stride;    /* u64 words between windows of neighbouring output columns */
    const uint64_t *w;  /* weights [o][i][j][word] (the file layout) */
    const uint64_t *wp; /* the same in the kernel set's own layout (its table's
                           bconv_prepack), or w for a set without one */
    size_t w_stride;    /* u64 words per output channel: kh * kw * words */
    uint32_t kh;
    uint32_t tap_words; /* kw * words: one kernel row, contiguous in input and weights */
    uint32_t ow;
    uint32_t o_begin, o_end;
    int32_t *pop; /* out: [ow][o_end - o_begin] */
} bnn_bconv_row_args;

typedef void (*bnn_bconv_row_fn)(const bnn_bconv_row_args *a);

/* Pack `npix` pixels of `c` floats (NHWC) into `words` u64 each: bit = (x - t[c]) < 0,
 * i.e. bit 1 = -1, sign(0) = +1; tail bits 0. `thr` may be NULL (t = 0). */
typedef void (*bnn_bitpack_fn)(const float *x, const float *thr, uint32_t c, uint32_t words,
                               size_t npix, uint64_t *out, size_t out_stride);

/* Bits [j, n) of one word of bnn_bitpack_fn, channel k of the word at x[k] (threshold t[k],
 * or 0 with t NULL): the contract as code (portable kernel, vector tails). x - t < 0, not
 * x < t: the two agree for finite floats, and the difference is the reference semantics. */
static inline uint64_t bnn_sign_bits(const float *x, const float *t, uint32_t j, uint32_t n)
{
    uint64_t bits = 0;
    if (t)
        for (; j < n; j++)
            bits |= (uint64_t)(x[j] - t[j] < 0.0f) << j;
    else
        for (; j < n; j++)
            bits |= (uint64_t)(x[j] < 0.0f) << j;
    return bits;
}

/* CLIP's semantics, the one definition the CLIP layer and every epilogue a clip folds into
 * use (fused and unfused results must agree bit for bit): NaN compares false and passes. */
static inline float bnn_clip(float v, float lo, float hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* A binary conv's output value (BN folded into scale and bias) from the XOR popcount p of
 * a window of n valid bit pairs (0 <= p <= n <= 2^30, so (n - p) - p stays in int32): the
 * one expression of the output kernels below and of the integer bounds fuse.c derives
 * from it, so they agree bit for bit. Multiply, then add: no fused multiply-add (C11 mode
 * keeps the compiler from contracting it, and the SIMD kernels use separate ops). */
static inline float bnn_bconv_value(float scale, float bias, int32_t n, int32_t p)
{
    return scale * (float)((n - p) - p) + bias;
}

/* A binary conv's float outputs for `count` channels of `npix` pixels: pixel i's counts at
 * p + i * count, its residual and output at res + i * y_stride and y + i * y_stride, and
 * y[o] = bnn_bconv_value(scale[o], bias[o], n, p[o]), plus res[o] when res is non-NULL (a
 * folded residual add), then clamped to [lim[0], lim[1]] when lim is non-NULL (a folded
 * clip; NaN passes), each step rounded as written. y may be res (the context writes a
 * residual sum over the residual when that is its last use); no other overlap. A whole row
 * of interior windows per call: per-pixel calls cost as much as the arithmetic. */
typedef void (*bnn_bconv_out_fn)(const int32_t *p, int32_t n, const float *scale,
                                 const float *bias, const float *res, const float *lim,
                                 float *y, uint32_t count, size_t npix, size_t y_stride);

/* Bits of n <= 64 popcounts against per-channel bounds (fuse.c: a binary conv's BN, clip and
 * the next conv's sign folded into one integer compare), for `npix` pixels: pixel i's counts
 * at p + i * n, its word to dst[i * dst_stride]; bit o = (p[o] ^ neg[o]) - neg[o] >
 * bound[o], i.e. p > bound where neg = 0 and -p > bound where neg = -1; tail bits 0. */
typedef void (*bnn_threshold_counts_fn)(const int32_t *p, const int32_t *neg,
                                        const int32_t *bound, uint32_t n, size_t npix,
                                        uint64_t *dst, size_t dst_stride);

/* One pixel of bnn_threshold_counts_fn: the contract as code (portable kernel, vector tails). */
static inline uint64_t bnn_threshold_bits(const int32_t *p, const int32_t *neg,
                                          const int32_t *bound, uint32_t n)
{
    uint64_t bits = 0;
    for (uint32_t j = 0; j < n; j++)
        bits |= (uint64_t)(((p[j] ^ neg[j]) - neg[j]) > bound[j]) << j;
    return bits;
}

/* C[MR x NR] (row stride ldc) += A[kc x MR] * B[kc x NR]; A and B packed k-major. The
 * products are summed from zero in k order, then added to C once. With bias non-NULL (the
 * first depth slice) C is not read: C = bias[0, NR) + the sum, per column. With lim
 * non-NULL (the last slice of a layer with a folded clip) the result is clamped to [lim[0],
 * lim[1]] as CLIP does (NaN passes). Either way the floats equal those of "C = bias, C +=
 * each slice, then clip" pass by pass. */
typedef void (*bnn_sgemm_ukernel_fn)(size_t kc, const float *a, const float *b, float *c,
                                     size_t ldc, const float *bias, const float *lim);

/* The same tile with A read in place instead of packed: A[i][k] = a[koff[k] + i * a_rs].
 * For a conv window run inside an NHWC image koff walks the taps (i, j, c) and a_rs steps
 * to the next output pixel's window, so interior tiles need no im2col copy (fconv.c). The
 * products and their order are those of the packed kernel: results are bit-identical. */
typedef void (*bnn_sgemm_ukernel_direct_fn)(size_t kc, const float *a, const size_t *koff,
                                            size_t a_rs, const float *b, float *c, size_t ldc,
                                            const float *bias, const float *lim);

/* Optional (NULL in sets without them): both tiles over two B panels side by side, the
 * second at b + b_ps (the next prepacked panel), C being MR x 2 NR. Each half equals what
 * the one-panel kernel gives for its panel, bit for bit; the wider tile only gives a core
 * more independent FMA chains per A value loaded. */
typedef void (*bnn_sgemm_ukernel2_fn)(size_t kc, const float *a, const float *b, size_t b_ps,
                                      float *c, size_t ldc, const float *bias, const float *lim);
typedef void (*bnn_sgemm_ukernel2_direct_fn)(size_t kc, const float *a, const size_t *koff,
                                             size_t a_rs, const float *b, size_t b_ps, float *c,
                                             size_t ldc, const float *bias, const float *lim);

/* Max pooling of one output pixel over n channels: y[ch] = the max over the kh x kw taps
 * (tap (i, j) at x + i * row_stride + j * px_stride, NHWC) of x[ch], taken as
 * "v > m ? v : m" in tap order from -inf, so NaN taps are skipped (x86's MAXPS semantics:
 * vector versions are bit-identical). */
typedef void (*bnn_maxpool_px_fn)(const float *x, size_t row_stride, size_t px_stride,
                                  uint32_t kh, uint32_t kw, uint32_t n, float *y);

typedef struct {
    const char *isa;
    bnn_bitpack_fn bitpack;
    bnn_threshold_counts_fn threshold_counts;
    bnn_bconv_out_fn bconv_out;
    bnn_maxpool_px_fn maxpool_px;
    bnn_bconv_row_fn bconv_row;
    bnn_sgemm_ukernel_fn sgemm_ukernel;
    bnn_sgemm_ukernel_direct_fn sgemm_ukernel_direct;
    bnn_sgemm_ukernel2_fn sgemm_ukernel2;               /* or NULL */
    bnn_sgemm_ukernel2_direct_fn sgemm_ukernel2_direct; /* NULL with sgemm_ukernel2 */
    uint32_t sgemm_mr;
    const bnn_bconv_prepack *bconv_prepack; /* NULL: bconv_row reads the file layout */
} bnn_kernel_table;

/* The slot of bnn_bconv.w that kernel set k's bconv_row reads as bnn_bconv_row_args.wp. */
static inline unsigned bnn_kernel_wlayout(const bnn_kernel_table *k)
{
    return k->bconv_prepack ? k->bconv_prepack->slot : BNN_WLAYOUT_FILE;
}

/* The current kernel set (thread-safe). Selected once from CPU features, or from the
 * environment variable BNNBENCH_ISA; bnn_set_isa (bnn.h) overrides it for contexts created
 * afterwards (each context keeps the table it was created with). */
const bnn_kernel_table *bnn_kernels(void);
/* Non-NULL when BNNBENCH_ISA named an unknown ISA or one this CPU lacks (contexts then
 * refuse to be created, with this message), until bnn_set_isa succeeds. */
const char *bnn_kernels_env_error(void);

/* Portable implementations (always built; the fallback of every dispatch). */
void bnn_bitpack_portable(const float *x, const float *thr, uint32_t c, uint32_t words,
                          size_t npix, uint64_t *out, size_t out_stride);
void bnn_bconv_row_portable(const bnn_bconv_row_args *a);
void bnn_maxpool_px_portable(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                             uint32_t kw, uint32_t n, float *y);
void bnn_bconv_out_portable(const int32_t *p, int32_t n, const float *scale, const float *bias,
                            const float *res, const float *lim, float *y, uint32_t count,
                            size_t npix, size_t y_stride);
void bnn_threshold_counts_portable(const int32_t *p, const int32_t *neg, const int32_t *bound,
                                   uint32_t n, size_t npix, uint64_t *dst, size_t dst_stride);
void bnn_sgemm_ukernel_portable(size_t kc, const float *a, const float *b, float *c,
                                size_t ldc, const float *bias, const float *lim);
void bnn_sgemm_ukernel_direct_portable(size_t kc, const float *a, const size_t *koff,
                                       size_t a_rs, const float *b, float *c, size_t ldc,
                                       const float *bias, const float *lim);
#define BNN_SGEMM_MR_PORTABLE 4

#if defined(__aarch64__) || defined(__arm__)
/* ARM kernels (NEON; the ARMv7 files are compiled with -mfpu=neon, kernels.c uses them only
 * where HWCAP_NEON says so). */
void bnn_bconv_row_neon64(const bnn_bconv_row_args *a); /* AArch64 */
void bnn_bconv_row_neon32(const bnn_bconv_row_args *a); /* ARMv7 */
void bnn_maxpool_px_neon(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                         uint32_t kw, uint32_t n, float *y); /* both (pool_neon.c) */
/* bitpack_neon.c: integer-bound bits on both, sign packing on AArch64 only (AArch32 NEON
 * flushes subnormals, so its float compare could differ from portable) */
void bnn_threshold_counts_neon(const int32_t *p, const int32_t *neg, const int32_t *bound,
                               uint32_t n, size_t npix, uint64_t *dst, size_t dst_stride);
void bnn_bitpack_neon(const float *x, const float *thr, uint32_t c, uint32_t words,
                      size_t npix, uint64_t *out, size_t out_stride); /* AArch64 */
/* AArch64 FMLA SGEMM, MR = BNN_SGEMM_MR_NEON64 (sgemm_neon64.c) */
void bnn_sgemm_ukernel_neon64(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                              const float *bias, const float *lim);
void bnn_sgemm_ukernel_direct_neon64(size_t kc, const float *a, const size_t *koff, size_t a_rs,
                                     const float *b, float *c, size_t ldc, const float *bias,
                                     const float *lim);
#define BNN_SGEMM_MR_NEON64 6
/* ARMv7 SGEMM, MR = BNN_SGEMM_MR_NEON32 (sgemm_neon32.c): VMLA, and VFMA for VFPv4 CPUs
 * (the VMLA one again where the compiler could not build it: bnn_sgemm_neon32_has_fma 0) */
void bnn_sgemm_ukernel_neon32(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                              const float *bias, const float *lim);
void bnn_sgemm_ukernel_direct_neon32(size_t kc, const float *a, const size_t *koff, size_t a_rs,
                                     const float *b, float *c, size_t ldc, const float *bias,
                                     const float *lim);
void bnn_sgemm_ukernel_neon32fma(size_t kc, const float *a, const float *b, float *c,
                                 size_t ldc, const float *bias, const float *lim);
void bnn_sgemm_ukernel_direct_neon32fma(size_t kc, const float *a, const size_t *koff,
                                        size_t a_rs, const float *b, float *c, size_t ldc,
                                        const float *bias, const float *lim);
extern const int bnn_sgemm_neon32_has_fma;
#define BNN_SGEMM_MR_NEON32 4
#endif

#if defined(__x86_64__)
/* x86-64 row kernels, each compiled for its ISA with target attributes (bconv_*.c). */
void bnn_bconv_row_popcnt(const bnn_bconv_row_args *a); /* POPCNT */
void bnn_bconv_row_avx2(const bnn_bconv_row_args *a);   /* AVX2 */
void bnn_bconv_row_avx512(const bnn_bconv_row_args *a); /* AVX-512F + VPOPCNTDQ */
void bnn_sgemm_ukernel_avx512(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                              const float *bias,
                              const float *lim); /* AVX-512F, MR = BNN_SGEMM_MR_AVX512 */
void bnn_sgemm_ukernel_direct_avx512(size_t kc, const float *a, const size_t *koff,
                                     size_t a_rs, const float *b, float *c, size_t ldc,
                                     const float *bias, const float *lim);
void bnn_sgemm_ukernel2_avx512(size_t kc, const float *a, const float *b, size_t b_ps,
                               float *c, size_t ldc, const float *bias, const float *lim);
void bnn_sgemm_ukernel2_direct_avx512(size_t kc, const float *a, const size_t *koff,
                                      size_t a_rs, const float *b, size_t b_ps, float *c,
                                      size_t ldc, const float *bias, const float *lim);
#define BNN_SGEMM_MR_AVX512 8
void bnn_bitpack_avx512(const float *x, const float *thr, uint32_t c, uint32_t words,
                        size_t npix, uint64_t *out, size_t out_stride); /* AVX-512F */
void bnn_bconv_out_avx512(const int32_t *p, int32_t n, const float *scale, const float *bias,
                          const float *res, const float *lim, float *y, uint32_t count,
                          size_t npix, size_t y_stride);
void bnn_threshold_counts_avx512(const int32_t *p, const int32_t *neg, const int32_t *bound,
                                 uint32_t n, size_t npix, uint64_t *dst,
                                 size_t dst_stride); /* AVX-512F */
void bnn_maxpool_px_avx2(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                         uint32_t kw, uint32_t n, float *y); /* AVX */
void bnn_maxpool_px_avx512(const float *x, size_t row_stride, size_t px_stride, uint32_t kh,
                           uint32_t kw, uint32_t n, float *y); /* AVX-512F */
void bnn_bitpack_avx2(const float *x, const float *thr, uint32_t c, uint32_t words,
                      size_t npix, uint64_t *out, size_t out_stride); /* AVX2 */
void bnn_bconv_out_avx2(const int32_t *p, int32_t n, const float *scale, const float *bias,
                        const float *res, const float *lim, float *y, uint32_t count,
                        size_t npix, size_t y_stride);
void bnn_threshold_counts_avx2(const int32_t *p, const int32_t *neg, const int32_t *bound,
                               uint32_t n, size_t npix, uint64_t *dst,
                               size_t dst_stride); /* AVX2 */
void bnn_sgemm_ukernel_avx2(size_t kc, const float *a, const float *b, float *c, size_t ldc,
                            const float *bias,
                            const float *lim); /* AVX2 + FMA, MR = BNN_SGEMM_MR_AVX2 */
void bnn_sgemm_ukernel_direct_avx2(size_t kc, const float *a, const size_t *koff, size_t a_rs,
                                   const float *b, float *c, size_t ldc, const float *bias,
                                   const float *lim); /* the same */
#define BNN_SGEMM_MR_AVX2 6
/* The weight layouts of the AVX2 and AVX-512 row kernels (defined next to them). */
extern const bnn_bconv_prepack bnn_bconv_prepack_avx2;   /* BNN_WLAYOUT_NIBBLE16 */
extern const bnn_bconv_prepack bnn_bconv_prepack_avx512; /* BNN_WLAYOUT_LANE16 */
#endif

/* Plain reference binary conv straight from FORMAT.md (NCHW float in/out, file-layout
 * weight bits, per-tap bounds checks). Slow; for tests only. */
void bnn_bconv_reference(const float *x, uint32_t n, uint32_t c, uint32_t h, uint32_t w,
                         const float *thr, const uint64_t *wbits, uint32_t out_c, uint32_t kh,
                         uint32_t kw, uint32_t sh, uint32_t sw, uint32_t pt, uint32_t pl,
                         uint32_t pb, uint32_t pr, const float *scale, const float *bias,
                         float *y);

#endif
