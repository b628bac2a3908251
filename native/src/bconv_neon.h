/* The NEON XOR-popcount row kernel of the binary convolution, shared by the AArch64
 * (bconv_neon64.c) and ARMv7 (bconv_neon32.c) files, which include it after defining:
 *     BNN_NEON_ROW       the function's name
 *     BNN_NEON_HSUM(v)   sum of the four u32 lanes of v
 *     BNN_NEON_TILE_MAX  8 (AArch64: 32 q registers) or 4 (ARMv7: 16)
 *     BNN_MCA_BEGIN/END  llvm-mca region markers, or no-ops
 *     CHUNKS_PER_IT      chunks per inner-loop iteration (optional, default 1)
 *     BNN_NEON_ATTR      attributes of the row function (optional, e.g. a tuning)
 *
 * Per 128-bit chunk (two u64 words of one kernel row) and output channel:
 *     veorq_u8 -> vcntq_u8 (16 byte counts, each <= 8) -> vpadalq_u8 into a u16x8
 * accumulator (each lane gains <= 16 per chunk). There is no horizontal reduction per
 * chunk: the u16 lanes are folded into a u32x4 accumulator with vpadalq_u16 only before
 * they could overflow (every U16_CHUNKS chunks), and the u32 lanes are summed once per
 * output. An odd trailing u64 word of a kernel row is counted with the 64-bit forms
 * (veor_u8, vcnt_u8) and widened into the same accumulator (vaddw_u8).
 *
 * Register tiling: NT output channels per pass (BNN_NEON_TILE_MAX, then 4, then 1 for the
 * remainder) share every input chunk load. Padded taps read 0 bits, exactly as in the
 * portable kernel; the driver (bconv.c) corrects them, so results are bit-identical to
 * bnn_bconv_row_portable.
 */
#ifndef BNN_BCONV_NEON_H
#define BNN_BCONV_NEON_H

#include <arm_neon.h>

#include "kernels.h"

/* 128-bit chunks per iteration of the inner loop (the rest one at a time), set per file */
#ifndef CHUNKS_PER_IT
#define CHUNKS_PER_IT 1
#endif

/* A u16 lane gains at most 16 per chunk (two byte counts of <= 8): 4095 * 16 < 65536. */
#ifndef U16_CHUNKS /* overridable so cross-test exercises the fold on every case */
#define U16_CHUNKS 4095u
#endif

/* Widen the u16 accumulators into the u32 ones before a lane could overflow; returns the
 * new count of pending chunks (0). */
static inline __attribute__((always_inline)) uint32_t fold_u16(uint16x8_t *acc16,
                                                               uint32x4_t *acc32, const int NT)
{
#pragma GCC unroll 8
    for (int c = 0; c < NT; c++) {
        acc32[c] = vpadalq_u16(acc32[c], acc16[c]);
        acc16[c] = vdupq_n_u16(0);
    }
    return 0;
}

