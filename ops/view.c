/* Views that share storage (reshape, transpose, permute, narrow, slice, select, squeeze,
 * unsqueeze, expand) plus contiguous / clone. Each records a node whose backward maps the
 * gradient back to the input's shape. */
#include <stdlib.h>
#include <string.h>

#include "tensor.h"
#include "checked.h"

td_tensor *td_alias(const td_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset);
void td_copy_to_contiguous(const td_tensor *src, void *dst);

/* ---- gradient helpers ---------------------------------------------------------------------- */
/* Any view's backward: the input's gradient is g reshaped to the input's shape. */
static void reshape_backward(td_node *n, td_tensor *g) {
    td_tensor *in = n->in[0];
    td_tensor *r = td_reshape(g, in->ndim, in->shape);
    td_node_accum(n, 0, r);
    td_release(r);
}

/* Records a view node of kind bw on out (a view of t). */
static td_tensor *record_view(td_tensor *out, td_tensor *t, const char *name, td_backward_fn bw) {
    if (out) td_record(out, name, bw, 1, &t);
    return out;
}

/* ---- contiguous / clone / reshape --------------------------------------------------------- */
static void identity_backward(td_node *n, td_tensor *g) { td_node_accum(n, 0, g); }

td_tensor *td_clone(td_tensor *t) {
    td_tensor *o = td_empty(t->dtype, t->ndim, t->shape);
    if (!o) return NULL;
    td_copy_to_contiguous(t, o->storage->data);
    return record_view(o, t, "clone", identity_backward);
}

td_tensor *td_contiguous(td_tensor *t) {
    if (td_is_contiguous(t)) {
        td_retain(t);
        return t;
    }
    td_tensor *o = td_clone(t);
    if (o && o->node) o->node->name = "contiguous";
    return o;
}

/* Strides for viewing t with a new shape without copying, or false if impossible. */
static bool view_strides(const td_tensor *t, int nd, const int64_t *shape, int64_t *st) {
    if (td_is_contiguous(t)) {
        int64_t s = 1;
        for (int i = nd - 1; i >= 0; i--) {
            st[i] = s;
            s *= shape[i] ? shape[i] : 1;
        }
        return true;
    }
    /* general case (as numpy's _attempt_nocopy_reshape): group old dims into contiguous chunks */
    int oi = 0, oj = 1, ni = 0, nj = 1;
    int ond = 0;
    int64_t od[TD_MAX_DIMS], os[TD_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != 1) {
            od[ond] = t->shape[i];
            os[ond++] = t->stride[i];
        }
    for (int i = 0; i < nd; i++) st[i] = 1;
    if (td_numel(t) == 0) return false;
    while (ni < nd && oi < ond) {
        int64_t np = shape[ni], op = od[oi];
        while (np != op) {
            if (np < op) np *= shape[nj++];
            else op *= od[oj++];
        }
        for (int k = oi; k < oj - 1; k++)
            if (os[k] != od[k + 1] * os[k + 1]) return false;
        st[nj - 1] = os[oj - 1];
        for (int k = nj - 1; k > ni; k--) st[k - 1] = st[k] * shape[k];
        ni = nj++;
        oi = oj++;
    }
    return true;
}

