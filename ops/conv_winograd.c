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
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "conv_kern.h"

/* U = G g G^T for the 3x3 g, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] */
static void weight_transform(const float g[9], float u[16]) {
    float t[4][3];
    for (int j = 0; j < 3; j++) {
        float a = g[j], b = g[3 + j], c = g[6 + j];
        t[0][j] = a;
        t[1][j] = 0.5f * (a + b + c);
        t[2][j] = 0.5f * (a - b + c);
        t[3][j] = c;
    }
    for (int i = 0; i < 4; i++) {
        float a = t[i][0], b = t[i][1], c = t[i][2];
        u[i * 4 + 0] = a;
        u[i * 4 + 1] = 0.5f * (a + b + c);
        u[i * 4 + 2] = 0.5f * (a - b + c);
        u[i * 4 + 3] = c;
    }
}

/* Up[((xi * nob + ob) * C + c) * MR + r] = U_xi of output o = ob * MR + r, input channel c (zero
 * rows past O). flip: the product of the input gradient, w being the forward's (C, O, 3, 3)
 * weight read as w2[o][c][i][j] = w[c][o][2 - i][2 - j]. */
static float *pack_transformed(const float *w, int64_t O, int64_t C, bool flip) {
    int64_t nob = (O + MR - 1) / MR;
    float *Up = aligned_alloc(64, (size_t)round_up(16 * nob * C * MR * (int64_t)sizeof(float), 64));
    if (!Up) return td_fail("conv2d: out of memory packing Winograd weights");
    memset(Up, 0, sizeof(float) * (size_t)(16 * nob * C * MR));
    for (int64_t o = 0; o < O; o++)
        for (int64_t c = 0; c < C; c++) {
            float g[9], u[16];
            for (int k = 0; k < 9; k++) g[k] = flip ? w[(c * O + o) * 9 + 8 - k] : w[(o * C + c) * 9 + k];
            weight_transform(g, u);
            for (int xi = 0; xi < 16; xi++) Up[((xi * nob + o / MR) * C + c) * MR + o % MR] = u[xi];
        }
    return Up;
}

/* lanes 0, 2, 4, ... and 1, 3, 5, ... of the pair (a, b); the two halves of interleave(a, b) */
#if VW == 16
typedef int32_t vidx __attribute__((vector_size(64)));
static const vidx EVEN = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
static const vidx ODD = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
static const vidx ILO = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
static const vidx IHI = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
#else
typedef int32_t vidx __attribute__((vector_size(32)));
static const vidx EVEN = {0, 2, 4, 6, 8, 10, 12, 14};
static const vidx ODD = {1, 3, 5, 7, 9, 11, 13, 15};
static const vidx ILO = {0, 8, 1, 9, 2, 10, 3, 11};
static const vidx IHI = {4, 12, 5, 13, 6, 14, 7, 15};
#endif
static inline vf vld(const float *p) { return *(const vfu *)p; }
static inline void vst(float *p, vf v) { *(vfu *)p = v; }

typedef struct {
    int64_t C, H, W, O, ph, pw, OH, OW; /* one image: (C, H, W) -> (O, OH, OW) */
    int64_t th, tw, T1;                 /* tile rows, tiles per row, tiles per image */
    int64_t ps;                         /* floats per plane: (th + 1) tw + slack */
    int64_t Qs;                         /* stride of V's and M's rows: a block's tiles + slack */
} wino_t;

/* The masks of the four loads (padded-row floats 2k .. 2k + 2 VW - 1, then 2k + 2 ..) of vector
 * k / VW of a row: padded(j) = xr[j - pw], zero off the row. The same for every row. */
