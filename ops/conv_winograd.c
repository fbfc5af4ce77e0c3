/* Winograd F(2x2, 3x3) for 3x3 convolutions of stride and dilation 1 (Lavin and Gray, 2016):
 * every 2x2 block ("tile") of outputs comes from a 4x4 patch of the padded input as
 *     Y = A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A,
 * 16 multiplies per tile and channel pair instead of 36: 2.25x fewer than the direct products,
 * which is what the models' 3x3 layers (most of a training step) spend their time on. The
 * transforms only add, subtract and halve, so the result is as accurate as the direct sum.
 *
 * Per chunk of m images (their tiles numbered one after another: t = (j * th + ty) * tw + tx):
 *   1. input transform  V[xi][c][t], xi = 4 i + s < 16: from each padded row split into its even
 *      and odd columns, so that one tile row of every channel is a few vector operations;
 *   2. 16 products      M[xi][o][t] = sum_c U[xi][o][c] V[xi][c][t] on conv.c's micro-kernel
 *      (U: the transformed weight, packed in its panels; the tiles are its pixel dimension);
 *   3. output transform Y from M[.][o][t], the two output columns of a tile interleaved back.
 * Used for the forward (x -> y) and for the gradient of the input (dy -> dx, the same product
 * with the flipped, transposed weight). The tests hold it to td_conv2d_*_ref. */
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
    int64_t ld;                         /* floats per split row (>= tw + 1 + VW) */
    int64_t Qs;                         /* stride of V's and M's rows: a block's tiles + slack */
} wino_t;

/* Padded row h of one channel plane x (H, W), split: e[k] = padded(h, 2k), d[k] = padded(h, 2k + 1)
 * for k < tw + 1 (then zeros). rb: a row buffer whose borders are zero. */
static void split_row(const wino_t *p, const float *x, int64_t h, float *e, float *d, float *rb) {
    h -= p->ph;
    if (h < 0 || h >= p->H) {
        for (int64_t k = 0; k < p->ld; k += VW) vst(e + k, (vf){0}), vst(d + k, (vf){0});
        return;
    }
    const float *xr = x + h * p->W;
    /* a block reads a few rows of each of C planes, too short a stream for the hardware
     * prefetcher: ask for the same row of the next plane (the next channel's, or after the
     * last channel the next image's first) */
    for (int64_t j = 0; j < p->W; j += 16) __builtin_prefetch(xr + p->H * p->W + j);
#if defined(__AVX512F__)
    /* straight from x with masked loads (lanes outside the row are zero and not read): copying
     * the row into rb first cost a failed store-to-load forwarding per vector */
    (void)rb;
    for (int64_t k = 0; k < p->tw + 1; k += VW) {
        __m512 v[2];
        for (int i = 0; i < 2; i++) {
            int64_t s0 = 2 * k - p->pw + i * VW, lo = s0 < 0 ? -s0 : 0, hi = p->W - s0 < VW ? p->W - s0 : VW;
            __mmask16 m = hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
            v[i] = _mm512_maskz_loadu_ps(m, xr + s0);
        }
        vst(e + k, __builtin_shuffle((vf)v[0], (vf)v[1], EVEN));
        vst(d + k, __builtin_shuffle((vf)v[0], (vf)v[1], ODD));
    }
#else
    float *r = rb + p->pw;
    for (int64_t j = 0; j < p->W; j++) r[j] = xr[j];
    for (int64_t k = 0; k < p->tw + 1; k += VW) {
        vf a = vld(rb + 2 * k), b = vld(rb + 2 * k + VW);
        vst(e + k, __builtin_shuffle(a, b, EVEN));
        vst(d + k, __builtin_shuffle(a, b, ODD));
    }
#endif
}

/* V[(xi * C + c) * Qs + v0 + tx - tx0] for the tiles tx0 <= tx < tx1 of one tile row of channel
 * c, from its four split rows e[r], d[r]. Writes VW tiles at a time: past tx1 into the next
 * segment (written after this one) or into V's slack. */
static void input_transform(const wino_t *p, float *const *E, float *const *D, float *V, int64_t tx0, int64_t tx1,
                            int64_t v0) {
    int64_t cs = p->C * p->Qs; /* stride between the 16 xi */
    for (int64_t tx = tx0; tx < tx1; tx += VW) {
        vf h[4][4];
        for (int r = 0; r < 4; r++) {
            const float *e = E[r] + tx, *d = D[r] + tx;
            vf e0 = vld(e), e1 = vld(e + 1), d0 = vld(d), d1 = vld(d + 1);
            h[r][0] = e0 - e1; /* d B: columns 2tx .. 2tx + 3 are e0, d0, e1, d1 */
            h[r][1] = d0 + e1;
            h[r][2] = e1 - d0;
            h[r][3] = d0 - d1;
        }
        float *v = V + v0 + tx - tx0;
        for (int s = 0; s < 4; s++) { /* B^T (d B) */
            vst(v + (0 * 4 + s) * cs, h[0][s] - h[2][s]);
            vst(v + (1 * 4 + s) * cs, h[1][s] + h[2][s]);
            vst(v + (2 * 4 + s) * cs, h[2][s] - h[1][s]);
            vst(v + (3 * 4 + s) * cs, h[1][s] - h[3][s]);
        }
    }
}

