/* Joining and indexing: cat, stack, index_select, gather, scatter_add, where, masked_fill. */
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

void td_copy_to_contiguous(const td_tensor *src, void *dst);
td_tensor *td_alias(const td_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset);

/* ---- cat / stack ------------------------------------------------------------------------------ */
static void cat_backward(td_node *n, td_tensor *g) {
    int d = (int)n->iarg[0];
    int64_t start = 0;
    for (int i = 0; i < n->n_in; i++) {
        int64_t len = n->iarg[1 + i];
        if (n->in[i]) {
            td_tensor *s = td_narrow(g, d, start, len);
            td_node_accum(n, i, s);
            td_release(s);
        }
        start += len;
    }
}

/* Joins up to TD_NODE_MAX_IN tensors per node; longer lists are joined in groups. */
static td_tensor *cat_group(td_tensor **ts, int n, int d) {
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, ts[0]->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) shape[d] += ts[i]->shape[d];
    td_tensor *out = td_empty(ts[0]->dtype, ts[0]->ndim, shape);
    if (!out) return NULL;
    int64_t start = 0;
    bool prev = td_set_grad_enabled(false);
    for (int i = 0; i < n; i++) {
        td_tensor *dst = td_narrow(out, d, start, ts[i]->shape[d]);
        int rc = dst ? td_copy_(dst, ts[i]) : -1;
        td_release(dst);
        if (rc) {
            td_set_grad_enabled(prev);
            td_release(out);
            return NULL;
        }
        start += ts[i]->shape[d];
    }
    td_set_grad_enabled(prev);
    td_node *nd = td_record(out, "cat", cat_backward, n, ts);
    if (nd) {
        nd->iarg[0] = d;
        for (int i = 0; i < n; i++) nd->iarg[1 + i] = ts[i]->shape[d];
    }
    return out;
}

td_tensor *td_cat(td_tensor **ts, int n, int dim) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (n < 1) return td_fail("cat: needs at least one tensor");
    int d = td_norm_dim(ts[0], dim, "cat");
    if (d < 0) return NULL;
    if (ts[0]->ndim == 0) return td_fail("cat: cannot join 0-dimensional tensors (use stack)");
    for (int i = 1; i < n; i++) {
        bool ok = ts[i]->ndim == ts[0]->ndim && ts[i]->dtype == ts[0]->dtype;
        for (int k = 0; ok && k < ts[0]->ndim; k++)
            if (k != d && ts[i]->shape[k] != ts[0]->shape[k]) ok = false;
        if (!ok)
            return td_fail("cat: tensor %d has shape %s (%s), tensor 1 has %s (%s): only dimension %d may differ", i + 1,
                           td_shape_str(ts[i], b1, sizeof b1), td_dtype_name(ts[i]->dtype),
                           td_shape_str(ts[0], b2, sizeof b2), td_dtype_name(ts[0]->dtype), d + 1);
    }
    if (n <= TD_NODE_MAX_IN) return cat_group(ts, n, d);
    /* join groups, then join the groups */
    int ng = (n + TD_NODE_MAX_IN - 1) / TD_NODE_MAX_IN;
    td_tensor **parts = calloc((size_t)ng, sizeof *parts);
    if (!parts) return td_fail("cat: out of memory");
    td_tensor *r = NULL;
    int k = 0;
    for (int i = 0; i < n; i += TD_NODE_MAX_IN) {
        parts[k] = cat_group(ts + i, n - i < TD_NODE_MAX_IN ? n - i : TD_NODE_MAX_IN, d);
        if (!parts[k++]) goto done;
    }
    r = td_cat(parts, ng, d);
done:
    for (int i = 0; i < ng; i++) td_release(parts[i]);
    free(parts);
    return r;
}

