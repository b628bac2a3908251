/* The single dispatch point for ISA-specific kernels.
 *
 * Each ISA kernel file (bconv_avx2.c, bconv_neon64.c, ...) is compiled with its own target
 * flags or attributes and has an entry here, chosen at run time from CPU features
 * (__builtin_cpu_supports on x86, getauxval(AT_HWCAP) on ARM), so one binary stays correct
 * on every CPU of its architecture. An entry also names the weight layout its binary row
 * kernel reads (bconv_prepack), which models build only for the sets that run.
 *
 * Each architecture provides lookup() (a name to the table, or why not); the selection from
 * BNNBENCH_ISA, bnn_set_isa and bnn_isa_supported are one code path for all of them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn.h" /* bnn_set_isa, bnn_isa_supported: public API */
#include "kernels.h"

/* A kernel set's table. pool, sgemm: the suffixes of the max-pool kernel and of the SGEMM
 * pair (packed, direct); last the SGEMM's MR, optionally followed by designated
 * initializers (the two-panel SGEMM pair, the row kernel's own weight layout). */
#define KERNEL_TABLE(name, pack, thr, out, pool, row, sgemm, ...)                           \
    {.isa = name, .bitpack = pack, .threshold_counts = thr, .bconv_out = out,               \
     .maxpool_px = bnn_maxpool_px_##pool, .bconv_row = row,                                 \
     .sgemm_ukernel = bnn_sgemm_ukernel_##sgemm,                                            \
     .sgemm_ukernel_direct = bnn_sgemm_ukernel_direct_##sgemm, .sgemm_mr = __VA_ARGS__}

/* Every architecture's fallback; an ISA set replaces the parts it speeds up. */
#define PORTABLE_TABLE(name, row)                                                           \
    KERNEL_TABLE(name, bnn_bitpack_portable, bnn_threshold_counts_portable,                 \
                 bnn_bconv_out_portable, portable, row, portable, BNN_SGEMM_MR_PORTABLE)

static const bnn_kernel_table portable = PORTABLE_TABLE("portable", bnn_bconv_row_portable);

/* lookup(name, why): the table named `name` if this build has it and this CPU runs it; the
 * best such table for NULL or ""; else NULL, with *why saying which of the two failed. */

#if defined(__x86_64__)
/* x86-64: row kernels per instruction set (bconv_popcnt.c, bconv_avx2.c, bconv_avx512.c,
 * each compiled for its ISA by target attributes), chosen at run time from cpuid. The best
 * supported one is the default; BNNBENCH_ISA=portable|popcnt|avx2|avx512 or bnn_set_isa()
 * forces one (an unknown name or one the CPU lacks is an error, never a silent fallback).
 * "avx2" also brings AVX2 sign packing and an AVX2+FMA SGEMM micro-kernel. */
static const bnn_kernel_table x86_tables[] = {
    /* best first; the AVX-512 SGEMM's floats equal the AVX2 SGEMM's bit for bit
     * (sgemm_avx512.c), so those two sets compute identical outputs */
    KERNEL_TABLE("avx512", bnn_bitpack_avx512, bnn_threshold_counts_avx512, bnn_bconv_out_avx512,
                 avx512, bnn_bconv_row_avx512, avx512, BNN_SGEMM_MR_AVX512,
                 .sgemm_ukernel2 = bnn_sgemm_ukernel2_avx512,
                 .sgemm_ukernel2_direct = bnn_sgemm_ukernel2_direct_avx512,
                 .bconv_prepack = &bnn_bconv_prepack_avx512),
    KERNEL_TABLE("avx2", bnn_bitpack_avx2, bnn_threshold_counts_avx2, bnn_bconv_out_avx2, avx2,
                 bnn_bconv_row_avx2, avx2, BNN_SGEMM_MR_AVX2,
                 .bconv_prepack = &bnn_bconv_prepack_avx2),
    PORTABLE_TABLE("popcnt", bnn_bconv_row_popcnt),
};
#define X86_NTABLES (sizeof x86_tables / sizeof *x86_tables)

static int x86_supported(const bnn_kernel_table *t)
{
    __builtin_cpu_init();
    if (!strcmp(t->isa, "avx512"))
#if defined(BNN_AVX512_EMULATE) /* tests only: the AVX-512 files run on C stand-ins */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    if (!strcmp(t->isa, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("popcnt");
    if (!strcmp(t->isa, "popcnt"))
        return __builtin_cpu_supports("popcnt");
    return 1;
}

static const bnn_kernel_table *lookup(const char *name, const char **why)
{
    static char msg[160];
    const int named = name && *name;
    for (size_t i = 0; i <= X86_NTABLES; i++) { /* the portable set last */
        const bnn_kernel_table *t = i < X86_NTABLES ? &x86_tables[i] : &portable;
        if (named && strcmp(name, t->isa))
            continue;
        if (x86_supported(t))
            return t;
        if (named) {
            snprintf(msg, sizeof msg, "ISA '%s' is not supported by this CPU", name);
            *why = msg;
            return NULL;
        }
    }
    /* only a name gets here: without one the portable set, which runs anywhere, is found */
    snprintf(msg, sizeof msg, "unknown ISA '%.40s' (want portable, popcnt, avx2 or avx512)",
             name);
    *why = msg;
    return NULL;
}

#elif defined(__aarch64__) || defined(__arm__)
/* ARM: NEON kernels, the default where NEON exists: always on AArch64, via
 * getauxval(AT_HWCAP) & HWCAP_NEON on ARMv7. The row kernel (bconv_neon64.c /
 * bconv_neon32.c), the max pool (pool_neon.c), the integer-bound bits (and on AArch64 the
 * sign packing: bitpack_neon.c) and the SGEMM: AArch64 FMLA 6 x 16
 * (sgemm_neon64.c); on ARMv7 (sgemm_neon32.c) VFMA 4 x 16 where HWCAP_VFPv4 says the CPU has
 * it, VMLA otherwise (both tables are named "neon": the CPU decides, as it would for the
 * hardware). BNNBENCH_ISA or bnn_set_isa() picks "neon" or "portable" (unknown/unsupported:
 * an error, as on x86). */
#if defined(__arm__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
#ifndef HWCAP_VFPv4
#define HWCAP_VFPv4 (1 << 16)
#endif
#endif
#if defined(__aarch64__)
static const bnn_kernel_table arm_neon =
    KERNEL_TABLE("neon", bnn_bitpack_neon, bnn_threshold_counts_neon, bnn_bconv_out_portable,
                 neon, bnn_bconv_row_neon64, neon64, BNN_SGEMM_MR_NEON64);
#else
static const bnn_kernel_table arm_neon_vmla =
    KERNEL_TABLE("neon", bnn_bitpack_portable, bnn_threshold_counts_neon,
                 bnn_bconv_out_portable, neon, bnn_bconv_row_neon32, neon32, BNN_SGEMM_MR_NEON32);
static const bnn_kernel_table arm_neon_vfma =
    KERNEL_TABLE("neon", bnn_bitpack_portable, bnn_threshold_counts_neon,
                 bnn_bconv_out_portable, neon, bnn_bconv_row_neon32, neon32fma,
                 BNN_SGEMM_MR_NEON32);
#endif
static int arm_has_neon(void)
{
#if defined(__arm__)
    return (getauxval(AT_HWCAP) & HWCAP_NEON) != 0;
#else
    return 1;
#endif
}
/* The NEON table for this CPU (only called where arm_has_neon()). */
static const bnn_kernel_table *arm_neon_table(void)
{
#if defined(__arm__)
    return bnn_sgemm_neon32_has_fma && (getauxval(AT_HWCAP) & HWCAP_VFPv4) ? &arm_neon_vfma
                                                                           : &arm_neon_vmla;
#else
    return &arm_neon;
#endif
}
static const bnn_kernel_table *lookup(const char *name, const char **why)
{
    static char msg[160];
    if (!name || !*name)
        return arm_has_neon() ? arm_neon_table() : &portable;
    if (!strcmp(name, "portable"))
        return &portable;
    if (!strcmp(name, "neon") && arm_has_neon())
        return arm_neon_table();
    snprintf(msg, sizeof msg, "unknown or unsupported ISA '%.40s' (want portable or neon)",
             name);
    *why = msg;
    return NULL;
}

#else
/* Other architectures: the portable set alone. */
static const bnn_kernel_table *lookup(const char *name, const char **why)
{
    static char msg[160];
    if (!name || !*name || !strcmp(name, "portable"))
        return &portable;
    snprintf(msg, sizeof msg, "unknown ISA '%.40s' (want portable)", name);
    *why = msg;
    return NULL;
}
#endif

static _Atomic(const bnn_kernel_table *) current;
static _Atomic(const char *) env_error;
static void select_from_env(void)
{
    const char *env = getenv("BNNBENCH_ISA"), *why = NULL;
    const bnn_kernel_table *t = lookup(env, &why);
    if (!t) {
        static char env_msg[200];
        snprintf(env_msg, sizeof env_msg, "BNNBENCH_ISA: %s", why);
        atomic_store(&env_error, env_msg);
        t = lookup(NULL, &why);
    }
    atomic_store(&current, t);
}
static pthread_once_t select_once = PTHREAD_ONCE_INIT;

const bnn_kernel_table *bnn_kernels(void)
{
    pthread_once(&select_once, select_from_env);
    return atomic_load(&current);
}

const char *bnn_kernels_env_error(void)
{
    pthread_once(&select_once, select_from_env);
    return atomic_load(&env_error);
}

int bnn_set_isa(const char *name)
{
    pthread_once(&select_once, select_from_env);
    const char *why = NULL;
    const bnn_kernel_table *t = lookup(name, &why);
    if (!t)
        return BNN_EARG;
    atomic_store(&current, t);
    atomic_store(&env_error, (const char *)NULL);
    return BNN_OK;
}

int bnn_isa_supported(const char *name)
{
    const char *why = NULL;
    return name && *name && lookup(name, &why) != NULL;
}
