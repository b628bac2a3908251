/* AArch64 NEON XOR-popcount row kernel of the binary convolution (scheme: bconv_neon.h).
 * 8 output channels per pass use 16 of the 32 vector registers for accumulators; the u32
 * lanes are summed with vaddvq_u32.
 *
 * native/bench/mca_neon.sh analyses the inner loop with llvm-mca (the BNN_MCA_BEGIN/END
 * markers expand to LLVM-MCA region comments only when BNN_MCA is defined).
 */
#if defined(__aarch64__)
#ifdef BNN_MCA
#define BNN_MCA_BEGIN() __asm__ volatile("# LLVM-MCA-BEGIN bconv_neon64" ::: "memory")
#define BNN_MCA_END() __asm__ volatile("# LLVM-MCA-END" ::: "memory")
#else
#define BNN_MCA_BEGIN() ((void)0)
#define BNN_MCA_END() ((void)0)
#endif
#define BNN_NEON_ROW bnn_bconv_row_neon64
#define BNN_NEON_HSUM(v) vaddvq_u32(v)
#define BNN_NEON_TILE_MAX 8
/* Two 128-bit chunks per inner-loop iteration, scheduled with GCC's Cortex-A57 tuning (the
 * A72's pipeline) instead of the generic one, which merges the weight loads into pairs that
 * cost the A57/A72 model 3 micro-ops each; with 4 chunks per iteration the generic
 * scheduler hoists 36 loads and spills. llvm-mca cycles per chunk x 8 channels
 * (bench/mca_neon.sh, LLVM 19), before (1 chunk, register-offset loads, generic) -> now:
 * Cortex-A72 model 18.0 -> 13.5, Neoverse N1 12.0 -> 12.0, Cortex-A53 38.0 -> 38.5. */
#define CHUNKS_PER_IT 2
#if defined(__GNUC__) && !defined(__clang__)
#define BNN_NEON_ATTR __attribute__((target("tune=cortex-a57")))
#endif
#include "bconv_neon.h"
#else
typedef int bnn_bconv_neon64_empty; /* ISO C forbids an empty translation unit */
#endif
