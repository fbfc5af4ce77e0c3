/* Elementwise maths with NumPy broadcasting: binary ops, unary ops, clamp, in-place updates,
 * and sum_to (the adjoint of broadcasting). Forward and backward side by side. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "tensor.h"

#define PAR_MIN 65536 /* below this many elements a parallel region costs more than it saves */

const char *const td_binary_names[TD_BINARY_COUNT] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
const char *const td_unary_names[TD_UNARY_COUNT] = {
    "neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "silu",
    "elu", "gelu", "square", "sign", "reciprocal", "log1p", "expm1", "floor", "ceil", "round"};
/* one line each, for help() (the binding shows x:name(y) / x:name() before it) */
const char *const td_binary_docs[TD_BINARY_COUNT] = {
    "x + y (broadcast; a number too)",
    "x - y",
    "x * y, elementwise",
    "x / y",
    "x raised to the power y, elementwise",
    "the elementwise maximum",
    "the elementwise minimum",
    "1 where x == y, else 0 (float; :long() for a mask)",
    "1 where x ~= y, else 0",
    "1 where x < y, else 0",
    "1 where x <= y, else 0",
    "1 where x > y, else 0",
    "1 where x >= y, else 0"};
const char *const td_unary_docs[TD_UNARY_COUNT] = {
    "-x, elementwise",
    "e raised to x, elementwise",
    "the natural logarithm",
    "the square root",
    "1 / sqrt(x)",
    "the absolute value",
    "the sine",
    "the cosine",
    "the hyperbolic tangent",
    "1 / (1 + e ^ -x)",
    "max(x, 0), elementwise",
    "x * sigmoid(x)",
    "x for x > 0, e ^ x - 1 otherwise",
    "x * Phi(x) (the exact GELU)",
    "x * x, elementwise",
    "-1, 0 or 1",
    "1 / x",
    "log(1 + x), accurate near 0",
    "e ^ x - 1, accurate near 0",
    "rounded down",
    "rounded up",
    "rounded to the nearest integer"};
_Static_assert(sizeof td_binary_names / sizeof *td_binary_names == TD_BINARY_COUNT, "binary names");
_Static_assert(sizeof td_unary_names / sizeof *td_unary_names == TD_UNARY_COUNT, "unary names");
_Static_assert(sizeof td_binary_docs / sizeof *td_binary_docs == TD_BINARY_COUNT, "binary docs");
_Static_assert(sizeof td_unary_docs / sizeof *td_unary_docs == TD_UNARY_COUNT, "unary docs");

td_tensor *td_alias(const td_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset);
void td_copy_to_contiguous(const td_tensor *src, void *dst);
int td_check_inplace(const td_tensor *t, const char *op);

/* ---- broadcasting ------------------------------------------------------------------------ */
int td_broadcast_shape(const char *op, const td_tensor *a, const td_tensor *b, int64_t *out) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
            return td_fail_int("%s: shapes %s and %s cannot be broadcast (dimension %d: %lld vs %lld)", op,
                               td_shape_str(a, b1, sizeof b1), td_shape_str(b, b2, sizeof b2), i + 1,
                               (long long)sa, (long long)sb);
        }
        out[i] = sa == 1 ? sb : sa;
    }
    return nd;
}

/* Strides of t seen through the broadcast shape (0 along broadcast dims). */
static void bstrides(const td_tensor *t, int nd, const int64_t *shape, int64_t *st) {
    for (int i = 0; i < nd; i++) {
        int it = i - (nd - t->ndim);
        st[i] = (it >= 0 && t->shape[it] == shape[i] && shape[i] != 1) ? t->stride[it] : 0;
    }
}

/* Row offset of row r (all dims but the last) for strides st. */
static inline int64_t row_offset(int nd, const int64_t *shape, const int64_t *st, int64_t r) {
    int64_t o = 0;
    for (int d = nd - 2; d >= 0; d--) {
        o += (r % shape[d]) * st[d];
        r /= shape[d];
    }
    return o;
}

/* Merges adjacent dims that every stride array walks as one (outer stride = inner stride x inner
 * size; broadcast dims of stride 0 merge with each other), innermost first, while the merged
 * innermost run stays at most COALESCE_MAX elements (rows are what threads share). A
 * (N,C,H,W) + (N,C,1,1) bias add then runs rows of H*W instead of rows of W. s2 may be NULL.
 * Returns the new number of dims; shape and strides are rewritten in place. */