#if defined(__AVX512F__)
typedef __mmask16 lmask;
static lmask row_mask(const wino_t *p, int64_t s0) {
    int64_t lo = s0 < 0 ? -s0 : 0, hi = p->W - s0 < VW ? p->W - s0 : VW;
    return hi <= lo ? 0 : (lmask)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
/* masked loads: lanes off the row are zero and not read */
static inline vf load_masked(const float *xr, int64_t s0, lmask m) { return (vf)_mm512_maskz_loadu_ps(m, xr + s0); }
#else
typedef int lmask;
static lmask row_mask(const wino_t *p, int64_t s0) { (void)p, (void)s0; return 0; }
static inline vf load_masked(const float *xr, int64_t s0, lmask m) { (void)xr, (void)s0, (void)m; return (vf){0}; }
#endif
static inline vf load_row(const wino_t *p, const float *xr, int64_t s0, const lmask *m) {
#if defined(__AVX512F__)
    if (m) return load_masked(xr, s0, *m);
    return load_masked(xr, s0, row_mask(p, s0));
#else
    (void)m;
    float t[VW];
    for (int l = 0; l < VW; l++) t[l] = s0 + l >= 0 && s0 + l < p->W ? xr[s0 + l] : 0.0f;
    return vld(t);
#endif
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
            vst(q + k, __builtin_shuffle(a, b, EVEN));
            vst(q + p->ps + k, __builtin_shuffle(a, b, ODD));
            a = load_row(p, xr, s0 + 2, m ? m + 2 : NULL), b = load_row(p, xr, s0 + 2 + VW, m ? m + 3 : NULL);
            vst(q + 2 * p->ps + k, __builtin_shuffle(a, b, EVEN));
            vst(q + 3 * p->ps + k, __builtin_shuffle(a, b, ODD));
        }
    }
}

/* V[(xi * C + c) * Qs + v0 + u] for u < n tiles starting at plane position u0. Writes VW tiles
 * at a time: past n into the next segment (written after this one) or into V's slack. */
static void input_transform(const wino_t *p, const float *P, float *V, int64_t u0, int64_t n, int64_t v0) {
    int64_t cs = p->C * p->Qs; /* stride between the 16 xi */
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

/* floats l0 <= l < l1 of the 2 VW-float sequence (lo, hi) to d[l] */
static inline void store_lanes(float *d, vf lo, vf hi, int l0, int l1) {
#if defined(__AVX512F__)
    uint32_t m = (uint32_t)(((1ull << l1) - 1) & ~((1ull << l0) - 1));
    _mm512_mask_storeu_ps(d, (__mmask16)(m & 0xffff), (__m512)lo);
    _mm512_mask_storeu_ps(d + VW, (__mmask16)(m >> 16), (__m512)hi);
#else
    float t[2 * VW];
    vst(t, lo);
    vst(t + VW, hi);
    for (int l = l0; l < l1; l++) d[l] = t[l];
#endif
}

/* Output channel o of one image, tiles t0 <= t < t1 (image tile numbers), + bias, from
 * M[xi * Or * Qs + m0 + t - t0]. Writes nothing outside those tiles (another thread's). */
static void output_transform(const wino_t *p, const float *M, int64_t Or, int64_t m0, int64_t t0, int64_t t1,
                             float bias, float *y) {
    int64_t ms = Or * p->Qs;
    vf b = td_vsplat(bias);
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
        vf lo0 = __builtin_shuffle(y00, y01, ILO), hi0 = __builtin_shuffle(y00, y01, IHI);
        vf lo1 = __builtin_shuffle(y10, y11, ILO), hi1 = __builtin_shuffle(y10, y11, IHI);
        int64_t end = t + VW < t1 ? t + VW : t1;
        for (int64_t a = t; a < end;) { /* the vector's pieces of tile rows */
            int64_t ty = a / p->tw, tx = a - ty * p->tw, e = (ty + 1) * p->tw < end ? (ty + 1) * p->tw : end;
            int64_t cols = 2 * (e - a);
            if (cols > p->OW - 2 * tx) cols = p->OW - 2 * tx;
            int l0 = (int)(2 * (a - t));
            float *yr = y + 2 * ty * p->OW + 2 * tx - l0; /* lane l of the sequence goes to yr[l] */
            store_lanes(yr, lo0, hi0, l0, l0 + (int)cols);
            if (2 * ty + 1 < p->OH) store_lanes(yr + p->OW, lo1, hi1, l0, l0 + (int)cols);
            a = e;
        }
    }
}

