/* Fused NN kernels against their plain references: convolutions (both layouts, strides, padding,
 * dilation, odd sizes), pooling, upsampling, norms, attention, the GRU cell and the losses, on
 * random shapes; plus the tensor-level ops' autograd wiring (gradients equal the reference
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

/* a contiguous copy of t with dims 2 and 3 swapped, outside the graph */
static td_tensor *swap23(td_tensor *t) {
    bool prev = td_set_grad_enabled(false);
    td_tensor *tr = td_transpose(t, 2, 3), *c = td_clone(tr);
    td_release(tr);
    td_set_grad_enabled(prev);
    return c;
}

/* channels first (q (B,H,D,Tq), ...) against the row-major op on transposed copies: the
 * short-sequence fallback (path 1), the transposed GEMMs (path 2, and the automatic choice at
 * the score network's 256 positions), masks, out, weights and every gradient */
static void test_attention_channels_first(void) {
    const int64_t cases[][6] = {{2, 2, 5, 7, 6, 4}, {1, 3, 9, 11, 3, 5}, {3, 1, 37, 40, 8, 6}, {2, 1, 256, 256, 32, 32}};
    for (int ci = 0; ci < 4; ci++)
        for (int path = 1; path <= 2; path++) {
            int64_t B = cases[ci][0], H = cases[ci][1], Tq = cases[ci][2], Tk = cases[ci][3], D = cases[ci][4], Dv = cases[ci][5];
            if (ci == 3 && path == 1) continue; /* the automatic choice runs below instead */
            td_tensor *q = trand(4, T4(B, H, D, Tq), true), *k = trand(4, T4(B, H, D, Tk), true), *v = trand(4, T4(B, H, Dv, Tk), true);
            td_tensor *am = trand(2, T4(Tq, Tk, 0, 0), false), *kpm = td_zeros(TD_F32, 2, T4(B, Tk, 0, 0));
            for (int64_t i = 0; i < B; i++) td_f32(kpm)[i * Tk + irand(0, (int)Tk - 1)] = 1;
            td_sdpa_opts o = {ci == 3 ? NULL : am, false, ci == 3 ? NULL : kpm, false, 0.3, true};
            td_attention_path = ci == 3 ? 0 : path;
            td_tensor *wts = NULL, *y = td_sdpa(q, k, v, &o, &wts);
            td_attention_path = 0;
            bool shaped = y && y->ndim == 4 && y->shape[2] == Dv && y->shape[3] == Tq && td_is_contiguous(y);
            td_tensor *R = backprop(y);
            /* the reference: the same inputs as (T, D) rows, out compared as (Dv, Tq) */
            td_tensor *qr = swap23(q), *kr = swap23(k), *vr = swap23(v), *Rt = swap23(R);
            td_set_requires_grad(qr, true), td_set_requires_grad(kr, true), td_set_requires_grad(vr, true);
            o.channels_first = false;
            td_tensor *w2 = NULL, *y2 = td_sdpa(qr, kr, vr, &o, &w2);
            td_tensor *p2 = td_binary(TD_MUL, y2, Rt), *s2 = td_sum(p2, 0, false);
            td_backward(s2, NULL, false);
            td_tensor *yt = swap23(y2), *gq = swap23(qr->grad), *gk = swap23(kr->grad), *gv = swap23(vr->grad);
            double e[5] = {terr(y, td_f32(yt)), terr(wts, td_f32(w2)), terr(q->grad, td_f32(gq)), terr(k->grad, td_f32(gk)),
                           terr(v->grad, td_f32(gv))};
            CHECK(shaped && e[0] < 1e-5 && e[1] < 1e-5 && e[2] < 1e-5 && e[3] < 1e-5 && e[4] < 1e-5,
                  "attention channels first %s (%lld,%lld,%lld|%lld,%lld|%lld)%s: out %.1e w %.1e dq %.1e dk %.1e dv %.1e",
                  ci == 3 ? "auto" : path == 1 ? "short" : "gemm", (long long)B, (long long)H, (long long)Tq, (long long)Tk,
                  (long long)D, (long long)Dv, ci == 3 ? "" : " masks", e[0], e[1], e[2], e[3], e[4]);
            td_tensor *rel[] = {q, k, v, am, kpm, y, wts, R, qr, kr, vr, Rt, w2, y2, p2, s2, yt, gq, gk, gv};
            for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) td_release(rel[i]);
        }
}

