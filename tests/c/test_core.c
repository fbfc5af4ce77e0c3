/* C tests of the core kernels against plain reference loops, and of the error discipline
 * (a failed op leaks nothing and leaves a message naming the op and the shapes). */
#include <stdlib.h>
#include <string.h>

#include "../../ops/tensor.h"
#include "check.h"

void td_gemm_ref(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

static td_tensor *randn(td_generator *g, int nd, const int64_t *shape) {
    td_tensor *t = td_empty(TD_F32, nd, shape);
    td_normal_(t, g, 0, 1);
    return t;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m) m = d;
    }
    return m;
}

static void test_gemm(td_generator *g) {
    int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {64, 33, 17}, {130, 70, 260}, {5, 1, 300}, {37, 301, 90}}; /* the last two: split by rows, by columns */
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
                int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N}, sc[2] = {M, N};
                td_tensor *A = randn(g, 2, sa), *B = randn(g, 2, sb), *C1 = randn(g, 2, sc), *C2 = td_clone(C1);
                td_gemm(ta, tb, M, N, K, 0.5f, td_f32(A), sa[1], td_f32(B), sb[1], 0.25f, td_f32(C1), N);
                td_gemm_ref(ta, tb, M, N, K, 0.5f, td_f32(A), sa[1], td_f32(B), sb[1], 0.25f, td_f32(C2), N);
                double d = max_abs_diff(td_f32(C1), td_f32(C2), M * N);
                CHECK(d < 1e-4 * sqrt((double)K), "gemm %lldx%lldx%lld ta=%d tb=%d max diff %.2e", (long long)M,
                      (long long)N, (long long)K, ta, tb, d);
                td_release(A), td_release(B), td_release(C1), td_release(C2);
            }
}

/* matmul of strided views equals the reference on contiguous copies */
static void test_matmul_views(td_generator *g) {
    int64_t s[3] = {4, 6, 5};
    td_tensor *a = randn(g, 3, s), *b = randn(g, 3, (int64_t[]){4, 6, 3});
    td_tensor *at = td_transpose(a, 1, 2);     /* (4,5,6), strided */
    td_tensor *r = td_matmul(at, b);           /* (4,5,3) */
    td_tensor *ac = td_contiguous(at);
    double worst = 0;
    for (int bi = 0; bi < 4; bi++) {
        float ref[15];
        td_gemm_ref(false, false, 5, 3, 6, 1, td_f32(ac) + bi * 30, 6, td_f32(b) + bi * 18, 3, 0, ref, 3);
        double d = max_abs_diff(td_f32(r) + bi * 15, ref, 15);
        if (d > worst) worst = d;
    }
    CHECK(worst < 1e-5, "batched matmul of a transposed view (max diff %.2e)", worst);
    td_release(a), td_release(b), td_release(at), td_release(r), td_release(ac);
}

/* broadcasting binary ops against an index-by-index loop */
static void test_broadcast(td_generator *g) {
    int64_t sa[3] = {3, 1, 5}, sb[2] = {4, 1};
    td_tensor *a = randn(g, 3, sa), *b = randn(g, 2, sb);
    td_binary_op ops[] = {TD_ADD, TD_SUB, TD_MUL, TD_DIV, TD_MAXIMUM, TD_GT};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        td_tensor *r = td_binary(ops[k], a, b);
        CHECK(r && r->ndim == 3 && r->shape[0] == 3 && r->shape[1] == 4 && r->shape[2] == 5, "%s shape 3x4x5",
              td_binary_names[ops[k]]);
        double worst = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 5; l++) {
                    float x = td_f32(a)[i * 5 + l], y = td_f32(b)[j], e;
                    switch (ops[k]) {
                    case TD_ADD: e = x + y; break;
                    case TD_SUB: e = x - y; break;
                    case TD_MUL: e = x * y; break;
                    case TD_DIV: e = x / y; break;
                    case TD_MAXIMUM: e = x > y ? x : y; break;
                    default: e = x > y; break;
                    }
                    double d = fabs(e - td_f32(r)[(i * 4 + j) * 5 + l]);
                    if (d > worst) worst = d;
                }
        CHECK(worst < 1e-6, "%s broadcast equals the loop (max diff %.2e)", td_binary_names[ops[k]], worst);
        td_release(r);
    }
    td_release(a), td_release(b);
}