bool td_winograd_ok(int64_t C, int64_t O, int64_t OW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t dh,
                    int64_t dw, int64_t ph, int64_t pw, double min_gain) {
    if (td_conv_path == 1 || td_conv_path == 2 || td_conv_path == 4) return false;
    if (kh != 3 || kw != 3 || sh != 1 || sw != 1 || dh != 1 || dw != 1 || ph < 0 || pw < 0 || ph > 2 || pw > 2)
        return false;
    if (td_conv_path == 3) return true;
    /* the products save in proportion to C O per tile, the transforms cost in proportion to
     * C + O. Measured per layer at batch 100 (one thread, against the direct kernels):
     * C O / (C + O) = 8 broke even (16 -> 16 at 32x32), 10.7 ran 1.1-1.2x (16 -> 32), 16 ran
     * 1.2-1.6x (32 -> 32 at 32x32 to 4x4, 64 -> 64 at 16x16), 64 ran 2x (128 -> 128 at 8x8).
     * The weight gradient gains less (its dY transform is a transpose): 0.92-0.95 at 8 and
     * 10.7, 1.07-1.3 at 16, 1.6 at 64. */
    (void)OW;
    return (double)C * (double)O >= min_gain * (double)(C + O);
}

/* The geometry of a convolution (C, H, W) -> (O, OH, OW) per image, and its blocks: the batch's
 * tiles, numbered (n, ty, tx) in order, go in blocks of NB (a multiple of NR) through the steps,
 * so that a block's operands (`floats_per_tile` per tile: 16 (C + O)) stay in L2 between them. */
static wino_t plan(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                   int64_t OW, int64_t floats_per_tile, int64_t nt, int64_t *NB, int64_t *nblk) {
    wino_t p = {C, H, W, O, ph, pw, OH, OW, (OH + 1) / 2, (OW + 1) / 2, 0, 0, 0};
    p.T1 = p.th * p.tw;
    p.ps = (p.th + 1) * p.tw + 2 * VW;
    int64_t total = N * p.T1, nb = 131072 / floats_per_tile / NR * NR; /* ~512 KB */
    if (nb < NR) nb = NR;
    if (nb > 10 * NR) nb = 10 * NR;
    if (ceil_div(total, nb) < 4 * nt && nb > NR) nb = round_up(ceil_div(total, 4 * nt), NR); /* enough blocks */
    *NB = nb;
    *nblk = ceil_div(total, nb);
    p.Qs = nb + VW;
    return p;
}

/* A block's pieces of images: tiles ta <= t < tb of image n, at v0 in the block. */
typedef struct {
    int64_t n, ta, tb, v0;
} segment;
#define MAX_SEGMENTS (10 * NR + 2)
static int block_segments(const wino_t *p, int64_t t0, int64_t t1, segment *seg) {
    int ns = 0;
    for (int64_t t = t0; t < t1; ns++) {
        int64_t n = t / p->T1, ta = t - n * p->T1, tb = (n + 1) * p->T1 < t1 ? p->T1 : t1 - n * p->T1;
        seg[ns] = (segment){n, ta, tb, t - t0};
        t += tb - ta;
    }
    return ns;
}

/* V for the block's tiles, every channel of x (N, C, H, W); P: the planes' scratch */
static void block_inputs(const wino_t *p, const float *x, const segment *seg, int ns, int64_t used, float *P, float *V,
                         bool zero_tail) {
    for (int64_t c = 0; c < p->C; c++) {
        for (int i = 0; i < ns; i++) {
            int64_t ty0 = seg[i].ta / p->tw, ty1 = (seg[i].tb - 1) / p->tw + 1;
            fill_planes(p, x + (seg[i].n * p->C + c) * p->H * p->W, ty0, ty1 - ty0 + 1, P);
            input_transform(p, P, V + c * p->Qs, seg[i].ta - ty0 * p->tw, seg[i].tb - seg[i].ta, seg[i].v0);
        }
        if (zero_tail) /* the last block's columns up to NR: finite, never read back */
            for (int xi = 0; xi < 16; xi++)
                for (int64_t q = used; q < round_up(used, NR); q++) V[(xi * p->C + c) * p->Qs + q] = 0;
    }
}

