/* GRU cell as one fused step: two GEMMs (input and hidden projections, biases folded in as the
 * GEMMs' initial C) and one pass for the gates, in PyTorch's order (r, z, n):
 *   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
 *   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
 *   h' = (1 - z) * n + z * h
 * Backward: one pass for the gate gradients, then four GEMMs.
 *
 * Autograd nodes hold at most four inputs, the cell has six, so it is recorded as two nodes:
 * "gru_cell.hidden" (h, w_hh, b_hh) -> HG = [W_hh h + b_hh | h] (B, 4Hd), and "gru_cell"
 * (x, w_ih, b_ih, HG) -> h'. Both halves are exact; the split costs one copy of h. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

static inline td_vf vtanh(td_vf x) { return 2.0f * td_vsigmoid(2.0f * x) - 1.0f; }

/* ---- hidden half ------------------------------------------------------------------------------------ */
/* Is every entry of p (n) zero? A sequence's first state usually is (h0 = 0): W_hh h0 and its
 * weight gradient dgh^T h0 are then zero, and a head of 11 steps skips 1/11 of its hidden GEMMs. */
static bool all_zero(const float *p, int64_t n) {
    uint32_t acc = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, sizeof u);
        acc |= u << 1; /* -0.0f counts as zero */
    }
    return acc == 0;
}

/* saved: h, w_hh; iarg: B, Hd, h is all zero */
static void gru_hidden_backward(td_node *n, td_tensor *g) {
    td_tensor *h = n->saved[0], *whh = n->saved[1], *gc = td_contiguous(g);
    int64_t B = n->iarg[0], Hd = n->iarg[1], H3 = 3 * Hd, H4 = 4 * Hd;
    if (!gc) return;
    const float *dhg = td_f32(gc);
    if (n->in[0]) { /* dh = dgh @ W_hh + dh_direct */
        td_tensor *dh = td_empty(TD_F32, 2, h->shape);
        if (dh) {
            float *d = td_f32(dh);
            for (int64_t i = 0; i < B; i++) memcpy(d + i * Hd, dhg + i * H4 + H3, sizeof(float) * (size_t)Hd);
            if (td_gemm(false, false, B, Hd, H3, 1.0f, dhg, H4, td_f32(whh), Hd, 1.0f, d, Hd) == 0) td_node_accum(n, 0, dh);
        }
        td_release(dh);
    }
    td_tensor *hold = n->in[1] ? td_node_grad_holder(n, 1) : NULL;
    bool h0 = n->iarg[2] != 0;
    if (hold) { /* dW_hh += dgh^T @ h: the steps of a sequence add into one gradient */
        if (!h0) td_gemm(true, false, H3, Hd, B, 1.0f, dhg, H4, td_f32(h), Hd, 1.0f, td_f32(hold), Hd);
    } else if (n->in[1]) { /* dW_hh = dgh^T @ h */
        td_tensor *dw = h0 ? td_zeros(TD_F32, 2, whh->shape) : td_empty(TD_F32, 2, whh->shape);
        if (dw && (h0 || td_gemm(true, false, H3, Hd, B, 1.0f, dhg, H4, td_f32(h), Hd, 0.0f, td_f32(dw), Hd) == 0))
            td_node_accum(n, 1, dw);
        td_release(dw);
    }
    if (n->in[2]) {
        td_tensor *db = td_empty(TD_F32, 1, &H3);
        if (db) {
            td_colsum(td_f32(db), dhg, B, H3, H4);
            td_node_accum(n, 2, db);
        }
        td_release(db);
    }
    td_release(gc);
}

/* ---- cell ------------------------------------------------------------------------------------------- */
/* gates (B, 3Hd) = r, z, n; hg (B, 4Hd); gi (B, 3Hd) -> out (B, Hd). Rows are shared out
 * among the OpenMP threads (OpenBLAS runs single-threaded, so no thread of its own spins
 * against them between the GEMMs). */
