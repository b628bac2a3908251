/* The single dispatch point for ISA-specific kernels.
 *
 * Today only the portable set exists. An ISA kernel file (bconv_avx2.c, bconv_neon.c, ...)
 * compiled with its own target flags adds an entry here, chosen at run time from CPU
 * features (e.g. __builtin_cpu_supports on x86, getauxval(AT_HWCAP) on ARM), so one binary
 * stays correct on every CPU of its architecture.
 */
#include "kernels.h"

#if defined(__aarch64__) || defined(__arm__)
/* ARM: NEON row kernel (bconv_neon64.c / bconv_neon32.c), the default where NEON exists:
 * always on AArch64, via getauxval(AT_HWCAP) & HWCAP_NEON on ARMv7. BNNBENCH_ISA or
 * bnn_set_isa() picks "neon" or "portable" (unknown/unsupported: an error, as on x86). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__arm__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
#endif
void bnn_bconv_row_neon64(const bnn_bconv_row_args *a);
void bnn_bconv_row_neon32(const bnn_bconv_row_args *a);
static const bnn_kernel_table arm_neon = {
    .isa = "neon",
    .bitpack = bnn_bitpack_portable,
    .threshold_counts = bnn_threshold_counts_portable,
    .bconv_out = bnn_bconv_out_portable,
    .maxpool_px = bnn_maxpool_px_portable,
#if defined(__aarch64__)
    .bconv_row = bnn_bconv_row_neon64,
#else
    .bconv_row = bnn_bconv_row_neon32,
#endif
    .sgemm_ukernel = bnn_sgemm_ukernel_portable,
    .sgemm_ukernel_direct = bnn_sgemm_ukernel_direct_portable,
    .sgemm_mr = BNN_SGEMM_MR_PORTABLE,
};
static const bnn_kernel_table portable;
static int arm_has_neon(void)
{
#if defined(__arm__)
    return (getauxval(AT_HWCAP) & HWCAP_NEON) != 0;
#else
    return 1;
#endif
}
/* NULL/"" = best supported; NULL result for an unknown or unsupported name. */
static const bnn_kernel_table *arm_lookup(const char *name)
{
    if (!name || !*name)
        return arm_has_neon() ? &arm_neon : &portable;
    if (!strcmp(name, "portable"))
        return &portable;
    if (!strcmp(name, "neon") && arm_has_neon())
        return &arm_neon;
    return NULL;
}
static _Atomic(const bnn_kernel_table *) arm_current;
static _Atomic(const char *) arm_env_error;
static void arm_select(void)
{
    const char *env = getenv("BNNBENCH_ISA");
    const bnn_kernel_table *t = arm_lookup(env);
    if (!t) {
        static char env_msg[200];
        snprintf(env_msg, sizeof env_msg,
                 "BNNBENCH_ISA: unknown or unsupported ISA '%.40s' (want portable or neon)", env);
        atomic_store(&arm_env_error, env_msg);
        t = arm_lookup(NULL);
    }
    atomic_store(&arm_current, t);
}
static pthread_once_t arm_once = PTHREAD_ONCE_INIT;
#endif

static const bnn_kernel_table portable = {
    .isa = "portable",
    .bitpack = bnn_bitpack_portable,
    .threshold_counts = bnn_threshold_counts_portable,
    .bconv_out = bnn_bconv_out_portable,
    .maxpool_px = bnn_maxpool_px_portable,
    .bconv_row = bnn_bconv_row_portable,
    .sgemm_ukernel = bnn_sgemm_ukernel_portable,
    .sgemm_ukernel_direct = bnn_sgemm_ukernel_direct_portable,
    .sgemm_mr = BNN_SGEMM_MR_PORTABLE,
};

const bnn_kernel_table *bnn_kernels(void)
{
#if defined(__aarch64__) || defined(__arm__)
    pthread_once(&arm_once, arm_select);
    return atomic_load(&arm_current);
#endif
#if defined(__x86_64__)
    const bnn_kernel_table *x86_kernels(void);
    return x86_kernels();
#endif
    return &portable;
}

#include <string.h>

#include "bnn.h" /* bnn_set_isa, bnn_isa_supported: public API */

#if defined(__x86_64__)
/* x86-64: row kernels per instruction set (bconv_popcnt.c, bconv_avx2.c, bconv_avx512.c,
 * each compiled for its ISA by target attributes), chosen at run time from cpuid. The best
 * supported one is the default; BNNBENCH_ISA=portable|popcnt|avx2|avx512 or bnn_set_isa()
 * forces one (an unknown name or one the CPU lacks is an error, never a silent fallback).
 * "avx2" also brings AVX2 sign packing and an AVX2+FMA SGEMM micro-kernel. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pool, sgemm: the suffixes of the max-pool kernel and of the SGEMM pair (packed, direct);
 * last the SGEMM's MR, optionally followed by designated initializers (the two-panel pair) */
