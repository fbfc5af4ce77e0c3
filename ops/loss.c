/* Losses as single fused ops: cross_entropy (log_softmax + nll in one pass), nll_loss,
 * binary_cross_entropy_with_logits (the stable form), mse_loss, l1_loss, gaussian_kl (the VAE /
 * VDRL regulariser). Reductions: "none" (per sample / element), "mean", "sum", as in PyTorch. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

#define PAR_MIN 65536

int td_reduction_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "none")) return TD_REDUCE_NONE;
    if (!strcmp(s, "mean")) return TD_REDUCE_MEAN;
    if (!strcmp(s, "sum")) return TD_REDUCE_SUM;
    return -1;
}

/* The output of a reduction: `per` (n values, shape (ndim, shape)) itself for "none", else a 0-d
 * tensor with their sum or mean. Takes ownership of per. */
static td_tensor *reduce_to(td_tensor *per, td_reduction red, int64_t count) {
    if (!per || red == TD_REDUCE_NONE) return per;
    const float *p = td_f32(per);
    int64_t n = td_numel(per);
    double s = 0;
    #pragma omp parallel for reduction(+ : s) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) s += p[i];
    td_release(per);
    td_tensor *out = td_empty(TD_F32, 0, NULL);
    if (out) td_f32(out)[0] = (float)(red == TD_REDUCE_MEAN ? (count ? s / (double)count : NAN) : s);
    return out;
}

/* Gradient weight of element / sample i: g[i] for "none", g/count for "mean", g for "sum". */
static inline float gweight(const float *g, td_reduction red, int64_t i, float scalar) {
    return red == TD_REDUCE_NONE ? g[i] : scalar;
}
static float gscalar(const float *g, td_reduction red, int64_t count) {
    if (red == TD_REDUCE_NONE) return 0;
    return red == TD_REDUCE_MEAN ? (count ? g[0] / (float)count : 0.0f) : g[0];
}

static int check_red(const char *op, td_reduction red) {
    if (red != TD_REDUCE_NONE && red != TD_REDUCE_MEAN && red != TD_REDUCE_SUM)
        return td_fail_int("%s: reduction must be 'none', 'mean' or 'sum'", op);
    return 0;
}

/* ---- cross entropy / nll -------------------------------------------------------------------------- */
/* scores (N, C, d...) are rows r = (n, s) of C values at stride S = prod(d...) */
static int check_labels(const char *op, td_tensor *x, td_tensor *labels) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF], b3[TD_SHAPE_BUF];
    if (x->ndim < 2)
        return td_fail_int("%s: expected scores of shape (N, C) or (N, C, d...), got %s", op, td_shape_str(x, b1, sizeof b1));
    if (x->dtype != TD_F32) return td_fail_int("%s: scores must be float32, got %s", op, td_dtype_name(x->dtype));
    if (labels->dtype != TD_I64)
        return td_fail_int("%s: labels must be an int64 tensor of classes (from 0; use :long()), got %s", op,
                           td_dtype_name(labels->dtype));
    int64_t want[TD_MAX_DIMS];
    want[0] = x->shape[0];
    for (int i = 2; i < x->ndim; i++) want[i - 1] = x->shape[i];
    if (labels->ndim != x->ndim - 1 || memcmp(labels->shape, want, sizeof(int64_t) * (size_t)labels->ndim))
        return td_fail_int("%s: scores %s need labels of shape %s, got %s", op, td_shape_str(x, b1, sizeof b1),
                           td_dims_str(x->ndim - 1, want, b2, sizeof b2), td_shape_str(labels, b3, sizeof b3));
    int64_t n = td_numel(labels), C = x->shape[1];
    for (int64_t i = 0; i < n; i++) {
        int64_t v = (int64_t)td_get_flat(labels, i);
        if (v < 0 || v >= C)
            return td_fail_int("%s: label %lld at position %lld (of %lld, counting from 1) is outside [0, %lld) for scores %s",
                               op, (long long)v, (long long)(i + 1), (long long)n, (long long)C,
                               td_shape_str(x, b1, sizeof b1));
    }
    return 0;
}