/* a sum over non-adjacent dims of a strided tensor equals a plain loop */
static void test_reduce(td_generator *g) {
    int64_t s[4] = {3, 4, 5, 6};
    td_tensor *x = randn(g, 4, s);
    td_tensor *r = td_sum(x, (1u << 0) | (1u << 2), false); /* (4, 6) */
    double worst = 0;
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 6; l++) {
            double e = 0;
            for (int i = 0; i < 3; i++)
                for (int k = 0; k < 5; k++) e += td_f32(x)[((i * 4 + j) * 5 + k) * 6 + l];
            double d = fabs(e - td_f32(r)[j * 6 + l]);
            if (d > worst) worst = d;
        }
    CHECK(r && r->ndim == 2 && worst < 1e-5, "sum over dims {1,3} (max diff %.2e)", worst);
    td_release(r);
    td_tensor *v = NULL, *ix = NULL;
    td_max_dim(x, 1, false, false, &v, &ix);
    int bad = 0;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 5; k++)
            for (int l = 0; l < 6; l++) {
                int best = 0;
                for (int j = 1; j < 4; j++)
                    if (td_f32(x)[((i * 4 + j) * 5 + k) * 6 + l] > td_f32(x)[((i * 4 + best) * 5 + k) * 6 + l]) best = j;
                if (td_i64(ix)[(i * 5 + k) * 6 + l] != best) bad++;
            }
    CHECK(bad == 0, "max over dim 2 finds the argmax (%d wrong)", bad);
    td_release(v), td_release(ix), td_release(x);
}

/* errors: a message naming the op and the shapes, no memory kept */
static void test_errors(td_generator *g) {
    td_tensor *a = randn(g, 2, (int64_t[]){3, 4}), *b = randn(g, 2, (int64_t[]){5, 6});
    size_t before = td_bytes_live();
    td_tensor *r = td_matmul(a, b);
    CHECK(!r && strstr(td_last_error(), "matmul") && strstr(td_last_error(), "3x4") && strstr(td_last_error(), "5x6"),
          "matmul mismatch: %s", td_last_error());
    r = td_binary(TD_ADD, a, b);
    CHECK(!r && strstr(td_last_error(), "broadcast"), "add mismatch: %s", td_last_error());
    r = td_view(a, 1, (int64_t[]){5});
    CHECK(!r && strstr(td_last_error(), "view"), "bad view: %s", td_last_error());
    r = td_narrow(a, 1, 3, 2);
    CHECK(!r && strstr(td_last_error(), "narrow"), "bad narrow: %s", td_last_error());
    int64_t neg = -2;
    r = td_zeros(TD_F32, 1, &neg);
    CHECK(!r && strstr(td_last_error(), "negative"), "negative size: %s", td_last_error());
    CHECK(td_bytes_live() == before, "failed ops keep no memory (%zu vs %zu bytes)", td_bytes_live(), before);
    td_release(a), td_release(b);
}

/* autograd from C: d/dx sum(x * x) = 2x; graph freed; steady state makes no malloc calls */
static void test_autograd(td_generator *g) {
    td_tensor *x = randn(g, 1, (int64_t[]){10});
    td_set_requires_grad(x, true);
    uint64_t mallocs = 0;
    for (int it = 0; it < 20; it++) {
        if (it == 10) mallocs = td_alloc_count();
        td_zero_grad(x);
        td_tensor *y = td_binary(TD_MUL, x, x), *s = td_sum(y, 0, false);
        td_backward(s, NULL, false);
        td_release(y), td_release(s);
    }
    CHECK(td_alloc_count() == mallocs, "no malloc per step after warm-up (%llu new)",
          (unsigned long long)(td_alloc_count() - mallocs));
    double worst = 0;
    for (int i = 0; i < 10; i++) {
        double d = fabs(td_f32(x->grad)[i] - 2 * td_f32(x)[i]);
        if (d > worst) worst = d;
    }
    CHECK(worst < 1e-6, "gradient of sum(x*x) is 2x (max diff %.2e)", worst);
    td_release(x);
}

/* The grad hook: each leaf of the graph is reported once, when its gradient is final (its
 * value then equals the value after backward), later layers' leaves before earlier ones; a
 * leaf outside the graph is not reported and reads grad_pending 0 at start. Graph:
 * h = w1 * x (w1 used twice: h2 = h * w1), out = sum(h2 * w2 + b); u is unused. */
typedef struct {
    td_tensor *leaves[5];
    int calls[5], order[5], n_ready, starts, unused_at_start, total;
    float grad_at_ready[5];
} hook_log;

static void hook_start(void *ud) {
    hook_log *log = ud;
    log->starts++;
    log->unused_at_start = log->leaves[4]->grad_pending == 0 && log->leaves[0]->grad_pending == 2;
}

static void hook_ready(td_tensor *leaf, void *ud) {
    hook_log *log = ud;
    log->total++;
    for (int i = 0; i < 5; i++)
        if (log->leaves[i] == leaf) {
            log->calls[i]++;
            log->order[log->n_ready++] = i;
            log->grad_at_ready[i] = leaf->grad ? td_f32(leaf->grad)[0] : NAN;
        }
}