td_tensor *td_stack(td_tensor **ts, int n, int dim) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (n < 1) return td_fail("stack: needs at least one tensor");
    for (int i = 1; i < n; i++)
        if (ts[i]->ndim != ts[0]->ndim || memcmp(ts[i]->shape, ts[0]->shape, sizeof(int64_t) * ts[0]->ndim))
            return td_fail("stack: tensor %d has shape %s, tensor 1 has %s", i + 1, td_shape_str(ts[i], b1, sizeof b1),
                           td_shape_str(ts[0], b2, sizeof b2));
    td_tensor **us = calloc((size_t)n, sizeof *us);
    if (!us) return td_fail("stack: out of memory");
    td_tensor *r = NULL;
    int i;
    for (i = 0; i < n; i++)
        if (!(us[i] = td_unsqueeze(ts[i], dim))) break;
    if (i == n) r = td_cat(us, n, dim < 0 ? dim + ts[0]->ndim + 1 : dim);
    for (int k = 0; k < n; k++) td_release(us[k]);
    free(us);
    return r;
}

/* ---- index checks -------------------------------------------------------------------------- */
/* An index element as an integer: through a double, 2^63 - 1 read back as 2^63 (undefined). */
static int64_t flat_i64(const td_tensor *t, int64_t i) {
    int64_t idx[TD_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? i % t->shape[d] : 0;
        i = t->shape[d] ? i / t->shape[d] : 0;
    }
    return td_get_i64(t, idx);
}

static int check_index(const char *op, td_tensor *index, int64_t size, int d) {
    if (index->dtype != TD_I64) return td_fail_int("%s: index must be an int64 tensor, got %s", op, td_dtype_name(index->dtype));
    int64_t n = td_numel(index);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = flat_i64(index, i);
        if (v < 0 || v >= size)
            return td_fail_int("%s: index %lld out of range for dimension %d of size %lld (indices count from 0)", op,
                               (long long)v, d + 1, (long long)size);
    }
    return 0;
}

/* ---- index_select -------------------------------------------------------------------------- */
static void index_select_backward(td_node *n, td_tensor *g) {
    td_tensor *in = n->in[0], *idx = n->saved[0];
    int d = (int)n->iarg[0];
    td_tensor *z = td_zeros(TD_F32, in->ndim, in->shape);
    if (!z) return;
    int64_t m = td_numel(idx);
    for (int64_t i = 0; i < m; i++) {
        td_tensor *src = td_select(g, d, i), *dst = td_select(z, d, td_i64(idx)[i]);
        if (src && dst) td_add_(dst, src, 1.0);
        td_release(src);
        td_release(dst);
    }
    td_node_accum(n, 0, z);
    td_release(z);
}

td_tensor *td_index_select(td_tensor *t, int dim, td_tensor *index) {
    int d = td_norm_dim(t, dim, "index_select");
    if (d < 0) return NULL;
    if (t->ndim == 0) return td_fail("index_select: cannot index a 0-dimensional tensor");
    if (index->ndim != 1) {
        char b[TD_SHAPE_BUF];
        return td_fail("index_select: index must be 1-D, got shape %s", td_shape_str(index, b, sizeof b));
    }
    if (check_index("index_select", index, t->shape[d], d)) return NULL;
    td_tensor *idx = td_contiguous(index);
    if (!idx) return NULL;
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = index->shape[0];
    td_tensor *out = td_empty(t->dtype, t->ndim, shape);
    if (!out) {
        td_release(idx);
        return NULL;
    }
    /* (outer, size_d, inner) gather of contiguous blocks */
    td_tensor *c = td_contiguous(t);
    if (!c) {
        td_release(idx);
        td_release(out);
        return NULL;
    }
    int64_t outer = 1, inner = 1, m = shape[d];
    for (int i = 0; i < d; i++) outer *= t->shape[i];
    for (int i = d + 1; i < t->ndim; i++) inner *= t->shape[i];
    size_t es = td_dtype_size(t->dtype);
    const char *src = (const char *)c->storage->data + c->offset * es;
    char *dst = out->storage->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < m; j++)
            memcpy(dst + ((o * m + j) * inner) * es, src + ((o * t->shape[d] + td_i64(idx)[j]) * inner) * es,
                   (size_t)inner * es);
    td_release(c);
    td_node *n = td_record(out, "index_select", index_select_backward, 1, &t);
    if (n) {
        n->iarg[0] = d;
        td_node_save(n, 0, idx);
    }
    td_release(idx);
    return out;
}

