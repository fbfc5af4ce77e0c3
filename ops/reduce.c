/* Reductions (sum, mean, var, std, logsumexp, norm, max/min, argmax) and softmax /
 * log_softmax along a dimension. sum, max and the softmaxes have kernels; the rest are
 * compositions of differentiable ops, so their gradients come from the tape. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "tensor.h"

#define PAR_MIN 32768

static int check_mask(const td_tensor *t, uint32_t dims, const char *op) {
    if (t->ndim < 32 && (dims >> t->ndim)) {
        char b[TD_SHAPE_BUF];
        return td_fail_int("%s: dimension out of range for a tensor of shape %s", op, td_shape_str(t, b, sizeof b));
    }
    return 0;
}

static uint32_t full_mask(const td_tensor *t, uint32_t dims) { return dims ? dims : (uint32_t)((1u << t->ndim) - 1); }

/* Output shape of a reduction over mask. */
static int reduced_shape(const td_tensor *t, uint32_t mask, bool keepdim, int64_t *shape) {
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (mask >> i & 1) {
            if (keepdim) shape[k++] = 1;
        } else {
            shape[k++] = t->shape[i];
        }
    }
    return k;
}

/* ---- sum ----------------------------------------------------------------------------------- */
static void sum_backward(td_node *n, td_tensor *g) {
    td_tensor *in = n->in[0];
    int64_t kshape[TD_MAX_DIMS];
    reduced_shape(in, (uint32_t)n->iarg[0], true, kshape);
    td_tensor *gk = td_reshape(g, in->ndim, kshape);
    td_tensor *ge = gk ? td_expand(gk, in->ndim, in->shape) : NULL;
    if (ge && n->farg[0] != 1.0) { /* mean: scale */
        td_tensor *s = td_binary_scalar(TD_MUL, ge, n->farg[0], false);
        td_release(ge);
        ge = s;
    }
    td_node_accum(n, 0, ge);
    td_release(ge);
    td_release(gk);
}

/* Sum of n floats: float vector lanes add SUM_BLOCK / (2 x lanes) values each (16 with
 * AVX-512), then go into double lanes, summed at the end. Within a couple of float ulps of the
 * exact sum, at memory speed (a scalar double add per element ran at a fifth of it). */
#define SUM_BLOCK 512
#define SUM_CHUNK 65536 /* per thread task when one long row is split */
static double row_sum(const float *p, int64_t n) {
    double acc[TD_VW] = {0};
    int64_t i = 0;
    while (i + 2 * TD_VW <= n) {
        int64_t e = i + SUM_BLOCK < n ? i + SUM_BLOCK : n;
        td_vf a = {0}, b = {0};
        for (; i + 2 * TD_VW <= e; i += 2 * TD_VW) {
            a += td_vload(p + i);
            b += td_vload(p + i + TD_VW);
        }
        a += b;
        for (int l = 0; l < TD_VW; l++) acc[l] += a[l];
    }
    double s = 0;
    for (int l = 0; l < TD_VW; l++) s += acc[l];
    for (; i < n; i++) s += p[i];
    return s;
}

/* out[a, b] = sum_r x[a, r, b] for contiguous x viewed as (A, R, B). */
static void sum_arb(float *out, const float *x, int64_t A, int64_t R, int64_t B) {
    if (B == 1 && A < 8 && R > PAR_MIN) { /* few long rows: split each row across threads */
        for (int64_t a = 0; a < A; a++) {
            const float *p = x + a * R;
            int64_t nb = (R + SUM_CHUNK - 1) / SUM_CHUNK;
            double s = 0;
            #pragma omp parallel for reduction(+ : s) schedule(static)
            for (int64_t k = 0; k < nb; k++) s += row_sum(p + k * SUM_CHUNK, R - k * SUM_CHUNK < SUM_CHUNK ? R - k * SUM_CHUNK : SUM_CHUNK);
            out[a] = (float)s;
        }
        return;
    }
    if (B == 1) {
        #pragma omp parallel for if (A * R > PAR_MIN) schedule(static)
        for (int64_t a = 0; a < A; a++) out[a] = (float)row_sum(x + a * R, R);
        return;
    }
    #pragma omp parallel for if (A * R * B > PAR_MIN) schedule(static)
    for (int64_t a = 0; a < A; a++) {
        double *acc = calloc((size_t)B, sizeof(double));
        if (!acc) continue;
        for (int64_t r = 0; r < R; r++) {
            const float *p = x + (a * R + r) * B;
            for (int64_t b = 0; b < B; b++) acc[b] += p[b];
        }
        for (int64_t b = 0; b < B; b++) out[a * B + b] = (float)acc[b];
        free(acc);
    }
}

