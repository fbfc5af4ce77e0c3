/* Winograd F(2x2, 3x3) for 3x3 convolutions of stride and dilation 1 (Lavin and Gray, 2016):
 * every 2x2 block ("tile") of outputs comes from a 4x4 patch of the padded input as
 *     Y = A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A,
 * 16 multiplies per tile and channel pair instead of 36: 2.25x fewer than the direct products,
 * which is what the models' 3x3 layers (most of a training step) spend their time on. The
 * transforms only add, subtract and halve, so the result is as accurate as the direct sum.
 *
 * The batch's tiles are numbered t = (n * th + ty) * tw + tx and go in blocks of NB (plan), each
 * through three steps while its operands stay in L2:
 *   1. input transform  V[xi][c][t], xi = 4 i + s < 16: from the padded rows split by the parity
 *      of their rows and columns (fill_planes), so that a vector of tiles is 16 loads however
 *      short the tile rows;
 *   2. 16 products      M[xi][o][t] = sum_c U[xi][o][c] V[xi][c][t] on conv.c's micro-kernel
 *      (U: the transformed weight, packed in its panels; the tiles are its pixel dimension);
 *   3. output transform Y from M[.][o][t], the two output columns of a tile interleaved back.
 * Used for the forward (x -> y), the gradient of the input (dy -> dx, the same product with the
 * flipped, transposed weight) and the gradient of the weight (td_winograd_wgrad: the products
 * reduce over tiles instead). The tests hold all three to td_conv2d_*_ref. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "winograd.h"

/* U = G g G^T for the 3x3 g, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], lane by lane */
static void weight_transform(const vf g[9], vf u[16]) {
    vf t[4][3];
    for (int j = 0; j < 3; j++) {
        vf a = g[j], b = g[3 + j], c = g[6 + j];
        t[0][j] = a;
        t[1][j] = 0.5f * (a + b + c);
        t[2][j] = 0.5f * (a - b + c);
        t[3][j] = c;
    }
    for (int i = 0; i < 4; i++) {
        vf a = t[i][0], b = t[i][1], c = t[i][2];
        u[i * 4 + 0] = a;
        u[i * 4 + 1] = 0.5f * (a + b + c);
        u[i * 4 + 2] = 0.5f * (a - b + c);
        u[i * 4 + 3] = c;
    }
}

/* dw = G^T dU G, the weight gradient of the F(2x2) products dU[16], lane by lane */
static void weight_grad_transform(const vf u[16], vf dw[9]) {
    vf t[3][4]; /* G^T dU, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] */
    for (int b = 0; b < 4; b++) {
        vf u0 = u[b], u1 = u[4 + b], u2 = u[8 + b], u3 = u[12 + b];
        t[0][b] = u0 + 0.5f * u1 + 0.5f * u2;
        t[1][b] = 0.5f * u1 - 0.5f * u2;
        t[2][b] = 0.5f * u1 + 0.5f * u2 + u3;
    }
    for (int i = 0; i < 3; i++) { /* (G^T dU) G */
        dw[i * 3 + 0] = t[i][0] + 0.5f * t[i][1] + 0.5f * t[i][2];
        dw[i * 3 + 1] = 0.5f * t[i][1] - 0.5f * t[i][2];
        dw[i * 3 + 2] = 0.5f * t[i][1] + 0.5f * t[i][2] + t[i][3];
    }
}

/* Up[((xi * nob + ob) * C + c) * MR + r] = U_xi of output o = ob * MR + r, input channel c (zero
 * rows past O), for tiles of m: the rows of output o. One vector is channels c, c + 1 of the
 * micro-tile's MR outputs (VW = 2 MR), contiguous in Up. flip: the product of the input
 * gradient, w being the forward's (C, O, 3, 3) weight read as w2[o][c][i][j] = w[c][o][2 - i][2 - j]. */
_Static_assert(VW == 2 * MR, "a vector of the packed weight is two channels' micro-tile rows");
static void pack_transformed(int64_t m, const float *w, int64_t O, int64_t C, bool flip, int64_t ob, int64_t c, float *Up) {
    int64_t nob = (O + MR - 1) / MR, XI = (m + 2) * (m + 2);
    float gl[9][VW];
    for (int l = 0; l < VW; l++) {
        int64_t o = ob * MR + l % MR, cc = c + l / MR;
        for (int k = 0; k < 9; k++)
            gl[k][l] = o >= O || cc >= C ? 0.0f : flip ? w[(cc * O + o) * 9 + 8 - k] : w[(o * C + cc) * 9 + k];
    }
    vf g[9], u[36];
    for (int k = 0; k < 9; k++) g[k] = vld(gl[k]);
    if (m == 4) td_wino4_weight(g, u);
    else weight_transform(g, u);
    for (int64_t xi = 0; xi < XI; xi++) {
        float *d = Up + ((xi * nob + ob) * C + c) * MR;
        if (c + 1 < C) vst(d, u[xi]);
        else memcpy(d, &u[xi], sizeof(float) * MR); /* the last channel alone */
    }
}