/* saved: scores, labels, lse (rows); iarg: reduction, is_nll */
static void ce_backward(td_node *n, td_tensor *g) {
    td_tensor *x = n->saved[0], *lab = n->saved[1], *lse = n->saved[2], *gc = td_contiguous(g);
    td_reduction red = (td_reduction)n->iarg[0];
    bool nll = n->iarg[1];
    int64_t N = x->shape[0], C = x->shape[1], S = td_numel(x) / (N * C > 0 ? N * C : 1), R = N * S;
    td_tensor *dx = gc ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    if (dx) {
        const float *xs = td_f32(x), *gs = td_f32(gc), *ls = lse ? td_f32(lse) : NULL;
        const int64_t *ys = td_i64(lab);
        float sc = gscalar(gs, red, R), *d = td_f32(dx);
        if (nll) memset(d, 0, sizeof(float) * (size_t)(R * C));
        #pragma omp parallel for if (R * C > PAR_MIN) schedule(static)
        for (int64_t r = 0; r < R; r++) {
            int64_t i = r / S, s = r % S;
            float w = gweight(gs, red, r, sc), *dr = d + i * C * S + s;
            const float *xr = xs + i * C * S + s;
            if (!nll) {
                float l = ls[r];
                for (int64_t j = 0; j < C; j++) dr[j * S] = w * expf(xr[j * S] - l);
            }
            dr[ys[r] * S] -= w;
        }
        td_node_accum(n, 0, dx);
    }
    td_release(dx);
    td_release(gc);
}

static td_tensor *ce_impl(td_tensor *x, td_tensor *labels, td_reduction red, bool nll) {
    const char *op = nll ? "nll_loss" : "cross_entropy";
    if (check_red(op, red) || check_labels(op, x, labels)) return NULL;
    int64_t N = x->shape[0], C = x->shape[1], S = td_numel(x) / (N * C > 0 ? N * C : 1), R = N * S;
    td_tensor *xc = td_nn_contig(x), *lc = xc ? td_nn_contig(labels) : NULL;
    td_tensor *lse = (lc && !nll) ? td_empty(TD_F32, 1, &R) : NULL;
    td_tensor *per = (lc && (nll || lse)) ? td_empty(TD_F32, labels->ndim, labels->shape) : NULL, *out = NULL;
    if (per) {
        const float *xs = td_f32(xc);
        const int64_t *ys = td_i64(lc);
        float *ps = td_f32(per), *ls = lse ? td_f32(lse) : NULL;
        #pragma omp parallel for if (R * C > PAR_MIN) schedule(static)
        for (int64_t r = 0; r < R; r++) {
            const float *xr = xs + (r / S) * C * S + r % S;
            if (nll) {
                ps[r] = -xr[ys[r] * S];
                continue;
            }
            float m = -INFINITY;
            for (int64_t j = 0; j < C; j++) m = xr[j * S] > m ? xr[j * S] : m;
            double s = 0;
            for (int64_t j = 0; j < C; j++) s += expf(xr[j * S] - m);
            float l = (float)(log(s) + m);
            ls[r] = l;
            ps[r] = l - xr[ys[r] * S];
        }
        out = reduce_to(per, red, R);
        per = NULL;
        if (out) {
            td_node *n = td_record(out, op, ce_backward, 1, &x);
            if (n) {
                n->iarg[0] = red;
                n->iarg[1] = nll;
                td_node_save(n, 0, xc);
                td_node_save(n, 1, lc);
                td_node_save(n, 2, lse);
            }
        }
    }
    td_release(per);
    td_release(lse);
    td_release(xc);
    td_release(lc);
    return out;
}

td_tensor *td_cross_entropy(td_tensor *logits, td_tensor *labels, td_reduction red) { return ce_impl(logits, labels, red, false); }
td_tensor *td_nll_loss(td_tensor *logp, td_tensor *labels, td_reduction red) { return ce_impl(logp, labels, red, true); }

/* ---- elementwise pair losses ---------------------------------------------------------------------- */
enum { PL_BCE, PL_MSE, PL_L1 };
static const char *const pl_names[] = {"binary_cross_entropy_with_logits", "mse_loss", "l1_loss"};

/* log(1 + exp(-x)), stable */
static inline float softplus_neg(float x) { return (x < 0 ? -x : 0) + log1pf(expf(-fabsf(x))); }

static inline float pl_value(int kind, float a, float b, float p) {
    switch (kind) {
    case PL_BCE: return p == 1.0f ? (a > 0 ? a : 0) - a * b + log1pf(expf(-fabsf(a))) : (1 - b) * a + (1 + (p - 1) * b) * softplus_neg(a);
    case PL_MSE: return (a - b) * (a - b);
    default: return fabsf(a - b);
    }
}