#define COALESCE_MAX 16384
static int coalesce(int nd, int64_t *shape, int64_t *s0, int64_t *s1, int64_t *s2) {
    if (nd <= 1) return nd;
    int w = nd - 1;
    for (int d = nd - 2; d >= 0; d--) {
        bool ok = (w == nd - 1 ? shape[w] * shape[d] <= COALESCE_MAX : false) && s0[d] == s0[w] * shape[w] &&
                  s1[d] == s1[w] * shape[w] && (!s2 || s2[d] == s2[w] * shape[w]);
        if (ok) {
            shape[w] *= shape[d];
        } else {
            w--;
            shape[w] = shape[d];
            s0[w] = s0[d];
            s1[w] = s1[d];
            if (s2) s2[w] = s2[d];
        }
    }
    int n = nd - w;
    memmove(shape, shape + w, sizeof(int64_t) * (size_t)n);
    memmove(s0, s0 + w, sizeof(int64_t) * (size_t)n);
    memmove(s1, s1 + w, sizeof(int64_t) * (size_t)n);
    if (s2) memmove(s2, s2 + w, sizeof(int64_t) * (size_t)n);
    return n;
}

/* ---- float binary kernel ----------------------------------------------------------------- */
static inline float bin_f(td_binary_op op, float x, float y) {
    switch (op) {
    case TD_ADD: return x + y;
    case TD_SUB: return x - y;
    case TD_MUL: return x * y;
    case TD_DIV: return x / y;
    case TD_POW: return powf(x, y);
    case TD_MAXIMUM: return x > y || isnan(x) ? x : y;
    case TD_MINIMUM: return x < y || isnan(x) ? x : y;
    case TD_EQ: return x == y;
    case TD_NE: return x != y;
    case TD_LT: return x < y;
    case TD_LE: return x <= y;
    case TD_GT: return x > y;
    case TD_GE: return x >= y;
    default: return 0;
    }
}

/* One row: o[i] = a[i*sa] op b[i*sb]. The switch sits outside the loops so each loop vectorises. */
static void bin_row(td_binary_op op, float *restrict o, const float *a, int64_t sa, const float *b, int64_t sb,
                    int64_t n) {
#define ROW(EXPR)                                                                  \
    if (sa == 1 && sb == 1) {                                                      \
        for (int64_t i = 0; i < n; i++) { float x = a[i], y = b[i]; o[i] = EXPR; } \
    } else if (sa == 1 && sb == 0) {                                               \
        float y = b[0];                                                            \
        for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = EXPR; }           \
    } else if (sa == 0 && sb == 1) {                                               \
        float x = a[0];                                                            \
        for (int64_t i = 0; i < n; i++) { float y = b[i]; o[i] = EXPR; }           \
    } else {                                                                       \
        for (int64_t i = 0; i < n; i++) { float x = a[i * sa], y = b[i * sb]; o[i] = EXPR; } \
    }
    switch (op) {
    case TD_ADD: ROW(x + y) break;
    case TD_SUB: ROW(x - y) break;
    case TD_MUL: ROW(x * y) break;
    case TD_DIV: ROW(x / y) break;
    default: ROW(bin_f(op, x, y)) break;
    }
#undef ROW
}

static void bin_apply(td_binary_op op, td_tensor *out, const td_tensor *a, const td_tensor *b) {
    int nd = out->ndim;
    int64_t n = td_numel(out);
    if (n == 0) return;
    float *po = td_f32(out);
    const float *pa = td_f32(a), *pb = td_f32(b);
    if (nd == 0) {
        po[0] = bin_f(op, pa[0], pb[0]);
        return;
    }
    int64_t sa[TD_MAX_DIMS], sb[TD_MAX_DIMS];
    bstrides(a, nd, out->shape, sa);
    bstrides(b, nd, out->shape, sb);
    /* flat fast paths: both dense with the output's layout, or one a single value */
    bool da = td_is_contiguous(a) && td_numel(a) == n, db = td_is_contiguous(b) && td_numel(b) == n;
    if ((da || td_numel(a) == 1) && (db || td_numel(b) == 1)) {
        int64_t xa = da ? 1 : 0, xb = db ? 1 : 0;
        if (n > PAR_MIN) {
            #pragma omp parallel
            {
                int nt = omp_get_num_threads(), id = omp_get_thread_num();
                int64_t chunk = (n + nt - 1) / nt, lo = id * chunk, hi = lo + chunk > n ? n : lo + chunk;
                if (lo < hi) bin_row(op, po + lo, pa + lo * xa, xa, pb + lo * xb, xb, hi - lo);
            }
        } else {
            bin_row(op, po, pa, xa, pb, xb, n);
        }
        return;
    }
    int64_t shape[TD_MAX_DIMS], so[TD_MAX_DIMS];
    memcpy(shape, out->shape, sizeof(int64_t) * (size_t)nd);
    for (int d = nd - 1; d >= 0; d--) so[d] = d == nd - 1 ? 1 : so[d + 1] * shape[d + 1];
    nd = coalesce(nd, shape, so, sa, sb);
    int64_t inner = shape[nd - 1], rows = n / inner;
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        bin_row(op, po + r * inner, pa + row_offset(nd, shape, sa, r), sa[nd - 1], pb + row_offset(nd, shape, sb, r),
                sb[nd - 1], inner);
}

