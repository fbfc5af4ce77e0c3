/* Dropout as one fused op. The keep/drop decision of element i is a counter-based hash of
 * (key, i), the key being one draw from the generator: the mask is never stored (backward
 * recomputes it from the key), every element costs a few integer multiplies in SIMD lanes,
 * and the result does not depend on the number of threads. Op-by-op dropout (uniform draws,
 * a comparison, two multiplies) made four passes and a mask tensor and spent most of its time
 * in the scalar generator. */
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

#define PAR_MIN 65536

/* the hash: td_keep_hash (nn.h), shared with GroupNorm + SiLU + dropout */
/* out[i] = keep(i) ? x[i] * scale : 0, keep(i) = hash(key, i) >= thresh (P(keep) = 1 - p) */
static void apply(const float *x, float *out, int64_t n, uint64_t key, uint32_t thresh, float scale) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t b = 0; b < n; b += 4096) {
        int64_t e = b + 4096 < n ? b + 4096 : n;
        #pragma omp simd
        for (int64_t i = b; i < e; i++) out[i] = td_keep_hash(k0, k1, (uint64_t)i) >= thresh ? x[i] * scale : 0.0f;
    }
}

static void dropout_backward(td_node *n, td_tensor *g) {
    td_tensor *gc = td_contiguous(g);
    td_tensor *dx = gc ? td_empty(TD_F32, gc->ndim, gc->shape) : NULL;
    if (dx) {
        apply(td_f32(gc), td_f32(dx), td_numel(gc), (uint64_t)n->iarg[0], (uint32_t)n->iarg[1], (float)n->farg[0]);
        td_node_accum(n, 0, dx);
    }
    td_release(dx);
    td_release(gc);
}

td_tensor *td_dropout(td_tensor *x, double p, td_generator *gen) {
    char b1[TD_SHAPE_BUF];
    if (x->dtype != TD_F32) return td_fail("dropout: input must be float32, got %s (%s)", td_dtype_name(x->dtype),
                                           td_shape_str(x, b1, sizeof b1));
    if (!(p >= 0 && p <= 1)) return td_fail("dropout: probability must be in [0, 1], got %g", p);
    td_tensor *xc = td_nn_contig(x);
    td_tensor *out = xc ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    if (out) {
        uint64_t key = td_rand_u64(gen ? gen : td_default_generator());
        /* P(hash >= thresh) = 1 - thresh / 2^32; p = 1 keeps nothing (thresh saturates) */
        double t = p * 4294967296.0;
        uint32_t thresh = t >= 4294967295.0 ? UINT32_MAX : (uint32_t)(t + 0.5);
        float scale = p >= 1 ? 0.0f : (float)(1.0 / (1.0 - p));
        if (p >= 1) memset(td_f32(out), 0, sizeof(float) * (size_t)td_numel(out));
        else apply(td_f32(xc), td_f32(out), td_numel(out), key, thresh, scale);
        td_tensor *ins[1] = {x};
        td_node *n = td_record(out, "dropout", dropout_backward, 1, ins);
        if (n) {
            n->iarg[0] = (int64_t)key;
            n->iarg[1] = thresh;
            n->farg[0] = scale;
        }
    }
    td_release(xc);
    return out;
}