/* d loss / d a, d loss / d b */
static inline void pl_grad(int kind, float a, float b, float p, float *da, float *db) {
    switch (kind) {
    case PL_BCE: {
        float s = a >= 0 ? 1.0f / (1.0f + expf(-a)) : expf(a) / (1.0f + expf(a)); /* sigmoid(a) */
        if (p == 1.0f) {
            *da = s - b;
            *db = -a;
        } else { /* d/da = (1 - b) - (1 + (p-1) b) sigmoid(-a); d/db = -a + (p - 1) softplus(-a) */
            *da = (1 - b) - (1 + (p - 1) * b) * (1 - s);
            *db = -a + (p - 1) * softplus_neg(a);
        }
        break;
    }
    case PL_MSE:
        *da = 2 * (a - b);
        *db = -*da;
        break;
    default: {
        float d = a - b, s = d > 0 ? 1.0f : d < 0 ? -1.0f : 0.0f;
        *da = s;
        *db = -s;
    }
    }
}

/* pos_weight of element i (P values repeating along the last dim; NULL: 1) */
static inline float pw_at(const float *pw, int64_t P, int64_t i) { return pw ? pw[P == 1 ? 0 : i % P] : 1.0f; }

/* saved: a, b, pos_weight; iarg: kind, reduction */
static void pair_backward(td_node *n, td_tensor *g) {
    td_tensor *a = n->saved[0], *b = n->saved[1], *pwt = n->saved[2], *gc = td_contiguous(g);
    const float *pw = pwt ? td_f32(pwt) : NULL;
    int64_t P = pwt ? td_numel(pwt) : 1;
    int kind = (int)n->iarg[0];
    td_reduction red = (td_reduction)n->iarg[1];
    int64_t N = td_numel(a);
    td_tensor *da = (gc && n->in[0]) ? td_empty(TD_F32, a->ndim, a->shape) : NULL;
    td_tensor *db = (gc && n->in[1]) ? td_empty(TD_F32, b->ndim, b->shape) : NULL;
    if (gc && (!n->in[0] || da) && (!n->in[1] || db)) {
        const float *as = td_f32(a), *bs = td_f32(b), *gs = td_f32(gc);
        float *pa = da ? td_f32(da) : NULL, *pb = db ? td_f32(db) : NULL, sc = gscalar(gs, red, N);
        #pragma omp parallel for if (N > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < N; i++) {
            float w = gweight(gs, red, i, sc), ga, gb;
            pl_grad(kind, as[i], bs[i], pw_at(pw, P, i), &ga, &gb);
            if (pa) pa[i] = w * ga;
            if (pb) pb[i] = w * gb;
        }
        if (da) td_node_accum(n, 0, da);
        if (db) td_node_accum(n, 1, db);
    }
    td_release(da);
    td_release(db);
    td_release(gc);
}

static td_tensor *pair_loss(int kind, td_tensor *a, td_tensor *b, td_tensor *pos_weight, td_reduction red) {
    const char *op = pl_names[kind];
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (check_red(op, red)) return NULL;
    if (a->dtype != TD_F32 || b->dtype != TD_F32)
        return td_fail("%s: needs float32 tensors, got %s and %s", op, td_dtype_name(a->dtype), td_dtype_name(b->dtype));
    if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim))
        return td_fail("%s: input %s and target %s differ in shape", op, td_shape_str(a, b1, sizeof b1),
                       td_shape_str(b, b2, sizeof b2));
    int64_t P = 1;
    if (pos_weight) {
        P = td_numel(pos_weight);
        int64_t last = a->ndim ? a->shape[a->ndim - 1] : 1;
        if (pos_weight->dtype != TD_F32 || (P != 1 && P != last))
            return td_fail("%s: pos_weight of shape %s must hold one value or one per position of the last dim of input %s",
                           op, td_shape_str(pos_weight, b1, sizeof b1), td_shape_str(a, b2, sizeof b2));
    }
    td_tensor *ac = td_nn_contig(a), *bc = ac ? td_nn_contig(b) : NULL, *pc = (bc && pos_weight) ? td_nn_contig(pos_weight) : NULL;
    td_tensor *per = (bc && (!pos_weight || pc)) ? td_empty(TD_F32, a->ndim, a->shape) : NULL, *out = NULL;
    if (per) {
        int64_t N = td_numel(a);
        const float *as = td_f32(ac), *bs = td_f32(bc), *pw = pc ? td_f32(pc) : NULL;
        float *ps = td_f32(per);
        #pragma omp parallel for if (N > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < N; i++) ps[i] = pl_value(kind, as[i], bs[i], pw_at(pw, P, i));
        out = reduce_to(per, red, N);
        if (out) {
            td_tensor *ins[2] = {a, b};
            td_node *n = td_record(out, op, pair_backward, 2, ins);
            if (n) {
                n->iarg[0] = kind;
                n->iarg[1] = red;
                td_node_save(n, 0, ac);
                td_node_save(n, 1, bc);
                td_node_save(n, 2, pc);
            }
        }
    }
    td_release(ac);
    td_release(bc);
    td_release(pc);
    return out;
}