/* ---- attention against double-precision loops, both paths ------------------------------------------------------- */
static void test_attention(void) {
    for (int path = 1; path <= 2; path++)
        for (int t = 0; t < 3; t++) {
            int64_t B = irand(1, 3), H = irand(1, 3), Tq = irand(1, 9), Tk = irand(2, 12), D = irand(1, 20), Dv = irand(1, 17);
            td_tensor *q = trand(4, T4(B, H, Tq, D), true), *k = trand(4, T4(B, H, Tk, D), true), *v = trand(4, T4(B, H, Tk, Dv), true);
            td_tensor *am = trand(2, T4(Tq, Tk, 0, 0), false), *kpm = td_zeros(TD_F32, 2, T4(B, Tk, 0, 0));
            for (int64_t i = 0; i < B; i++) td_f32(kpm)[i * Tk + irand(0, (int)Tk - 1)] = 1; /* one masked key per batch */
            td_sdpa_opts o = {am, false, kpm, false, NAN, false};
            td_attention_path = path;
            td_tensor *wts = NULL, *y = td_sdpa(q, k, v, &o, &wts);
            td_attention_path = 0;
            td_tensor *R = backprop(y);
            int64_t BH = B * H;
            float *yr = calloc(BH * Tq * Dv, 4), *wr = calloc(BH * Tq * Tk, 4), *dq = calloc(BH * Tq * D, 4);
            float *dk = calloc(BH * Tk * D, 4), *dv = calloc(BH * Tk * Dv, 4);
            double sc = 1 / sqrt((double)D);
            const float *Q = td_f32(q), *K = td_f32(k), *V = td_f32(v), *G = td_f32(R);
            for (int64_t bh = 0; bh < BH; bh++)
                for (int64_t i = 0; i < Tq; i++) {
                    double s[16], p[16], mx = -INFINITY, sum = 0, dp[16], dot = 0;
                    for (int64_t j = 0; j < Tk; j++) {
                        double a = 0;
                        for (int64_t d = 0; d < D; d++) a += (double)Q[(bh * Tq + i) * D + d] * K[(bh * Tk + j) * D + d];
                        s[j] = td_f32(kpm)[(bh / H) * Tk + j] != 0 ? -INFINITY : a * sc + td_f32(am)[i * Tk + j];
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int64_t j = 0; j < Tk; j++) sum += (p[j] = exp(s[j] - mx));
                    for (int64_t j = 0; j < Tk; j++) {
                        p[j] /= sum;
                        wr[(bh * Tq + i) * Tk + j] = (float)p[j];
                        double gp = 0;
                        for (int64_t d = 0; d < Dv; d++) {
                            yr[(bh * Tq + i) * Dv + d] += (float)(p[j] * V[(bh * Tk + j) * Dv + d]);
                            dv[(bh * Tk + j) * Dv + d] += (float)(p[j] * G[(bh * Tq + i) * Dv + d]);
                            gp += (double)G[(bh * Tq + i) * Dv + d] * V[(bh * Tk + j) * Dv + d];
                        }
                        dp[j] = gp;
                        dot += gp * p[j];
                    }
                    for (int64_t j = 0; j < Tk; j++) {
                        double ds = p[j] * (dp[j] - dot) * sc;
                        for (int64_t d = 0; d < D; d++) {
                            dq[(bh * Tq + i) * D + d] += (float)(ds * K[(bh * Tk + j) * D + d]);
                            dk[(bh * Tk + j) * D + d] += (float)(ds * Q[(bh * Tq + i) * D + d]);
                        }
                    }
                }
            double e[5] = {terr(y, yr), terr(wts, wr), terr(q->grad, dq), terr(k->grad, dk), terr(v->grad, dv)};
            CHECK(e[0] < 1e-5 && e[1] < 1e-5 && e[2] < 1e-5 && e[3] < 1e-5 && e[4] < 1e-5,
                  "attention %s (%lld,%lld,%lld|%lld,%lld|%lld) masks: out %.1e w %.1e dq %.1e dk %.1e dv %.1e",
                  path == 1 ? "loops" : "gemm", (long long)B, (long long)H, (long long)Tq, (long long)Tk, (long long)D,
                  (long long)Dv, e[0], e[1], e[2], e[3], e[4]);
            free(yr); free(wr); free(dq); free(dk); free(dv);
            td_release(R); td_release(y); td_release(wts); td_release(q); td_release(k); td_release(v);
            td_release(am); td_release(kpm);
        }
}