/* Slow generic path for int64 operands: computes in double, writes out's dtype. */
static void bin_apply_generic(td_binary_op op, td_tensor *out, const td_tensor *a, const td_tensor *b) {
    int nd = out->ndim;
    int64_t n = td_numel(out), sa[TD_MAX_DIMS], sb[TD_MAX_DIMS], idx[TD_MAX_DIMS] = {0};
    bstrides(a, nd, out->shape, sa);
    bstrides(b, nd, out->shape, sb);
    for (int64_t i = 0; i < n; i++) {
        int64_t oa = a->offset, ob = b->offset;
        for (int d = 0; d < nd; d++) {
            oa += idx[d] * sa[d];
            ob += idx[d] * sb[d];
        }
        double x = a->dtype == TD_F32 ? ((float *)a->storage->data)[oa] : (double)((int64_t *)a->storage->data)[oa];
        double y = b->dtype == TD_F32 ? ((float *)b->storage->data)[ob] : (double)((int64_t *)b->storage->data)[ob];
        double r;
        switch (op) {
        case TD_ADD: r = x + y; break;
        case TD_SUB: r = x - y; break;
        case TD_MUL: r = x * y; break;
        case TD_DIV: r = x / y; break;
        case TD_POW: r = pow(x, y); break;
        case TD_MAXIMUM: r = x > y ? x : y; break;
        case TD_MINIMUM: r = x < y ? x : y; break;
        default: r = bin_f(op, (float)x, (float)y); /* comparisons */
        }
        if (out->dtype == TD_F32) td_f32(out)[i] = (float)r;
        else td_i64(out)[i] = (int64_t)r;
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < out->shape[d]) break;
            idx[d] = 0;
        }
    }
}

static bool is_comparison(td_binary_op op) { return op >= TD_EQ; }

/* g * f(a, b) helpers for backward, all through the forward kernel itself. */
static td_tensor *bmul(td_tensor *x, td_tensor *y) { return td_binary(TD_MUL, x, y); }

static void binary_backward(td_node *n, td_tensor *g) {
    td_binary_op op = (td_binary_op)n->iarg[0];
    td_tensor *a = n->saved[0], *b = n->saved[1], *out = n->saved[2];
    td_tensor *ga = NULL, *gb = NULL, *t1 = NULL, *t2 = NULL;
    switch (op) {
    case TD_ADD:
        td_node_accum(n, 0, g);
        td_node_accum(n, 1, g);
        return;
    case TD_SUB:
        td_node_accum(n, 0, g);
        if (n->in[1]) gb = td_unary(TD_NEG, g);
        break;
    case TD_MUL:
        if (n->in[0]) ga = bmul(g, b);
        if (n->in[1]) gb = bmul(g, a);
        break;
    case TD_DIV:
        if (n->in[0]) ga = td_binary(TD_DIV, g, b);
        if (n->in[1]) { /* -g * out / b */
            t1 = td_binary(TD_DIV, out, b);
            t2 = bmul(g, t1);
            gb = td_unary(TD_NEG, t2);
        }
        break;
    case TD_POW:
        if (n->in[0]) { /* g * b * a^(b-1) */
            t1 = td_binary_scalar(TD_SUB, b, 1.0, false);
            t2 = td_binary(TD_POW, a, t1);
            td_release(t1);
            t1 = bmul(t2, b);
            ga = bmul(g, t1);
            td_release(t1);
            td_release(t2);
            t1 = t2 = NULL;
        }
        if (n->in[1]) { /* g * out * log(a) */
            t1 = td_unary(TD_LOG, a);
            t2 = bmul(out, t1);
            gb = bmul(g, t2);
        }
        break;
    case TD_MAXIMUM:
    case TD_MINIMUM: { /* ties send the gradient to a */
        td_tensor *m = td_binary(op == TD_MAXIMUM ? TD_GE : TD_LE, a, b);
        if (n->in[0]) ga = bmul(g, m);
        if (n->in[1]) {
            t1 = td_binary_scalar(TD_SUB, m, 1.0, true); /* 1 - m */
            gb = bmul(g, t1);
        }
        td_release(m);
        break;
    }
    default:
        break;
    }
    if (ga) td_node_accum(n, 0, ga);
    if (gb) td_node_accum(n, 1, gb);
    td_release(ga);
    td_release(gb);
    td_release(t1);
    td_release(t2);
}