td_tensor *td_bce_with_logits(td_tensor *x, td_tensor *t, td_tensor *pos_weight, td_reduction red) {
    return pair_loss(PL_BCE, x, t, pos_weight, red);
}
td_tensor *td_mse_loss(td_tensor *a, td_tensor *b, td_reduction red) { return pair_loss(PL_MSE, a, b, NULL, red); }
td_tensor *td_l1_loss(td_tensor *a, td_tensor *b, td_reduction red) { return pair_loss(PL_L1, a, b, NULL, red); }

/* ---- Gaussian KL to N(0, I) --------------------------------------------------------------------------- */
/* saved: mu, logvar; iarg: reduction, rows, D */
static void kl_backward(td_node *n, td_tensor *g) {
    td_tensor *mu = n->saved[0], *lv = n->saved[1], *gc = td_contiguous(g);
    td_reduction red = (td_reduction)n->iarg[0];
    int64_t R = n->iarg[1], D = n->iarg[2];
    td_tensor *dm = (gc && n->in[0]) ? td_empty(TD_F32, mu->ndim, mu->shape) : NULL;
    td_tensor *dl = (gc && n->in[1]) ? td_empty(TD_F32, lv->ndim, lv->shape) : NULL;
    if (gc && (!n->in[0] || dm) && (!n->in[1] || dl)) {
        const float *ms = td_f32(mu), *ls = td_f32(lv), *gs = td_f32(gc);
        float sc = gscalar(gs, red, R);
        #pragma omp parallel for if (R * D > PAR_MIN) schedule(static)
        for (int64_t r = 0; r < R; r++) {
            float w = gweight(gs, red, r, sc);
            for (int64_t j = 0; j < D; j++) {
                int64_t i = r * D + j;
                if (dm) td_f32(dm)[i] = w * ms[i];
                if (dl) td_f32(dl)[i] = w * 0.5f * (expf(ls[i]) - 1.0f);
            }
        }
        if (dm) td_node_accum(n, 0, dm);
        if (dl) td_node_accum(n, 1, dl);
    }
    td_release(dm);
    td_release(dl);
    td_release(gc);
}

td_tensor *td_gaussian_kl(td_tensor *mu, td_tensor *logvar, td_reduction red) {
    const char *op = "gaussian_kl";
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (check_red(op, red)) return NULL;
    if (mu->dtype != TD_F32 || logvar->dtype != TD_F32) return td_fail("%s: mu and logvar must be float32", op);
    if (mu->ndim < 1 || mu->ndim != logvar->ndim || memcmp(mu->shape, logvar->shape, sizeof(int64_t) * (size_t)mu->ndim))
        return td_fail("%s: mu (%s) and logvar (%s) must have the same shape, at least 1-D", op, td_shape_str(mu, b1, sizeof b1),
                       td_shape_str(logvar, b2, sizeof b2));
    int64_t D = mu->shape[mu->ndim - 1], R = D ? td_numel(mu) / D : 0;
    td_tensor *mc = td_nn_contig(mu), *lc = mc ? td_nn_contig(logvar) : NULL;
    td_tensor *per = lc ? td_empty(TD_F32, mu->ndim - 1, mu->shape) : NULL, *out = NULL;
    if (per) {
        const float *ms = td_f32(mc), *ls = td_f32(lc);
        float *ps = td_f32(per);
        #pragma omp parallel for if (R * D > PAR_MIN) schedule(static)
        for (int64_t r = 0; r < R; r++) {
            double s = 0;
            for (int64_t j = 0; j < D; j++) {
                float m = ms[r * D + j], l = ls[r * D + j];
                s += 1.0 + l - (double)m * m - exp((double)l);
            }
            ps[r] = (float)(-0.5 * s);
        }
        out = reduce_to(per, red, R);
        if (out) {
            td_tensor *ins[2] = {mu, logvar};
            td_node *n = td_record(out, op, kl_backward, 2, ins);
            if (n) {
                n->iarg[0] = red;
                n->iarg[1] = R;
                n->iarg[2] = D;
                td_node_save(n, 0, mc);
                td_node_save(n, 1, lc);
            }
        }
    }
    td_release(mc);
    td_release(lc);
    return out;
}