#define X86_TABLE(name, pack, thr, out, pool, row, sgemm, ...)                              \
    {.isa = name, .bitpack = pack, .threshold_counts = thr, .bconv_out = out,               \
     .maxpool_px = bnn_maxpool_px_##pool, .bconv_row = row,                                 \
     .sgemm_ukernel = bnn_sgemm_ukernel_##sgemm,                                            \
     .sgemm_ukernel_direct = bnn_sgemm_ukernel_direct_##sgemm, .sgemm_mr = __VA_ARGS__}
static const bnn_kernel_table x86_tables[] = {
    /* best first; the AVX-512 SGEMM's floats equal the AVX2 SGEMM's bit for bit
     * (sgemm_avx512.c), so those two sets compute identical outputs */
    X86_TABLE("avx512", bnn_bitpack_avx512, bnn_threshold_counts_avx512, bnn_bconv_out_avx512,
              avx512, bnn_bconv_row_avx512, avx512, BNN_SGEMM_MR_AVX512,
              .sgemm_ukernel2 = bnn_sgemm_ukernel2_avx512,
              .sgemm_ukernel2_direct = bnn_sgemm_ukernel2_direct_avx512),
    X86_TABLE("avx2", bnn_bitpack_avx2, bnn_threshold_counts_avx2, bnn_bconv_out_avx2, avx2,
              bnn_bconv_row_avx2, avx2, BNN_SGEMM_MR_AVX2),
    X86_TABLE("popcnt", bnn_bitpack_portable, bnn_threshold_counts_portable,
              bnn_bconv_out_portable, portable, bnn_bconv_row_popcnt, portable,
              BNN_SGEMM_MR_PORTABLE),
    X86_TABLE("portable", bnn_bitpack_portable, bnn_threshold_counts_portable,
              bnn_bconv_out_portable, portable, bnn_bconv_row_portable, portable,
              BNN_SGEMM_MR_PORTABLE),
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

/* name -> table; *why gets a message when it is unknown or unsupported. NULL/"" = best. */
static const bnn_kernel_table *x86_lookup(const char *name, const char **why)
{
    static char msg[160];
    for (size_t i = 0; i < X86_NTABLES; i++) {
        const bnn_kernel_table *t = &x86_tables[i];
        if (name && *name && strcmp(name, t->isa))
            continue;
        if (x86_supported(t))
            return t;
        if (name && *name) {
            snprintf(msg, sizeof msg, "ISA '%s' is not supported by this CPU", name);
            *why = msg;
            return NULL;
        }
    }
    if (name && *name) {
        snprintf(msg, sizeof msg, "unknown ISA '%.40s' (want portable, popcnt, avx2 or avx512)",
                 name);
        *why = msg;
    }
    return NULL;
}

static _Atomic(const bnn_kernel_table *) x86_current;
static _Atomic(const char *) x86_env_error;
static void x86_select(void)
{
    const char *env = getenv("BNNBENCH_ISA"), *why = NULL;
    const bnn_kernel_table *t = x86_lookup(env, &why);
    if (!t) {
        static char env_msg[200];
        snprintf(env_msg, sizeof env_msg, "BNNBENCH_ISA: %s", why);
        atomic_store(&x86_env_error, env_msg);
        t = x86_lookup(NULL, &why);
    }
    atomic_store(&x86_current, t);
}
static pthread_once_t x86_once = PTHREAD_ONCE_INIT;
const bnn_kernel_table *x86_kernels(void)
{
    pthread_once(&x86_once, x86_select);
    return atomic_load(&x86_current);
}

const char *bnn_kernels_env_error(void)
{
    pthread_once(&x86_once, x86_select);
    return atomic_load(&x86_env_error);
}

int bnn_set_isa(const char *name)
{
    pthread_once(&x86_once, x86_select);
    const char *why = NULL;
    const bnn_kernel_table *t = x86_lookup(name, &why);
    if (!t)
        return BNN_EARG;
    atomic_store(&x86_current, t);
    atomic_store(&x86_env_error, (const char *)NULL);
    return BNN_OK;
}

int bnn_isa_supported(const char *name)
{
    const char *why = NULL;
    return name && *name && x86_lookup(name, &why) != NULL;
}
#elif defined(__aarch64__) || defined(__arm__)
const char *bnn_kernels_env_error(void)
{
    pthread_once(&arm_once, arm_select);
    return atomic_load(&arm_env_error);
}
int bnn_set_isa(const char *name)
{
    pthread_once(&arm_once, arm_select);
    const bnn_kernel_table *t = arm_lookup(name);
    if (!t)
        return BNN_EARG;
    atomic_store(&arm_current, t);
    atomic_store(&arm_env_error, (const char *)NULL);
    return BNN_OK;
}
int bnn_isa_supported(const char *name)
{
    return name && *name && arm_lookup(name) != NULL;
}
#else
/* Other architectures: the override accepts only the kernel set already selected. */
const char *bnn_kernels_env_error(void)
{
    return NULL;
}
int bnn_isa_supported(const char *name)
{
    return name && !strcmp(name, bnn_kernels()->isa);
}
int bnn_set_isa(const char *name)
{
    return !name || !*name || bnn_isa_supported(name) ? BNN_OK : BNN_EARG;
}
#endif
