/* Layer fusion, decided per context when it is created (bnn_fuse).
 *
 * Two patterns, both exact (the fused context computes the same bits as the unfused one):
 *
 * 1. Binary conv -> [Clip] -> binary conv, each value read only by the next layer: the first
 *    conv packs sign(y - t) of its output straight into the second conv's zero-padded bit
 *    image (t = the second conv's threshold, 0 without one). The float output, the clip pass
 *    and the second conv's packing pass disappear. With a clip [lo, hi] in between this needs
 *    lo < t <= hi for every channel: then clip(y) - t < 0 exactly when y - t < 0 (for
 *    floats a < b implies a - b < 0, as gradual underflow keeps a - b nonzero).
 * 2. A Clip whose input is read only by it and produced by the layer just before it (FP32
 *    conv / GEMM, binary conv, add): the producer clamps in its epilogue and writes the
 *    clip's output value directly.
 * 3. Binary conv -> Add (the residual of a Bi-Real / ReActNet block) [-> Clip], the conv's
 *    output read only by the add: the conv adds the other input (and clamps) in its
 *    epilogue, the same float operations in the same order.
 *
 * In pattern 1 the first conv's bits need no floats at all for interior windows: its
 * value v(p) = scale * (n - 2p) + bias is monotone in the popcount p, and so is every step
 * after it (float rounding, clamp, minus the threshold), so "v(p) - t < 0" holds for all p
 * above (scale > 0) or below (scale < 0) one integer, found by bisection on the very same
 * float expression (bnn_bconv_value): one integer compare per channel, bit-identical. Only
 * finite scale, bias and threshold get bounds (an infinity or NaN could break monotonicity);
 * border windows, whose n differs, keep the float path.
 *
 * 4. A padded FP32 conv that is the only reader of the model input (a ResNet stem): the
 *    NCHW -> NHWC transpose of the input writes straight into the conv's zero-padded copy
 *    (fconv.c) instead of into a tensor that is then copied: one pass less, same floats.
 *
 * Only adjacent layers are fused, so every buffer the planner assigns is still live exactly
 * when it is used. Two packed-bit buffers alternate along a chain of fused binary convs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

/* The bit conv P packs for the next conv at popcount p of an interior window (n valid bit
 * pairs): exactly bconv.c's epilogue and bitpack, for output channel o. */
static int out_bit(const bnn_bconv *b, const bnn_fusion *f, const float *t, int32_t n,
                   uint32_t o, int32_t p)
{
    float v = bnn_bconv_value(b->scale[o], b->bias[o], n, p);
    if (f->clamp)
        v = bnn_clip(v, f->lo, f->hi);
    return (t ? v - t[o] : v) < 0.0f;
}

