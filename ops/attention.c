/* Scaled dot-product attention, fused: scores, masks, softmax and the weighted sum in one op with
 * one backward (no (B,H,Tq,Tk) intermediates besides the weights, which are returned).
 *
 * Two ways to run it, same results:
 *   - short sequences (the heads' 11-12 tokens): each (batch, head) is a few hundred dot products
 *     and axpys; run them with vector loops under OpenMP over (batch, head).
 *   - long ones (spatial attention over 16x16 = 256 positions): per (batch, head) GEMMs through
 *     td_gemm with the masked softmax (or its gradient) between them, (batch, head)s shared out
 *     under OpenMP (td_gemm runs single-threaded inside a parallel region).
 * td_attention_path forces one (tests). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

int td_attention_path = 0; /* 0 auto, 1 loops, 2 GEMMs */

/* Where the masks of one (batch, head) live. */
typedef struct {
    const float *am;     /* attn_mask base for this bh (NULL: none) */
    int64_t am_si, am_sj; /* its strides over (i, j) */
    bool am_bool;
    const float *kpm; /* key padding row (Tk) or NULL */
    bool kpm_add;
} mask_ref;

/* Masks applied to one row of scores s (Tk) in place (masked: -inf), then softmax in place.
 * Lanes of s past Tk (up to a vector multiple the caller owns, `padded`) come back 0, and so
 * does a row whose every key is masked (PyTorch would give NaN). */
static inline void masked_softmax_row(float *s, int64_t i, int64_t Tk, int64_t padded, const mask_ref *m) {
    if (m->kpm || m->am)
        for (int64_t j = 0; j < Tk; j++) {
            float v = s[j];
            bool dead = false;
            if (m->kpm) {
                if (m->kpm_add) v += m->kpm[j];
                else dead = m->kpm[j] != 0;
            }
            if (m->am) {
                float a = m->am[i * m->am_si + j * m->am_sj];
                if (m->am_bool) dead |= a != 0;
                else v += a;
            }
            s[j] = dead ? -INFINITY : v;
        }
    for (int64_t j = Tk; j < padded; j++) s[j] = -INFINITY;
    td_softmax_row(s, s, padded > Tk ? padded : Tk, false);
}

/* C[i*ldc + j] (= or +=) alpha * sum_k A[i*lda + k] B[k*ldb + j], i < M, j < N: the small products
 * of short sequences, vectorised along j (four independent accumulators: four column vectors,
 * or four partial sums over k for a single vector). No BLAS (runs inside OpenMP). */
static void small_mm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                     bool accumulate, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++) {
        const float *a = A + i * lda;
        float *c = C + i * ldc;
        int64_t j = 0;
        for (; j + 4 * TD_VW <= N; j += 4 * TD_VW) {
            td_vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            for (int64_t k = 0; k < K; k++) {
                const float *b = B + k * ldb + j;
                td_vf av = td_vsplat(a[k]);
                s0 += av * td_vload(b);
                s1 += av * td_vload(b + TD_VW);
                s2 += av * td_vload(b + 2 * TD_VW);
                s3 += av * td_vload(b + 3 * TD_VW);
            }
            if (accumulate) {
                s0 = td_vload(c + j) + alpha * s0;
                s1 = td_vload(c + j + TD_VW) + alpha * s1;
                s2 = td_vload(c + j + 2 * TD_VW) + alpha * s2;
                s3 = td_vload(c + j + 3 * TD_VW) + alpha * s3;
            } else {
                s0 *= alpha, s1 *= alpha, s2 *= alpha, s3 *= alpha;
            }
            td_vstore(c + j, s0);
            td_vstore(c + j + TD_VW, s1);
            td_vstore(c + j + 2 * TD_VW, s2);
            td_vstore(c + j + 3 * TD_VW, s3);
        }
        for (; j + TD_VW <= N; j += TD_VW) {
            td_vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            int64_t k = 0;
            for (; k + 4 <= K; k += 4) {
                s0 += a[k] * td_vload(B + k * ldb + j);
                s1 += a[k + 1] * td_vload(B + (k + 1) * ldb + j);
                s2 += a[k + 2] * td_vload(B + (k + 2) * ldb + j);
                s3 += a[k + 3] * td_vload(B + (k + 3) * ldb + j);
            }
            for (; k < K; k++) s0 += a[k] * td_vload(B + k * ldb + j);
            td_vf r = alpha * ((s0 + s1) + (s2 + s3));
            td_vstore(c + j, accumulate ? td_vload(c + j) + r : r);
        }
        for (; j < N; j++) {
            float r = 0;
            for (int64_t k = 0; k < K; k++) r += a[k] * B[k * ldb + j];
            c[j] = accumulate ? c[j] + alpha * r : alpha * r;
        }
    }
}