static int resolve_shape(const td_tensor *t, int nd, const int64_t *in, int64_t *shape, const char *op) {
    int infer = -1;
    int64_t known = 1;
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (nd < 0 || nd > TD_MAX_DIMS) return td_fail_int("%s: %d dimensions (at most %d)", op, nd, TD_MAX_DIMS);
    for (int i = 0; i < nd; i++) {
        shape[i] = in[i];
        if (in[i] == -1) {
            if (infer >= 0) return td_fail_int("%s: only one dimension can be -1", op);
            infer = i;
        } else if (in[i] < 0) {
            return td_fail_int("%s: invalid size %lld", op, (long long)in[i]);
        } else if (!td_mul_ok(known, in[i], &known) || known > TD_MAX_NUMEL) {
            /* 3x4x7x0x6DB6DB6DB6DB6DB7 wraps to 12 in 64 bits: refuse it, do not trust it */
            return td_fail_int("%s: shape %s holds more than 2^40 elements", op, td_dims_str(nd, in, b2, sizeof b2));
        }
    }
    int64_t n = td_numel(t);
    if (infer >= 0) {
        if (known == 0 || n % known)
            return td_fail_int("%s: cannot view a tensor of shape %s (%lld elements) as %s", op,
                               td_shape_str(t, b1, sizeof b1), (long long)n, td_dims_str(nd, in, b2, sizeof b2));
        shape[infer] = n / known;
    } else if (known != n) {
        return td_fail_int("%s: cannot view a tensor of shape %s (%lld elements) as %s (%lld elements)", op,
                           td_shape_str(t, b1, sizeof b1), (long long)n, td_dims_str(nd, in, b2, sizeof b2),
                           (long long)known);
    }
    return 0;
}

td_tensor *td_view(td_tensor *t, int ndim, const int64_t *in_shape) {
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    if (resolve_shape(t, ndim, in_shape, shape, "view")) return NULL;
    if (!view_strides(t, ndim, shape, st)) {
        char b[TD_SHAPE_BUF];
        return td_fail("view: the strides of a tensor of shape %s do not allow this view; use reshape",
                       td_shape_str(t, b, sizeof b));
    }
    return record_view(td_alias(t, ndim, shape, st, t->offset), t, "view", reshape_backward);
}

td_tensor *td_reshape(td_tensor *t, int ndim, const int64_t *in_shape) {
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    if (resolve_shape(t, ndim, in_shape, shape, "reshape")) return NULL;
    if (view_strides(t, ndim, shape, st))
        return record_view(td_alias(t, ndim, shape, st, t->offset), t, "reshape", reshape_backward);
    td_tensor *c = td_contiguous(t);
    if (!c) return NULL;
    td_tensor *r = td_view(c, ndim, shape);
    td_release(c);
    return r;
}

/* ---- transpose / permute ------------------------------------------------------------------- */
static void permute_backward(td_node *n, td_tensor *g) {
    int inv[TD_MAX_DIMS];
    for (int i = 0; i < g->ndim; i++) inv[n->iarg[i]] = i;
    td_tensor *r = td_permute(g, inv);
    td_node_accum(n, 0, r);
    td_release(r);
}

td_tensor *td_permute(td_tensor *t, const int *perm) {
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    bool seen[TD_MAX_DIMS] = {0};
    for (int i = 0; i < t->ndim; i++) {
        int p = perm[i] < 0 ? perm[i] + t->ndim : perm[i];
        if (p < 0 || p >= t->ndim || seen[p]) {
            char b[TD_SHAPE_BUF];
            return td_fail("permute: invalid permutation for a tensor of shape %s (entry %d is %d)",
                           td_shape_str(t, b, sizeof b), i + 1, perm[i] + 1);
        }
        seen[p] = true;
        shape[i] = t->shape[p];
        st[i] = t->stride[p];
    }
    td_tensor *o = td_alias(t, t->ndim, shape, st, t->offset);
    if (o && td_record(o, "permute", permute_backward, 1, &t))
        for (int i = 0; i < t->ndim; i++) o->node->iarg[i] = perm[i] < 0 ? perm[i] + t->ndim : perm[i];
    return o;
}