/* ---- GRU cell against double-precision loops ------------------------------------------------------------------------- */
static void test_gru(void) {
    int64_t B = 5, I = 7, Hd = 19, H3 = 57;
    td_tensor *x = trand(2, T4(B, I, 0, 0), true), *h = trand(2, T4(B, Hd, 0, 0), true);
    td_tensor *wi = trand(2, T4(H3, I, 0, 0), true), *wh = trand(2, T4(H3, Hd, 0, 0), true);
    td_tensor *bi = trand(1, T4(H3, 0, 0, 0), true), *bh = trand(1, T4(H3, 0, 0, 0), true);
    td_tensor *y = td_gru_cell(x, h, wi, wh, bi, bh), *R = backprop(y);
    const float *X = td_f32(x), *Hp = td_f32(h), *Wi = td_f32(wi), *Wh = td_f32(wh), *Bi = td_f32(bi), *Bh = td_f32(bh), *G = td_f32(R);
    float *yr = malloc(4 * B * Hd), *dx = calloc(B * I, 4), *dh = calloc(B * Hd, 4), *dwi = calloc(H3 * I, 4), *dwh = calloc(H3 * Hd, 4);
    float *dbi = calloc(H3, 4), *dbh = calloc(H3, 4);
    for (int64_t b = 0; b < B; b++) {
        double gi[57], gh[57], dgi[57], dgh[57];
        for (int64_t r = 0; r < H3; r++) {
            gi[r] = Bi[r];
            gh[r] = Bh[r];
            for (int64_t i = 0; i < I; i++) gi[r] += (double)Wi[r * I + i] * X[b * I + i];
            for (int64_t i = 0; i < Hd; i++) gh[r] += (double)Wh[r * Hd + i] * Hp[b * Hd + i];
        }
        for (int64_t j = 0; j < Hd; j++) {
            double r = 1 / (1 + exp(-(gi[j] + gh[j]))), z = 1 / (1 + exp(-(gi[Hd + j] + gh[Hd + j])));
            double n = tanh(gi[2 * Hd + j] + r * gh[2 * Hd + j]), hp = Hp[b * Hd + j], g = G[b * Hd + j];
            yr[b * Hd + j] = (float)((1 - z) * n + z * hp);
            double dn = g * (1 - z) * (1 - n * n), dz = g * (hp - n) * z * (1 - z), dr = dn * gh[2 * Hd + j] * r * (1 - r);
            dgi[j] = dgh[j] = dr;
            dgi[Hd + j] = dgh[Hd + j] = dz;
            dgi[2 * Hd + j] = dn;
            dgh[2 * Hd + j] = dn * r;
            dh[b * Hd + j] += (float)(g * z);
        }
        for (int64_t r = 0; r < H3; r++) {
            dbi[r] += (float)dgi[r];
            dbh[r] += (float)dgh[r];
            for (int64_t i = 0; i < I; i++) {
                dx[b * I + i] += (float)(dgi[r] * Wi[r * I + i]);
                dwi[r * I + i] += (float)(dgi[r] * X[b * I + i]);
            }
            for (int64_t i = 0; i < Hd; i++) {
                dh[b * Hd + i] += (float)(dgh[r] * Wh[r * Hd + i]);
                dwh[r * Hd + i] += (float)(dgh[r] * Hp[b * Hd + i]);
            }
        }
    }
    double e[7] = {terr(y, yr), terr(x->grad, dx), terr(h->grad, dh), terr(wi->grad, dwi), terr(wh->grad, dwh),
                   terr(bi->grad, dbi), terr(bh->grad, dbh)};
    double m = 0;
    for (int i = 0; i < 7; i++) m = e[i] > m ? e[i] : m;
    CHECK(m < 1e-5, "gru_cell (B5, I7, H19, tails past the vector width): y %.1e dx %.1e dh %.1e dWi %.1e dWh %.1e dbi %.1e dbh %.1e",
          e[0], e[1], e[2], e[3], e[4], e[5], e[6]);
    free(yr); free(dx); free(dh); free(dwi); free(dwh); free(dbi); free(dbh);
    td_release(R); td_release(y); td_release(x); td_release(h); td_release(wi); td_release(wh); td_release(bi); td_release(bh);
}