/* dst (cols, ldd) = src (rows, cols, lds)^T, zero columns [rows, ldd) */
static void transpose_pad(float *dst, int64_t ldd, const float *src, int64_t rows, int64_t cols, int64_t lds) {
    for (int64_t c = 0; c < cols; c++) {
        float *d = dst + c * ldd;
        for (int64_t r = 0; r < rows; r++) d[r] = src[r * lds + c];
        for (int64_t r = rows; r < ldd; r++) d[r] = 0;
    }
}

/* dS = P (dP - <dP, P>) in place of dP, one row */
static inline void softmax_grad_row(float *dp, const float *p, int64_t Tk) {
    td_vf acc = {0};
    int64_t j = 0;
    for (; j + TD_VW <= Tk; j += TD_VW) acc += td_vload(dp + j) * td_vload(p + j);
    double s = td_vhsum(acc);
    for (; j < Tk; j++) s += (double)dp[j] * p[j];
    float sf = (float)s;
    j = 0;
    for (; j + TD_VW <= Tk; j += TD_VW) td_vstore(dp + j, td_vload(p + j) * (td_vload(dp + j) - sf));
    for (; j < Tk; j++) dp[j] = p[j] * (dp[j] - sf);
}

typedef struct {
    int64_t BH, Tq, Tk, D, Dv;
    float scale;
    bool cf; /* channels first: q, k, v, out (and dout) stored (D, T) per (batch, head) */
    /* masks */
    const float *am;
    int64_t am_off_stride[TD_MAX_DIMS]; /* strides of the lead dims of the expanded mask */
    int64_t am_si, am_sj;
    bool am_bool;
    const float *kpm;
    int64_t kpm_div; /* bh / kpm_div = row of the key padding mask */
    bool kpm_add;
    int nlead;
    int64_t lead[TD_MAX_DIMS];
} attn_geom;

static void mask_for(const attn_geom *g, int64_t bh, mask_ref *m) {
    memset(m, 0, sizeof *m);
    if (g->am) {
        int64_t rem = bh, off = 0;
        for (int d = g->nlead - 1; d >= 0; d--) {
            off += (rem % g->lead[d]) * g->am_off_stride[d];
            rem /= g->lead[d];
        }
        m->am = g->am + off;
        m->am_si = g->am_si;
        m->am_sj = g->am_sj;
        m->am_bool = g->am_bool;
    }
    if (g->kpm) {
        m->kpm = g->kpm + (bh / g->kpm_div) * g->Tk;
        m->kpm_add = g->kpm_add;
    }
}

static bool gemm_sized(int64_t Tq, int64_t Tk, int64_t D, int64_t Dv) {
    if (td_attention_path) return td_attention_path == 2;
    return Tq * Tk * (D + Dv) > 65536;
}

static bool use_gemm(const attn_geom *g) {
    return g->cf || gemm_sized(g->Tq, g->Tk, g->D, g->Dv); /* the loops read (T, D) rows */
}