td_tensor *td_transpose(td_tensor *t, int d0, int d1) {
    int a = td_norm_dim(t, d0, "transpose"), b = td_norm_dim(t, d1, "transpose");
    if (a < 0 || b < 0) return NULL;
    if (t->ndim == 0) {
        td_retain(t);
        return t;
    }
    int perm[TD_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return td_permute(t, perm);
}

/* ---- narrow / slice / select: backward scatters g into zeros of the input's shape ---------- *
 * When the input's gradient already exists and belongs to its node alone (another slice of the
 * same tensor got there first, as when a sequence is read step by step), g is added into its
 * part of it in place: P slices cost one zero-filled gradient, not P of them. */
static void slice_backward(td_node *n, td_tensor *g) {
    td_tensor *in = n->in[0];
    int dim = (int)n->iarg[0];
    int64_t start = n->iarg[1], step = n->iarg[2];
    bool select = n->iarg[3];
    td_tensor *acc = in->node ? in->node->gout : NULL;
    bool into = acc && acc->refcount == 1 && acc->storage->refcount == 1 && td_is_contiguous(acc) &&
                acc->ndim == in->ndim && memcmp(acc->shape, in->shape, sizeof(int64_t) * (size_t)in->ndim) == 0;
    td_tensor *z = into ? acc : td_zeros(TD_F32, in->ndim, in->shape);
    if (!z) return;
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < in->ndim; i++) {
        if (i == dim) {
            if (select) continue;
            shape[k] = g->shape[k];
            st[k++] = z->stride[i] * step;
        } else {
            shape[k] = in->shape[i];
            st[k++] = z->stride[i];
        }
    }
    td_tensor *v = td_alias(z, k, shape, st, start * z->stride[dim]);
    if (v) {
        if (into) td_add_(v, g, 1.0);
        else td_copy_(v, g);
    }
    td_release(v);
    if (!into) {
        td_node_accum(n, 0, z);
        td_release(z);
    }
}

td_tensor *td_slice(td_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
    int d = td_norm_dim(t, dim, "slice");
    if (d < 0) return NULL;
    if (t->ndim == 0) return td_fail("slice: cannot slice a 0-dimensional tensor");
    int64_t size = t->shape[d];
    if (step <= 0) return td_fail("slice: step must be positive, got %lld", (long long)step);
    if (start < 0 || start > size || stop < start || stop > size) {
        char b[TD_SHAPE_BUF];
        return td_fail("slice: range [%lld, %lld) out of bounds for dimension %d of size %lld (shape %s)",
                       (long long)start + 1, (long long)stop + 1, d + 1, (long long)size, td_shape_str(t, b, sizeof b));
    }
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(st, t->stride, sizeof st);
    shape[d] = (stop - start) / step + ((stop - start) % step != 0);
    /* a step past the end leaves one element, whose stride is never used: keep the old one */
    if (!td_mul_ok(t->stride[d], step, &st[d])) st[d] = t->stride[d];
    td_tensor *o = td_alias(t, t->ndim, shape, st, t->offset + start * t->stride[d]);
    if (o && td_record(o, step == 1 ? "narrow" : "slice", slice_backward, 1, &t)) {
        o->node->iarg[0] = d;
        o->node->iarg[1] = start;
        o->node->iarg[2] = step;
        o->node->iarg[3] = 0;
    }
    return o;
}

td_tensor *td_narrow(td_tensor *t, int dim, int64_t start, int64_t len) {
    int d = td_norm_dim(t, dim, "narrow");
    if (d < 0) return NULL;
    if (t->ndim == 0) return td_fail("narrow: cannot narrow a 0-dimensional tensor");
    if (start < 0 || len < 0 || start > t->shape[d] || len > t->shape[d] - start) {
        char b[TD_SHAPE_BUF];
        return td_fail("narrow: start %lld with length %lld out of range for dimension %d of size %lld (shape %s)",
                       (long long)start + 1, (long long)len, d + 1, (long long)t->shape[d], td_shape_str(t, b, sizeof b));
    }
    return td_slice(t, d, start, start + len, 1);
}

