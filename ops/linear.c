/* The affine layer y = x W^T + b as one op: the bias is written into the output first and the
 * GEMM accumulates onto it (beta = 1), and the backward makes its three gradients straight
 * from g — no broadcast add forward, no sum-to-shape pass backward. The heads, MINE and the
 * diffusion model's embeddings are chains of these. */
#include <stdlib.h>
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

/* x (M,K), w (N,K), g (M,N) */
static void linear_backward(td_node *n, td_tensor *g) {
    td_tensor *x = n->saved[0], *w = n->saved[1];
    int64_t M = n->iarg[0], K = n->iarg[1], N = n->iarg[2];
    td_tensor *gc = td_contiguous(g);
    if (!gc) return;
    const float *gs = td_f32(gc);
    if (n->in[0]) { /* dx (M,K) = g W */
        td_tensor *dx = td_empty(TD_F32, n->in[0]->ndim, n->in[0]->shape);
        if (dx && td_gemm(false, false, M, K, N, 1.0f, gs, N, td_f32(w), K, 0.0f, td_f32(dx), K) == 0)
            td_node_accum(n, 0, dx);
        td_release(dx);
    }
    if (n->in[1]) { /* dW (N,K) = g^T x */
        td_tensor *dw = td_empty(TD_F32, 2, (int64_t[]){N, K});
        if (dw && td_gemm(true, false, N, K, M, 1.0f, gs, N, td_f32(x), K, 0.0f, td_f32(dw), K) == 0)
            td_node_accum(n, 1, dw);
        td_release(dw);
    }
    if (n->in[2]) { /* db (N) = column sums of g, in double over rows */
        td_tensor *db = td_empty(TD_F32, 1, (int64_t[]){N});
        double *acc = db ? calloc((size_t)N, sizeof(double)) : NULL;
        if (acc) {
            for (int64_t r = 0; r < M; r++)
                for (int64_t j = 0; j < N; j++) acc[j] += gs[r * N + j];
            for (int64_t j = 0; j < N; j++) td_f32(db)[j] = (float)acc[j];
            td_node_accum(n, 2, db);
        }
        free(acc);
        td_release(db);
    }
    td_release(gc);
}

td_tensor *td_linear(td_tensor *x, td_tensor *w, td_tensor *b) {
    const char *op = "linear";
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF], b3[TD_SHAPE_BUF];
    if (x->dtype != TD_F32 || w->dtype != TD_F32 || (b && b->dtype != TD_F32))
        return td_fail("%s: input, weight and bias must be float32", op);
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return td_fail("%s: input %s does not match weight %s (expected input (..., %lld) and weight (out, in))", op,
                       td_shape_str(x, b1, sizeof b1), td_shape_str(w, b2, sizeof b2),
                       (long long)(w->ndim == 2 ? w->shape[1] : -1));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return td_fail("%s: bias %s must have shape (%lld) for weight %s", op, td_shape_str(b, b3, sizeof b3),
                       (long long)w->shape[0], td_shape_str(w, b2, sizeof b2));
    int64_t K = w->shape[1], N = w->shape[0], M = K ? td_numel(x) / K : 0;
    if (K == 0) { /* no inputs: the output is the bias (or zero) per row; rare, left to the general path */
        M = 1;
        for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d];
    }
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = N;
    td_tensor *xc = td_nn_contig(x), *wc = xc ? td_nn_contig(w) : NULL, *bc = (wc && b) ? td_nn_contig(b) : NULL;
    td_tensor *out = (wc && (!b || bc)) ? td_empty(TD_F32, x->ndim, shape) : NULL;
    if (out) {
        float *o = td_f32(out);
        if (bc)
            for (int64_t r = 0; r < M; r++) memcpy(o + r * N, td_f32(bc), sizeof(float) * (size_t)N);
        if (K == 0 && !bc) memset(o, 0, sizeof(float) * (size_t)(M * N));
        if (K > 0 && td_gemm(false, true, M, N, K, 1.0f, td_f32(xc), K, td_f32(wc), K, bc ? 1.0f : 0.0f, o, N)) {
            td_release(out);
            out = NULL;
        }
    }
    if (out) {
        td_tensor *ins[3] = {x, w, b};
        td_node *n = td_record(out, op, linear_backward, 3, ins);
        if (n) {
            n->iarg[0] = M;
            n->iarg[1] = K;
            n->iarg[2] = N;
            if (n->in[1]) td_node_save(n, 0, xc); /* only what the wanted gradients read */
            if (n->in[0]) td_node_save(n, 1, wc);
        }
    }
    td_release(xc);
    td_release(wc);
    td_release(bc);
    return out;
}