/* The batch's tiles, numbered (n, ty, tx) in order, go in blocks of NB (a multiple of NR) through
 * the three steps, so that a block's V and M (16 (C + O) NB floats) stay in L2 between them; a
 * block holds segments of tile rows. */
int td_winograd_conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                     int64_t OW, const float *x, const float *w, bool flip, const float *bias, float *y) {
    if (N == 0 || OH <= 0 || OW <= 0 || O == 0) return 0;
    int64_t nob = ceil_div(O, MR), Or = nob * MR, NB, nblk;
    int nt = td_conv_threads(2.0 * 16 * N * ((OH + 1) / 2) * ((OW + 1) / 2) * C * O);
    wino_t p = plan(N, C, H, W, O, ph, pw, OH, OW, 16 * (C + Or), nt, &NB, &nblk);
    int64_t total = N * p.T1;
    float *Up = pack_transformed(w, O, C, flip);
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
        float *V = td_conv_scratch(t, 0, (size_t)(16 * C * p.Qs)), *M = td_conv_scratch(t, 1, (size_t)(16 * Or * p.Qs));
        float *P = td_conv_scratch(t, 2, (size_t)(8 * p.ps));
        if (!V || !M || !P) failed = 1;
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
            block_inputs(&p, x, seg, ns, used, P, V, true);
            for (int64_t p0 = 0; p0 < used; p0 += NR)
                for (int xi = 0; xi < 16; xi++)
                    for (int64_t ob = 0; ob < nob; ob++)
                        ukern(C, Up + (xi * nob + ob) * C * MR, V + xi * C * p.Qs + p0, off,
                              M + (xi * Or + ob * MR) * p.Qs + p0, p.Qs);
            for (int i = 0; i < ns; i++)
                for (int64_t o = 0; o < O; o++)
                    output_transform(&p, M, Or, o * p.Qs + seg[i].v0, seg[i].ta, seg[i].tb, bias ? bias[o] : 0.0f,
                                     y + (seg[i].n * O + o) * OHW);
        }
    }
    free(Up);
    free(off);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}

/* The output gradient's tiles of one segment, transformed: Dt[(xi * NB + v0 + u) * Opad + o] =
 * (A dY_t A^T)[xi] for its tiles, A = [1 0; 1 1; 1 -1; 0 -1]. dY's rows 2 ty0 .. are first
 * transposed to (pixel, channel) in Y (zero off the output and past O), so that the transform
 * runs over vectors of channels and stores whole vectors where wtile reads them. */