/* The input transform reads, for tile t = ty tw + tx of an image, the padded pixels
 * (2 ty + r, 2 tx + b), r, b < 4. Held as 8 planes P[(r % 2) * 4 + b][rho * tw + tx] = padded(2 rho
 * + r % 2, 2 tx + b), they sit at t and t + tw (r >= 2) of four planes: one vector of tiles is
 * 16 loads whether a tile row is 2 tiles or 40, and rows of 4 or 8 tiles fill the vector's lanes.
 * Fills rows rho = 0 .. rows - 1 of the planes from padded rows 2 ty0 .. 2 (ty0 + rows) - 1 of the
 * channel plane x (H, W). */
static void fill_planes(const wino_t *p, const float *x, int64_t ty0, int64_t rows, float *P) {
    /* the next channel's rows: a block reads a few rows of each of C planes, too short a stream
     * for the hardware prefetcher */
    const float *next = x + p->H * p->W + (2 * ty0 - p->ph) * p->W;
    for (int64_t j = 0; j < 2 * rows * p->W; j += 16) __builtin_prefetch(next + j);
    enum { KMAX = 8 }; /* vectors per row whose masks are kept (tw up to 8 VW) */
    lmask mk[KMAX][4];
    int64_t nk = ceil_div(p->tw, VW);
    for (int64_t i = 0; i < nk && i < KMAX; i++)
        for (int j = 0; j < 4; j++) mk[i][j] = row_mask(p, 2 * i * VW + (j / 2) * 2 + (j % 2) * VW - p->pw);
    for (int64_t R = 2 * ty0; R < 2 * (ty0 + rows); R++) {
        int64_t h = R - p->ph, rho = R / 2 - ty0;
        float *q = P + (R % 2) * 4 * p->ps + rho * p->tw;
        if (h < 0 || h >= p->H) {
            for (int b = 0; b < 4; b++)
                for (int64_t k = 0; k < p->tw; k += VW) vst(q + b * p->ps + k, (vf){0});
            continue;
        }
        const float *xr = x + h * p->W;
        for (int64_t i = 0; i < nk; i++) { /* VW at a time: the spill is the next row's, written next */
            int64_t k = i * VW, s0 = 2 * k - p->pw;
            const lmask *m = i < KMAX ? mk[i] : NULL;
            vf a = load_row(p, xr, s0, m ? m : NULL), b = load_row(p, xr, s0 + VW, m ? m + 1 : NULL);
            vst(q + k, SHUF(a, b, EVEN));
            vst(q + p->ps + k, SHUF(a, b, ODD));
            a = load_row(p, xr, s0 + 2, m ? m + 2 : NULL), b = load_row(p, xr, s0 + 2 + VW, m ? m + 3 : NULL);
            vst(q + 2 * p->ps + k, SHUF(a, b, EVEN));
            vst(q + 3 * p->ps + k, SHUF(a, b, ODD));
        }
    }
}

/* V[xi * vxs + c * Qs + v0 + u] for u < n tiles starting at plane position u0. Writes VW tiles
 * at a time: past n into the next segment (written after this one) or into V's slack. */
static void input_transform(const wino_t *p, const float *P, float *V, int64_t u0, int64_t n, int64_t v0) {
    int64_t cs = p->vxs;
    for (int64_t u = 0; u < n; u += VW) {
        vf h[4][4];
        for (int r = 0; r < 4; r++) {
            const float *q = P + (r % 2) * 4 * p->ps + u0 + u + (r / 2) * p->tw;
            vf e0 = vld(q), d0 = vld(q + p->ps), e1 = vld(q + 2 * p->ps), d1 = vld(q + 3 * p->ps);
            h[r][0] = e0 - e1; /* d B: columns 2tx .. 2tx + 3 are e0, d0, e1, d1 */
            h[r][1] = d0 + e1;
            h[r][2] = e1 - d0;
            h[r][3] = d0 - d1;
        }
        float *v = V + v0 + u;
        for (int s = 0; s < 4; s++) { /* B^T (d B) */
            vst(v + (0 * 4 + s) * cs, h[0][s] - h[2][s]);
            vst(v + (1 * 4 + s) * cs, h[1][s] + h[2][s]);
            vst(v + (2 * 4 + s) * cs, h[2][s] - h[1][s]);
            vst(v + (3 * 4 + s) * cs, h[1][s] - h[3][s]);
        }
    }
}