td_tensor *td_binary(td_binary_op op, td_tensor *a, td_tensor *b) {
    int64_t shape[TD_MAX_DIMS];
    if ((unsigned)op >= TD_BINARY_COUNT) return td_fail("binary: unknown op %d", (int)op);
    int nd = td_broadcast_shape(td_binary_names[op], a, b, shape);
    if (nd < 0) return NULL;
    bool ints = a->dtype == TD_I64 || b->dtype == TD_I64;
    td_dtype dt = (a->dtype == TD_I64 && b->dtype == TD_I64 && op != TD_DIV && op != TD_POW && !is_comparison(op))
                      ? TD_I64
                      : TD_F32;
    td_tensor *out = td_empty(dt, nd, shape);
    if (!out) return NULL;
    if (ints) bin_apply_generic(op, out, a, b);
    else bin_apply(op, out, a, b);
    if (!ints && !is_comparison(op)) {
        td_tensor *ins[2] = {a, b};
        td_node *nd_ = td_record(out, td_binary_names[op], binary_backward, 2, ins);
        if (nd_) {
            nd_->iarg[0] = op;
            if (op != TD_ADD && op != TD_SUB) {
                td_node_save(nd_, 0, a);
                td_node_save(nd_, 1, b);
            }
            if (op == TD_DIV || op == TD_POW) td_node_save(nd_, 2, out);
        }
    }
    return out;
}

td_tensor *td_binary_scalar(td_binary_op op, td_tensor *a, double s, bool scalar_first) {
    td_tensor *st = td_scalar((float)s);
    if (!st) return NULL;
    if (a->dtype == TD_I64 && s == floor(s)) { /* keep integer arithmetic integral */
        td_release(st);
        st = td_full(TD_I64, 0, NULL, s);
        if (!st) return NULL;
    }
    td_tensor *r = scalar_first ? td_binary(op, st, a) : td_binary(op, a, st);
    td_release(st);
    return r;
}

/* (a + b) * s in one pass, for the residual tails (x + h) / sqrt 2 of every block of the score
 * network: the sum is never stored, and the backward is one scaled gradient shared by a and b
 * (the composition stores the sum, reads it again, and scales the gradient as a third pass).
 * Other shapes than two equal dense float ones go through the composition. */
static void add_scaled_backward(td_node *n, td_tensor *g) {
    td_tensor *gs = td_binary_scalar(TD_MUL, g, n->farg[0], false);
    if (!gs) return;
    td_node_accum(n, 0, gs);
    td_node_accum(n, 1, gs);
    td_release(gs);
}

td_tensor *td_add_scaled(td_tensor *a, td_tensor *b, double s) {
    bool same = a->dtype == TD_F32 && b->dtype == TD_F32 && a->ndim == b->ndim && td_is_contiguous(a) &&
                td_is_contiguous(b) && memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0;
    if (!same) {
        td_tensor *sum = td_binary(TD_ADD, a, b), *r = sum ? td_binary_scalar(TD_MUL, sum, s, false) : NULL;
        td_release(sum);
        return r;
    }
    td_tensor *out = td_empty(TD_F32, a->ndim, a->shape);
    if (!out) return NULL;
    int64_t n = td_numel(out);
    float *restrict po = td_f32(out), sf = (float)s;
    const float *restrict pa = td_f32(a), *restrict pb = td_f32(b);
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) po[i] = (pa[i] + pb[i]) * sf;
    td_tensor *ins[2] = {a, b};
    td_node *nd = td_record(out, "add_scaled", add_scaled_backward, 2, ins);
    if (nd) nd->farg[0] = s;
    return out;
}