static void block_grads(const wino_t *p, const float *dy, const segment *sg, int64_t NB, int64_t Opad, float *Y,
                        float *Dt) {
    int64_t ty0 = sg->ta / p->tw, ty1 = (sg->tb - 1) / p->tw + 1, rows = 2 * (ty1 - ty0), cols = 2 * p->tw;
    int64_t OHW = p->OH * p->OW;
    const float *dyn = dy + sg->n * p->O * OHW;
    if (p->O < Opad || p->OW < cols || 2 * ty1 > p->OH) memset(Y, 0, sizeof(float) * (size_t)(rows * cols * Opad));
    for (int64_t r = 0; r < rows && 2 * ty0 + r < p->OH; r++)
        for (int64_t o = 0; o < p->O; o++) {
            const float *src = dyn + o * OHW + (2 * ty0 + r) * p->OW;
            float *d = Y + r * cols * Opad + o;
            for (int64_t c = 0; c < p->OW; c++) d[c * Opad] = src[c];
        }
    int64_t xs = NB * Opad; /* stride between the 16 xi */
    for (int64_t t = sg->ta; t < sg->tb; t++) {
        int64_t ty = t / p->tw, tx = t - ty * p->tw;
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
 * (A dY_t A^T)[xi][o] (B^T d_t B)[xi][c]: the 16 products reduce over tiles on conv.c's
 * weight-gradient kernel (wtile, T = 1), the input rows V[xi][c] as the forward makes them. */
int td_winograd_wgrad(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                      int64_t OW, const float *x, const float *dy, float *dw) {
    if (N == 0 || OH <= 0 || OW <= 0 || C == 0 || O == 0) {
        memset(dw, 0, sizeof(float) * (size_t)(O * C * 9));
        return 0;
    }
    int64_t Opad = round_up(O, VW), Cpad = round_up(C, WACC), NB, nblk;
    int nt = td_conv_threads(2.0 * 16 * N * ((OH + 1) / 2) * ((OW + 1) / 2) * C * O);
    wino_t p = plan(N, C, H, W, O, ph, pw, OH, OW, 16 * (C + Opad), nt, &NB, &nblk);
    int64_t total = N * p.T1, ysz = 4 * (NB + 2 * p.tw) * Opad + 4 * p.T1 * Opad;
    float *part = calloc((size_t)(nt * 16 * Cpad * Opad), sizeof(float)); /* per thread: dU[xi][c][o] */
    if (!part) return td_fail_int("conv2d: out of memory");
    volatile int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *acc = part + t * 16 * Cpad * Opad;
        float *V = td_conv_scratch(t, 0, (size_t)(16 * C * p.Qs)), *Dt = td_conv_scratch(t, 1, (size_t)(16 * NB * Opad));
        float *P = td_conv_scratch(t, 2, (size_t)(8 * p.ps + ysz)), *Y = P ? P + 8 * p.ps : NULL;
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
            block_inputs(&p, x, seg, ns, used, P, V, false);
            for (int i = 0; i < ns; i++) block_grads(&p, dy, &seg[i], NB, Opad, Y, Dt);
            for (int xi = 0; xi < 16; xi++)
                for (int64_t o0 = 0; o0 < Opad;) {
                    int64_t left = (Opad - o0) / VW;
                    int nv = left >= 4 ? 4 : left >= 2 ? 2 : 1, R = WACC / nv;
                    wtile_fn tile = td_conv_wtile(nv, 1);
                    for (int64_t r0 = 0; r0 < C; r0 += R) {
                        const float *xr[WACC];
                        for (int r = 0; r < R; r++) xr[r] = V + (xi * C + (r0 + r < C ? r0 + r : 0)) * p.Qs; /* past C: discarded */
                        tile(used, xr, Dt + xi * NB * Opad + o0, Opad, acc + (xi * Cpad + r0) * Opad + o0, Opad);
                    }
                    o0 += nv * VW;
                }
        }
    }
    if (!failed) {
        static const float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t o = 0; o < O; o++)
            for (int64_t c = 0; c < C; c++) {
                float u[16], tmp[3][4];
                for (int xi = 0; xi < 16; xi++) {
                    float s = 0;
                    for (int k = 0; k < nt; k++) s += part[((k * 16 + xi) * Cpad + c) * Opad + o];
                    u[xi] = s;
                }
                for (int i = 0; i < 3; i++) /* G^T dU */
                    for (int b = 0; b < 4; b++)
                        tmp[i][b] = G[0][i] * u[b] + G[1][i] * u[4 + b] + G[2][i] * u[8 + b] + G[3][i] * u[12 + b];
                for (int i = 0; i < 3; i++) /* (G^T dU) G */
                    for (int j = 0; j < 3; j++)
                        dw[(o * C + c) * 9 + i * 3 + j] =
                            tmp[i][0] * G[0][j] + tmp[i][1] * G[1][j] + tmp[i][2] * G[2][j] + tmp[i][3] * G[3][j];
            }
    }
    free(part);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}