/* ---- forward ----------------------------------------------------------------------------------------- */
static int attn_forward(const attn_geom *g, const float *q, const float *k, const float *v, float *P, float *out) {
    int64_t BH = g->BH, Tq = g->Tq, Tk = g->Tk, D = g->D, Dv = g->Dv;
    if (use_gemm(g)) { /* one (batch, head) per thread at a time: its weights stay in L2 between the GEMMs */
        int failed = 0;
        #pragma omp parallel for if (BH > 1) schedule(dynamic, 1) reduction(| : failed)
        for (int64_t bh = 0; bh < BH; bh++) {
            if (failed) continue;
            float *pb = P + bh * Tq * Tk;
            const float *qb = q + bh * Tq * D, *kb = k + bh * Tk * D, *vb = v + bh * Tk * Dv;
            float *ob = out + bh * Tq * Dv;
            /* S = scale q k^T; channels first: scale q^T k */
            if (g->cf ? td_gemm(true, false, Tq, Tk, D, g->scale, qb, Tq, kb, Tk, 0.0f, pb, Tk)
                      : td_gemm(false, true, Tq, Tk, D, g->scale, qb, D, kb, D, 0.0f, pb, Tk)) {
                failed = 1;
                continue;
            }
            mask_ref m;
            mask_for(g, bh, &m);
            for (int64_t i = 0; i < Tq; i++) masked_softmax_row(pb + i * Tk, i, Tk, Tk, &m);
            /* out = P v; channels first: v P^T */
            if (g->cf ? td_gemm(false, true, Dv, Tq, Tk, 1.0f, vb, Tk, pb, Tk, 0.0f, ob, Tq)
                      : td_gemm(false, false, Tq, Dv, Tk, 1.0f, pb, Tk, vb, Dv, 0.0f, ob, Dv))
                failed = 1;
        }
        return failed ? -1 : 0;
    }
    int64_t Tkp = (Tk + TD_VW - 1) / TD_VW * TD_VW;
    volatile int oom = 0;
    #pragma omp parallel if (BH * Tq * Tk * (D + Dv) > 32768)
    {
        float *kT = malloc(sizeof(float) * (size_t)(D * Tkp + Tq * Tkp + 1)), *S = kT ? kT + D * Tkp : NULL;
        if (!kT) oom = 1;
        #pragma omp for schedule(static)
        for (int64_t bh = 0; bh < BH; bh++) {
            if (!kT) continue;
            const float *qb = q + bh * Tq * D, *kb = k + bh * Tk * D, *vb = v + bh * Tk * Dv;
            float *pb = P + bh * Tq * Tk;
            mask_ref m;
            mask_for(g, bh, &m);
            transpose_pad(kT, Tkp, kb, Tk, D, D);
            small_mm(Tq, Tkp, D, g->scale, qb, D, kT, Tkp, false, S, Tkp);
            for (int64_t i = 0; i < Tq; i++) {
                masked_softmax_row(S + i * Tkp, i, Tk, Tkp, &m);
                memcpy(pb + i * Tk, S + i * Tkp, sizeof(float) * (size_t)Tk);
            }
            small_mm(Tq, Dv, Tk, 1.0f, S, Tkp, vb, Dv, false, out + bh * Tq * Dv, Dv);
        }
        free(kT);
    }
    if (oom) return td_fail_int("scaled_dot_product_attention: out of memory");
    return 0;
}

/* ---- backward ---------------------------------------------------------------------------------------- */
/* From the gradient of the output (dout) and/or of the weights (dw): dq, dk, dv (each may be NULL;
 * written, not accumulated). dv needs dout. */