/* Output rows 2 ty, 2 ty + 1 of one channel, columns 2 tx0 .. 2 tx1 (within OW), + bias, from
 * M[xi * Or * Qs + m0 + tx - tx0]. Writes nothing past the segment (another thread's). */
static void output_transform(const wino_t *p, const float *M, int64_t Or, int64_t m0, int64_t ty, int64_t tx0,
                             int64_t tx1, float bias, float *y) {
    int64_t ms = Or * p->Qs;
#if !defined(__AVX512F__)
    float tmp[2 * VW];
#endif
    vf b = td_vsplat(bias);
    for (int64_t tx = tx0; tx < tx1; tx += VW) {
        const float *m = M + m0 + tx - tx0;
        vf s0[4], s1[4];
        for (int i = 0; i < 4; i++) { /* (M A) */
            vf m0v = vld(m + (i * 4 + 0) * ms), m1 = vld(m + (i * 4 + 1) * ms);
            vf m2 = vld(m + (i * 4 + 2) * ms), m3 = vld(m + (i * 4 + 3) * ms);
            s0[i] = m0v + m1 + m2;
            s1[i] = m1 - m2 - m3;
        }
        vf y0[2] = {s0[0] + s0[1] + s0[2] + b, s1[0] + s1[1] + s1[2] + b}; /* A^T: output row 2ty */
        vf y1[2] = {s0[1] - s0[2] - s0[3] + b, s1[1] - s1[2] - s1[3] + b}; /* row 2ty + 1 */
        int64_t x0 = 2 * tx, n = 2 * (tx1 - tx);
        if (n > p->OW - x0) n = p->OW - x0;
        if (n > 2 * VW) n = 2 * VW;
        for (int a = 0; a < 2 && 2 * ty + a < p->OH; a++) {
            vf *q = a ? y1 : y0;
            float *yr = y + (2 * ty + a) * p->OW + x0;
            vf lo = __builtin_shuffle(q[0], q[1], ILO), hi = __builtin_shuffle(q[0], q[1], IHI);
            if (n == 2 * VW) {
                vst(yr, lo);
                vst(yr + VW, hi);
            } else {
#if defined(__AVX512F__) /* masked: a store then a shorter copy back failed store forwarding */
                int64_t n1 = n < VW ? n : VW, n2 = n - n1;
                _mm512_mask_storeu_ps(yr, (__mmask16)((1u << n1) - 1), (__m512)lo);
                if (n2 > 0) _mm512_mask_storeu_ps(yr + VW, (__mmask16)((1u << n2) - 1), (__m512)hi);
#else
                vst(tmp, lo);
                vst(tmp + VW, hi);
                memcpy(yr, tmp, sizeof(float) * (size_t)n);
#endif
            }
        }
    }
}

bool td_winograd_ok(int64_t C, int64_t O, int64_t OW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t dh,
                    int64_t dw, int64_t ph, int64_t pw) {
    if (td_conv_path == 1 || td_conv_path == 2 || td_conv_path == 4) return false;
    if (kh != 3 || kw != 3 || sh != 1 || sw != 1 || dh != 1 || dw != 1 || ph < 0 || pw < 0 || ph > 2 || pw > 2)
        return false;
    if (td_conv_path == 3) return true;
    /* the products save in proportion to C O per tile, the transforms cost in proportion to
     * C + O per vector of tiles, of which a row fills min(tw, VW) lanes. Measured per layer at
     * batch 100 (one thread, against the direct kernels): the ratio below at 8 broke even
     * (16 -> 16 at 32x32, 32 -> 32 at 16x16), at 16 took 0.73-0.80 of the time, at 4 took 1.25. */
    int64_t tw = (OW + 1) / 2, lanes = tw < VW ? tw : VW;
    return (double)C * (double)O * (double)lanes >= WINO_MIN_GAIN * (double)(C + O) * VW;
}

/* The batch's tiles, numbered (n, ty, tx) in order, go in blocks of NB (a multiple of NR) through
 * the three steps, so that a block's V and M (16 (C + O) NB floats) stay in L2 between them; a
 * block holds segments of tile rows. */
