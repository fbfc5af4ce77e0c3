/* Fused NN kernels against their plain references: convolutions (both layouts, strides, padding,
 * dilation, odd sizes), pooling, upsampling, norms, linear, attention, the GRU cell and the
 * losses (ops/nn_ref.c), forward and backward, on random shapes; plus the tensor-level ops' autograd wiring (gradients equal the reference
 * kernels') and allocation behaviour (no growth across repeated training steps). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TD_NN_INTERNAL /* the vector helpers (test_vector_exp) */
#include "../../ops/nn.h"
#include "check.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64*, [0, 1) */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static int irand(int lo, int hi) { return lo + (int)(urand() * (hi - lo + 1)); } /* [lo, hi] */
static float *randv(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = (float)(urand() * 2 - 1);
    return p;
}
/* max |a - b| / (1 + max |b|) */
static double relerr(const float *a, const float *b, int64_t n) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* catches NaN */
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    return m / (1 + s);
}

/* ---- convolution kernels ------------------------------------------------------------------------ */
static void conv_case(int N, int C, int H, int W, int O, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                      int path) {
    td_conv_geom g = {N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, 0, 0, 0, NULL, 1};
    g.OH = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    g.OW = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    if (g.OH < 1 || g.OW < 1) return;
    int64_t nx = (int64_t)N * C * H * W, nw = (int64_t)O * C * kh * kw, ny = (int64_t)N * O * g.OH * g.OW;
    float *x = randv(nx), *w = randv(nw), *b = randv(O), *dy = randv(ny);
    float *y1 = malloc(4 * ny), *y2 = malloc(4 * ny), *dx1 = malloc(4 * nx), *dx2 = malloc(4 * nx);
    float *dw1 = malloc(4 * nw), *dw2 = malloc(4 * nw), *db1 = malloc(4 * O), *db2 = malloc(4 * O);
    td_conv_path = path;
    int rc = td_conv2d_fwd_kernel(&g, x, w, b, y1) | td_conv2d_bwd_data_kernel(&g, dy, w, NULL, dx1) |
             td_conv2d_bwd_weight_kernel(&g, x, dy, dw1, db1);
    td_conv_path = 0;
    td_conv2d_fwd_ref(&g, x, w, b, y2);
    td_conv2d_bwd_data_ref(&g, dy, w, dx2);
    td_conv2d_bwd_weight_ref(&g, x, dy, dw2, db2);
    double e1 = relerr(y1, y2, ny), e2 = relerr(dx1, dx2, nx), e3 = relerr(dw1, dw2, nw), e4 = relerr(db1, db2, O);
    double tol = path == 5 ? 3e-5 : 1e-5; /* F(4x4)'s transforms scale by up to 8 and 1/24: ~10x the rounding */
    CHECK(rc == 0 && e1 < tol && e2 < tol && e3 < tol && e4 < 1e-5,
          "conv path %d x(%d,%d,%d,%d) w(%d,%d,%d,%d) s(%d,%d) p(%d,%d) d(%d,%d): y %.1e dx %.1e dw %.1e db %.1e", path, N,
          C, H, W, O, C, kh, kw, sh, sw, ph, pw, dh, dw, e1, e2, e3, e4);
    free(x); free(w); free(b); free(dy); free(y1); free(y2); free(dx1); free(dx2); free(dw1); free(dw2); free(db1); free(db2);
}