static inline __attribute__((always_inline)) void
tile(const bnn_bconv_row_args *a, const uint64_t *win, uint32_t o, int32_t *pop, const int NT)
{
    const uint32_t tw = a->tap_words, pairs = tw / 2;
    const uint8_t *wp[8];
    uint16x8_t acc16[8];
    uint32x4_t acc32[8];
#pragma GCC unroll 8
    for (int c = 0; c < NT; c++) {
        acc16[c] = vdupq_n_u16(0);
        acc32[c] = vdupq_n_u32(0);
    }
    uint32_t pending = 0; /* chunks in acc16 since the last fold */
    for (uint32_t i = 0; i < a->kh; i++) {
        const uint8_t *ip = (const uint8_t *)(win + (size_t)i * a->row_stride);
#pragma GCC unroll 8
        for (int c = 0; c < NT; c++)
            wp[c] = (const uint8_t *)(a->w + (size_t)(o + (uint32_t)c) * a->w_stride +
                                      (size_t)i * tw);
        uint32_t done = 0;
        while (done < pairs) {
            if (pending >= U16_CHUNKS)
                pending = fold_u16(acc16, acc32, NT);
            uint32_t n = pairs - done;
            if (n > U16_CHUNKS - pending)
                n = U16_CHUNKS - pending;
            const size_t off = (size_t)done * 16;
            const uint8_t *xp = ip + off, *wq[8];
#pragma GCC unroll 8
            for (int c = 0; c < NT; c++)
                wq[c] = wp[c] + off;
            uint32_t t = 0;
            /* CHUNKS_PER_IT chunks per iteration through bumped pointers, loaded with
             * immediate offsets: a register-offset LDR (what GCC makes of one shared index)
             * is 2 micro-ops in the Cortex-A57/A72 model, whose 3-wide dispatch, not the two
             * ASIMD pipes, then bounded the loop (18 instead of 12 cycles per 8 channels). */
            BNN_MCA_BEGIN();
            for (; t + CHUNKS_PER_IT <= n; t += CHUNKS_PER_IT, xp += 16 * CHUNKS_PER_IT) {
                uint8x16_t x[CHUNKS_PER_IT];
#pragma GCC unroll 4
                for (int u = 0; u < CHUNKS_PER_IT; u++)
                    x[u] = vld1q_u8(xp + 16 * u);
#pragma GCC unroll 8
                for (int c = 0; c < NT; c++) {
#pragma GCC unroll 4
                    for (int u = 0; u < CHUNKS_PER_IT; u++)
                        acc16[c] = vpadalq_u8(acc16[c],
                                              vcntq_u8(veorq_u8(x[u], vld1q_u8(wq[c] + 16 * u))));
                    /* opaque to GCC's induction-variable pass, which otherwise turns the
                     * pointers back into one shared register index */
                    wq[c] += 16 * CHUNKS_PER_IT;
                    __asm__("" : "+r"(wq[c]));
                }
            }
            BNN_MCA_END();
            for (; t < n; t++, xp += 16) {
                const uint8x16_t x = vld1q_u8(xp);
#pragma GCC unroll 8
                for (int c = 0; c < NT; c++) {
                    acc16[c] = vpadalq_u8(acc16[c], vcntq_u8(veorq_u8(x, vld1q_u8(wq[c]))));
                    wq[c] += 16;
                }
            }
            done += n;
            pending += n;
        }
        if (tw & 1u) {
            if (pending >= U16_CHUNKS)
                pending = fold_u16(acc16, acc32, NT);
            const size_t off = (size_t)pairs * 16;
            const uint8x8_t x = vld1_u8(ip + off);
#pragma GCC unroll 8
            for (int c = 0; c < NT; c++)
                acc16[c] = vaddw_u8(acc16[c], vcnt_u8(veor_u8(x, vld1_u8(wp[c] + off))));
            pending++;
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NT; c++)
        pop[c] = (int32_t)BNN_NEON_HSUM(vpadalq_u16(acc32[c], acc16[c]));
}

#ifndef BNN_NEON_ATTR
#define BNN_NEON_ATTR
#endif
BNN_NEON_ATTR void BNN_NEON_ROW(const bnn_bconv_row_args *a)
{
    const uint32_t nout = a->o_end - a->o_begin;
    for (uint32_t x = 0; x < a->ow; x++) {
        const uint64_t *win = a->in + (size_t)x * a->x_stride;
        int32_t *pop = a->pop + (size_t)x * nout;
        uint32_t o = a->o_begin;
#if BNN_NEON_TILE_MAX >= 8
        for (; o + 8 <= a->o_end; o += 8)
            tile(a, win, o, pop + (o - a->o_begin), 8);
#endif
        for (; o + 4 <= a->o_end; o += 4)
            tile(a, win, o, pop + (o - a->o_begin), 4);
        for (; o < a->o_end; o++)
            tile(a, win, o, pop + (o - a->o_begin), 1);
    }
}

#endif