static void test_grad_hook(td_generator *g) {
    hook_log log = {0};
    const char *names[5] = {"w1", "x", "w2", "b", "u"};
    for (int i = 0; i < 5; i++) {
        log.leaves[i] = randn(g, 1, (int64_t[]){3});
        td_set_requires_grad(log.leaves[i], true);
    }
    td_tensor *w1 = log.leaves[0], *x = log.leaves[1], *w2 = log.leaves[2], *b = log.leaves[3];
    td_tensor *h = td_binary(TD_MUL, w1, x), *h2 = td_binary(TD_MUL, h, w1), *o = td_binary(TD_MUL, h2, w2);
    td_tensor *ob = td_binary(TD_ADD, o, b), *s = td_sum(ob, 0, false);
    td_grad_hook hook = {hook_start, hook_ready, &log};
    CHECK(td_set_grad_hook(&hook) == NULL, "no grad hook by default");
    CHECK(td_backward(s, NULL, false) == 0, "hooked backward runs");
    CHECK(td_set_grad_hook(NULL) == &hook, "the hook is given back");
    CHECK(log.starts == 1 && log.unused_at_start, "start once, after the count (w1 2 uses, u none)");
    for (int i = 0; i < 4; i++) {
        CHECK(log.calls[i] == 1, "%s reported once (%d)", names[i], log.calls[i]);
        CHECK(log.grad_at_ready[i] == td_f32(log.leaves[i]->grad)[0], "%s's gradient final when reported", names[i]);
        CHECK(log.leaves[i]->grad_pending == 0, "%s's count back to 0", names[i]);
    }
    CHECK(log.calls[4] == 0 && !log.leaves[4]->grad, "the unused leaf is not reported");
    int pos[5] = {0};
    for (int k = 0; k < log.n_ready; k++) pos[log.order[k]] = k;
    CHECK(pos[3] < pos[1] && pos[2] < pos[1] && pos[2] < pos[0], "the last op's leaves before the first's");
    /* without the hook the same graph runs and counts nothing */
    td_release(h), td_release(h2), td_release(o), td_release(ob), td_release(s);
    h = td_binary(TD_MUL, w1, x), s = td_sum(h, 0, false);
    td_backward(s, NULL, false);
    CHECK(log.total == 4 && w1->grad_pending == 0, "no report with the hook unset");
    /* a leaf as the root: start, then itself */
    td_set_grad_hook(&hook);
    td_tensor *one = td_full(TD_F32, 0, NULL, 2.0);
    td_set_requires_grad(one, true);
    td_backward(one, NULL, false);
    td_set_grad_hook(NULL);
    CHECK(log.starts == 2 && log.total == 5 && one->grad_pending == 0 && one->grad, "a leaf root is reported once");
    td_release(h), td_release(s), td_release(one);
    for (int i = 0; i < 5; i++) td_release(log.leaves[i]);
}

/* Shapes whose products wrap around 2^64 (issue 22, items 1 and 17): refused with the op named. */
static void test_size_overflow(void) {
    td_tensor *x = td_zeros(TD_F32, 2, (int64_t[]){3, 4});
    int64_t wrap[4] = {3, 4, 7, 0x6DB6DB6DB6DB6DB7}; /* 12 elements modulo 2^64 */
    td_tensor *v = td_view(x, 4, wrap);
    CHECK(!v && strstr(td_last_error(), "view:"), "view of a wrapping shape refused (%s)", td_last_error());
    td_release(v);
    v = td_reshape(x, 4, wrap);
    CHECK(!v && strstr(td_last_error(), "reshape:"), "reshape of a wrapping shape refused (%s)", td_last_error());
    td_release(v);
    td_tensor *e = td_empty(TD_F32, 4, wrap);
    CHECK(!e && strstr(td_last_error(), "more than 2^40"), "empty with a wrapping shape refused (%s)", td_last_error());
    td_release(e);
    td_tensor *one = td_zeros(TD_F32, 2, (int64_t[]){1, 1});
    e = td_expand(one, 2, (int64_t[]){1 << 30, 1 << 30});
    CHECK(!e && strstr(td_last_error(), "expand:"), "expand past 2^40 elements refused (%s)", td_last_error());
    td_release(e);
    e = td_expand(one, 2, (int64_t[]){-5, 1});
    CHECK(!e && strstr(td_last_error(), "-5"), "expand to a negative size refused (%s)", td_last_error());
    td_release(e);
    td_tensor *n = td_narrow(x, 1, 2, INT64_MAX);
    CHECK(!n && strstr(td_last_error(), "narrow:"), "narrow whose end wraps refused (%s)", td_last_error());
    td_release(n);
    td_release(one);
    td_release(x);
}

int main(void) {
    td_threads_init();
    td_generator g;
    td_generator_seed(&g, 2024);
    test_gemm(&g);
    test_matmul_views(&g);
    test_broadcast(&g);
    test_reduce(&g);
    test_errors(&g);
    test_autograd(&g);
    test_grad_hook(&g);
    test_size_overflow();
    return check_failures != 0;
}