static void test_conv_kernels(void) {
    for (int path = 0; path <= 5; path++) { /* automatic, direct, im2col, Winograd F(2x2), no Winograd, F(4x4) */
        conv_case(2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(3, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(5, 7, 9, 11, 13, 3, 3, 2, 2, 1, 1, 1, 1, path);
        conv_case(2, 5, 8, 8, 9, 1, 1, 1, 1, 0, 0, 1, 1, path);
        conv_case(2, 4, 12, 10, 6, 3, 5, 1, 2, 2, 1, 2, 1, path);
        conv_case(1, 3, 7, 7, 2, 3, 3, 1, 1, 0, 0, 3, 3, path);
        conv_case(4, 3, 6, 6, 5, 1, 1, 1, 1, 2, 2, 1, 1, path); /* padding larger than the kernel reach */
        conv_case(3, 6, 5, 5, 3, 5, 5, 2, 2, 2, 2, 1, 1, path);
        conv_case(7, 2, 4, 4, 3, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(2, 64, 8, 8, 128, 3, 3, 1, 1, 1, 1, 1, 1, path); /* weight-gradient tiles of 4, 2 and 1 vectors */
        conv_case(3, 24, 9, 9, 48, 3, 3, 2, 2, 1, 1, 1, 1, path);
        conv_case(2, 3, 34, 71, 5, 3, 3, 2, 2, 1, 1, 1, 1, path); /* stride-2 rows of 36: vector moves and a tail */
        conv_case(2, 2, 12, 66, 3, 3, 3, 1, 2, 0, 0, 1, 1, path);
        conv_case(2, 8, 6, 6, 80, 3, 3, 1, 1, 1, 1, 1, 1, path);
        /* enough images for direct chunks of several stacked frames (padding shared between them) */
        conv_case(40, 8, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(60, 4, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, path); /* chunks of 7 (the least waste) and a last of 4 */
        conv_case(33, 5, 4, 4, 7, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(30, 3, 9, 9, 5, 3, 3, 1, 1, 0, 0, 1, 1, path);
        conv_case(27, 4, 6, 7, 6, 3, 5, 1, 1, 2, 1, 2, 1, path);
        conv_case(25, 3, 5, 6, 4, 3, 3, 1, 1, 3, 1, 1, 1, path); /* padding beyond the kernel's reach: unstacked */
    }
    for (int t = 0; t < 40; t++) {
        int kh = irand(1, 4), kw = irand(1, 4), dh = irand(1, 2), dw = irand(1, 2);
        conv_case(irand(1, 5), irand(1, 9), irand(3, 14), irand(3, 14), irand(1, 19), kh, kw, irand(1, 3), irand(1, 3),
                  irand(0, 3), irand(0, 3), dh, dw, irand(0, 3));
    }
    /* Winograd's tiles: odd and even output sizes, rows of 1 to 40 tiles (several vectors, tails
     * shorter than one), every padding it takes, chunks of several images */
    conv_case(3, 16, 64, 80, 24, 3, 3, 1, 1, 1, 1, 1, 1, 3);
    conv_case(9, 17, 7, 5, 18, 3, 3, 1, 1, 1, 1, 1, 1, 0);
    for (int path = 3; path <= 5; path += 2) {
        conv_case(3, 16, 64, 80, 24, 3, 3, 1, 1, 1, 1, 1, 1, path);
        conv_case(2, 16, 6, 300, 16, 3, 3, 1, 1, 1, 2, 1, 1, path); /* rows of more vectors than fill_planes keeps masks for */
        conv_case(2, 8, 5, 600, 8, 3, 3, 1, 1, 2, 0, 1, 1, path);
        for (int t = 0; t < 30; t++)
            conv_case(irand(1, 12), irand(1, 40), irand(3, 40), irand(3, 40), irand(1, 40), 3, 3, 1, 1, irand(0, 2),
                      irand(0, 2), 1, 1, path);
    }
}

/* ---- tensor helpers --------------------------------------------------------------------------------- */
static td_tensor *trand(int nd, const int64_t *shape, bool grad) {
    td_tensor *t = td_empty(TD_F32, nd, shape);
    float *p = td_f32(t);
    for (int64_t i = 0; i < td_numel(t); i++) p[i] = (float)(urand() * 2 - 1);
    if (grad) td_set_requires_grad(t, true);
    return t;
}
#define T4(a, b, c, d) ((int64_t[]){a, b, c, d})
/* backward of sum(y * R) with R random; returns R (caller releases) */
static td_tensor *backprop(td_tensor *y) {
    td_tensor *R = trand(y->ndim, y->shape, false), *p = td_binary(TD_MUL, y, R), *s = td_sum(p, 0, false);
    td_backward(s, NULL, false);
    td_release(p);
    td_release(s);
    return R;
}
static double terr(const td_tensor *a, const float *b) { return relerr(td_f32(a), b, td_numel(a)); }

/* conv2d with one bias per image (N, O), and half the time a residual and a scale: equal to the
 * convolution without bias plus the bias broadcast over the plane (plus r, times s), forward and
 * every gradient (db[n][o] = sum of dy's plane), on each kernel path (direct, im2col, F(2x2),
 * F(4x4) on big and on stacked small images) and a strided layer */
static void test_conv_bias_per_image(void) {
    const int64_t cases[][6] = {{3, 4, 9, 10, 5, 1}, {2, 6, 16, 16, 7, 1}, {2, 3, 11, 12, 4, 2}, {5, 5, 8, 8, 6, 1}}; /* N C H W O stride */
    const int paths[] = {0, 1, 2, 3, 5};
    for (int ci = 0; ci < 4; ci++)
        for (int pi = 0; pi < 5; pi++) {
            int64_t N = cases[ci][0], C = cases[ci][1], H = cases[ci][2], W = cases[ci][3], O = cases[ci][4];
            td_conv_opts o;
            td_conv_opts_default(&o);
            o.stride[0] = o.stride[1] = cases[ci][5];
            o.padding[0] = o.padding[1] = 1;
            td_tensor *x = trand(4, T4(N, C, H, W), true), *w = trand(4, T4(O, C, 3, 3), true), *b = trand(2, T4(N, O, 0, 0), true);
            /* the odd paths also add a residual and scale the sum: y = 0.7 (conv + b + r) */
            bool resid = (pi + ci) % 2 == 1; /* each path with and without, F(4x4) on big and stacked small images */
            int64_t OH = (H + 2 - 3) / cases[ci][5] + 1, OW = (W + 2 - 3) / cases[ci][5] + 1;
            td_tensor *r = resid ? trand(4, T4(N, O, OH, OW), true) : NULL;
            o.residual = r;
            o.scale = resid ? 0.7 : 1;
            td_conv_path = paths[pi];
            td_tensor *y = td_conv2d(x, w, b, &o);
            td_conv_path = 0;
            o.residual = NULL;
            o.scale = 1;
            td_tensor *R = backprop(y);
            td_tensor *x2 = trand(4, x->shape, true), *w2 = trand(4, w->shape, true), *b2 = trand(2, b->shape, true);
            td_tensor *r2 = resid ? trand(4, r->shape, true) : NULL;
            memcpy(td_f32(x2), td_f32(x), 4 * (size_t)td_numel(x));
            memcpy(td_f32(w2), td_f32(w), 4 * (size_t)td_numel(w));
            memcpy(td_f32(b2), td_f32(b), 4 * (size_t)td_numel(b));
            if (resid) memcpy(td_f32(r2), td_f32(r), 4 * (size_t)td_numel(r));
            td_tensor *c2 = td_conv2d(x2, w2, NULL, &o), *bv = td_view(b2, 4, T4(N, O, 1, 1)), *y1 = td_binary(TD_ADD, c2, bv);
            td_tensor *yr = resid ? td_binary(TD_ADD, y1, r2) : NULL, *y2 = resid ? td_binary_scalar(TD_MUL, yr, 0.7, false) : y1;
            if (!resid) td_retain(y2);
            td_tensor *p2 = td_binary(TD_MUL, y2, R), *s2 = td_sum(p2, 0, false);
            td_backward(s2, NULL, false);
            double e[5] = {terr(y, td_f32(y2)), terr(x->grad, td_f32(x2->grad)), terr(w->grad, td_f32(w2->grad)),
                           terr(b->grad, td_f32(b2->grad)), resid ? terr(r->grad, td_f32(r2->grad)) : 0};
            CHECK(y && e[0] < 3e-5 && e[1] < 3e-5 && e[2] < 3e-5 && e[3] < 1e-6 && e[4] < 1e-6 && b->grad->ndim == 2,
                  "conv2d bias per image%s (%lld,%lld,%lldx%lld)->%lld stride %lld path %d: y %.1e dx %.1e dw %.1e db %.1e dr %.1e",
                  resid ? ", residual, scale 0.7" : "", (long long)N, (long long)C, (long long)H, (long long)W, (long long)O,
                  (long long)cases[ci][5], paths[pi], e[0], e[1], e[2], e[3], e[4]);
            td_tensor *rel[] = {x, w, b, y, R, x2, w2, b2, c2, bv, y1, y2, p2, s2, r, r2, yr};
            for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) td_release(rel[i]);
        }
    td_tensor *x = trand(4, T4(2, 3, 5, 5), false), *w = trand(4, T4(4, 3, 3, 3), false), *b = trand(2, T4(3, 4, 0, 0), false);
    td_tensor *y = td_conv2d(x, w, b, NULL);
    CHECK(!y && strstr(td_last_error(), "(4), or (2,4) for one per image"), "conv2d names the bias shapes it takes: %s",
          td_last_error());
    td_conv_opts o;
    td_conv_opts_default(&o);
    o.residual = trand(4, T4(2, 4, 5, 5), false);
    td_tensor *y2 = td_conv2d(x, w, NULL, &o);
    CHECK(!y2 && strstr(td_last_error(), "residual of shape (2x4x5x5)") && strstr(td_last_error(), "(2,4,3,3)"),
          "conv2d names the residual's shape and the output's: %s", td_last_error());
    td_release(o.residual);
    td_release(x); td_release(w); td_release(b);
}

/* ---- convolutions as tensor ops: autograd wiring, transpose, threads, memory -------------------------- */
static void test_conv_ops(void) {
    td_conv_opts o;
    td_conv_opts_default(&o);
    o.stride[0] = 2;
    o.padding[0] = o.padding[1] = 1;
    o.dilation[1] = 2;
    td_tensor *x = trand(4, T4(3, 4, 9, 10), true), *w = trand(4, T4(5, 4, 3, 3), true), *b = trand(1, T4(5, 0, 0, 0), true);
    td_tensor *y = td_conv2d(x, w, b, &o);
    td_conv_geom g = {3, 4, 9, 10, 5, 3, 3, 2, 1, 1, 1, 1, 2, y->shape[2], y->shape[3], 0, NULL, 1};
    float *yr = malloc(4 * td_numel(y)), *dx = malloc(4 * td_numel(x)), *dw = malloc(4 * td_numel(w)), *db = malloc(4 * 5);
    td_conv2d_fwd_ref(&g, td_f32(x), td_f32(w), td_f32(b), yr);
    td_tensor *R = backprop(y);
    td_conv2d_bwd_data_ref(&g, td_f32(R), td_f32(w), dx);
    td_conv2d_bwd_weight_ref(&g, td_f32(x), td_f32(R), dw, db);
    CHECK(terr(y, yr) < 1e-5 && terr(x->grad, dx) < 1e-5 && terr(w->grad, dw) < 1e-5 && terr(b->grad, db) < 1e-5,
          "td_conv2d forward and autograd equal the reference kernels (y %.1e dx %.1e dw %.1e db %.1e)", terr(y, yr),
          terr(x->grad, dx), terr(w->grad, dw), terr(b->grad, db));
    free(yr); free(dx); free(dw); free(db);
    td_release(R); td_release(y); td_release(x); td_release(w); td_release(b);

    /* conv_transpose2d forward = the input gradient of the conv with its output's shape */
    td_conv_opts_default(&o);
    o.stride[0] = o.stride[1] = 2;
    o.padding[0] = o.padding[1] = 1;
    o.output_padding[0] = o.output_padding[1] = 1;
    x = trand(4, T4(2, 3, 5, 4), true);
    w = trand(4, T4(3, 6, 3, 3), true);
    b = trand(1, T4(6, 0, 0, 0), true);
    y = td_conv_transpose2d(x, w, b, &o);
    CHECK(y && y->shape[1] == 6 && y->shape[2] == 10 && y->shape[3] == 8, "conv_transpose2d output shape (2,6,10,8)");
    td_conv_geom gt = {2, 6, 10, 8, 3, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4, 0, NULL, 1};
    float *yt = malloc(4 * td_numel(y)), *gx = malloc(4 * td_numel(x)), *gw = malloc(4 * td_numel(w));
    td_conv2d_bwd_data_ref(&gt, td_f32(x), td_f32(w), yt);
    for (int64_t i = 0; i < td_numel(y); i++) yt[i] += td_f32(b)[(i / 80) % 6];
    R = backprop(y);
    td_conv2d_fwd_ref(&gt, td_f32(R), td_f32(w), NULL, gx);
    td_conv2d_bwd_weight_ref(&gt, td_f32(R), td_f32(x), gw, NULL);
    CHECK(terr(y, yt) < 1e-5 && terr(x->grad, gx) < 1e-5 && terr(w->grad, gw) < 1e-5,
          "td_conv_transpose2d forward and gradients equal the adjoint reference kernels (%.1e %.1e %.1e)", terr(y, yt),
          terr(x->grad, gx), terr(w->grad, gw));
    free(yt); free(gx); free(gw);
    td_release(R); td_release(y); td_release(x); td_release(w); td_release(b);

    /* results do not depend on the thread count beyond rounding */
    td_conv_geom g2 = {6, 8, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1, 1, 12, 12, 0, NULL, 1};
    float *xa = randv(6 * 8 * 144), *wa = randv(8 * 8 * 9), *y1 = malloc(4 * 6 * 8 * 144), *y2 = malloc(4 * 6 * 8 * 144);
    float *w1 = malloc(4 * 8 * 8 * 9), *w2 = malloc(4 * 8 * 8 * 9);
    td_set_num_threads(1);
    td_conv2d_fwd_kernel(&g2, xa, wa, NULL, y1);
    td_conv2d_bwd_weight_kernel(&g2, xa, y1, w1, NULL);
    td_set_num_threads(2);
    td_conv2d_fwd_kernel(&g2, xa, wa, NULL, y2);
    td_conv2d_bwd_weight_kernel(&g2, xa, y1, w2, NULL);
    CHECK(relerr(y1, y2, 6 * 8 * 144) == 0 && relerr(w1, w2, 8 * 8 * 9) < 1e-6,
          "1 and 2 threads agree (forward exactly, weight gradient %.1e)", relerr(w1, w2, 8 * 8 * 9));
    free(xa); free(wa); free(y1); free(y2); free(w1); free(w2);

    /* a training loop allocates no scratch and holds no tensor memory after its first step */
    size_t s0 = 0, l0 = 0;
    for (int it = 0; it < 4; it++) {
        td_conv_opts_default(&o);
        o.padding[0] = o.padding[1] = 1;
        x = trand(4, T4(4, 8, 16, 16), true);
        w = trand(4, T4(8, 8, 3, 3), true);
        y = td_conv2d(x, w, NULL, &o);
        R = backprop(y);
        td_release(R); td_release(y); td_release(x); td_release(w);
        if (it == 0) {
            s0 = td_nn_scratch_bytes();
            l0 = td_bytes_live();
        }
    }
    CHECK(td_nn_scratch_bytes() == s0 && td_bytes_live() == l0, "no growth over steps (scratch %zu, live %zu bytes)",
          td_nn_scratch_bytes(), td_bytes_live());

    /* errors: NULL with a message naming the op and the shapes, nothing leaked */
    size_t live = td_bytes_live();
    x = trand(4, T4(2, 3, 8, 8), false);
    w = trand(4, T4(4, 5, 3, 3), false);
    y = td_conv2d(x, w, NULL, NULL);
    CHECK(y == NULL && strstr(td_last_error(), "conv2d") && strstr(td_last_error(), "2x3x8x8") && strstr(td_last_error(), "4x5x3x3"),
          "channel mismatch refused: %s", td_last_error());
    td_release(x); td_release(w);
    CHECK(td_bytes_live() == live, "a refused call leaks nothing");
}

/* ---- pooling and upsampling ------------------------------------------------------------------------------ */
static void test_pool_upsample(void) {
    for (int t = 0; t < 6; t++) {
        int64_t N = irand(1, 3), C = irand(1, 4), H = irand(3, 9), W = irand(3, 9), kh = irand(1, 3), kw = irand(1, 3);
        int64_t k[2] = {kh, kw}, s[2] = {irand(1, 3), irand(1, 3)};
        td_tensor *x = trand(4, T4(N, C, H, W), true), *y = td_avg_pool2d(x, k, s);
        int64_t OH = (H - kh) / s[0] + 1, OW = (W - kw) / s[1] + 1;
        float *yr = calloc(N * C * OH * OW, 4), *dx = calloc(N * C * H * W, 4);
        td_tensor *R = backprop(y);
        for (int64_t p = 0; p < N * C; p++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double a = 0;
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++) a += td_f32(x)[(p * H + oh * s[0] + i) * W + ow * s[1] + j];
                    yr[(p * OH + oh) * OW + ow] = (float)(a / (kh * kw));
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++)
                            dx[(p * H + oh * s[0] + i) * W + ow * s[1] + j] += td_f32(R)[(p * OH + oh) * OW + ow] / (kh * kw);
                }
        CHECK(terr(y, yr) < 1e-6 && terr(x->grad, dx) < 1e-6, "avg_pool2d (%lld,%lld,%lld,%lld) k(%lld,%lld) s(%lld,%lld)",
              (long long)N, (long long)C, (long long)H, (long long)W, (long long)kh, (long long)kw, (long long)s[0], (long long)s[1]);
        free(yr); free(dx);
        td_release(R); td_release(y); td_release(x);
    }
    td_tensor *x = trand(4, T4(2, 3, 4, 5), true), *y = td_upsample_nearest2d(x, 3, 2);
    td_tensor *R = backprop(y);
    float *yr = malloc(4 * td_numel(y)), *dx = calloc(td_numel(x), 4);
    for (int64_t p = 0; p < 6; p++)
        for (int64_t h = 0; h < 12; h++)
            for (int64_t w = 0; w < 10; w++) {
                yr[(p * 12 + h) * 10 + w] = td_f32(x)[(p * 4 + h / 3) * 5 + w / 2];
                dx[(p * 4 + h / 3) * 5 + w / 2] += td_f32(R)[(p * 12 + h) * 10 + w];
            }
    CHECK(terr(y, yr) == 0 && terr(x->grad, dx) < 1e-6, "upsample_nearest2d (3,2) forward and backward");
    free(yr); free(dx);
    td_release(R); td_release(y); td_release(x);
}

/* ---- norms against the double-precision references (ops/norm.c) ------------------------------------ */
/* kind 'g': group norm of x (N,C,S) in G groups; 'b': batch norm (training) of x (N,C,S); 'l': layer
 * norm of x (N,S) over its last dim */
typedef struct {
    char kind;
    int64_t N, C, S, G;
} nctx;

static void norm_check(const char *what, td_tensor *x, td_tensor *w, td_tensor *b, td_tensor *y, nctx c, double eps,
                       bool silu) {
    td_tensor *R = backprop(y);
    int64_t N = td_numel(x), np = c.kind == 'l' ? c.S : c.C;
    float *yr = malloc(4 * N), *dx = malloc(4 * N), *dwf = malloc(4 * (np + 1)), *dbf = malloc(4 * (np + 1));
    double *dw = calloc(np + 1, 8), *db = calloc(np + 1, 8);
    const float *xf = td_f32(x), *wf = w ? td_f32(w) : NULL, *bf = b ? td_f32(b) : NULL, *dy = td_f32(R);
    if (c.kind == 'g') td_group_norm_ref(xf, c.N, c.C, c.S, c.G, wf, bf, eps, silu, dy, yr, dx, dw, db);
    else if (c.kind == 'b') td_batch_norm_ref(xf, c.N, c.C, c.S, wf, bf, eps, dy, yr, dx, dw, db);
    else td_layer_norm_ref(xf, c.N, c.S, wf, bf, eps, dy, yr, dx, dw, db);
    for (int64_t i = 0; i < np; i++) {
        dwf[i] = (float)dw[i];
        dbf[i] = (float)db[i];
    }
    double e1 = terr(y, yr), e2 = terr(x->grad, dx), e3 = w ? terr(w->grad, dwf) : 0, e4 = b ? terr(b->grad, dbf) : 0;
    CHECK(e1 < 2e-6 && e2 < 2e-5 && e3 < 2e-5 && e4 < 2e-5, "%s: y %.1e dx %.1e dw %.1e db %.1e", what, e1, e2, e3, e4);
    free(yr); free(dx); free(dwf); free(dbf); free(dw); free(db);
    td_release(R);
}

static void test_norms(void) {
    for (int silu = 0; silu <= 1; silu++) {
        nctx c = {'g', 3, 12, 37, 4};
        td_tensor *x = trand(3, T4(3, 12, 37, 0), true), *w = trand(1, T4(12, 0, 0, 0), true), *b = trand(1, T4(12, 0, 0, 0), true);
        td_tensor *y = td_group_norm(x, 4, w, b, 1e-5, silu);
        norm_check(silu ? "group_norm_silu (3,12,37) G4" : "group_norm (3,12,37) G4", x, w, b, y, c, 1e-5,
                   silu);
        td_release(y); td_release(x); td_release(w); td_release(b);
    }
    {   /* NCSN++ sizes: (100, 32, 16, 16), 8 groups, eps 1e-6, large mean offset */
        nctx c = {'g', 20, 32, 256, 8};
        td_tensor *x = trand(4, T4(20, 32, 16, 16), false), *w = trand(1, T4(32, 0, 0, 0), true), *b = trand(1, T4(32, 0, 0, 0), true);
        for (int64_t i = 0; i < td_numel(x); i++) td_f32(x)[i] = td_f32(x)[i] * 3 + 10;
        td_set_requires_grad(x, true);
        td_tensor *y = td_group_norm(x, 8, w, b, 1e-6, true);
        norm_check("group_norm_silu (20,32,16,16) G8, mean 10", x, w, b, y, c, 1e-6, true);
        td_release(y); td_release(x); td_release(w); td_release(b);
    }
    {
        nctx c = {'b', 6, 5, 9, 0};
        td_tensor *x = trand(4, T4(6, 5, 3, 3), true), *w = trand(1, T4(5, 0, 0, 0), true), *b = trand(1, T4(5, 0, 0, 0), true);
        td_tensor *y = td_batch_norm(x, NULL, NULL, w, b, true, 0.1, 1e-5, false);
        norm_check("batch_norm training (6,5,3,3)", x, w, b, y, c, 1e-5, false);
        td_release(y); td_release(x); td_release(w); td_release(b);
        nctx c2 = {'b', 7, 4, 1, 0};
        x = trand(2, T4(7, 4, 0, 0), true);
        w = trand(1, T4(4, 0, 0, 0), true);
        b = trand(1, T4(4, 0, 0, 0), true);
        y = td_batch_norm(x, NULL, NULL, w, b, true, 0.1, 1e-5, false);
        norm_check("batch_norm training (7,4)", x, w, b, y, c2, 1e-5, false);
        td_release(y); td_release(x); td_release(w); td_release(b);
    }
    {
        nctx c = {'l', 5, 0, 24, 0};
        td_tensor *x = trand(3, T4(5, 4, 6, 0), true), *w = trand(2, T4(4, 6, 0, 0), true), *b = trand(2, T4(4, 6, 0, 0), true);
        td_tensor *y = td_layer_norm(x, 2, w, b, 1e-5);
        norm_check("layer_norm (5,4,6) over (4,6)", x, w, b, y, c, 1e-5, false);
        td_release(y); td_release(x); td_release(w); td_release(b);
        nctx c2 = {'l', 70, 0, 300, 0};
        x = trand(2, T4(70, 300, 0, 0), true);
        w = trand(1, T4(300, 0, 0, 0), true);
        b = trand(1, T4(300, 0, 0, 0), true);
        y = td_layer_norm(x, 1, w, b, 1e-5);
        norm_check("layer_norm (70,300) (threads)", x, w, b, y, c2, 1e-5, false);
        td_release(y); td_release(x); td_release(w); td_release(b);
    }
}

/* the vector exponential and sigmoid every fused kernel uses: ulps against double over the whole
 * normal range (7.6M points), and the edges (-inf, +inf, NaN, underflow, overflow) */
static void test_vector_exp(void) {
    double worst = 0, wx = 0, sworst = 0;
    for (double x0 = -87.0; x0 < 88.7; x0 += 0.00037 * TD_VW) {
        float xs[TD_VW], r[TD_VW], sg[TD_VW];
        for (int l = 0; l < TD_VW; l++) xs[l] = (float)(x0 + l * 0.00037);
        td_vstore(r, td_vexp(td_vload(xs)));
        td_vstore(sg, td_vsigmoid(td_vload(xs)));
        for (int l = 0; l < TD_VW; l++) {
            double e = exp((double)xs[l]), u = fabs(r[l] - e) / (e * 0x1p-24), s = 1 / (1 + exp(-(double)xs[l]));
            if (u > worst) worst = u, wx = xs[l];
            if (s > 1e-30 && fabs(sg[l] - s) / (s * 0x1p-24) > sworst) sworst = fabs(sg[l] - s) / (s * 0x1p-24);
        }
    }
    CHECK(worst <= 2.0, "td_vexp within 2 ulp over [-87, 88.7]: worst %.2f ulp at %g", worst, wx);
    CHECK(sworst <= 4.0, "td_vsigmoid within 4 ulp over [-87, 88.7]: worst %.2f ulp", sworst);
    float sp[TD_VW], r[TD_VW];
    for (int l = 0; l < TD_VW; l++) sp[l] = 0;
    sp[0] = -INFINITY, sp[1] = INFINITY, sp[2] = NAN, sp[3] = 88.8f, sp[4] = -103.0f, sp[5] = -1000.0f, sp[6] = 1.0f;
    td_vstore(r, td_vexp(td_vload(sp)));
    CHECK(r[0] == 0 && isinf(r[1]) && r[1] > 0 && isnan(r[2]) && isinf(r[3]) && r[4] >= 0 && r[4] < 1e-40 && r[5] == 0 &&
              fabs(r[6] - 2.718281828) < 3e-7 && r[7] == 1,
          "td_vexp edges: -inf %g, inf %g, nan %g, 88.8 %g, -103 %g, -1000 %g, 1 %.9g, 0 %g", r[0], r[1], r[2], r[3], r[4],
          r[5], r[6], r[7]);
}

/* GroupNorm + SiLU + dropout fused: equal to td_dropout of td_group_norm(silu) drawn from a
 * generator in the same state (same key, same mask), forward and every gradient, on rows with
 * vector tails; the vector mask equal to the scalar hash, across the 2^32-element carry */
static void test_gn_silu_dropout(void) {
    for (int t = 0; t < 2; t++) {
        int64_t N = t ? 3 : 2, C = t ? 32 : 8, S = t ? 256 : 35, G = t ? 8 : 4;
        double p = t ? 0.1 : 0.45;
        td_tensor *x = trand(3, T4(N, C, S, 0), true), *w = trand(1, T4(C, 0, 0, 0), true), *b = trand(1, T4(C, 0, 0, 0), true);
        td_generator g1, g2;
        td_generator_seed(&g1, 77);
        td_generator_seed(&g2, 77);
        td_tensor *y = td_group_norm_silu_dropout(x, G, w, b, 1e-6, p, &g1);
        td_tensor *R = backprop(y);
        td_tensor *x2 = trand(3, x->shape, true), *w2 = trand(1, w->shape, true), *b2 = trand(1, b->shape, true);
        memcpy(td_f32(x2), td_f32(x), 4 * (size_t)td_numel(x));
        memcpy(td_f32(w2), td_f32(w), 4 * (size_t)td_numel(w));
        memcpy(td_f32(b2), td_f32(b), 4 * (size_t)td_numel(b));
        td_tensor *h = td_group_norm(x2, G, w2, b2, 1e-6, true), *y2 = td_dropout(h, p, &g2);
        td_tensor *p2 = td_binary(TD_MUL, y2, R), *s2 = td_sum(p2, 0, false);
        td_backward(s2, NULL, false);
        int64_t zeros = 0;
        for (int64_t i = 0; i < td_numel(y); i++) zeros += td_f32(y)[i] == 0;
        double e[4] = {terr(y, td_f32(y2)), terr(x->grad, td_f32(x2->grad)), terr(w->grad, td_f32(w2->grad)),
                       terr(b->grad, td_f32(b2->grad))};
        double frac = (double)zeros / (double)td_numel(y);
        CHECK(e[0] == 0 && e[1] < 1e-6 && e[2] < 1e-6 && e[3] < 1e-6 && fabs(frac - p) < 0.05,
              "group_norm_silu_dropout (%lld,%lld,%lld) p %.2f = dropout(group_norm_silu): y %.1e dx %.1e dw %.1e db %.1e, "
              "%.3f dropped", (long long)N, (long long)C, (long long)S, p, e[0], e[1], e[2], e[3], frac);
        td_tensor *rel[] = {x, w, b, y, R, x2, w2, b2, h, y2, p2, s2};
        for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) td_release(rel[i]);
    }
    td_drop d = {0x9e3779b9u, 0x7f4a7c15u, 1u << 31, 2.0f};
    int bad = 0;
    const uint64_t starts[] = {0, 1000, (1ull << 32) - 5, (1ull << 33) + 3};
    for (int k = 0; k < 4; k++) {
        float f[TD_VW];
        td_vstore(f, td_vdrop(&d, starts[k]));
        for (int l = 0; l < TD_VW; l++)
            bad += f[l] != (td_keep_hash(d.k0, d.k1, starts[k] + (uint64_t)l) >= d.thresh ? 2.0f : 0.0f);
    }
    CHECK(bad == 0, "dropout's vector mask equals its scalar hash, across 2^32 (%d lanes differ)", bad);
    td_tensor *x = trand(3, T4(2, 4, 3, 0), false);
    td_tensor *y = td_group_norm_silu_dropout(x, 2, NULL, NULL, 1e-5, 1.5, NULL);
    CHECK(!y && strstr(td_last_error(), "group_norm_silu_dropout: dropout probability must be in [0, 1], got 1.5"),
          "group_norm_silu_dropout refuses p = 1.5: %s", td_last_error());
    td_release(x);
}

/* GroupNorm's and BatchNorm's input gradient added straight into a gradient the input already
 * has (its other consumer's): x feeds 3 x and the norm, in both orders of the sum; x.grad must
 * equal 3 R1 + the norm's gradient alone */
static void test_norm_grad_into_holder(void) {
    for (int kind = 0; kind < 2; kind++)
        for (int order = 0; order < 2; order++) {
            td_tensor *x = trand(4, T4(3, 8, 5, 6), true), *w = trand(1, T4(8, 0, 0, 0), true), *b = trand(1, T4(8, 0, 0, 0), true);
            td_tensor *R1 = trand(4, x->shape, false), *R2 = trand(4, x->shape, false);
            td_tensor *yn = kind ? td_batch_norm(x, NULL, NULL, w, b, true, 0.1, 1e-5, true) : td_group_norm(x, 4, w, b, 1e-6, true);
            td_tensor *ya = td_binary_scalar(TD_MUL, x, 3.0, false);
            td_tensor *pa = td_binary(TD_MUL, ya, R1), *pn = td_binary(TD_MUL, yn, R2);
            td_tensor *sa = td_sum(pa, 0, false), *sn = td_sum(pn, 0, false);
            td_tensor *loss = order ? td_binary(TD_ADD, sn, sa) : td_binary(TD_ADD, sa, sn);
            td_backward(loss, NULL, false);
            /* the norm's gradient alone, on a copy */
            td_tensor *x2 = trand(4, x->shape, true), *w2 = trand(1, w->shape, true), *b2 = trand(1, b->shape, true);
            memcpy(td_f32(x2), td_f32(x), 4 * (size_t)td_numel(x));
            memcpy(td_f32(w2), td_f32(w), 4 * 8);
            memcpy(td_f32(b2), td_f32(b), 4 * 8);
            td_tensor *y2 = kind ? td_batch_norm(x2, NULL, NULL, w2, b2, true, 0.1, 1e-5, true) : td_group_norm(x2, 4, w2, b2, 1e-6, true);
            td_tensor *p2 = td_binary(TD_MUL, y2, R2), *s2 = td_sum(p2, 0, false);
            td_backward(s2, NULL, false);
            float *want = malloc(4 * (size_t)td_numel(x));
            for (int64_t i = 0; i < td_numel(x); i++) want[i] = 3.0f * td_f32(R1)[i] + td_f32(x2->grad)[i];
            double e = terr(x->grad, want), ew = terr(w->grad, td_f32(w2->grad));
            CHECK(e < 1e-6 && ew < 1e-6, "%s's input gradient added into the one already there (%s first): %.1e, dw %.1e",
                  kind ? "batch_norm_relu" : "group_norm_silu", order ? "the norm" : "3 x", e, ew);
            free(want);
            td_tensor *rel[] = {x, w, b, R1, R2, yn, ya, pa, pn, sa, sn, loss, x2, w2, b2, y2, p2, s2};
            for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) td_release(rel[i]);
        }
}
/* ---- linear, attention, the GRU cell and the losses against the references (ops/nn_ref.c) ------------------------ */
/* the largest of the errors (NaN counts as the largest) */
static double worst_of(int n, const double *e) {
    double m = 0;
    for (int i = 0; i < n; i++)
        if (!(e[i] <= m)) m = e[i];
    return m;
}
#define WORST(...) worst_of((int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)), (double[]){__VA_ARGS__})
#define ZALLOC(n) calloc((size_t)(n) + 1, sizeof(float))