static td_tensor *sum_impl(td_tensor *t, uint32_t dims, bool keepdim, double scale, const char *name) {
    if (check_mask(t, dims, name)) return NULL;
    uint32_t mask = full_mask(t, dims);
    int64_t oshape[TD_MAX_DIMS];
    int ond = reduced_shape(t, mask, keepdim, oshape);
    td_tensor *x = t->dtype == TD_F32 ? td_contiguous(t) : td_to_dtype(t, TD_F32);
    if (!x) return NULL;
    td_tensor *out = td_empty(TD_F32, ond, oshape);
    if (!out) {
        td_release(x);
        return NULL;
    }
    /* is the reduced set one block of consecutive dims? */
    int lo = -1, hi = -1;
    bool block = true;
    for (int i = 0; i < t->ndim; i++)
        if (mask >> i & 1) {
            if (lo < 0) lo = i;
            else if (hi != i - 1) block = false;
            hi = i;
        }
    if (t->ndim == 0 || lo < 0) {
        memcpy(td_f32(out), td_f32(x), sizeof(float) * (size_t)td_numel(x));
    } else if (block) {
        int64_t A = 1, R = 1, B = 1;
        for (int i = 0; i < t->ndim; i++) {
            if (i < lo) A *= t->shape[i];
            else if (i <= hi) R *= t->shape[i];
            else B *= t->shape[i];
        }
        sum_arb(td_f32(out), td_f32(x), A, R, B);
    } else { /* move reduced dims last, then row sums */
        int perm[TD_MAX_DIMS], k = 0;
        int64_t R = 1;
        for (int i = 0; i < t->ndim; i++)
            if (!(mask >> i & 1)) perm[k++] = i;
        for (int i = 0; i < t->ndim; i++)
            if (mask >> i & 1) {
                perm[k++] = i;
                R *= t->shape[i];
            }
        bool prev = td_set_grad_enabled(false);
        td_tensor *p = td_permute(x, perm), *c = p ? td_contiguous(p) : NULL;
        td_set_grad_enabled(prev);
        if (!c) {
            td_release(p);
            td_release(x);
            td_release(out);
            return NULL;
        }
        sum_arb(td_f32(out), td_f32(c), td_numel(out), R, 1);
        td_release(c);
        td_release(p);
    }
    if (scale != 1.0) {
        int64_t n = td_numel(out);
        float *o = td_f32(out);
        for (int64_t i = 0; i < n; i++) o[i] = (float)(o[i] * scale);
    }
    td_release(x);
    td_node *n = td_record(out, name, sum_backward, 1, &t);
    if (n) {
        n->iarg[0] = mask;
        n->farg[0] = scale;
    }
    return out;
}

td_tensor *td_sum(td_tensor *t, uint32_t dims, bool keepdim) { return sum_impl(t, dims, keepdim, 1.0, "sum"); }

static int64_t mask_count(const td_tensor *t, uint32_t mask) {
    int64_t c = 1;
    for (int i = 0; i < t->ndim; i++)
        if (mask >> i & 1) c *= t->shape[i];
    return c;
}

td_tensor *td_mean(td_tensor *t, uint32_t dims, bool keepdim) {
    if (check_mask(t, dims, "mean")) return NULL;
    int64_t c = mask_count(t, full_mask(t, dims));
    return sum_impl(t, dims, keepdim, c ? 1.0 / (double)c : NAN, "mean");
}

/* ---- compositions ------------------------------------------------------------------------- */
td_tensor *td_var(td_tensor *t, uint32_t dims, bool keepdim, int correction) {
    if (check_mask(t, dims, "var")) return NULL;
    int64_t c = mask_count(t, full_mask(t, dims));
    td_tensor *m = td_mean(t, dims, true);
    td_tensor *d = m ? td_binary(TD_SUB, t, m) : NULL;
    td_tensor *d2 = d ? td_binary(TD_MUL, d, d) : NULL;
    td_tensor *s = d2 ? td_sum(d2, dims, keepdim) : NULL;
    td_tensor *v = s ? td_binary_scalar(TD_DIV, s, (double)(c - correction > 0 ? c - correction : 0), false) : NULL;
    td_release(m);
    td_release(d);
    td_release(d2);
    td_release(s);
    return v;
}

