/* The AVX-512 intrinsics the AVX-512 kernel files use, in plain C, for `make test-avx512-emu`
 * only: that build compiles bconv_avx512.c and sgemm_avx512.c against this header (with
 * -DBNN_AVX512_EMULATE) so their tiling, layouts, tails and masks run through the C tests
 * on a CPU without AVX-512 (this project's CI; qemu-user lacks VPOPCNTDQ). It checks the
 * code paths, not the instructions: a real AVX-512 machine runs the real build the same way
 * (`make test` lists [avx512] there). Each function follows Intel's pseudocode for its
 * instruction; the float ones round as the hardware does (one rounding per FMA: fmaf). */
#ifndef BNN_AVX512_EMU_H
#define BNN_AVX512_EMU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Out of line: inlining these loops into the unrolled kernels took gcc minutes at -O1 -g. */
#define EMU static __attribute__((noinline, unused))

typedef struct {
    uint64_t q[8];
} __m512i;
typedef struct {
    float f[16];
} __m512;
typedef uint8_t __mmask8;
typedef uint16_t __mmask16;

#define _CMP_LT_OQ 0x11
#define _CMP_GT_OQ 0x1e

EMU __m512i _mm512_setzero_si512(void)
{
    __m512i r;
    memset(&r, 0, sizeof r);
    return r;
}

EMU __m512i _mm512_set1_epi64(long long v)
{
    __m512i r;
    for (int i = 0; i < 8; i++)
        r.q[i] = (uint64_t)v;
    return r;
}

EMU __m512i _mm512_load_si512(const void *p)
{
    /* the real instruction faults on a misaligned address: so does this */
    if ((uintptr_t)p % 64)
        __builtin_trap();
    __m512i r;
    memcpy(&r, p, sizeof r);
    return r;
}

EMU __m512i _mm512_loadu_si512(const void *p)
{
    __m512i r;
    memcpy(&r, p, sizeof r);
    return r;
}

/* 32-bit lane views of a __m512i (lane i = bytes 4i..4i+3, little-endian as on x86) */
EMU void emu_get32(__m512i a, int32_t d[16]) { memcpy(d, &a, 64); }
EMU __m512i emu_set32(const int32_t d[16])
{
    __m512i r;
    memcpy(&r, d, 64);
    return r;
}

EMU __m512i _mm512_set1_epi32(int v)
{
    int32_t d[16];
    for (int i = 0; i < 16; i++)
        d[i] = v;
    return emu_set32(d);
}

/* wrapping, as the instruction (no signed overflow in C) */
EMU __m512i _mm512_sub_epi32(__m512i a, __m512i b)
{
    int32_t x[16], y[16];
    emu_get32(a, x);
    emu_get32(b, y);
    for (int i = 0; i < 16; i++)
        x[i] = (int32_t)((uint32_t)x[i] - (uint32_t)y[i]);
    return emu_set32(x);
}

EMU __mmask16 _mm512_cmpgt_epi32_mask(__m512i a, __m512i b)
{
    int32_t x[16], y[16];
    emu_get32(a, x);
    emu_get32(b, y);
    __mmask16 k = 0;
    for (int i = 0; i < 16; i++)
        k |= (__mmask16)((x[i] > y[i]) << i);
    return k;
}

EMU __m512 _mm512_cvtepi32_ps(__m512i a)
{
    int32_t x[16];
    emu_get32(a, x);
    __m512 r;
    for (int i = 0; i < 16; i++)
        r.f[i] = (float)x[i]; /* round to nearest even, as vcvtdq2ps by default */
    return r;
}

EMU __m512i _mm512_xor_si512(__m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        a.q[i] ^= b.q[i];
    return a;
}

EMU __m512i _mm512_add_epi64(__m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        a.q[i] += b.q[i];
    return a;
}

EMU __m512i _mm512_popcnt_epi64(__m512i a)
{
    for (int i = 0; i < 8; i++)
        a.q[i] = (uint64_t)__builtin_popcountll(a.q[i]);
    return a;
}

/* vpmovqd to memory under a write mask: lane i's low 32 bits to p[i] where k has bit i */
EMU void _mm512_mask_cvtepi64_storeu_epi32(void *p, __mmask8 k, __m512i a)
{
    for (int i = 0; i < 8; i++)
        if (k >> i & 1) {
            const uint32_t v = (uint32_t)a.q[i];
            memcpy((char *)p + 4 * i, &v, 4);
        }
}

EMU __m512 _mm512_setzero_ps(void)
{
    __m512 r;
    for (int i = 0; i < 16; i++)
        r.f[i] = 0.0f;
    return r;
}

EMU __m512 _mm512_set1_ps(float v)
{
    __m512 r;
    for (int i = 0; i < 16; i++)
        r.f[i] = v;
    return r;
}

EMU __m512 _mm512_loadu_ps(const void *p)
{
    __m512 r;
    memcpy(&r, p, sizeof r);
    return r;
}

EMU __m512 _mm512_load_ps(const void *p)
{
    if ((uintptr_t)p % 64)
        __builtin_trap();
    return _mm512_loadu_ps(p);
}

EMU void _mm512_storeu_ps(void *p, __m512 a) { memcpy(p, &a, sizeof a); }

EMU void _mm512_store_ps(void *p, __m512 a)
{
    if ((uintptr_t)p % 64)
        __builtin_trap();
    memcpy(p, &a, sizeof a);
}

EMU __m512 _mm512_add_ps(__m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        a.f[i] = a.f[i] + b.f[i];
    return a;
}

EMU __m512 _mm512_sub_ps(__m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        a.f[i] = a.f[i] - b.f[i];
    return a;
}

EMU __m512 _mm512_mul_ps(__m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        a.f[i] = a.f[i] * b.f[i];
    return a;
}

EMU __m512 _mm512_fmadd_ps(__m512 a, __m512 b, __m512 c)
{
    for (int i = 0; i < 16; i++)
        c.f[i] = fmaf(a.f[i], b.f[i], c.f[i]);
    return c;
}

/* vmaxps: a > b ? a : b per lane (b when either is NaN) */
EMU __m512 _mm512_max_ps(__m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        a.f[i] = a.f[i] > b.f[i] ? a.f[i] : b.f[i];
    return a;
}

/* the two predicates the kernels use; both false when either operand is NaN */
EMU __mmask16 _mm512_cmp_ps_mask(__m512 a, __m512 b, const int pred)
{
    __mmask16 k = 0;
    for (int i = 0; i < 16; i++) {
        const int t = pred == _CMP_LT_OQ ? a.f[i] < b.f[i] : a.f[i] > b.f[i];
        k |= (__mmask16)(t << i);
    }
    return k;
}

/* lane i = b[i] where k has bit i, else a[i] */
EMU __m512 _mm512_mask_blend_ps(__mmask16 k, __m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        if (k >> i & 1)
            a.f[i] = b.f[i];
    return a;
}

#endif