/* two steps through one weight: the second step's weight gradient is added into the first's */
static void test_linear(void) {
    const int64_t cases[][5] = {{1, 1, 1, 1, 1}, {2, 3, 5, 4, 1}, {7, 1, 33, 17, 0}, {4, 16, 64, 70, 1}, {1, 130, 9, 3, 0}};
    for (int ci = 0; ci < 5; ci++) {
        int64_t A = cases[ci][0], Bn = cases[ci][1], K = cases[ci][2], N = cases[ci][3], M = A * Bn;
        bool xg = ci != 2; /* an input without gradient: the op keeps only what dw needs */
        td_tensor *w = trand(2, T4(N, K, 0, 0), true), *b = cases[ci][4] ? trand(1, &N, true) : NULL;
        float *y = ZALLOC(M * N), *dx = ZALLOC(M * K), *dw = ZALLOC(N * K), *db = ZALLOC(N), *sw = ZALLOC(N * K), *sb = ZALLOC(N);
        double e = 0;
        for (int step = 0; step < 2; step++) {
            td_tensor *x = trand(3, T4(A, Bn, K, 0), xg), *yk = td_linear(x, w, b), *R = backprop(yk);
            td_linear_ref(td_f32(x), td_f32(w), b ? td_f32(b) : NULL, M, K, N, td_f32(R), y, dx, dw, db);
            for (int64_t i = 0; i < N * K; i++) sw[i] += dw[i];
            for (int64_t i = 0; i < N; i++) sb[i] += db[i];
            e = WORST(e, terr(yk, y), xg ? terr(x->grad, dx) : 0);
            td_release(x); td_release(yk); td_release(R);
        }
        e = WORST(e, terr(w->grad, sw), b ? terr(b->grad, sb) : 0);
        CHECK(e < 1e-5, "linear x (%lld,%lld,%lld) w (%lld,%lld)%s%s, two steps: %.1e", (long long)A, (long long)Bn,
              (long long)K, (long long)N, (long long)K, b ? " bias" : "", xg ? "" : ", x without gradient", e);
        free(y); free(dx); free(dw); free(db); free(sw); free(sb);
        td_release(w); td_release(b);
    }
}