static int attn_backward(const attn_geom *g, const float *q, const float *k, const float *v, const float *P,
                         const float *dout, const float *dw, float *dq, float *dk, float *dv) {
    int64_t BH = g->BH, Tq = g->Tq, Tk = g->Tk, D = g->D, Dv = g->Dv;
    bool qk = dq || dk;
    if (use_gemm(g)) {
        int failed = 0; /* 1: interrupted, 2: out of memory */
        #pragma omp parallel if (BH > 1) reduction(| : failed)
        {
            /* dS of one (batch, head) at a time: (Tq, Tk) per thread, not (BH, Tq, Tk) */
            float *ds = qk ? malloc(sizeof(float) * (size_t)(Tq * Tk + 1)) : NULL;
            if (qk && !ds) failed = 2;
            #pragma omp for schedule(dynamic, 1)
            for (int64_t bh = 0; bh < BH; bh++) {
                if (failed) continue;
                const float *pb = P + bh * Tq * Tk, *gb = dout ? dout + bh * Tq * Dv : NULL;
                const float *qb = q + bh * Tq * D, *kb = k + bh * Tk * D, *vb = v ? v + bh * Tk * Dv : NULL;
                bool cf = g->cf;
                float *dvb = dv ? dv + bh * Tk * Dv : NULL, *dqb = dq ? dq + bh * Tq * D : NULL, *dkb = dk ? dk + bh * Tk * D : NULL;
                /* dv = P^T dout; channels first: dout P */
                if (gb && dvb && (cf ? td_gemm(false, false, Dv, Tk, Tq, 1.0f, gb, Tq, pb, Tk, 0.0f, dvb, Tk)
                                     : td_gemm(true, false, Tk, Dv, Tq, 1.0f, pb, Tk, gb, Dv, 0.0f, dvb, Dv)))
                    failed = 1;
                if (!qk || failed) continue;
                if (dw) memcpy(ds, dw + bh * Tq * Tk, sizeof(float) * (size_t)(Tq * Tk));
                /* dP = dout v^T (+ dw); channels first: dout^T v */
                float beta = dw ? 1.0f : 0.0f;
                if (gb && (cf ? td_gemm(true, false, Tq, Tk, Dv, 1.0f, gb, Tq, vb, Tk, beta, ds, Tk)
                              : td_gemm(false, true, Tq, Tk, Dv, 1.0f, gb, Dv, vb, Dv, beta, ds, Tk)))
                    failed = 1;
                for (int64_t i = 0; i < Tq && !failed; i++) softmax_grad_row(ds + i * Tk, pb + i * Tk, Tk);
                /* dq = scale dS k, dk = scale dS^T q; channels first: scale k dS^T, scale q dS */
                if (!failed && dqb && (cf ? td_gemm(false, true, D, Tq, Tk, g->scale, kb, Tk, ds, Tk, 0.0f, dqb, Tq)
                                          : td_gemm(false, false, Tq, D, Tk, g->scale, ds, Tk, kb, D, 0.0f, dqb, D)))
                    failed = 1;
                if (!failed && dkb && (cf ? td_gemm(false, false, D, Tk, Tq, g->scale, qb, Tq, ds, Tk, 0.0f, dkb, Tk)
                                          : td_gemm(true, false, Tk, D, Tq, g->scale, ds, Tk, qb, D, 0.0f, dkb, D)))
                    failed = 1;
            }
            free(ds);
        }
        if (failed & 2) return td_fail_int("scaled_dot_product_attention: out of memory");
        return failed ? -1 : 0;
    }
    int64_t Tkp = (Tk + TD_VW - 1) / TD_VW * TD_VW;
    volatile int oom = 0;
    #pragma omp parallel if (BH * Tq * Tk * (D + Dv) > 16384)
    {
        /* vT (Dv, Tkp), dS (Tq, Tkp), transposes (Tk, Tq) */
        float *vT = malloc(sizeof(float) * (size_t)(Dv * Tkp + Tq * Tkp + Tk * Tq + 1));
        float *dS = vT ? vT + Dv * Tkp : NULL, *tr = vT ? dS + Tq * Tkp : NULL;
        if (!vT) oom = 1;
        #pragma omp for schedule(static)
        for (int64_t bh = 0; bh < BH; bh++) {
            if (!vT) continue;
            const float *qb = q + bh * Tq * D, *kb = k + bh * Tk * D, *vb = dout ? v + bh * Tk * Dv : NULL;
            const float *pb = P + bh * Tq * Tk, *gb = dout ? dout + bh * Tq * Dv : NULL, *wb = dw ? dw + bh * Tq * Tk : NULL;
            if (dv) { /* dv = P^T dout */
                transpose_pad(tr, Tq, pb, Tq, Tk, Tk);
                small_mm(Tk, Dv, Tq, 1.0f, tr, Tq, gb, Dv, false, dv + bh * Tk * Dv, Dv);
            }
            if (!qk) continue;
            /* dP = dout v^T (+ dw), then dS = P (dP - <dP, P>) */
            if (gb) {
                transpose_pad(vT, Tkp, vb, Tk, Dv, Dv);
                small_mm(Tq, Tkp, Dv, 1.0f, gb, Dv, vT, Tkp, false, dS, Tkp);
            } else {
                memset(dS, 0, sizeof(float) * (size_t)(Tq * Tkp));
            }
            for (int64_t i = 0; i < Tq; i++) {
                float *r = dS + i * Tkp;
                if (wb)
                    for (int64_t j = 0; j < Tk; j++) r[j] += wb[i * Tk + j];
                softmax_grad_row(r, pb + i * Tk, Tk);
            }
            if (dq) small_mm(Tq, D, Tk, g->scale, dS, Tkp, kb, D, false, dq + bh * Tq * D, D);
            if (dk) { /* dk = dS^T q */
                transpose_pad(tr, Tq, dS, Tq, Tk, Tkp);
                small_mm(Tk, D, Tq, g->scale, tr, Tq, qb, D, false, dk + bh * Tk * D, D);
            }
        }
        free(vT);
    }
    if (oom) return td_fail_int("scaled_dot_product_attention: out of memory");
    return 0;
}