/* Output channel o of one image, tiles t0 <= t < t1 (image tile numbers), + bias, from
 * M[xi * mxs + m0 + t - t0]. Writes nothing outside those tiles (another thread's). */
static void output_transform(const wino_t *p, const float *M, int64_t m0, int64_t t0, int64_t t1, float bias, float *y) {
    int64_t ms = p->mxs;
    vf b = td_vsplat(bias);
    int64_t ty = t0 / p->tw, tx = t0 - ty * p->tw; /* the next piece's tile, kept without divisions */
    for (int64_t t = t0; t < t1; t += VW) {
        const float *m = M + m0 + t - t0;
        vf s0[4], s1[4];
        for (int i = 0; i < 4; i++) { /* (M A) */
            vf m0v = vld(m + (i * 4 + 0) * ms), m1 = vld(m + (i * 4 + 1) * ms);
            vf m2 = vld(m + (i * 4 + 2) * ms), m3 = vld(m + (i * 4 + 3) * ms);
            s0[i] = m0v + m1 + m2;
            s1[i] = m1 - m2 - m3;
        }
        vf y00 = s0[0] + s0[1] + s0[2] + b, y01 = s1[0] + s1[1] + s1[2] + b; /* A^T: output row 2ty */
        vf y10 = s0[1] - s0[2] - s0[3] + b, y11 = s1[1] - s1[2] - s1[3] + b; /* row 2ty + 1 */
        vf lo0 = SHUF(y00, y01, ILO), hi0 = SHUF(y00, y01, IHI);
        vf lo1 = SHUF(y10, y11, ILO), hi1 = SHUF(y10, y11, IHI);
        /* store_tiles(p, 2, ...) spelled out: through it this forward measured 3% slower (32 -> 32
         * channels on 8x8, one thread); the vector's pieces of tile rows, (ty, tx): a's tile */
        int64_t end = t + VW < t1 ? t + VW : t1;
        for (int64_t a = t; a < end;) {
            int64_t e = a + (p->tw - tx) < end ? a + (p->tw - tx) : end;
            int64_t cols = 2 * (e - a);
            if (cols > p->OW - 2 * tx) cols = p->OW - 2 * tx;
            int l0 = (int)(2 * (a - t));
            float *yr = y + 2 * ty * p->OW + 2 * tx - l0; /* lane l of the sequence goes to yr[l] */
            const vf seq[2][4] = {{lo0, hi0}, {lo1, hi1}};
            store_rows(p, yr, p->OW, 2 * ty + 1 < p->OH ? 2 : 1, seq, 2, l0, l0 + (int)cols);
            tx += e - a;
            if (tx == p->tw) ty++, tx = 0;
            a = e;
        }
    }
}

int td_winograd_tile(int64_t C, int64_t O, int64_t OH, int64_t OW, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                     int64_t dh, int64_t dw, int64_t ph, int64_t pw, bool wgrad) {
    if (td_conv_path == 1 || td_conv_path == 2 || td_conv_path == 4) return 0;
    if (kh != 3 || kw != 3 || sh != 1 || sw != 1 || dh != 1 || dw != 1 || ph < 0 || pw < 0 || ph > 2 || pw > 2)
        return 0;
    if (td_conv_path == 3) return 2;
    if (td_conv_path == 5) return 4;
    /* the products save in proportion to C O per tile, the transforms cost in proportion to
     * C + O: gain = C O / (C + O). The thresholds (conv_kern.h) are the gains from which each
     * tile measured faster than the direct kernels, per layer (bench/README.md, "Winograd
     * thresholds"); F(2x2) on 8x8 and 4x4 images, where F(4x4) has few tiles per image; F(4x4)
     * not at 128 -> 128 channels, where a block's V and M and each thread's weight-gradient
     * sums outgrow L2 (both are kept under 1 MB). */
    double gain = (double)C * (double)O / (double)(C + O);
    /* the direct forward computes outputs in micro-tiles of MR: with fewer (16 -> 3) it wastes
     * the rest, which F(4x4) does not (1.5x there; 3 -> 16 stays direct, 0.75x) */
    double gain_fwd = (double)C * (double)round_up(O, MR) / (double)(C + O);
    int64_t T1 = ceil_div(OH, 4) * ceil_div(OW, 4);
    bool big = T1 >= VW, small = td_wino4_stacked(T1, C, OH + 2, OW + 2); /* (the input's size bounds, conservatively) */
    if (wgrad) {
        small = small && 36 * round_up(C, WACC) * round_up(O, VW) <= 262144;
        return (big || small) && gain >= WINO4_MIN_GAIN_WGRAD ? 4 : gain >= WINO_MIN_GAIN_WGRAD ? 2 : 0;
    }
    small = small && 36 * (C + round_up(O, MR)) * NR <= 262144;
    if (big && gain_fwd >= WINO4_MIN_GAIN) return 4;
    if (small && gain_fwd >= WINO4_MIN_GAIN_SMALL) return 4;
    return gain >= WINO_MIN_GAIN ? 2 : 0;
}