int td_winograd_conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                     int64_t OW, const float *x, const float *w, bool flip, const float *bias, float *y) {
    if (N == 0 || OH <= 0 || OW <= 0 || O == 0) return 0;
    wino_t p = {C, H, W, O, ph, pw, OH, OW, (OH + 1) / 2, (OW + 1) / 2, 0, 0, 0};
    p.T1 = p.th * p.tw;
    p.ld = round_up(p.tw + 1, VW) + VW;
    int64_t nob = ceil_div(O, MR), Or = nob * MR, total = N * p.T1;
    int64_t NB = 131072 / (16 * (C + Or)) / NR * NR; /* ~512 KB */
    if (NB < NR) NB = NR;
    if (NB > 10 * NR) NB = 10 * NR;
    int64_t nblk = ceil_div(total, NB), nt = td_conv_threads(2.0 * 16 * total * C * O);
    if (nblk < 4 * nt && NB > NR) { /* enough blocks for the threads */
        NB = round_up(ceil_div(total, 4 * nt), NR);
        nblk = ceil_div(total, NB);
    }
    p.Qs = NB + VW;
    float *Up = pack_transformed(w, O, C, flip);
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(C ? C : 1));
    if (!Up || !off) {
        free(Up);
        free(off);
        return td_fail_int("conv2d: out of memory");
    }
    for (int64_t k = 0; k < C; k++) off[k] = k * p.Qs;
    int64_t rbn = 2 * round_up(p.tw + 1, VW) + 2 * VW, HW = H * W, OHW = OH * OW;
    volatile int failed = 0;
    #pragma omp parallel num_threads((int)nt)
    {
        int t = omp_get_thread_num();
        float *V = td_conv_scratch(t, 0, (size_t)(16 * C * p.Qs)), *M = td_conv_scratch(t, 1, (size_t)(16 * Or * p.Qs));
        float *E = td_conv_scratch(t, 2, (size_t)(8 * p.ld + rbn)), *D = E ? E + 4 * p.ld : NULL;
        float *rb = E ? E + 8 * p.ld : NULL;
        if (!V || !M || !E) failed = 1;
        else memset(rb, 0, sizeof(float) * (size_t)rbn); /* the row buffer's borders stay zero */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nblk; bi++) {
            if (failed) continue;
            if (td_interrupted()) {
                failed = 2;
                continue;
            }
            int64_t t0 = bi * NB, t1 = t0 + NB < total ? t0 + NB : total, used = t1 - t0;
            /* the block's segments of tile rows (divisions once per block, not per channel) */
            struct { int64_t n, ty, tx0, tx1, v0; } seg[10 * NR + 2];
            int ns = 0;
            for (int64_t t = t0; t < t1; ns++) {
                int64_t row = t / p.tw, tx0 = t - row * p.tw, tx1 = (row + 1) * p.tw < t1 ? p.tw : t1 - row * p.tw;
                seg[ns].n = row / p.th, seg[ns].ty = row % p.th, seg[ns].tx0 = tx0, seg[ns].tx1 = tx1, seg[ns].v0 = t - t0;
                t += tx1 - tx0;
            }
            for (int64_t c = 0; c < C; c++) {
                int64_t hn = -1, hty = -1; /* the split rows held: 2 hty .. 2 hty + 3 of image hn */
                for (int i = 0; i < ns; i++) {
                    int64_t n = seg[i].n, ty = seg[i].ty;
                    const float *xc = x + (n * C + c) * HW;
                    /* slots by padded row mod 4: the next tile row reuses two of the four */
                    for (int64_t r = hn == n && hty == ty - 1 ? 2 : 0; r < 4; r++)
                        split_row(&p, xc, 2 * ty + r, E + (2 * ty + r) % 4 * p.ld, D + (2 * ty + r) % 4 * p.ld, rb);
                    float *er[4], *dr[4];
                    for (int r = 0; r < 4; r++) er[r] = E + (2 * ty + r) % 4 * p.ld, dr[r] = D + (2 * ty + r) % 4 * p.ld;
                    input_transform(&p, er, dr, V + c * p.Qs, seg[i].tx0, seg[i].tx1, seg[i].v0);
                    hn = n, hty = ty;
                }
                for (int xi = 0; xi < 16; xi++) /* the last block's columns up to NR: finite, never read back */
                    for (int64_t q = used; q < round_up(used, NR); q++) V[(xi * C + c) * p.Qs + q] = 0;
            }
            for (int64_t p0 = 0; p0 < used; p0 += NR)
                for (int xi = 0; xi < 16; xi++)
                    for (int64_t ob = 0; ob < nob; ob++)
                        ukern(C, Up + (xi * nob + ob) * C * MR, V + xi * C * p.Qs + p0, off,
                              M + (xi * Or + ob * MR) * p.Qs + p0, p.Qs);
            for (int i = 0; i < ns; i++)
                for (int64_t o = 0; o < O; o++)
                    output_transform(&p, M, Or, o * p.Qs + seg[i].v0, seg[i].ty, seg[i].tx0, seg[i].tx1,
                                     bias ? bias[o] : 0.0f, y + (seg[i].n * O + o) * OHW);
        }
    }
    free(Up);
    free(off);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}