td_tensor *td_select(td_tensor *t, int dim, int64_t index) {
    int d = td_norm_dim(t, dim, "select");
    if (d < 0) return NULL;
    if (t->ndim == 0) return td_fail("select: cannot index a 0-dimensional tensor");
    int64_t size = t->shape[d];
    if (index < 0) index += size;
    if (index < 0 || index >= size) {
        char b[TD_SHAPE_BUF];
        return td_fail("select: index %lld out of range for dimension %d of size %lld (shape %s)",
                       (long long)(index >= 0 ? index + 1 : index - size), d + 1, (long long)size, td_shape_str(t, b, sizeof b));
    }
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) {
            shape[k] = t->shape[i];
            st[k++] = t->stride[i];
        }
    td_tensor *o = td_alias(t, k, shape, st, t->offset + index * t->stride[d]);
    if (o && td_record(o, "select", slice_backward, 1, &t)) {
        o->node->iarg[0] = d;
        o->node->iarg[1] = index;
        o->node->iarg[2] = 1;
        o->node->iarg[3] = 1;
    }
    return o;
}

/* ---- squeeze / unsqueeze / expand ---------------------------------------------------------- */
td_tensor *td_squeeze(td_tensor *t, int dim) {
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    int k = 0, d = -1;
    if (dim != TD_ALL_DIMS) {
        d = td_norm_dim(t, dim, "squeeze");
        if (d < 0) return NULL;
    }
    for (int i = 0; i < t->ndim; i++) {
        bool drop = t->shape[i] == 1 && (d < 0 || i == d);
        if (!drop) {
            shape[k] = t->shape[i];
            st[k++] = t->stride[i];
        }
    }
    return record_view(td_alias(t, k, shape, st, t->offset), t, "squeeze", reshape_backward);
}

td_tensor *td_unsqueeze(td_tensor *t, int dim) {
    int nd = t->ndim + 1;
    int d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd || nd > TD_MAX_DIMS) {
        char b[TD_SHAPE_BUF];
        return td_fail("unsqueeze: dimension %d out of range for a tensor of shape %s", dim < 0 ? dim : dim + 1,
                       td_shape_str(t, b, sizeof b));
    }
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    for (int i = 0, k = 0; i < nd; i++) {
        if (i == d) {
            shape[i] = 1;
            st[i] = (k < t->ndim) ? t->stride[k] * t->shape[k] : 1;
        } else {
            shape[i] = t->shape[k];
            st[i] = t->stride[k++];
        }
    }
    return record_view(td_alias(t, nd, shape, st, t->offset), t, "unsqueeze", reshape_backward);
}

static void expand_backward(td_node *n, td_tensor *g) { td_node_accum(n, 0, g); /* accum sums to shape */ }

td_tensor *td_expand(td_tensor *t, int ndim, const int64_t *in) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (ndim < t->ndim || ndim > TD_MAX_DIMS)
        return td_fail("expand: cannot expand a tensor of shape %s to %s", td_shape_str(t, b1, sizeof b1),
                       td_dims_str(ndim, in, b2, sizeof b2));
    int64_t shape[TD_MAX_DIMS], st[TD_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        int64_t have = j >= 0 ? t->shape[j] : 1;
        int64_t want = in[i] == -1 ? have : in[i];
        if (in[i] == -1 && j < 0) return td_fail("expand: -1 not allowed for a new leading dimension");
        if (want < 0)
            return td_fail("expand: invalid size %lld in dimension %d (sizes are >= 0, or -1 to keep one)",
                           (long long)in[i], i + 1);
        if (have != want && have != 1)
            return td_fail("expand: cannot expand a tensor of shape %s to %s (dimension %d)",
                           td_shape_str(t, b1, sizeof b1), td_dims_str(ndim, in, b2, sizeof b2), i + 1);
        shape[i] = want;
        st[i] = (j >= 0 && have == want) ? t->stride[j] : 0;
    }
    if (td_shape_numel(ndim, shape, TD_MAX_NUMEL) < 0)
        return td_fail("expand: shape %s holds more than 2^40 elements", td_dims_str(ndim, shape, b2, sizeof b2));
    return record_view(td_alias(t, ndim, shape, st, t->offset), t, "expand", expand_backward);
}