/* First p in [0, n] where out_bit(p) != at0 (n + 1 if none); out_bit is monotone in p. */
static int32_t first_flip(const bnn_bconv *b, const bnn_fusion *f, const float *t, int32_t n,
                          uint32_t o, int at0)
{
    int32_t lo = 0, hi = n + 1;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (out_bit(b, f, t, n, o, mid) != at0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* f->bounds for binary conv P packing its bits for binary conv Q; left NULL (float path)
 * when a parameter is not finite. */
static int make_bounds(const bnn_layer *P, const bnn_layer *Q, bnn_fusion *f)
{
    const bnn_bconv *b = &P->p.bconv;
    const float *t = Q->p.bconv.threshold;
    const uint32_t oc = b->out_c;
    const int32_t n = (int32_t)((size_t)b->g.kh * b->g.kw * b->in_c);
    for (uint32_t o = 0; o < oc; o++)
        if (!isfinite(b->scale[o]) || !isfinite(b->bias[o]) || (t && !isfinite(t[o])))
            return BNN_OK;
    int32_t *nb = malloc(2 * (size_t)oc * sizeof *nb);
    if (!nb)
        return BNN_ENOMEM;
    for (uint32_t o = 0; o < oc; o++) {
        const int at0 = out_bit(b, f, t, n, o, 0);
        const int32_t flip = first_flip(b, f, t, n, o, at0);
        if (!at0) { /* bits 0 below flip, 1 from it: p > flip - 1 */
            nb[o] = 0;
            nb[oc + o] = flip - 1;
        } else { /* bits 1 below flip: p < flip, i.e. -p > -flip */
            nb[o] = -1;
            nb[oc + o] = -flip;
        }
    }
    f->bounds = nb;
    return BNN_OK;
}

void bnn_fusion_free(bnn_fusion *f, uint32_t n_layers)
{
    if (!f)
        return;
    for (uint32_t l = 0; l < n_layers; l++)
        free(f[l].bounds);
    free(f);
}

static int thresholds_inside(const bnn_bconv *q, float lo, float hi)
{
    for (uint32_t c = 0; c < q->in_c; c++) {
        const float t = q->threshold ? q->threshold[c] : 0.0f;
        if (!(lo < t && t <= hi))
            return 0;
    }
    return 1;
}

int bnn_fuse(const bnn_model *m, int enable, bnn_fusion *f)
{
    const uint32_t nl = m->n_layers;
    for (uint32_t l = 0; l < nl; l++)
        f[l] = (bnn_fusion){.bits_to = -1, .write = m->layers[l].out, .residual = BNN_NO_VALUE};
    if (!enable || nl == 0)
        return BNN_OK;
    uint32_t *uses = calloc(m->n_values, sizeof *uses);
    if (!uses)
        return BNN_ENOMEM;
    for (uint32_t l = 0; l < nl; l++)
        for (uint32_t i = 0; i < m->layers[l].n_in; i++)
            uses[m->layers[l].in[i]]++;
    uses[m->output_id]++; /* the caller reads it */
    const bnn_layer *L0 = &m->layers[0];
    if (L0->op == OP_CONV2D_F32 && L0->in[0] == m->input_id && uses[m->input_id] == 1 &&
        bnn_fconv_padded_floats(L0))
        f[0].nchw_in = 1; /* pattern 4 */
    for (uint32_t l = 0; l + 1 < nl; l++) {
        const bnn_layer *P = &m->layers[l], *C = &m->layers[l + 1];
        if (f[l].skip || uses[P->out] != 1)
            continue;
        if (P->op == OP_CONV2D_BIN && C->op == OP_ADD && C->in[0] != C->in[1] &&
            (C->in[0] == P->out || C->in[1] == P->out)) {
            /* pattern 3: residual add (and a clip after it) in the conv's epilogue */
            f[l].residual = C->in[0] == P->out ? C->in[1] : C->in[0];
            f[l].write = C->out;
            f[l + 1].skip = 1;
            const bnn_layer *D = l + 2 < nl ? &m->layers[l + 2] : NULL;
            if (D && D->op == OP_CLIP && D->in[0] == C->out && uses[C->out] == 1) {
                f[l].clamp = 1;
                f[l].lo = D->p.clip.lo;
                f[l].hi = D->p.clip.hi;
                f[l].write = D->out;
                f[l + 2].skip = 1;
            }
            continue;
        }
        if (C->in[0] != P->out || C->n_in != 1)
            continue;
        if (P->op == OP_CONV2D_BIN) {
            /* pattern 1: P -> Q or P -> clip C -> Q */
            const bnn_layer *Q = C;
            uint32_t q = l + 1;
            if (C->op == OP_CLIP && l + 2 < nl && uses[C->out] == 1) {
                Q = &m->layers[l + 2];
                q = l + 2;
                if (Q->op != OP_CONV2D_BIN || Q->in[0] != C->out ||
                    !thresholds_inside(&Q->p.bconv, C->p.clip.lo, C->p.clip.hi))
                    Q = NULL;
            }
            if (Q && Q->op == OP_CONV2D_BIN && Q->in[0] == (q == l + 1 ? P->out : C->out)) {
                f[l].bits_to = (int32_t)q;
                f[l].write = BNN_NO_VALUE;
                f[q].bits_in = 1;
                f[q].bits_buf = (uint8_t)(1 - f[l].bits_buf);
                if (q == l + 2)
                    f[l + 1].skip = 1;
                if (make_bounds(P, Q, &f[l])) {
                    free(uses);
                    return BNN_ENOMEM;
                }
                continue;
            }
        }
        /* pattern 2: producer -> clip */
        if (C->op == OP_CLIP && (P->op == OP_CONV2D_F32 || P->op == OP_GEMM ||
                                 P->op == OP_CONV2D_BIN || P->op == OP_ADD)) {
            f[l].clamp = 1;
            f[l].lo = C->p.clip.lo;
            f[l].hi = C->p.clip.hi;
            f[l].write = C->out;
            f[l + 1].skip = 1;
        }
    }
    free(uses);
    return BNN_OK;
}