/* masks: 0 none; 1 additive (Tq,Tk), one masked key per batch; 2 causal int64 (Tq,Tk); 3 float
 * (H,1,Tk) read as boolean, additive key padding; 4 additive of the scores' shape with -inf
 * entries, int64 key padding masking every key of batch 0 (rows with no key left). H 0: q (B,T,D). */
typedef struct {
    int64_t B, H, Tq, Tk, D, Dv;
    int masks;
    bool cf;
    double scale;
} attn_case;

/* (B[,H],T,C), or (B[,H],C,T) channels first; returns the number of dims */
static int attn_shape(int64_t *s, const attn_case *c, int64_t T, int64_t C) {
    int n = 0;
    s[n++] = c->B;
    if (c->H) s[n++] = c->H;
    s[n++] = c->cf ? C : T;
    s[n++] = c->cf ? T : C;
    return n;
}

static void attention_case(attn_case c, int path, bool both) {
    int64_t sq[4], sk[4], sv[4], full[4], H = c.H ? c.H : 1, BH = c.B * H;
    int nd = attn_shape(sq, &c, c.Tq, c.D);
    attn_shape(sk, &c, c.Tk, c.D);
    attn_shape(sv, &c, c.Tk, c.Dv);
    memcpy(full, sq, sizeof full);
    full[nd - 2] = c.Tq, full[nd - 1] = c.Tk;
    td_tensor *q = trand(nd, sq, true), *k = trand(nd, sk, true), *v = trand(nd, sv, true), *am = NULL, *kpm = NULL;
    if (c.masks == 1 || c.masks == 2) am = c.masks == 1 ? trand(2, T4(c.Tq, c.Tk, 0, 0), false) : td_zeros(TD_I64, 2, T4(c.Tq, c.Tk, 0, 0));
    if (c.masks == 3) am = trand(3, T4(H, 1, c.Tk, 0), false);
    if (c.masks == 4) am = trand(nd, full, false);
    for (int64_t i = 0; am && i < td_numel(am); i++) {
        if (c.masks == 2) td_i64(am)[i] = i % c.Tk > i / c.Tk; /* key j after query i */
        if (c.masks == 3) td_f32(am)[i] = urand() < 0.3;
        if (c.masks == 4 && urand() < 0.2) td_f32(am)[i] = -INFINITY;
    }
    if (c.masks == 1 || c.masks == 3) kpm = c.masks == 1 ? td_zeros(TD_F32, 2, T4(c.B, c.Tk, 0, 0)) : trand(2, T4(c.B, c.Tk, 0, 0), false);
    if (c.masks == 4) kpm = td_zeros(TD_I64, 2, T4(c.B, c.Tk, 0, 0));
    for (int64_t i = 0; c.masks == 1 && i < c.B; i++) td_f32(kpm)[i * c.Tk + irand(0, (int)c.Tk - 1)] = 1;
    for (int64_t j = 0; c.masks == 4 && j < c.Tk; j++) td_i64(kpm)[j] = 1;
    td_sdpa_opts o = {am, c.masks == 3, kpm, c.masks == 3, c.scale, c.cf};
    td_attention_path = path;
    td_tensor *w = NULL, *y = td_sdpa(q, k, v, &o, &w);
    td_attention_path = 0;
    /* loss = sum(y R1) (+ sum(w R2)) */
    td_tensor *R1 = trand(nd, y->shape, false), *R2 = both ? trand(nd, full, false) : NULL;
    td_tensor *p1 = td_binary(TD_MUL, y, R1), *s1 = td_sum(p1, 0, false), *p2 = both ? td_binary(TD_MUL, w, R2) : NULL;
    td_tensor *s2 = both ? td_sum(p2, 0, false) : NULL, *s = both ? td_binary(TD_ADD, s1, s2) : (td_retain(s1), s1);
    td_backward(s, NULL, false);
    /* the reference reads the masks expanded, as float32 */
    td_tensor *amf = am ? td_to_dtype(am, TD_F32) : NULL, *amx = amf ? td_expand(amf, nd, full) : NULL;
    td_tensor *amc = amx ? td_contiguous(amx) : NULL, *kpf = kpm ? td_to_dtype(kpm, TD_F32) : NULL;
    td_sdpa_geom g = {BH, c.Tq, c.Tk, c.D, c.Dv, isnan(c.scale) ? 1 / sqrt((double)c.D) : c.scale, c.cf,
                      amc ? td_f32(amc) : NULL, c.masks == 2 || c.masks == 3, kpf ? td_f32(kpf) : NULL, H, c.masks == 3};
    float *yr = ZALLOC(td_numel(y)), *wr = ZALLOC(td_numel(w)), *dq = ZALLOC(td_numel(q)), *dk = ZALLOC(td_numel(k));
    float *dv = ZALLOC(td_numel(v));
    td_sdpa_ref(&g, td_f32(q), td_f32(k), td_f32(v), td_f32(R1), both ? td_f32(R2) : NULL, yr, wr, dq, dk, dv);
    double e[5] = {terr(y, yr), terr(w, wr), terr(q->grad, dq), terr(k->grad, dk), terr(v->grad, dv)};
    CHECK(WORST(e[0], e[1], e[2], e[3], e[4]) < 1e-5,
          "attention path %d q (%lld,%lld,%lld|%lld,%lld|%lld) masks %d%s%s: out %.1e w %.1e dq %.1e dk %.1e dv %.1e", path,
          (long long)c.B, (long long)c.H, (long long)c.Tq, (long long)c.Tk, (long long)c.D, (long long)c.Dv, c.masks,
          c.cf ? " channels first" : "", both ? ", loss on the weights too" : "", e[0], e[1], e[2], e[3], e[4]);
    free(yr); free(wr); free(dq); free(dk); free(dv);
    td_tensor *rel[] = {q, k, v, am, kpm, w, y, R1, R2, p1, s1, p2, s2, s, amf, amx, amc, kpf};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) td_release(rel[i]);
}