static bool gates_parallel(int64_t B, int64_t Hd) { return B > 1 && B * Hd >= 16384 && !omp_in_parallel(); }

static void gru_gates(float *out, float *gates, const float *gi, const float *hg, int64_t B, int64_t Hd) {
    #pragma omp parallel for if (gates_parallel(B, Hd)) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        const float *ir = gi + b * 3 * Hd, *iz = ir + Hd, *in = iz + Hd;
        const float *hr = hg + b * 4 * Hd, *hz = hr + Hd, *hn = hz + Hd, *hp = hn + Hd;
        float *r = gates + b * 3 * Hd, *z = r + Hd, *nn = z + Hd, *o = out + b * Hd;
        int64_t j = 0;
        for (; j + TD_VW <= Hd; j += TD_VW) {
            td_vf rv = td_vsigmoid(td_vload(ir + j) + td_vload(hr + j));
            td_vf zv = td_vsigmoid(td_vload(iz + j) + td_vload(hz + j));
            td_vf nv = vtanh(td_vload(in + j) + rv * td_vload(hn + j));
            td_vstore(r + j, rv);
            td_vstore(z + j, zv);
            td_vstore(nn + j, nv);
            td_vstore(o + j, (1.0f - zv) * nv + zv * td_vload(hp + j));
        }
        for (; j < Hd; j++) {
            float rv = 1.0f / (1.0f + expf(-(ir[j] + hr[j]))), zv = 1.0f / (1.0f + expf(-(iz[j] + hz[j])));
            float nv = tanhf(in[j] + rv * hn[j]);
            r[j] = rv;
            z[j] = zv;
            nn[j] = nv;
            o[j] = (1.0f - zv) * nv + zv * hp[j];
        }
    }
}

/* dgi (B, 3Hd) and dhg (B, 4Hd) (NULL: not needed) from dout */
static void gru_gates_grad(float *dgi, float *dhg, const float *dout, const float *gates, const float *hg, int64_t B,
                           int64_t Hd) {
    #pragma omp parallel for if (gates_parallel(B, Hd)) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        const float *r = gates + b * 3 * Hd, *z = r + Hd, *nn = z + Hd, *hn = hg + b * 4 * Hd + 2 * Hd, *hp = hn + Hd;
        const float *g = dout + b * Hd;
        float *ir = dgi + b * 3 * Hd, *iz = ir + Hd, *in = iz + Hd;
        float *hr = dhg ? dhg + b * 4 * Hd : NULL;
        int64_t j = 0;
        for (; j + TD_VW <= Hd; j += TD_VW) {
            td_vf gv = td_vload(g + j), zv = td_vload(z + j), nv = td_vload(nn + j), rv = td_vload(r + j);
            td_vf dn = gv * (1.0f - zv) * (1.0f - nv * nv);
            td_vf dz = gv * (td_vload(hp + j) - nv) * zv * (1.0f - zv);
            td_vf dr = dn * td_vload(hn + j) * rv * (1.0f - rv);
            td_vstore(ir + j, dr);
            td_vstore(iz + j, dz);
            td_vstore(in + j, dn);
            if (hr) {
                td_vstore(hr + j, dr);
                td_vstore(hr + Hd + j, dz);
                td_vstore(hr + 2 * Hd + j, dn * rv);
                td_vstore(hr + 3 * Hd + j, gv * zv);
            }
        }
        for (; j < Hd; j++) {
            float gv = g[j], zv = z[j], nv = nn[j], rv = r[j];
            float dn = gv * (1.0f - zv) * (1.0f - nv * nv); /* through tanh */
            float dz = gv * (hp[j] - nv) * zv * (1.0f - zv);
            float dr = dn * hn[j] * rv * (1.0f - rv);
            ir[j] = dr;
            iz[j] = dz;
            in[j] = dn;
            if (hr) {
                hr[j] = dr;
                hr[Hd + j] = dz;
                hr[2 * Hd + j] = dn * rv;
                hr[3 * Hd + j] = gv * zv;
            }
        }
    }
}