/* ---- unary ------------------------------------------------------------------------------- */
static inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float sigmoid_f(float x) { return td_sigmoidf(x); }

static void unary_kernel(td_unary_op op, float *restrict o, const float *restrict x, int64_t n, float alpha) {
#define U(EXPR)                                                                  \
    _Pragma("omp parallel for if (n > PAR_MIN) schedule(static)")               \
    for (int64_t i = 0; i < n; i++) { float v = x[i]; o[i] = (EXPR); }
    switch (op) {
    case TD_NEG: U(-v) break;
    case TD_EXP: U(td_expf(v)) break;
    case TD_LOG: U(logf(v)) break;
    case TD_SQRT: U(sqrtf(v)) break;
    case TD_RSQRT: U(1.0f / sqrtf(v)) break;
    case TD_ABS: U(fabsf(v)) break;
    case TD_SIN: U(sinf(v)) break;
    case TD_COS: U(cosf(v)) break;
    case TD_TANH: U(td_tanhf(v)) break;
    case TD_SIGMOID: U(sigmoid_f(v)) break;
    case TD_RELU: U(v > 0 ? v : 0) break;
    case TD_SILU: U(v * sigmoid_f(v)) break;
    case TD_ELU: U(v > 0 ? v : alpha * (td_expf(v) - 1.0f)) break;
    case TD_GELU: U(gelu_f(v)) break;
    case TD_SQUARE: U(v * v) break;
    case TD_SIGN: U((float)((v > 0) - (v < 0))) break;
    case TD_RECIPROCAL: U(1.0f / v) break;
    case TD_LOG1P: U(log1pf(v)) break;
    case TD_EXPM1: U(expm1f(v)) break;
    case TD_FLOOR: U(floorf(v)) break;
    case TD_CEIL: U(ceilf(v)) break;
    case TD_ROUND: U(nearbyintf(v)) break;
    default: break;
    }
#undef U
}

/* dx = g * f'(x, y) with x the input and y the output, all contiguous of n elements. */
static void unary_grad_kernel(td_unary_op op, float *restrict dx, const float *restrict g, const float *x,
                              const float *y, int64_t n, float alpha) {
#define D(EXPR)                                                                           \
    _Pragma("omp parallel for if (n > PAR_MIN) schedule(static)")                        \
    for (int64_t i = 0; i < n; i++) { float gi = g[i]; float v = x ? x[i] : 0; float w = y ? y[i] : 0; (void)gi; (void)v; (void)w; dx[i] = (EXPR); }
    switch (op) {
    case TD_NEG: D(-gi) break;
    case TD_EXP: D(gi * w) break;
    case TD_LOG: D(gi / v) break;
    case TD_SQRT: D(gi * 0.5f / w) break;
    case TD_RSQRT: D(gi * -0.5f * w * w * w) break;
    case TD_ABS: D(gi * (float)((v > 0) - (v < 0))) break;
    case TD_SIN: D(gi * cosf(v)) break;
    case TD_COS: D(-gi * sinf(v)) break;
    case TD_TANH: D(gi * (1 - w * w)) break;
    case TD_SIGMOID: D(gi * w * (1 - w)) break;
    case TD_RELU: D(v > 0 ? gi : 0) break;
    case TD_SILU: D(gi * (sigmoid_f(v) * (1 + v * (1 - sigmoid_f(v))))) break;
    case TD_ELU: D(v > 0 ? gi : gi * (w + alpha)) break;
    case TD_GELU: D(gi * (0.5f * (1 + erff(v * 0.70710678118654752f)) + v * expf(-0.5f * v * v) * 0.3989422804014327f)) break;
    case TD_SQUARE: D(gi * 2 * v) break;
    case TD_RECIPROCAL: D(-gi * w * w) break;
    case TD_LOG1P: D(gi / (1 + v)) break;
    case TD_EXPM1: D(gi * (w + 1)) break;
    default: D(0) break;
    }
#undef D
}

