/* The affine layer y = x W^T + b as one op: the bias is written into the output first and the
 * GEMM accumulates onto it (beta = 1), and the backward makes its three gradients straight
 * from g — no broadcast add forward, no sum-to-shape pass backward. The heads, MINE and the
 * diffusion model's embeddings are chains of these. */
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

/* C (M, N, ldc) = A (M, K) @ W^T (W: N x K) + bias rows (bias may be NULL); the GRU cell's
 * projections use it too */
int td_linear_rows(float *C, int64_t ldc, const float *A, int64_t M, int64_t K, const float *W, int64_t N,
                   const float *bias) {
    if (bias)
        for (int64_t i = 0; i < M; i++) memcpy(C + i * ldc, bias, sizeof(float) * (size_t)N);
    return td_gemm(false, true, M, N, K, 1.0f, A, K, W, K, bias ? 1.0f : 0.0f, C, ldc);
}

/* column sums of G (M, N, ld) into out (N): a bias gradient */
void td_colsum(float *out, const float *G, int64_t M, int64_t N, int64_t ld) {
    memset(out, 0, sizeof(float) * (size_t)N);
    for (int64_t i = 0; i < M; i++) {
        const float *g = G + i * ld;
        int64_t j = 0;
        for (; j + TD_VW <= N; j += TD_VW) td_vstore(out + j, td_vload(out + j) + td_vload(g + j));
        for (; j < N; j++) out[j] += g[j];
    }
}

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
    td_tensor *hold = n->in[1] ? td_node_grad_holder(n, 1) : NULL;
    if (hold) { /* dW (N,K) += g^T x, into the gradient already there */
        td_gemm(true, false, N, K, M, 1.0f, gs, N, td_f32(x), K, 1.0f, td_f32(hold), K);
    } else if (n->in[1]) { /* dW (N,K) = g^T x */
        td_tensor *dw = td_empty(TD_F32, 2, (int64_t[]){N, K});
        if (dw && td_gemm(true, false, N, K, M, 1.0f, gs, N, td_f32(x), K, 0.0f, td_f32(dw), K) == 0)
            td_node_accum(n, 1, dw);
        td_release(dw);
    }
    if (n->in[2]) { /* db (N) = column sums of g */
        td_tensor *db = td_empty(TD_F32, 1, (int64_t[]){N});
        if (db) {
            td_colsum(td_f32(db), gs, M, N, N);
            td_node_accum(n, 2, db);
        }
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
    int64_t K = w->shape[1], N = w->shape[0], M = 1;
    for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d];
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = N;
    td_tensor *xc = td_nn_contig(x), *wc = xc ? td_nn_contig(w) : NULL, *bc = (wc && b) ? td_nn_contig(b) : NULL;
    td_tensor *out = (wc && (!b || bc)) ? td_empty(TD_F32, x->ndim, shape) : NULL;
    if (out && td_linear_rows(td_f32(out), N, td_f32(xc), M, K, td_f32(wc), N, bc ? td_f32(bc) : NULL)) {
        td_release(out);
        out = NULL;
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