td_tensor *td_std(td_tensor *t, uint32_t dims, bool keepdim, int correction) {
    td_tensor *v = td_var(t, dims, keepdim, correction);
    td_tensor *s = v ? td_unary(TD_SQRT, v) : NULL;
    td_release(v);
    return s;
}

td_tensor *td_logsumexp(td_tensor *t, uint32_t dims, bool keepdim) {
    if (check_mask(t, dims, "logsumexp")) return NULL;
    uint32_t mask = full_mask(t, dims);
    /* m = max over the dims (a constant for the gradient: it cancels) */
    bool prev = td_set_grad_enabled(false);
    td_tensor *m = td_detach(t);
    for (int i = t->ndim - 1; m && i >= 0; i--)
        if (mask >> i & 1) {
            td_tensor *v = NULL;
            if (td_max_dim(m, i, true, false, &v, NULL)) v = NULL;
            td_release(m);
            m = v;
        }
    if (m) { /* -inf rows (all masked) would give nan: use 0 there */
        int64_t n = td_numel(m);
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(td_f32(m)[i])) td_f32(m)[i] = 0;
    }
    td_set_grad_enabled(prev);
    if (!m) return NULL;
    td_tensor *d = td_binary(TD_SUB, t, m), *e = d ? td_unary(TD_EXP, d) : NULL;
    td_tensor *s = e ? td_sum(e, dims, true) : NULL, *l = s ? td_unary(TD_LOG, s) : NULL;
    td_tensor *r = l ? td_binary(TD_ADD, l, m) : NULL;
    td_tensor *out = NULL;
    if (r) {
        if (keepdim) {
            out = r;
            r = NULL;
        } else {
            int64_t shape[TD_MAX_DIMS];
            int nd = reduced_shape(t, mask, false, shape);
            out = td_reshape(r, nd, shape);
        }
    }
    td_release(m);
    td_release(d);
    td_release(e);
    td_release(s);
    td_release(l);
    td_release(r);
    return out;
}

td_tensor *td_norm(td_tensor *t, double p, uint32_t dims, bool keepdim) {
    if (!(p > 0)) return td_fail("norm: p must be positive, got %g", p);
    td_tensor *a = NULL, *s = NULL, *r = NULL;
    if (p == 2) {
        a = td_unary(TD_SQUARE, t);
        s = a ? td_sum(a, dims, keepdim) : NULL;
        r = s ? td_unary(TD_SQRT, s) : NULL;
    } else if (p == 1) {
        a = td_unary(TD_ABS, t);
        r = a ? td_sum(a, dims, keepdim) : NULL;
    } else {
        td_tensor *ab = td_unary(TD_ABS, t);
        a = ab ? td_binary_scalar(TD_POW, ab, p, false) : NULL;
        td_release(ab);
        s = a ? td_sum(a, dims, keepdim) : NULL;
        r = s ? td_binary_scalar(TD_POW, s, 1.0 / p, false) : NULL;
    }
    td_release(a);
    td_release(s);
    return r;
}

/* ---- max / min ---------------------------------------------------------------------------- */
/* Moves dim d last (the others keep their order) and returns a contiguous float copy: (rows, L). */
static td_tensor *dim_last(td_tensor *t, int d) {
    bool prev = td_set_grad_enabled(false);
    td_tensor *x = t->dtype == TD_F32 ? td_detach(t) : td_to_dtype(t, TD_F32);
    int perm[TD_MAX_DIMS], k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) perm[k++] = i;
    perm[k] = d;
    td_tensor *p = x ? td_permute(x, perm) : NULL, *c = p ? td_contiguous(p) : NULL;
    td_release(x);
    td_release(p);
    td_set_grad_enabled(prev);
    return c;
}

static void max_backward(td_node *n, td_tensor *g) {
    td_tensor *in = n->in[0], *idx = n->saved[0];
    int d = (int)n->iarg[0];
    td_tensor *z = td_zeros(TD_F32, in->ndim, in->shape);
    if (!z) return;
    int64_t kshape[TD_MAX_DIMS];
    memcpy(kshape, in->shape, sizeof kshape);
    kshape[d] = 1;
    td_tensor *gk = td_reshape(g, in->ndim, kshape), *ik = td_reshape(idx, in->ndim, kshape);
    td_tensor *r = (gk && ik) ? td_scatter_add(z, d, ik, gk) : NULL;
    td_node_accum(n, 0, r);
    td_release(r);
    td_release(gk);
    td_release(ik);
    td_release(z);
}