/* V for the block's tiles, every channel of x (N, C, H, W), tiles of m (= p->m, a constant at the
 * call: each tile size gets its own loop, F(2x2)'s with its fill inlined); P: the planes' scratch */
static inline __attribute__((always_inline)) void block_inputs(const wino_t *p, const int m, const float *x,
                                                               const segment *seg, int ns, float *P, float *V) {
    for (int64_t c = 0; c < p->C; c++)
        for (int i = 0; i < ns; i++) {
            int64_t ty0 = seg[i].ta / p->tw, ty1 = (seg[i].tb - 1) / p->tw + 1, u0 = seg[i].ta - ty0 * p->tw;
            const float *xc = x + (seg[i].n * p->C + c) * p->H * p->W;
            if (m == 4) {
                td_wino4_fill(p, xc, ty0, ty1 - ty0 + 1, P);
                td_wino4_input(p, P, V + c * p->Qs, u0, seg[i].tb - seg[i].ta, seg[i].v0);
            } else {
                fill_planes(p, xc, ty0, ty1 - ty0 + 1, P);
                input_transform(p, P, V + c * p->Qs, u0, seg[i].tb - seg[i].ta, seg[i].v0);
            }
        }
}

/* V for the block of tiles t0 .. t0 + used - 1 (its segments seg), the way p takes it: stacked
 * small images, F(4x4) or F(2x2) planes. Shared by the forward and the weight gradient. */
static void block_all_inputs(const wino_t *p, const float *x, int64_t t0, int64_t used, const segment *seg, int ns,
                             float *P, float *V) {
#if defined(__AVX512F__) /* (the stacked kernels' gathers; p->stacked is never set without them) */
    if (p->stacked) {
        td_wino4_input_stacked(p, x, t0, used, V);
        return;
    }
#endif
    if (p->m == 4) block_inputs(p, 4, x, seg, ns, P, V);
    else block_inputs(p, 2, x, seg, ns, P, V);
}

/* The batch's tiles, numbered (n, ty, tx) in order, go in blocks of NB (a multiple of NR) through
 * the three steps, so that a block's V and M (XI (C + O) NB floats) stay in L2 between them; a
 * block holds segments of tile rows. */