/* saved: x, w_ih, hg, gates; iarg: B, I, Hd */
static void gru_cell_backward(td_node *n, td_tensor *g) {
    td_tensor *x = n->saved[0], *wih = n->saved[1], *hg = n->saved[2], *gates = n->saved[3], *gc = td_contiguous(g);
    int64_t B = n->iarg[0], I = n->iarg[1], Hd = n->iarg[2], H3 = 3 * Hd, gshape[2] = {B, H3};
    td_tensor *dgi = gc ? td_empty(TD_F32, 2, gshape) : NULL;
    td_tensor *dhg = (dgi && n->in[3]) ? td_empty(TD_F32, 2, hg->shape) : NULL;
    if (!dgi || (n->in[3] && !dhg)) goto done;
    gru_gates_grad(td_f32(dgi), dhg ? td_f32(dhg) : NULL, td_f32(gc), td_f32(gates), td_f32(hg), B, Hd);
    if (n->in[0]) { /* dx = dgi @ W_ih */
        td_tensor *dx = td_empty(TD_F32, 2, x->shape);
        if (dx && td_gemm(false, false, B, I, H3, 1.0f, td_f32(dgi), H3, td_f32(wih), I, 0.0f, td_f32(dx), I) == 0)
            td_node_accum(n, 0, dx);
        td_release(dx);
    }
    td_tensor *hold = n->in[1] ? td_node_grad_holder(n, 1) : NULL;
    if (hold) { /* dW_ih += dgi^T @ x */
        td_gemm(true, false, H3, I, B, 1.0f, td_f32(dgi), H3, td_f32(x), I, 1.0f, td_f32(hold), I);
    } else if (n->in[1]) { /* dW_ih = dgi^T @ x */
        td_tensor *dw = td_empty(TD_F32, 2, wih->shape);
        if (dw && td_gemm(true, false, H3, I, B, 1.0f, td_f32(dgi), H3, td_f32(x), I, 0.0f, td_f32(dw), I) == 0)
            td_node_accum(n, 1, dw);
        td_release(dw);
    }
    if (n->in[2]) {
        td_tensor *db = td_empty(TD_F32, 1, &H3);
        if (db) {
            td_colsum(td_f32(db), td_f32(dgi), B, H3, H3);
            td_node_accum(n, 2, db);
        }
        td_release(db);
    }
    if (dhg) td_node_accum(n, 3, dhg);
done:
    td_release(dgi);
    td_release(dhg);
    td_release(gc);
}