int td_max_dim(td_tensor *t, int dim, bool keepdim, bool is_min, td_tensor **values, td_tensor **indices) {
    const char *op = is_min ? "min" : "max";
    int d = td_norm_dim(t, dim, op);
    if (d < 0) return -1;
    if (t->ndim == 0) {
        td_tensor *v = td_clone(t);
        if (!v) return -1;
        if (values) *values = v; else td_release(v);
        if (indices) *indices = td_full(TD_I64, 0, NULL, 0);
        return 0;
    }
    int64_t L = t->shape[d];
    if (L == 0) {
        char b[TD_SHAPE_BUF];
        return td_fail_int("%s: dimension %d of a tensor of shape %s is empty", op, d + 1, td_shape_str(t, b, sizeof b));
    }
    int64_t oshape[TD_MAX_DIMS];
    int ond = reduced_shape(t, 1u << d, keepdim, oshape);
    td_tensor *c = dim_last(t, d);
    if (!c) return -1;
    td_tensor *v = td_empty(TD_F32, ond, oshape), *ix = td_empty(TD_I64, ond, oshape);
    if (!v || !ix) {
        td_release(c);
        td_release(v);
        td_release(ix);
        return -1;
    }
    int64_t rows = td_numel(c) / L;
    const float *x = td_f32(c);
    float *pv = td_f32(v);
    int64_t *pi = td_i64(ix);
    #pragma omp parallel for if (rows * L > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * L;
        int64_t best = 0;
        float bv = p[0];
        for (int64_t i = 1; i < L && !isnan(bv); i++)
            if (isnan(p[i]) || (is_min ? p[i] < bv : p[i] > bv)) {
                bv = p[i];
                best = i;
            }
        pv[r] = bv;
        pi[r] = best;
    }
    td_release(c);
    if (t->dtype == TD_I64) { /* integer input, integer values (computed through float32) */
        td_tensor *vi = td_to_dtype(v, TD_I64);
        td_release(v);
        if (!vi) {
            td_release(ix);
            return -1;
        }
        v = vi;
    }
    if (values) {
        td_node *n = td_record(v, op, max_backward, 1, &t);
        if (n) {
            n->iarg[0] = d;
            td_node_save(n, 0, ix);
        }
        *values = v;
    } else {
        td_release(v);
    }
    if (indices) *indices = ix;
    else td_release(ix);
    return 0;
}

td_tensor *td_max_all(td_tensor *t, bool is_min) {
    int64_t n = td_numel(t);
    if (n == 0) return td_fail("%s: the tensor is empty", is_min ? "min" : "max");
    int64_t flat = -1;
    td_tensor *f = td_reshape(t, 1, &flat);
    if (!f) return NULL;
    td_tensor *v = NULL;
    int rc = td_max_dim(f, 0, false, is_min, &v, NULL);
    td_release(f);
    return rc ? NULL : v;
}

td_tensor *td_argmax(td_tensor *t, int dim, bool keepdim, bool is_min) {
    td_tensor *ix = NULL;
    if (dim == TD_ALL_DIMS) {
        int64_t flat = -1;
        td_tensor *f = td_reshape(t, 1, &flat);
        if (!f) return NULL;
        bool prev = td_set_grad_enabled(false);
        int rc = td_max_dim(f, 0, false, is_min, NULL, &ix);
        td_set_grad_enabled(prev);
        td_release(f);
        return rc ? NULL : ix;
    }
    bool prev = td_set_grad_enabled(false);
    int rc = td_max_dim(t, dim, keepdim, is_min, NULL, &ix);
    td_set_grad_enabled(prev);
    return rc ? NULL : ix;
}

/* ---- softmax / log_softmax along a dim ------------------------------------------------------ */
/* rows of length L, contiguous: y = softmax(x) or log_softmax(x), td_softmax_row (nn.h) per row */
static void softmax_rows(float *y, const float *x, int64_t rows, int64_t L, bool logsm) {
    #pragma omp parallel for if (rows * L > PAR_MIN / 4) schedule(static)
    for (int64_t r = 0; r < rows; r++) td_softmax_row(y + r * L, x + r * L, L, logsm);
}