int td_winograd_conv(int m, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                     int64_t OW, const float *x, const float *w, bool flip, const float *bias, int64_t bias_ns,
                     const float *res, float scale, float *y) {
    if (N == 0 || OH <= 0 || OW <= 0 || O == 0) return 0;
    int64_t nob = ceil_div(O, MR), Or = nob * MR, NB, nblk, XI = (m + 2) * (m + 2);
    int nt = td_conv_threads(2.0 * XI * N * ceil_div(OH, m) * ceil_div(OW, m) * C * O);
    wino_t p = wino_plan(m, N, C, H, W, O, ph, pw, OH, OW, XI * (C + Or), nt, &NB, &nblk);
    p.y = y;
    p.res = res;
    p.scale = scale;
    int64_t total = N * p.T1, nplanes = m == 4 ? 24 : 8;
    float *Up = aligned_alloc(64, (size_t)round_up(XI * Or * C * (int64_t)sizeof(float), 64));
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(C ? C : 1));
    if (!Up || !off) {
        free(Up);
        free(off);
        return td_fail_int("conv2d: out of memory");
    }
    for (int64_t k = 0; k < C; k++) off[k] = k * p.Qs;
    int64_t OHW = OH * OW;
    volatile int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *V = td_conv_scratch(t, 0, (size_t)(XI * p.vxs)), *M = td_conv_scratch(t, 1, (size_t)(XI * p.mxs));
        float *P = td_conv_scratch(t, 2, (size_t)(nplanes * p.ps));
        if (!V || !M || !P) failed = 1;
        #pragma omp for schedule(static) collapse(2) /* the weights' transform, shared: the other thread would wait */
        for (int64_t ob = 0; ob < nob; ob++)
            for (int64_t c = 0; c < C; c += 2) pack_transformed(m, w, O, C, flip, ob, c, Up);
        #pragma omp for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nblk; bi++) {
            if (failed) continue;
            if (td_interrupted()) {
                failed = 2;
                continue;
            }
            int64_t t0 = bi * NB, t1 = t0 + NB < total ? t0 + NB : total, used = t1 - t0;
            segment seg[MAX_SEGMENTS];
            int ns = block_segments(&p, t0, t1, seg);
            block_all_inputs(&p, x, t0, used, seg, ns, P, V);
            if (used % NR) /* the last block's columns up to NR: finite, never read back */
                for (int64_t xi = 0; xi < XI; xi++)
                    for (int64_t c = 0; c < C; c++)
                        memset(V + xi * p.vxs + c * p.Qs + used, 0, sizeof(float) * (size_t)(NR - used % NR));
            for (int64_t p0 = 0; p0 < used; p0 += NR)
                for (int64_t xi = 0; xi < XI; xi++)
                    for (int64_t ob = 0; ob < nob; ob++)
                        ukern(C, Up + (xi * nob + ob) * C * MR, V + xi * p.vxs + p0, off,
                              M + xi * p.mxs + ob * MR * p.Qs + p0, p.Qs);
#if defined(__AVX512F__)
            for (int64_t o = 0; p.stacked && o < O; o++) td_wino4_output_stacked(&p, M, o, t0, used, bias, bias_ns, y);
#endif
            for (int i = 0; !p.stacked && i < ns; i++)
                for (int64_t o = 0; o < O; o++) {
                    float bo = bias ? bias[seg[i].n * bias_ns + o] : 0.0f, *yo = y + (seg[i].n * O + o) * OHW;
                    if (m == 4) td_wino4_output(&p, M, o * p.Qs + seg[i].v0, seg[i].ta, seg[i].tb, bo, yo);
                    else output_transform(&p, M, o * p.Qs + seg[i].v0, seg[i].ta, seg[i].tb, bo, yo);
                }
        }
    }
    free(Up);
    free(off);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}

/* The output gradient's tiles of one segment, transformed: Dt[xi * xs + (v0 + u) * Opad + o] =
 * (A dY_t A^T)[xi] for its tiles, A = [1 0; 1 1; 1 -1; 0 -1], from dY's rows as (pixel, channel)
 * in Y (segment_grads_to_pixels): vectors of channels, stored whole where wtile reads them. */
static void block_grads(const wino_t *p, const float *dy, const segment *sg, int64_t xs, int64_t Opad, float *Y,
                        float *Dt) {
    int64_t ty0 = segment_grads_to_pixels(p, dy, sg, Opad, Y), cols = 2 * p->tw;
    for (int64_t t = sg->ta, ty = t / p->tw, tx = t - ty * p->tw; t < sg->tb; t++, tx = tx + 1 < p->tw ? tx + 1 : (ty++, 0)) {
        const float *y0 = Y + (2 * (ty - ty0) * cols + 2 * tx) * Opad, *y1 = y0 + cols * Opad;
        float *d = Dt + (sg->v0 + t - sg->ta) * Opad;
        for (int64_t o = 0; o < Opad; o += VW) {
            vf a0 = vld(y0 + o), a1 = vld(y0 + Opad + o), b0 = vld(y1 + o), b1 = vld(y1 + Opad + o);
            vf r[4][2] = {{a0, a1}, {a0 + b0, a1 + b1}, {a0 - b0, a1 - b1}, {-b0, -b1}}; /* A dY */
            for (int i = 0; i < 4; i++) { /* (A dY) A^T */
                vst(d + (i * 4 + 0) * xs + o, r[i][0]);
                vst(d + (i * 4 + 1) * xs + o, r[i][0] + r[i][1]);
                vst(d + (i * 4 + 2) * xs + o, r[i][0] - r[i][1]);
                vst(d + (i * 4 + 3) * xs + o, -r[i][1]);
            }
        }
    }
}