/* ---- op ---------------------------------------------------------------------------------------------- */
static attn_geom geom_from_node(const td_node *n) {
    attn_geom ge;
    memset(&ge, 0, sizeof ge);
    ge.BH = n->iarg[0];
    ge.Tq = n->iarg[1];
    ge.Tk = n->iarg[2];
    ge.D = n->iarg[3];
    ge.Dv = n->iarg[4];
    ge.scale = (float)n->farg[0];
    ge.cf = n->iarg[5];
    return ge;
}

/* out's node: saved q, k, v, P; iarg: BH Tq Tk D Dv; farg[0]: scale */
static void sdpa_backward(td_node *n, td_tensor *g) {
    attn_geom ge = geom_from_node(n);
    td_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *P = n->saved[3], *gc = td_contiguous(g);
    td_tensor *dq = n->in[0] ? td_empty(TD_F32, q->ndim, q->shape) : NULL;
    td_tensor *dk = n->in[1] ? td_empty(TD_F32, k->ndim, k->shape) : NULL;
    td_tensor *dv = n->in[2] ? td_empty(TD_F32, v->ndim, v->shape) : NULL;
    if (gc && (!n->in[0] || dq) && (!n->in[1] || dk) && (!n->in[2] || dv) &&
        attn_backward(&ge, td_f32(q), td_f32(k), td_f32(v), td_f32(P), td_f32(gc), NULL, dq ? td_f32(dq) : NULL,
                      dk ? td_f32(dk) : NULL, dv ? td_f32(dv) : NULL) == 0) {
        if (dq) td_node_accum(n, 0, dq);
        if (dk) td_node_accum(n, 1, dk);
        if (dv) td_node_accum(n, 2, dv);
    }
    td_release(dq);
    td_release(dk);
    td_release(dv);
    td_release(gc);
}

/* the weights' node: inputs q, k; saved q, k, P */
static void sdpa_weights_backward(td_node *n, td_tensor *g) {
    attn_geom ge = geom_from_node(n);
    td_tensor *q = n->saved[0], *k = n->saved[1], *P = n->saved[2], *gc = td_contiguous(g);
    td_tensor *dq = n->in[0] ? td_empty(TD_F32, q->ndim, q->shape) : NULL;
    td_tensor *dk = n->in[1] ? td_empty(TD_F32, k->ndim, k->shape) : NULL;
    if (gc && (!n->in[0] || dq) && (!n->in[1] || dk) &&
        attn_backward(&ge, td_f32(q), td_f32(k), NULL, td_f32(P), NULL, td_f32(gc), dq ? td_f32(dq) : NULL,
                      dk ? td_f32(dk) : NULL, NULL) == 0) {
        if (dq) td_node_accum(n, 0, dq);
        if (dk) td_node_accum(n, 1, dk);
    }
    td_release(dq);
    td_release(dk);
    td_release(gc);
}

static void geom_to_node(td_node *n, const attn_geom *g) {
    n->iarg[0] = g->BH;
    n->iarg[1] = g->Tq;
    n->iarg[2] = g->Tk;
    n->iarg[3] = g->D;
    n->iarg[4] = g->Dv;
    n->iarg[5] = g->cf;
    n->farg[0] = g->scale;
}