/* each path (automatic, vector loops, GEMMs) on odd sizes, every mask, channels first */
static void test_attention(void) {
    const attn_case cases[] = {
        {1, 1, 1, 1, 1, 1, 0, false, NAN},      {2, 3, 4, 5, 3, 3, 1, false, 0.5},      {3, 2, 9, 12, 20, 17, 2, false, NAN},
        {2, 2, 7, 7, 8, 8, 3, false, NAN},      {2, 2, 6, 9, 5, 4, 4, false, NAN},      {3, 0, 11, 13, 6, 5, 1, false, NAN},
        {2, 2, 5, 7, 6, 4, 1, true, 0.3},       {2, 3, 9, 11, 3, 5, 4, true, NAN},      {3, 1, 37, 40, 8, 6, 2, true, NAN},
        {1, 2, 80, 70, 8, 6, 1, false, NAN},    {2, 1, 256, 256, 32, 32, 0, true, NAN}, /* the score network's spatial attention */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
        for (int path = 0; path <= 2; path++) attention_case(cases[ci], path, (ci + (size_t)path) % 2 == 0);
}

/* two steps of a sequence: the second step's weight gradients are added into the first's */
static void test_gru(void) {
    const int64_t cases[][4] = {{1, 1, 1, 1}, {5, 7, 19, 1}, {3, 8, 16, 1}, {2, 4, 3, 0}, {64, 9, 256, 1}}; /* B I Hd bias */
    for (int ci = 0; ci < 5; ci++) {
        int64_t B = cases[ci][0], I = cases[ci][1], Hd = cases[ci][2], H3 = 3 * Hd;
        bool bias = cases[ci][3];
        td_tensor *x1 = trand(2, T4(B, I, 0, 0), true), *x2 = trand(2, T4(B, I, 0, 0), true), *h = trand(2, T4(B, Hd, 0, 0), true);
        td_tensor *wi = trand(2, T4(H3, I, 0, 0), true), *wh = trand(2, T4(H3, Hd, 0, 0), true);
        td_tensor *bi = bias ? trand(1, &H3, true) : NULL, *bh = bias ? trand(1, &H3, true) : NULL;
        for (int64_t i = 0; i < H3 * Hd; i++) td_f32(wh)[i] /= sqrtf((float)Hd); /* PyTorch's scale: gates of order 1 */
        td_tensor *y1 = td_gru_cell(x1, h, wi, wh, bi, bh), *y2 = td_gru_cell(x2, y1, wi, wh, bi, bh), *R = backprop(y2);
        const float *Wi = td_f32(wi), *Wh = td_f32(wh), *Bi = bias ? td_f32(bi) : NULL, *Bh = bias ? td_f32(bh) : NULL;
        float *y1r = ZALLOC(B * Hd), *y2r = ZALLOC(B * Hd), *dx1 = ZALLOC(B * I), *dx2 = ZALLOC(B * I), *dh1 = ZALLOC(B * Hd);
        float *dh = ZALLOC(B * Hd), *dwi[2], *dwh[2], *dbi[2], *dbh[2];
        for (int s = 0; s < 2; s++) dwi[s] = ZALLOC(H3 * I), dwh[s] = ZALLOC(H3 * Hd), dbi[s] = ZALLOC(H3), dbh[s] = ZALLOC(H3);
        td_gru_cell_ref(td_f32(x1), td_f32(h), Wi, Wh, Bi, Bh, B, I, Hd, NULL, y1r, NULL, NULL, NULL, NULL, NULL, NULL);
        td_gru_cell_ref(td_f32(x2), y1r, Wi, Wh, Bi, Bh, B, I, Hd, td_f32(R), y2r, dx2, dh1, dwi[1], dwh[1], dbi[1], dbh[1]);
        td_gru_cell_ref(td_f32(x1), td_f32(h), Wi, Wh, Bi, Bh, B, I, Hd, dh1, y1r, dx1, dh, dwi[0], dwh[0], dbi[0], dbh[0]);
        for (int64_t i = 0; i < H3 * Hd; i++) dwh[0][i] += dwh[1][i];
        for (int64_t i = 0; i < H3 * I; i++) dwi[0][i] += dwi[1][i];
        for (int64_t i = 0; i < H3; i++) dbi[0][i] += dbi[1][i], dbh[0][i] += dbh[1][i];
        double e[8] = {terr(y2, y2r), terr(x1->grad, dx1), terr(x2->grad, dx2), terr(h->grad, dh), terr(wi->grad, dwi[0]),
                       terr(wh->grad, dwh[0]), bias ? terr(bi->grad, dbi[0]) : 0, bias ? terr(bh->grad, dbh[0]) : 0};
        CHECK(WORST(e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]) < 1e-5,
              "gru_cell B%lld I%lld H%lld%s, two steps: y %.1e dx1 %.1e dx2 %.1e dh %.1e dWi %.1e dWh %.1e dbi %.1e dbh %.1e",
              (long long)B, (long long)I, (long long)Hd, bias ? "" : " no biases", e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]);
        free(y1r); free(y2r); free(dx1); free(dx2); free(dh1); free(dh);
        for (int s = 0; s < 2; s++) free(dwi[s]), free(dwh[s]), free(dbi[s]), free(dbh[s]);
        td_tensor *rel[] = {x1, x2, h, wi, wh, bi, bh, y1, y2, R};
        for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) td_release(rel[i]);
    }
}