/* ---- gather / scatter_add -------------------------------------------------------------------- */
/* out[..i..] = t[..index[..i..] at d..]; index has t's ndim, sizes <= t's except at d. */
static int check_gather(const char *op, td_tensor *t, int d, td_tensor *index) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (index->ndim != t->ndim)
        return td_fail_int("%s: index of shape %s needs as many dimensions as the tensor of shape %s", op,
                           td_shape_str(index, b1, sizeof b1), td_shape_str(t, b2, sizeof b2));
    for (int i = 0; i < t->ndim; i++)
        if (i != d && index->shape[i] > t->shape[i])
            return td_fail_int("%s: index of shape %s is larger than the tensor of shape %s in dimension %d", op,
                               td_shape_str(index, b1, sizeof b1), td_shape_str(t, b2, sizeof b2), i + 1);
    return check_index(op, index, t->shape[d], d);
}

static void scatter_add_raw(td_tensor *out, int d, td_tensor *index, td_tensor *src) {
    int64_t n = td_numel(index), idx[TD_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t k = td_get_i64(index, idx), j[TD_MAX_DIMS];
        memcpy(j, idx, sizeof j);
        j[d] = k;
        td_set(out, j, td_get(out, j) + td_get(src, idx));
        for (int q = index->ndim - 1; q >= 0; q--) {
            if (++idx[q] < index->shape[q]) break;
            idx[q] = 0;
        }
    }
}

static void gather_backward(td_node *n, td_tensor *g) {
    td_tensor *in = n->in[0];
    td_tensor *z = td_zeros(TD_F32, in->ndim, in->shape);
    if (!z) return;
    scatter_add_raw(z, (int)n->iarg[0], n->saved[0], g);
    td_node_accum(n, 0, z);
    td_release(z);
}

td_tensor *td_gather(td_tensor *t, int dim, td_tensor *index) {
    int d = td_norm_dim(t, dim, "gather");
    if (d < 0 || check_gather("gather", t, d, index)) return NULL;
    td_tensor *out = td_empty(t->dtype, index->ndim, index->shape);
    if (!out) return NULL;
    int64_t n = td_numel(index), idx[TD_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t j[TD_MAX_DIMS];
        memcpy(j, idx, sizeof j);
        j[d] = td_get_i64(index, idx);
        td_set(out, idx, td_get(t, j));
        for (int q = index->ndim - 1; q >= 0; q--) {
            if (++idx[q] < index->shape[q]) break;
            idx[q] = 0;
        }
    }
    td_node *nd = td_record(out, "gather", gather_backward, 1, &t);
    if (nd) {
        nd->iarg[0] = d;
        td_node_save(nd, 0, index);
    }
    return out;
}

static void scatter_add_backward(td_node *n, td_tensor *g) {
    td_node_accum(n, 0, g);
    if (n->in[1]) {
        td_tensor *gs = td_gather(g, (int)n->iarg[0], n->saved[0]);
        td_node_accum(n, 1, gs);
        td_release(gs);
    }
}