td_tensor *td_gru_cell(td_tensor *x, td_tensor *h, td_tensor *w_ih, td_tensor *w_hh, td_tensor *b_ih, td_tensor *b_hh) {
    const char *op = "gru_cell";
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF], b3[TD_SHAPE_BUF], b4[TD_SHAPE_BUF];
    td_tensor *all[6] = {x, h, w_ih, w_hh, b_ih, b_hh};
    for (int i = 0; i < 6; i++)
        if (all[i] && all[i]->dtype != TD_F32) return td_fail("%s: all tensors must be float32", op);
    if (x->ndim != 2 || h->ndim != 2 || w_ih->ndim != 2 || w_hh->ndim != 2)
        return td_fail("%s: needs x (B,I), h (B,Hd), w_ih (3Hd,I), w_hh (3Hd,Hd); got x (%s), h (%s), w_ih (%s), w_hh (%s)",
                       op, td_shape_str(x, b1, sizeof b1), td_shape_str(h, b2, sizeof b2), td_shape_str(w_ih, b3, sizeof b3),
                       td_shape_str(w_hh, b4, sizeof b4));
    int64_t B = x->shape[0], I = x->shape[1], Hd = h->shape[1], H3 = 3 * Hd;
    if (h->shape[0] != B || w_ih->shape[0] != H3 || w_ih->shape[1] != I || w_hh->shape[0] != H3 || w_hh->shape[1] != Hd)
        return td_fail("%s: shapes do not fit x (B,I), h (B,Hd), w_ih (3Hd,I), w_hh (3Hd,Hd): x (%s), h (%s), w_ih (%s), w_hh (%s)",
                       op, td_shape_str(x, b1, sizeof b1), td_shape_str(h, b2, sizeof b2), td_shape_str(w_ih, b3, sizeof b3),
                       td_shape_str(w_hh, b4, sizeof b4));
    if ((b_ih && (b_ih->ndim != 1 || b_ih->shape[0] != H3)) || (b_hh && (b_hh->ndim != 1 || b_hh->shape[0] != H3)))
        return td_fail("%s: biases must be (%lld) = 3 x hidden size, got b_ih (%s), b_hh (%s)", op, (long long)H3,
                       b_ih ? td_shape_str(b_ih, b1, sizeof b1) : "nil", b_hh ? td_shape_str(b_hh, b2, sizeof b2) : "nil");
    td_tensor *c[6] = {0}, *hg = NULL, *gi = NULL, *gates = NULL, *out = NULL;
    for (int i = 0; i < 6; i++)
        if (all[i] && !(c[i] = td_nn_contig(all[i]))) goto done;
    int64_t hgs[2] = {B, 4 * Hd}, gs[2] = {B, H3}, os[2] = {B, Hd};
    hg = td_empty(TD_F32, 2, hgs);
    gi = hg ? td_empty(TD_F32, 2, gs) : NULL;
    gates = gi ? td_empty(TD_F32, 2, gs) : NULL;
    out = gates ? td_empty(TD_F32, 2, os) : NULL;
    if (!out) goto done;
    float *hgp = td_f32(hg);
    bool h0 = all_zero(td_f32(c[1]), B * Hd);
    if (h0) { /* W_hh h + b_hh = b_hh */
        for (int64_t b = 0; b < B; b++) {
            if (c[5]) memcpy(hgp + b * 4 * Hd, td_f32(c[5]), sizeof(float) * (size_t)H3);
            else memset(hgp + b * 4 * Hd, 0, sizeof(float) * (size_t)H3);
        }
    }
    if ((!h0 && td_linear_rows(hgp, 4 * Hd, td_f32(c[1]), B, Hd, td_f32(c[3]), H3, c[5] ? td_f32(c[5]) : NULL)) ||
        td_linear_rows(td_f32(gi), H3, td_f32(c[0]), B, I, td_f32(c[2]), H3, c[4] ? td_f32(c[4]) : NULL)) {
        td_release(out);
        out = NULL;
        goto done;
    }
    for (int64_t b = 0; b < B; b++) memcpy(hgp + b * 4 * Hd + H3, td_f32(c[1]) + b * Hd, sizeof(float) * (size_t)Hd);
    gru_gates(td_f32(out), td_f32(gates), td_f32(gi), hgp, B, Hd);
    td_tensor *hin[3] = {h, w_hh, b_hh};
    td_node *nh = td_record(hg, "gru_cell.hidden", gru_hidden_backward, 3, hin);
    if (nh) {
        nh->iarg[0] = B;
        nh->iarg[1] = Hd;
        nh->iarg[2] = h0;
        td_node_save(nh, 0, c[1]);
        td_node_save(nh, 1, c[3]);
    }
    td_tensor *ins[4] = {x, w_ih, b_ih, hg};
    td_node *n = td_record(out, op, gru_cell_backward, 4, ins);
    if (n) {
        n->iarg[0] = B;
        n->iarg[1] = I;
        n->iarg[2] = Hd;
        td_node_save(n, 0, c[0]);
        td_node_save(n, 1, c[2]);
        td_node_save(n, 2, hg);
        td_node_save(n, 3, gates);
    }
done:
    for (int i = 0; i < 6; i++) td_release(c[i]);
    td_release(hg);
    td_release(gi);
    td_release(gates);
    return out;
}