/* dx from g and y (both contiguous rows): softmax dx = y (g - <g, y>); log: dx = g - e^y sum g */
static void softmax_rows_grad(float *dx, const float *g, const float *y, int64_t rows, int64_t L, bool logsm) {
    #pragma omp parallel for if (rows * L > PAR_MIN / 4) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *gp = g + r * L, *yp = y + r * L;
        float *d = dx + r * L;
        int64_t nv = L / TD_VW * TD_VW, i;
        td_vf acc = {0};
        if (logsm) {
            for (i = 0; i < nv; i += TD_VW) acc += td_vload(gp + i);
            double s = td_vhsum(acc);
            for (i = nv; i < L; i++) s += gp[i];
            float sf = (float)s;
            for (i = 0; i < nv; i += TD_VW) td_vstore(d + i, td_vload(gp + i) - td_vexp(td_vload(yp + i)) * sf);
            for (i = nv; i < L; i++) d[i] = gp[i] - td_expf(yp[i]) * sf;
        } else {
            for (i = 0; i < nv; i += TD_VW) acc += td_vload(gp + i) * td_vload(yp + i);
            double s = td_vhsum(acc);
            for (i = nv; i < L; i++) s += (double)gp[i] * yp[i];
            float sf = (float)s;
            for (i = 0; i < nv; i += TD_VW) td_vstore(d + i, td_vload(yp + i) * (td_vload(gp + i) - sf));
            for (i = nv; i < L; i++) d[i] = yp[i] * (gp[i] - sf);
        }
    }
}

/* Permutation moving d last, and its inverse. */
static void last_perm(int nd, int d, int *perm, int *inv) {
    int k = 0;
    for (int i = 0; i < nd; i++)
        if (i != d) perm[k++] = i;
    perm[k] = d;
    for (int i = 0; i < nd; i++) inv[perm[i]] = i;
}

static void softmax_backward(td_node *n, td_tensor *g) {
    int d = (int)n->iarg[0];
    bool logsm = n->iarg[1];
    td_tensor *y = n->saved[0]; /* contiguous, dim-last layout */
    int64_t L = y->ndim ? y->shape[y->ndim - 1] : 1;
    int perm[TD_MAX_DIMS], inv[TD_MAX_DIMS];
    int nd = g->ndim;
    last_perm(nd, d, perm, inv);
    td_tensor *gp = nd ? td_permute(g, perm) : (td_retain(g), g), *gc = gp ? td_contiguous(gp) : NULL;
    td_tensor *dx = gc ? td_empty(TD_F32, gc->ndim, gc->shape) : NULL;
    if (dx) {
        softmax_rows_grad(td_f32(dx), td_f32(gc), td_f32(y), td_numel(y) / (L ? L : 1), L, logsm);
        td_tensor *back = nd ? td_permute(dx, inv) : (td_retain(dx), dx);
        td_node_accum(n, 0, back);
        td_release(back);
    }
    td_release(dx);
    td_release(gc);
    td_release(gp);
}

static td_tensor *softmax_impl(td_tensor *t, int dim, bool logsm) {
    const char *op = logsm ? "log_softmax" : "softmax";
    int d = td_norm_dim(t, dim, op);
    if (d < 0) return NULL;
    int nd = t->ndim;
    int perm[TD_MAX_DIMS], inv[TD_MAX_DIMS];
    last_perm(nd, d, perm, inv);
    td_tensor *c = nd ? dim_last(t, d) : td_to_dtype(t, TD_F32);
    if (!c) return NULL;
    int64_t L = nd ? c->shape[nd - 1] : 1;
    td_tensor *y = td_empty(TD_F32, c->ndim, c->shape);
    if (!y) {
        td_release(c);
        return NULL;
    }
    if (L) softmax_rows(td_f32(y), td_f32(c), td_numel(c) / L, L, logsm);
    td_release(c);
    bool prev = td_set_grad_enabled(false);
    td_tensor *out = nd ? td_permute(y, inv) : (td_retain(y), y);
    td_set_grad_enabled(prev);
    if (out) {
        td_node *n = td_record(out, op, softmax_backward, 1, &t);
        if (n) {
            n->iarg[0] = d;
            n->iarg[1] = logsm;
            td_node_save(n, 0, y);
        }
    }
    td_release(y);
    return out;
}

td_tensor *td_softmax(td_tensor *t, int dim) { return softmax_impl(t, dim, false); }
td_tensor *td_log_softmax(td_tensor *t, int dim) { return softmax_impl(t, dim, true); }
