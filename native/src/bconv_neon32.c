/* ARMv7 NEON XOR-popcount row kernel of the binary convolution (scheme: bconv_neon.h),
 * compiled with -mfpu=neon -mfloat-abi=hard; the rest of an armv7 build stays NEON-free,
 * and kernels.c selects this only when getauxval(AT_HWCAP) reports HWCAP_NEON.
 * 4 output channels per pass (ARMv7 has 16 q registers: 8 accumulators + input + weight +
 * temporaries), and no vaddvq_u32: the u32 lanes are summed pairwise.
 */
#if defined(__arm__) && defined(__ARM_NEON)
#include <arm_neon.h>

static inline uint32_t hsum_u32x4(uint32x4_t v)
{
    const uint64x2_t s = vpaddlq_u32(v);
    return (uint32_t)(vgetq_lane_u64(s, 0) + vgetq_lane_u64(s, 1));
}

#ifdef BNN_MCA /* llvm-mca region markers (bench/mca_neon.sh; -S only) */
#define BNN_MCA_BEGIN() __asm__ volatile("@ LLVM-MCA-BEGIN bconv_neon32" ::: "memory")
#define BNN_MCA_END() __asm__ volatile("@ LLVM-MCA-END" ::: "memory")
#else
#define BNN_MCA_BEGIN() ((void)0)
#define BNN_MCA_END() ((void)0)
#endif
#define BNN_NEON_ROW bnn_bconv_row_neon32
#define BNN_NEON_HSUM(v) hsum_u32x4(v)
#define BNN_NEON_TILE_MAX 4
/* 4 chunks per inner-loop iteration: llvm-mca's Cortex-A57 model in AArch32 (an ARMv8 core
 * running armv7 code) gives 8.5 cycles per chunk x 4 channels against 10.0 with one, its
 * Cortex-A9 model 26.75 against 26.0 (bench/mca_neon.sh). */
#define CHUNKS_PER_IT 4
#include "bconv_neon.h"
#else
typedef int bnn_bconv_neon32_empty; /* ISO C forbids an empty translation unit */
#endif