/* dw (O, C, 3, 3) = G^T dU G for dU[xi][o][c] = sum over the batch's tiles of
 * (A dY_t A^T)[xi][o] (B^T d_t B)[xi][c]: the XI products reduce over tiles on conv.c's
 * weight-gradient kernel (wtile, T = 1), the input rows V[xi][c] as the forward makes them. */
int td_winograd_wgrad(int m, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                      int64_t OW, const float *x, const float *dy, float *dw) {
    if (N == 0 || OH <= 0 || OW <= 0 || C == 0 || O == 0) {
        memset(dw, 0, sizeof(float) * (size_t)(O * C * 9));
        return 0;
    }
    int64_t Opad = round_up(O, VW), Cpad = round_up(C, WACC), NB, nblk, XI = (m + 2) * (m + 2);
    int nt = td_conv_threads(2.0 * XI * N * ceil_div(OH, m) * ceil_div(OW, m) * C * O);
    wino_t p = wino_plan(m, N, C, H, W, O, ph, pw, OH, OW, XI * (C + Opad), nt, &NB, &nblk);
    int64_t total = N * p.T1, ysz = m * m * (NB + 2 * p.tw) * Opad, xs = odd_vectors(NB * Opad);
    int64_t nplanes = m == 4 ? 24 : 8;
    float *part = calloc((size_t)(nt * XI * Cpad * Opad), sizeof(float)); /* per thread: dU[xi][c][o] */
    if (!part) return td_fail_int("conv2d: out of memory");
    volatile int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *acc = part + t * XI * Cpad * Opad;
        float *V = td_conv_scratch(t, 0, (size_t)(XI * p.vxs)), *Dt = td_conv_scratch(t, 1, (size_t)(XI * xs));
        float *P = td_conv_scratch(t, 2, (size_t)(nplanes * p.ps + ysz)), *Y = P ? P + nplanes * p.ps : NULL;
        if (!V || !Dt || !P) failed = 1;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nblk; bi++) {
            if (failed) continue;
            if (td_interrupted()) {
                failed = 2;
                continue;
            }
            int64_t t0 = bi * NB, t1 = t0 + NB < total ? t0 + NB : total, used = t1 - t0;
            segment seg[MAX_SEGMENTS];
            int ns = block_segments(&p, t0, t1, seg);
            block_all_inputs(&p, x, t0, used, seg, ns, P, V);
            for (int i = 0; i < ns; i++) {
                if (m == 4) td_wino4_grads(&p, dy, &seg[i], xs, Opad, Y, Dt);
                else block_grads(&p, dy, &seg[i], xs, Opad, Y, Dt);
            }
            for (int64_t xi = 0; xi < XI; xi++)
                for (int64_t o0 = 0; o0 < Opad;) {
                    int64_t left = (Opad - o0) / VW;
                    int nv = left >= 4 ? 4 : left >= 2 ? 2 : 1, R;
                    for (int64_t r0 = 0; r0 < C; r0 += R) {
                        wtile_fn tile = td_conv_wtile_rows(nv, (int)(C - r0 < WACC ? C - r0 : WACC), &R);
                        const float *xr[WACC];
                        for (int r = 0; r < R; r++) xr[r] = V + xi * p.vxs + (r0 + r < C ? r0 + r : 0) * p.Qs; /* past C: discarded */
                        tile(used, xr, Dt + xi * xs + o0, Opad, acc + (xi * Cpad + r0) * Opad + o0, Opad);
                    }
                    o0 += nv * VW;
                }
        }
    }
    if (!failed) { /* dU summed over the threads and transformed, VW output channels at a time */
        int64_t nvb = Opad / VW;
        #pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
        for (int64_t ob = 0; ob < nvb; ob++)
            for (int64_t c = 0; c < C; c++) {
                vf u[36], d[9];
                for (int64_t xi = 0; xi < XI; xi++) {
                    const float *q = part + (xi * Cpad + c) * Opad + ob * VW;
                    vf s = vld(q);
                    for (int k = 1; k < nt; k++) s += vld(q + k * XI * Cpad * Opad);
                    u[xi] = s;
                }
                if (m == 4) td_wino4_weight_grad(u, d);
                else weight_grad_transform(u, d);
                float dl[9][VW];
                for (int k = 0; k < 9; k++) vst(dl[k], d[k]);
                for (int64_t l = 0; l < VW && ob * VW + l < O; l++)
                    for (int k = 0; k < 9; k++) dw[((ob * VW + l) * C + c) * 9 + k] = dl[k][l];
            }
    }
    free(part);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}