td_tensor *td_scatter_add(td_tensor *t, int dim, td_tensor *index, td_tensor *src) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    int d = td_norm_dim(t, dim, "scatter_add");
    if (d < 0) return NULL;
    if (src->ndim != index->ndim || memcmp(src->shape, index->shape, sizeof(int64_t) * src->ndim))
        return td_fail("scatter_add: source of shape %s must have the index's shape %s", td_shape_str(src, b1, sizeof b1),
                       td_shape_str(index, b2, sizeof b2));
    if (check_gather("scatter_add", t, d, index)) return NULL;
    bool prev = td_set_grad_enabled(false);
    td_tensor *out = td_clone(t);
    td_set_grad_enabled(prev);
    if (!out) return NULL;
    scatter_add_raw(out, d, index, src);
    td_tensor *ins[2] = {t, src};
    td_node *nd = td_record(out, "scatter_add", scatter_add_backward, 2, ins);
    if (nd) {
        nd->iarg[0] = d;
        td_node_save(nd, 0, index);
    }
    return out;
}

/* ---- where / masked_fill ----------------------------------------------------------------------- */
static void where_backward(td_node *n, td_tensor *g) {
    td_tensor *c = n->saved[0]; /* float 0/1 mask */
    if (n->in[1]) {
        td_tensor *ga = td_binary(TD_MUL, g, c);
        td_node_accum(n, 1, ga);
        td_release(ga);
    }
    if (n->in[2]) {
        td_tensor *inv = td_binary_scalar(TD_SUB, c, 1.0, true);
        td_tensor *gb = inv ? td_binary(TD_MUL, g, inv) : NULL;
        td_node_accum(n, 2, gb);
        td_release(gb);
        td_release(inv);
    }
}

td_tensor *td_where(td_tensor *cond, td_tensor *a, td_tensor *b) {
    int64_t s1[TD_MAX_DIMS], s2[TD_MAX_DIMS];
    int n1 = td_broadcast_shape("where", a, b, s1);
    if (n1 < 0) return NULL;
    td_tensor *ab = td_alias(a, n1, s1, s1, 0); /* only for its shape */
    if (!ab) return NULL;
    int n2 = td_broadcast_shape("where", cond, ab, s2);
    td_release(ab);
    if (n2 < 0) return NULL;
    td_dtype dt = (a->dtype == TD_I64 && b->dtype == TD_I64) ? TD_I64 : TD_F32;
    td_tensor *out = td_empty(dt, n2, s2);
    if (!out) return NULL;
    bool prev = td_set_grad_enabled(false);
    td_tensor *ce = td_expand(cond, n2, s2), *ae = td_expand(a, n2, s2), *be = td_expand(b, n2, s2);
    td_set_grad_enabled(prev);
    if (!ce || !ae || !be) {
        td_release(ce);
        td_release(ae);
        td_release(be);
        td_release(out);
        return NULL;
    }
    int64_t n = td_numel(out), idx[TD_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        bool pick_a = td_get(ce, idx) != 0;
        if (dt == TD_F32) td_f32(out)[i] = (float)(pick_a ? td_get(ae, idx) : td_get(be, idx));
        else td_i64(out)[i] = pick_a ? td_get_i64(ae, idx) : td_get_i64(be, idx);
        for (int q = n2 - 1; q >= 0; q--) {
            if (++idx[q] < s2[q]) break;
            idx[q] = 0;
        }
    }
    td_release(ae);
    td_release(be);
    td_tensor *ins[3] = {cond, a, b};
    td_node *nd = dt == TD_F32 ? td_record(out, "where", where_backward, 3, ins) : NULL;
    if (nd) {
        td_tensor *cf = td_to_dtype(ce, TD_F32), *m = cf ? td_binary_scalar(TD_NE, cf, 0.0, false) : NULL;
        td_node_save(nd, 0, m);
        td_release(cf);
        td_release(m);
    }
    td_release(ce);
    return out;
}

td_tensor *td_masked_fill(td_tensor *t, td_tensor *mask, double value) {
    td_tensor *v = td_full(t->dtype, 0, NULL, value);
    if (!v) return NULL;
    td_tensor *r = td_where(mask, v, t);
    if (r && r->node) r->node->name = "masked_fill";
    td_release(v);
    return r;
}