/* ---- losses against double-precision loops --------------------------------------------------------------------------- */
static void test_losses(void) {
    int64_t N = 9, C = 7;
    td_tensor *x = trand(2, T4(N, C, 0, 0), true), *lab = td_empty(TD_I64, 1, &N);
    for (int64_t i = 0; i < N; i++) td_i64(lab)[i] = irand(0, (int)C - 1);
    for (int red = 0; red <= 2; red++) {
        td_zero_grad(x);
        td_tensor *y = td_cross_entropy(x, lab, (td_reduction)red), *R = backprop(y);
        float *yr = malloc(4 * N), *dx = malloc(4 * N * C);
        double tot = 0;
        for (int64_t i = 0; i < N; i++) {
            double m = -INFINITY, s = 0;
            for (int64_t j = 0; j < C; j++) m = fmax(m, td_f32(x)[i * C + j]);
            for (int64_t j = 0; j < C; j++) s += exp(td_f32(x)[i * C + j] - m);
            double l = log(s) + m - td_f32(x)[i * C + td_i64(lab)[i]];
            yr[i] = (float)l;
            tot += l;
            double gw = red == 0 ? td_f32(R)[i] : red == 1 ? td_f32(R)[0] / N : td_f32(R)[0];
            for (int64_t j = 0; j < C; j++)
                dx[i * C + j] = (float)(gw * (exp(td_f32(x)[i * C + j] - m) / s - (j == td_i64(lab)[i])));
        }
        if (red) yr[0] = (float)(red == 1 ? tot / N : tot);
        double e1 = relerr(td_f32(y), yr, red ? 1 : N), e2 = terr(x->grad, dx);
        CHECK(e1 < 1e-6 && e2 < 1e-6, "cross_entropy reduction %d: loss %.1e grad %.1e", red, e1, e2);
        free(yr); free(dx);
        td_release(R); td_release(y);
    }
    td_i64(lab)[4] = C;
    td_tensor *bad = td_cross_entropy(x, lab, TD_REDUCE_MEAN);
    CHECK(bad == NULL && strstr(td_last_error(), "label 7 at position 5"), "label out of range named: %s", td_last_error());
    td_release(x); td_release(lab);

    /* the pair losses and the KL on large inputs (parallel paths) */
    int64_t n = 100000;
    td_tensor *a = trand(1, &n, true), *b = trand(1, &n, true);
    for (int kind = 0; kind < 3; kind++) {
        td_zero_grad(a);
        td_zero_grad(b);
        td_tensor *y = kind == 0 ? td_bce_with_logits(a, b, NULL, TD_REDUCE_SUM) : kind == 1 ? td_mse_loss(a, b, TD_REDUCE_SUM) : td_l1_loss(a, b, TD_REDUCE_SUM);
        td_tensor *R = backprop(y);
        double s = 0, r = td_f32(R)[0], ea = 0;
        for (int64_t i = 0; i < n; i++) {
            double u = td_f32(a)[i], v = td_f32(b)[i], ga;
            if (kind == 0) {
                s += fmax(u, 0) - u * v + log1p(exp(-fabs(u)));
                ga = 1 / (1 + exp(-u)) - v;
            } else if (kind == 1) {
                s += (u - v) * (u - v);
                ga = 2 * (u - v);
            } else {
                s += fabs(u - v);
                ga = u > v ? 1 : u < v ? -1 : 0;
            }
            ea = fmax(ea, fabs(td_f32(a->grad)[i] - r * ga));
        }
        double el = fabs(td_f32(y)[0] - s) / (1 + fabs(s));
        CHECK(el < 1e-5 && ea < 1e-5, "%s sum over 1e5: loss %.1e grad %.1e", kind == 0 ? "bce_with_logits" : kind == 1 ? "mse_loss" : "l1_loss", el, ea);
        td_release(R); td_release(y);
    }
    td_release(a); td_release(b);
    td_tensor *mu = trand(2, T4(6, 5, 0, 0), true), *lv = trand(2, T4(6, 5, 0, 0), true);
    td_tensor *y = td_gaussian_kl(mu, lv, TD_REDUCE_NONE), *R = backprop(y);
    double e = 0, eg = 0;
    for (int64_t i = 0; i < 6; i++) {
        double s = 0;
        for (int64_t j = 0; j < 5; j++) {
            double m = td_f32(mu)[i * 5 + j], l = td_f32(lv)[i * 5 + j];
            s += 1 + l - m * m - exp(l);
            eg = fmax(eg, fabs(td_f32(mu->grad)[i * 5 + j] - td_f32(R)[i] * m));
            eg = fmax(eg, fabs(td_f32(lv->grad)[i * 5 + j] - td_f32(R)[i] * 0.5 * (exp(l) - 1)));
        }
        e = fmax(e, fabs(td_f32(y)[i] + 0.5 * s));
    }
    CHECK(y->ndim == 1 && y->shape[0] == 6 && e < 1e-5 && eg < 1e-5, "gaussian_kl per sample: %.1e, grads %.1e", e, eg);
    td_release(R); td_release(y); td_release(mu); td_release(lv);
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
    test_attention_channels_first();
    test_gru();
    test_losses();
    return check_failures ? 1 : 0;
}