/* ---- losses: every reduction, odd and spatial shapes, sizes past the parallel threshold ------------------------------ */
static const char *const red_names[] = {"none", "mean", "sum"};

static void ce_case(int nd, const int64_t *shape, bool nll, td_reduction red) {
    int64_t N = shape[0], C = shape[1], S = 1, ls[TD_MAX_DIMS] = {N};
    for (int i = 2; i < nd; i++) S *= ls[i - 1] = shape[i];
    td_tensor *x = trand(nd, shape, true), *lab = td_empty(TD_I64, nd - 1, ls);
    for (int64_t i = 0; i < N * S; i++) td_i64(lab)[i] = irand(0, (int)C - 1);
    td_tensor *y = nll ? td_nll_loss(x, lab, red) : td_cross_entropy(x, lab, red), *R = backprop(y);
    float *loss = ZALLOC(N * S), *dx = ZALLOC(td_numel(x));
    td_cross_entropy_ref(td_f32(x), td_i64(lab), N, C, S, nll, red, td_f32(R), loss, dx);
    double e1 = terr(y, loss), e2 = terr(x->grad, dx);
    CHECK(e1 < 1e-6 && e2 < 1e-6, "%s (%lld,%lld) x %lld positions, %s: loss %.1e grad %.1e", nll ? "nll_loss" : "cross_entropy",
          (long long)N, (long long)C, (long long)S, red_names[red], e1, e2);
    free(loss); free(dx);
    td_release(x); td_release(lab); td_release(y); td_release(R);
}