static bool unary_differentiable(td_unary_op op) {
    return op != TD_SIGN && op != TD_FLOOR && op != TD_CEIL && op != TD_ROUND;
}
/* Which of input (1) and output (2) the backward reads. */
static int unary_saves(td_unary_op op) {
    switch (op) {
    case TD_NEG: return 0;
    case TD_EXP: case TD_SQRT: case TD_RSQRT: case TD_TANH: case TD_SIGMOID: case TD_RECIPROCAL: case TD_EXPM1:
        return 2;
    case TD_ELU: return 3;
    default: return 1;
    }
}

static void unary_backward(td_node *n, td_tensor *g) {
    td_unary_op op = (td_unary_op)n->iarg[0];
    td_tensor *gc = td_contiguous(g);
    if (!gc) return;
    td_tensor *dx = td_empty(TD_F32, gc->ndim, gc->shape);
    if (dx) {
        unary_grad_kernel(op, td_f32(dx), td_f32(gc), n->saved[0] ? td_f32(n->saved[0]) : NULL,
                          n->saved[1] ? td_f32(n->saved[1]) : NULL, td_numel(dx), (float)n->farg[0]);
        td_node_accum(n, 0, dx);
    }
    td_release(dx);
    td_release(gc);
}

static td_tensor *unary_impl(td_unary_op op, td_tensor *a, double alpha) {
    if ((unsigned)op >= TD_UNARY_COUNT) return td_fail("unary: unknown op %d", (int)op);
    td_tensor *x = a->dtype == TD_F32 ? td_contiguous(a) : td_to_dtype(a, TD_F32);
    if (!x) return NULL;
    td_tensor *out = td_empty(TD_F32, x->ndim, x->shape);
    if (!out) {
        td_release(x);
        return NULL;
    }
    unary_kernel(op, td_f32(out), td_f32(x), td_numel(x), (float)alpha);
    if (unary_differentiable(op)) {
        td_node *n = td_record(out, td_unary_names[op], unary_backward, 1, &a);
        if (n) {
            n->iarg[0] = op;
            n->farg[0] = alpha;
            int s = unary_saves(op);
            if (s & 1) td_node_save(n, 0, x);
            if (s & 2) td_node_save(n, 1, out);
        }
    }
    td_release(x);
    return out;
}

td_tensor *td_unary(td_unary_op op, td_tensor *a) { return unary_impl(op, a, 1.0); }
td_tensor *td_elu(td_tensor *a, double alpha) { return unary_impl(TD_ELU, a, alpha); }

static void clamp_backward(td_node *n, td_tensor *g) {
    td_tensor *x = n->saved[0];
    float lo = (float)n->farg[0], hi = (float)n->farg[1];
    td_tensor *gc = td_contiguous(g), *dx = gc ? td_empty(TD_F32, gc->ndim, gc->shape) : NULL;
    if (dx) {
        int64_t m = td_numel(dx);
        const float *xv = td_f32(x), *gv = td_f32(gc);
        float *d = td_f32(dx);
        for (int64_t i = 0; i < m; i++) d[i] = (xv[i] >= lo && xv[i] <= hi) ? gv[i] : 0;
        td_node_accum(n, 0, dx);
    }
    td_release(dx);
    td_release(gc);
}

td_tensor *td_clamp(td_tensor *a, double lo, double hi) {
    if (lo > hi) return td_fail("clamp: min %g is greater than max %g", lo, hi);
    td_tensor *x = a->dtype == TD_F32 ? td_contiguous(a) : td_to_dtype(a, TD_F32);
    if (!x) return NULL;
    td_tensor *out = td_empty(TD_F32, x->ndim, x->shape);
    if (out) {
        int64_t m = td_numel(x);
        float l = (float)lo, h = (float)hi;
        const float *xv = td_f32(x);
        float *o = td_f32(out);
        #pragma omp parallel for if (m > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < m; i++) o[i] = xv[i] < l ? l : (xv[i] > h ? h : xv[i]);
        td_node *n = td_record(out, "clamp", clamp_backward, 1, &a);
        if (n) {
            n->farg[0] = lo;
            n->farg[1] = hi;
            td_node_save(n, 0, x);
        }
    }
    td_release(x);
    return out;
}

/* ---- sum_to: the adjoint of broadcasting ---------------------------------------------------- */
td_tensor *td_sum_to(td_tensor *g, int ndim, const int64_t *shape) {
    if (g->ndim == ndim && !memcmp(g->shape, shape, sizeof(int64_t) * ndim)) {
        td_retain(g);
        return g;
    }
    uint32_t mask = 0;
    int lead = g->ndim - ndim;
    for (int i = 0; i < g->ndim; i++)
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) mask |= 1u << i;
    td_tensor *s = mask ? td_sum(g, mask, true) : (td_retain(g), g);
    if (!s) return NULL;
    td_tensor *r = td_reshape(s, ndim, shape);
    td_release(s);
    return r;
}

