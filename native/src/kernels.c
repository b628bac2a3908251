/* The single dispatch point for ISA-specific kernels.
 *
 * Today only the portable set exists. An ISA kernel file (bconv_avx2.c, bconv_neon.c, ...)
 * compiled with its own target flags adds an entry here, chosen at run time from CPU
 * features (e.g. __builtin_cpu_supports on x86, getauxval(AT_HWCAP) on ARM), so one binary
 * stays correct on every CPU of its architecture.
 */
#include "kernels.h"

static const bnn_kernel_table portable = {
    .isa = "portable",
    .bitpack = bnn_bitpack_portable,
    .bconv_row = bnn_bconv_row_portable,
    .sgemm_ukernel = bnn_sgemm_ukernel_portable,
    .sgemm_mr = BNN_SGEMM_MR_PORTABLE,
};

const bnn_kernel_table *bnn_kernels(void)
{
    return &portable;
}