/* kind 'b' bce_with_logits (P values of pos_weight, 0: none), 'm' mse_loss, 'l' l1_loss, 'k' gaussian_kl;
 * both inputs need gradients */
static void pair_case(char kind, int nd, const int64_t *shape, int64_t P, td_reduction red) {
    td_tensor *a = trand(nd, shape, true), *b = trand(nd, shape, kind != 'b'), *pw = P ? trand(1, &P, false) : NULL;
    int64_t n = td_numel(a), D = shape[nd - 1];
    if (kind == 'b') { /* targets in [0, 1], positive weights */
        for (int64_t i = 0; i < n; i++) td_f32(b)[i] = (float)urand();
        for (int64_t i = 0; i < P; i++) td_f32(pw)[i] = (float)(0.1 + 3 * urand());
        td_set_requires_grad(b, true);
    }
    td_tensor *y = kind == 'b' ? td_bce_with_logits(a, b, pw, red) : kind == 'm' ? td_mse_loss(a, b, red)
                   : kind == 'l' ? td_l1_loss(a, b, red) : td_gaussian_kl(a, b, red);
    td_tensor *R = backprop(y);
    float *loss = ZALLOC(n), *da = ZALLOC(n), *db = ZALLOC(n);
    const float *A = td_f32(a), *Bv = td_f32(b), *dy = td_f32(R);
    if (kind == 'b') td_bce_with_logits_ref(A, Bv, n, pw ? td_f32(pw) : NULL, P, red, dy, loss, da, db);
    if (kind == 'm') td_mse_loss_ref(A, Bv, n, red, dy, loss, da, db);
    if (kind == 'l') td_l1_loss_ref(A, Bv, n, red, dy, loss, da, db);
    if (kind == 'k') td_gaussian_kl_ref(A, Bv, n / D, D, red, dy, loss, da, db);
    double e[3] = {terr(y, loss), terr(a->grad, da), terr(b->grad, db)};
    const char *name = kind == 'b' ? "bce_with_logits" : kind == 'm' ? "mse_loss" : kind == 'l' ? "l1_loss" : "gaussian_kl";
    CHECK(WORST(e[0], e[1], e[2]) < 1e-5, "%s %lld elements (last dim %lld), pos_weight of %lld, %s: loss %.1e grads %.1e %.1e",
          name, (long long)n, (long long)D, (long long)P, red_names[red], e[0], e[1], e[2]);
    free(loss); free(da); free(db);
    td_release(a); td_release(b); td_release(pw); td_release(y); td_release(R);
}