/* ---- in-place ------------------------------------------------------------------------------- */
/* dst = f(dst, src) elementwise over dst's shape with src broadcast. mode 0: copy, 1: += alpha*src */
static int inplace_apply(td_tensor *dst, td_tensor *src, int mode, float alpha, const char *op) {
    int64_t shape[TD_MAX_DIMS];
    if (td_check_inplace(dst, op)) return -1;
    int nd = td_broadcast_shape(op, dst, src, shape);
    if (nd < 0) return -1;
    if (nd != dst->ndim || memcmp(shape, dst->shape, sizeof(int64_t) * nd)) {
        char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
        return td_fail_int("%s: source of shape %s does not fit a destination of shape %s", op,
                           td_shape_str(src, b1, sizeof b1), td_shape_str(dst, b2, sizeof b2));
    }
    int64_t n = td_numel(dst);
    if (n == 0) return 0;
    if (dst->dtype != TD_F32 || src->dtype != TD_F32) {
        /* rare path (integer tensors): element by element */
        int64_t sst[TD_MAX_DIMS], idx[TD_MAX_DIMS] = {0};
        bstrides(src, nd, dst->shape, sst);
        for (int64_t i = 0; i < n; i++) {
            int64_t os = src->offset;
            for (int d = 0; d < nd; d++) os += idx[d] * sst[d];
            double v = src->dtype == TD_F32 ? ((float *)src->storage->data)[os] : (double)((int64_t *)src->storage->data)[os];
            double cur = mode ? td_get(dst, idx) : 0;
            td_set(dst, idx, mode ? cur + alpha * v : v);
            for (int d = nd - 1; d >= 0; d--) {
                if (++idx[d] < dst->shape[d]) break;
                idx[d] = 0;
            }
        }
        return 0;
    }
    if (nd == 0) {
        float v = td_f32(src)[0];
        td_f32(dst)[0] = mode ? td_f32(dst)[0] + alpha * v : v;
        return 0;
    }
    int64_t sd[TD_MAX_DIMS], ss[TD_MAX_DIMS], dshape[TD_MAX_DIMS];
    bstrides(dst, nd, dst->shape, sd);
    bstrides(src, nd, dst->shape, ss);
    memcpy(dshape, dst->shape, sizeof(int64_t) * (size_t)nd);
    nd = coalesce(nd, dshape, sd, ss, NULL);
    int64_t inner = dshape[nd - 1], rows = n / inner;
    float *pd = td_f32(dst);
    const float *ps = td_f32(src);
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *d = pd + row_offset(nd, dshape, sd, r);
        const float *s = ps + row_offset(nd, dshape, ss, r);
        int64_t xd = sd[nd - 1], xs = ss[nd - 1];
        if (mode == 0) {
            if (xd == 1 && xs == 1) memcpy(d, s, (size_t)inner * sizeof(float));
            else for (int64_t i = 0; i < inner; i++) d[i * xd] = s[i * xs];
        } else {
            if (xd == 1 && xs == 1) for (int64_t i = 0; i < inner; i++) d[i] += alpha * s[i];
            else for (int64_t i = 0; i < inner; i++) d[i * xd] += alpha * s[i * xs];
        }
    }
    return 0;
}

int td_copy_(td_tensor *dst, td_tensor *src) { return inplace_apply(dst, src, 0, 1, "copy_"); }
int td_add_(td_tensor *dst, td_tensor *src, double alpha) { return inplace_apply(dst, src, 1, (float)alpha, "add_"); }

int td_mul_scalar_(td_tensor *dst, double s) {
    if (td_check_inplace(dst, "mul_")) return -1;
    if (dst->dtype != TD_F32) return td_fail_int("mul_: needs a float32 tensor, got %s", td_dtype_name(dst->dtype));
    if (!td_is_contiguous(dst)) {
        td_tensor *c = td_clone(dst);
        if (!c) return -1;
        td_mul_scalar_(c, s);
        int r = td_copy_(dst, c);
        td_release(c);
        return r;
    }
    int64_t n = td_numel(dst);
    float *p = td_f32(dst), f = (float)s;
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] *= f;
    return 0;
}