td_tensor *td_sdpa(td_tensor *q, td_tensor *k, td_tensor *v, const td_sdpa_opts *o, td_tensor **weights) {
    const char *op = "scaled_dot_product_attention";
    td_sdpa_opts none = {NULL, false, NULL, false, NAN, false};
    if (!o) o = &none;
    td_tensor *attn_mask = o->attn_mask, *kpm = o->key_padding_mask;
    bool mask_bool = o->bool_mask;
    double scale = o->scale;
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF], b3[TD_SHAPE_BUF];
    if (weights) *weights = NULL;
    if (q->ndim < 2 || k->ndim != q->ndim || v->ndim != q->ndim)
        return td_fail("%s: q (%s), k (%s), v (%s) must have the same number (>= 2) of dims", op, td_shape_str(q, b1, sizeof b1),
                       td_shape_str(k, b2, sizeof b2), td_shape_str(v, b3, sizeof b3));
    if (q->dtype != TD_F32 || k->dtype != TD_F32 || v->dtype != TD_F32)
        return td_fail("%s: q, k, v must be float32", op);
    int nd = q->ndim, nl = nd - 2, dd = o->channels_first ? nd - 2 : nd - 1, dt = o->channels_first ? nd - 1 : nd - 2;
    bool ok = q->shape[dd] == k->shape[dd] && k->shape[dt] == v->shape[dt];
    for (int i = 0; i < nl; i++) ok &= q->shape[i] == k->shape[i] && q->shape[i] == v->shape[i];
    if (!ok)
        return td_fail("%s: shapes q (%s), k (%s), v (%s) do not fit %s", op, td_shape_str(q, b1, sizeof b1),
                       td_shape_str(k, b2, sizeof b2), td_shape_str(v, b3, sizeof b3),
                       o->channels_first ? "(...,D,Tq), (...,D,Tk), (...,Dv,Tk) (channels first)"
                                         : "(...,Tq,D), (...,Tk,D), (...,Tk,Dv)");
    attn_geom g = {0};
    g.cf = o->channels_first;
    g.Tq = q->shape[dt];
    g.Tk = k->shape[dt];
    g.D = q->shape[dd];
    g.Dv = v->shape[dd];
    g.BH = 1;
    g.nlead = nl;
    for (int i = 0; i < nl; i++) {
        g.lead[i] = q->shape[i];
        g.BH *= q->shape[i];
    }
    g.scale = isnan(scale) ? (float)(1.0 / sqrt((double)(g.D > 0 ? g.D : 1))) : (float)scale;
    if (g.cf && !gemm_sized(g.Tq, g.Tk, g.D, g.Dv)) { /* short: the loops on (T, D) copies, out back to (Dv, Tq) */
        td_sdpa_opts o2 = *o;
        o2.channels_first = false;
        o2.scale = g.scale;
        td_tensor *qt = td_transpose(q, nd - 2, nd - 1), *kt = qt ? td_transpose(k, nd - 2, nd - 1) : NULL;
        td_tensor *vt = kt ? td_transpose(v, nd - 2, nd - 1) : NULL, *ot = vt ? td_sdpa(qt, kt, vt, &o2, weights) : NULL;
        td_tensor *t = ot ? td_transpose(ot, nd - 2, nd - 1) : NULL, *out = t ? td_contiguous(t) : NULL;
        td_release(qt);
        td_release(kt);
        td_release(vt);
        td_release(ot);
        td_release(t);
        return out;
    }
    /* masks */
    td_tensor *amf = NULL, *amx = NULL, *kpf = NULL;
    int64_t full[TD_MAX_DIMS];
    memcpy(full, q->shape, sizeof(int64_t) * (size_t)nl);
    full[nl] = g.Tq;
    full[nl + 1] = g.Tk;
    if (attn_mask) {
        bool okm = attn_mask->ndim >= 1 && attn_mask->ndim <= nd;
        for (int i = 0; okm && i < attn_mask->ndim; i++) {
            int64_t s = attn_mask->shape[attn_mask->ndim - 1 - i], f = full[nd - 1 - i];
            okm = s == f || s == 1;
        }
        if (!okm) {
            char b4[TD_SHAPE_BUF];
            return td_fail("%s: attn_mask of shape %s does not broadcast to the scores %s (q %s, k %s)", op,
                           td_shape_str(attn_mask, b1, sizeof b1), td_dims_str(nd, full, b4, sizeof b4),
                           td_shape_str(q, b2, sizeof b2), td_shape_str(k, b3, sizeof b3));
        }
    }
    if (kpm) {
        int64_t want0 = nl ? q->shape[0] : g.Tk;
        bool okk = nl ? (kpm->ndim == 2 && kpm->shape[0] == want0 && kpm->shape[1] == g.Tk) : (kpm->ndim == 1 && kpm->shape[0] == g.Tk);
        if (!okk) {
            char b4[TD_SHAPE_BUF];
            int64_t want[2] = {want0, g.Tk};
            return td_fail("%s: key_padding_mask of shape %s, expected %s for q %s and k %s", op,
                           td_shape_str(kpm, b1, sizeof b1), td_dims_str(nl ? 2 : 1, nl ? want : want + 1, b4, sizeof b4),
                           td_shape_str(q, b2, sizeof b2), td_shape_str(k, b3, sizeof b3));
        }
    }
    bool prev = td_set_grad_enabled(false);
    if (attn_mask) {
        amf = attn_mask->dtype == TD_F32 ? (td_retain(attn_mask), attn_mask) : td_to_dtype(attn_mask, TD_F32);
        amx = amf ? td_expand(amf, nd, full) : NULL;
        if (amx) {
            g.am = td_f32(amx);
            for (int i = 0; i < nl; i++) g.am_off_stride[i] = amx->stride[i];
            g.am_si = amx->stride[nl];
            g.am_sj = amx->stride[nl + 1];
            g.am_bool = mask_bool || attn_mask->dtype == TD_I64;
        }
    }
    if (kpm) {
        td_tensor *kf = kpm->dtype == TD_F32 ? (td_retain(kpm), kpm) : td_to_dtype(kpm, TD_F32);
        kpf = kf ? td_contiguous(kf) : NULL;
        td_release(kf);
        if (kpf) {
            g.kpm = td_f32(kpf);
            g.kpm_add = o->key_padding_additive && kpm->dtype == TD_F32;
            g.kpm_div = nl ? g.BH / (q->shape[0] ? q->shape[0] : 1) : g.BH;
            if (g.kpm_div < 1) g.kpm_div = 1;
        }
    }
    td_set_grad_enabled(prev);
    td_tensor *qc = NULL, *kc = NULL, *vc = NULL, *P = NULL, *out = NULL;
    if ((attn_mask && !amx) || (kpm && !kpf)) goto done;
    qc = td_nn_contig(q);
    kc = qc ? td_nn_contig(k) : NULL;
    vc = kc ? td_nn_contig(v) : NULL;
    int64_t oshape[TD_MAX_DIMS];
    memcpy(oshape, q->shape, sizeof(int64_t) * (size_t)nd);
    oshape[dd] = g.Dv;
    P = vc ? td_empty(TD_F32, nd, full) : NULL;
    out = P ? td_empty(TD_F32, nd, oshape) : NULL;
    if (!out) goto done;
    if (attn_forward(&g, td_f32(qc), td_f32(kc), td_f32(vc), td_f32(P), td_f32(out))) {
        td_release(out);
        out = NULL;
        goto done;
    }
    td_tensor *ins[3] = {q, k, v};
    td_node *n = td_record(out, op, sdpa_backward, 3, ins);
    if (n) {
        geom_to_node(n, &g);
        td_node_save(n, 0, qc);
        td_node_save(n, 1, kc);
        td_node_save(n, 2, vc);
        td_node_save(n, 3, P);
    }
    if (weights) { /* the weights are differentiable too (w.r.t. q and k) */
        td_node *nw = td_record(P, "scaled_dot_product_attention.weights", sdpa_weights_backward, 2, ins);
        if (nw) {
            geom_to_node(nw, &g);
            td_node_save(nw, 0, qc);
            td_node_save(nw, 1, kc);
            td_node_save(nw, 2, P);
        }
        *weights = P;
        P = NULL;
    }
done:
    td_release(P);
    td_release(qc);
    td_release(kc);
    td_release(vc);
    td_release(amf);
    td_release(amx);
    td_release(kpf);
    return out;
}