static void test_losses(void) {
    const int64_t big = 100000;
    for (int r = 0; r <= 2; r++) {
        td_reduction red = (td_reduction)r;
        for (int nll = 0; nll <= 1; nll++) {
            ce_case(2, T4(9, 7, 0, 0), nll, red);
            ce_case(2, T4(1, 1, 0, 0), nll, red);
            ce_case(4, T4(4, 5, 3, 2), nll, red);
            ce_case(3, T4(3, 11, 1, 0), nll, red);
            ce_case(2, T4(300, 300, 0, 0), nll, red); /* the parallel path */
        }
        pair_case('b', 2, T4(5, 3, 0, 0), 0, red);
        pair_case('b', 2, T4(5, 3, 0, 0), 1, red);
        pair_case('b', 3, T4(4, 2, 3, 0), 3, red);
        for (const char *kd = "bmlk"; *kd; kd++) {
            pair_case(*kd, 1, T4(37, 0, 0, 0), 0, red);
            pair_case(*kd, 3, T4(2, 3, 5, 0), 0, red);
            pair_case(*kd, 1, &big, 0, red);
        }
        pair_case('k', 2, T4(200, 400, 0, 0), 0, red); /* the parallel path */
    }
    int64_t N = 9, C = 7;
    td_tensor *x = trand(2, T4(N, C, 0, 0), false), *lab = td_zeros(TD_I64, 1, &N);
    td_i64(lab)[4] = C;
    td_tensor *bad = td_cross_entropy(x, lab, TD_REDUCE_MEAN);
    CHECK(bad == NULL && strstr(td_last_error(), "label 7 at position 5"), "label out of range named: %s", td_last_error());
    td_release(x); td_release(lab);
}

int main(void) {
    td_set_num_threads(2);
    test_conv_kernels();
    test_conv_ops();
    test_pool_upsample();
    test_norms();
    test_vector_exp();
    test_attention();
    test_norm_grad_into_holder();
    test_gn_silu_dropout();
    test_conv_bias_per_image();
    test_linear();
    test_gru();
    test_losses();
    return check_failures ? 1 : 0;
}
