/* Internal to the Winograd files: conv_winograd.c (F(2x2, 3x3): the driver, its transforms, the
 * weight gradient) and conv_winograd4.c (F(4x4, 3x3): its transforms). A tile is m x m outputs
 * (m = 2 or 4) read from an (m + 2) x (m + 2) patch of the padded input; XI = (m + 2)^2 products
 * per tile and channel pair. What the two sizes share: the geometry, the blocks of tiles, the
 * vector shuffles, masked loads and stores. */
#ifndef TD_WINOGRAD_H
#define TD_WINOGRAD_H
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdbool.h>
#include <string.h>

#include "conv_kern.h"

/* lanes 0, 2, 4, ... and 1, 3, 5, ... of the pair (a, b); the two halves of interleave(a, b).
 * SHUF(a, b, EVEN) is GCC's __builtin_shuffle with a constant mask; clang (the fuzzing build)
 * has no __builtin_shuffle, and its __builtin_shufflevector takes the lanes as literal
 * arguments: the same permutations, spelled out. */
#if defined(__clang__)
#if VW == 16
#define SHUF_EVEN(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define SHUF_ODD(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#define SHUF_ILO(a, b) __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define SHUF_IHI(a, b) __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#else
#define SHUF_EVEN(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define SHUF_ODD(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#define SHUF_ILO(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define SHUF_IHI(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#endif
#define SHUF(a, b, mask) SHUF_##mask(a, b)
#else
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
#define SHUF(a, b, mask) __builtin_shuffle(a, b, mask)
#endif
static inline vf vld(const float *p) { return *(const vfu *)p; }
static inline void vst(float *p, vf v) { *(vfu *)p = v; }

typedef struct {
    int64_t C, H, W, O, ph, pw, OH, OW; /* one image: (C, H, W) -> (O, OH, OW) */
    int64_t m;                          /* tile: m x m outputs */
    int64_t th, tw, T1;                 /* tile rows, tiles per row, tiles per image */
    int64_t ps;                         /* floats per plane: (th + 1) tw + slack */
    int64_t Qs;                         /* stride of V's and M's rows: a block's tiles + slack */
    int64_t vxs, mxs;                   /* V's and M's stride between their XI planes */
    bool stacked;                       /* F(4x4) on small images: see td_wino4_stacked */
    float *y;                           /* the output (N, O, OH, OW) ... */
    const float *res;                   /* ... and, when not NULL, a residual of its shape: */
    float scale;                        /* y = scale (conv + bias + res) (store_rows) */
} wino_t;

/* a stride of n floats (a multiple of VW) made an odd number of vectors: the XI planes' rows at
 * a power-of-two multiple of 64 bytes apart would share a few L1 sets (36 rows in 4 sets of 8
 * ways at 16 channels), and the transforms, which touch one row of every plane, would miss */
static inline int64_t odd_vectors(int64_t n) { return (n / VW) % 2 ? n : n + VW; }

/* The masks of the loads of one row: padded(j) = xr[j - pw], zero off the row; lanes s0 .. s0 +
 * VW - 1 of the padded row. */
#if defined(__AVX512F__)
typedef __mmask16 lmask;
static inline lmask row_mask(const wino_t *p, int64_t s0) {
    int64_t lo = s0 < 0 ? -s0 : 0, hi = p->W - s0 < VW ? p->W - s0 : VW;
    return hi <= lo ? 0 : (lmask)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
/* masked loads: lanes off the row are zero and not read */
static inline vf load_masked(const float *xr, int64_t s0, lmask m) { return (vf)_mm512_maskz_loadu_ps(m, xr + s0); }
#else
typedef int lmask;
static inline lmask row_mask(const wino_t *p, int64_t s0) { (void)p, (void)s0; return 0; }
#endif
/* padded-row floats s0 .. s0 + VW - 1 of row xr; m: its mask when the caller keeps it */
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

/* floats l0 <= l < l1 of the nv VW-float sequences v[r][0], v[r][1], ... to d[r * ld + l] for
 * r < rows (nv <= 4), d within p->y: the lanes' masks computed once for the rows, whole vectors
 * stored plainly; with p->res, (v + the residual there) p->scale, else v p->scale */
static inline __attribute__((always_inline)) void store_rows(const wino_t *p, float *d, int64_t ld, int rows,
                                                             const vf (*v)[4], int nv, int l0, int l1) {
    const float *rd = p->res ? p->res + (d - p->y) : NULL; /* (d may point before a plane: only its lanes l0.. are touched) */
    float sc = p->scale;
#if defined(__AVX512F__)
    __mmask16 mk[4];
    for (int k = 0; k < nv; k++) {
        int lo = l0 - k * VW, hi = l1 - k * VW;
        if (lo < 0) lo = 0;
        if (hi > VW) hi = VW;
        mk[k] = hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
    }
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < nv; k++) {
            if (!mk[k]) continue;
            vf o = v[r][k];
            if (rd) o = (o + (vf)_mm512_maskz_loadu_ps(mk[k], rd + r * ld + k * VW)) * sc;
            else if (sc != 1.0f) o *= sc;
            if (mk[k] == 0xffff) vst(d + r * ld + k * VW, o);
            else _mm512_mask_storeu_ps(d + r * ld + k * VW, mk[k], (__m512)o);
        }
#else
    (void)nv;
    for (int r = 0; r < rows; r++) /* lanes read from the vectors themselves: a copy to an array
                                     * made GCC warn that lanes past nv VW may be read */
        for (int l = l0; l < l1; l++) {
            float t = v[r][l / VW][l % VW];
            d[r * ld + l] = rd ? (t + rd[r * ld + l]) * sc : t * sc;
        }
#endif
}


/* The output rows of tiles t .. end - 1 of one image and channel (t..end within VW), from the
 * sequences seq[r][0 .. m - 1] of output row m ty + r (lane m (u - t) + b: column b of tile u),
 * the vector's pieces of tile rows one after another; (ty, tx): tile t's row and column on entry,
 * end's on return (kept without divisions). m (= p->m) a constant at the call: the stores unroll.
 * Writes nothing outside those tiles. */
static inline __attribute__((always_inline)) void store_tiles(const wino_t *p, const int m, float *y,
                                                              const vf (*seq)[4], int64_t t, int64_t end, int64_t *pty,
                                                              int64_t *ptx) {
    int64_t ty = *pty, tx = *ptx; /* locals: the stores below may alias anything, *pty would be reloaded */
    for (int64_t a = t; a < end;) {
        int64_t e = a + (p->tw - tx) < end ? a + (p->tw - tx) : end, cols = m * (e - a);
        if (cols > p->OW - m * tx) cols = p->OW - m * tx;
        int l0 = (int)(m * (a - t));
        float *yr = y + m * ty * p->OW + m * tx - l0; /* lane l of the sequence goes to yr[l] */
        int rows = p->OH - m * ty < m ? (int)(p->OH - m * ty) : m;
        store_rows(p, yr, p->OW, rows, seq, m, l0, l0 + (int)cols);
        tx += e - a;
        if (tx == p->tw) ty++, tx = 0;
        a = e;
    }
    *pty = ty;
    *ptx = tx;
}

/* dst[c * ldd + o] = src[o * lds + c] for c < n, o < round_up(O, VW) (zero past O): rows of
 * channels to vectors of channels per pixel, VW x VW at a time, transposed in registers
 * (log2 VW rounds of interleaving rows k and k + VW / 2) */
static inline void rows_to_pixels(const float *src, int64_t lds, int64_t O, int64_t n, float *dst, int64_t ldd) {
    for (int64_t o0 = 0; o0 < O; o0 += VW)
        for (int64_t c0 = 0; c0 < n; c0 += VW) {
            int nc = n - c0 < VW ? (int)(n - c0) : VW;
            vf r[VW], t[VW];
            for (int i = 0; i < VW; i++) {
                const float *s = src + (o0 + i) * lds + c0;
                if (o0 + i >= O) r[i] = (vf){0};
                else if (nc == VW) r[i] = vld(s);
                else {
#if defined(__AVX512F__)
                    r[i] = (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << nc) - 1), s);
#else
                    float b[VW] = {0};
                    for (int l = 0; l < nc; l++) b[l] = s[l];
                    r[i] = vld(b);
#endif
                }
            }
            for (int round = 1; round < VW; round *= 2) {
                for (int k = 0; k < VW / 2; k++) {
                    t[2 * k] = SHUF(r[k], r[k + VW / 2], ILO);
                    t[2 * k + 1] = SHUF(r[k], r[k + VW / 2], IHI);
                }
                memcpy(r, t, sizeof r);
            }
            for (int j = 0; j < nc; j++) vst(dst + (c0 + j) * ldd + o0, r[j]);
        }
}

/* F(4x4) on images of fewer tiles than a vector, T1 of them dividing VW (outputs of up to 4x4,
 * 4x8, 8x8, ...): each vector holds the tiles of VW / T1 whole images, gathered from x and
 * stored to y image by image (td_wino4_input_stacked, td_wino4_output_stacked), where the
 * per-image planes would leave most lanes empty. AVX-512 only (its gathers); the blocks start
 * at multiples of VW tiles, so at image boundaries. */
static inline bool td_wino4_stacked(int64_t T1, int64_t C, int64_t H, int64_t W) {
#if defined(__AVX512F__)
    return T1 < VW && VW % T1 == 0 && (VW / T1) * C * H * W < ((int64_t)1 << 30); /* 32-bit gather offsets */
#else
    (void)T1, (void)C, (void)H, (void)W;
    return false;
#endif
}

/* The geometry of a convolution (C, H, W) -> (O, OH, OW) per image in tiles of m x m, and its
 * blocks: the batch's tiles, numbered (n, ty, tx) in order, go in blocks of NB (a multiple of
 * NR) through the steps, so that a block's operands (`floats_per_tile` per tile: XI (C + O)) stay
 * in L2 between them. */
static inline wino_t wino_plan(int64_t m, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw,
                               int64_t OH, int64_t OW, int64_t floats_per_tile, int64_t nt, int64_t *NB, int64_t *nblk) {
    wino_t p = {C, H, W, O, ph, pw, OH, OW, m, ceil_div(OH, m), ceil_div(OW, m), 0, 0, 0, 0, 0, false, NULL, NULL, 1.0f};
    p.T1 = p.th * p.tw;
    p.ps = (p.th + 1) * p.tw + 2 * VW;
    int64_t total = N * p.T1, nb = 131072 / floats_per_tile / NR * NR; /* ~512 KB */
    if (nb < NR) nb = NR;
    if (nb > 10 * NR) nb = 10 * NR;
    if (ceil_div(total, nb) < 4 * nt && nb > NR) nb = round_up(ceil_div(total, 4 * nt), NR); /* enough blocks */
    *NB = nb;
    *nblk = ceil_div(total, nb);
    p.Qs = nb + VW;
    p.vxs = odd_vectors(C * p.Qs);
    p.mxs = odd_vectors(round_up(O, MR) * p.Qs);
    p.stacked = m == 4 && td_wino4_stacked(p.T1, C, H, W) && *NB % VW == 0;
    return p;
}

/* A block's pieces of images: tiles ta <= t < tb of image n, at v0 in the block. */
typedef struct {
    int64_t n, ta, tb, v0;
} segment;
#define MAX_SEGMENTS (10 * NR + 2)
static inline int block_segments(const wino_t *p, int64_t t0, int64_t t1, segment *seg) {
    int ns = 0;
    for (int64_t t = t0; t < t1; ns++) {
        int64_t n = t / p->T1, ta = t - n * p->T1, tb = (n + 1) * p->T1 < t1 ? p->T1 : t1 - n * p->T1;
        seg[ns] = (segment){n, ta, tb, t - t0};
        t += tb - ta;
    }
    return ns;
}

/* For the weight gradient: the output gradient's rows m ty0 .. m ty1 - 1 of the segment's tile
 * rows, transposed to (pixel, channel) in Y[(r * m tw + c) * Opad + o] (zero off the output and
 * past O), so that the dY transform runs over vectors of channels. Returns ty0. */
static inline int64_t segment_grads_to_pixels(const wino_t *p, const float *dy, const segment *sg, int64_t Opad,
                                              float *Y) {
    int64_t m = p->m, ty0 = sg->ta / p->tw, ty1 = (sg->tb - 1) / p->tw + 1, rows = m * (ty1 - ty0), cols = m * p->tw;
    int64_t OHW = p->OH * p->OW;
    const float *dyn = dy + sg->n * p->O * OHW;
    if (p->O < Opad || p->OW < cols || m * ty1 > p->OH) memset(Y, 0, sizeof(float) * (size_t)(rows * cols * Opad));
    for (int64_t r = 0; r < rows && m * ty0 + r < p->OH; r++)
        rows_to_pixels(dyn + (m * ty0 + r) * p->OW, OHW, p->O, p->OW, Y + r * cols * Opad, Opad);
    return ty0;
}

/* F(4x4, 3x3) (conv_winograd4.c), the steps td_winograd_conv runs for m = 4:
 * u[36] = G g G^T of a 3x3 g (lane by lane: VW filters at once); the 24 planes P (ps floats each) of tile rows ty0 .. ty0 + rows - 1
 * of one channel plane x (H, W); V[xi * vxs + v0 + u] for u < n tiles from plane position u0;
 * output channel o of one image, tiles t0 <= t < t1, from M[xi * mxs + m0 + t - t0], + bias. */
void td_wino4_weight(const vf g[9], vf u[36]);
void td_wino4_fill(const wino_t *p, const float *x, int64_t ty0, int64_t rows, float *P);
void td_wino4_input(const wino_t *p, const float *P, float *V, int64_t u0, int64_t n, int64_t v0);
void td_wino4_output(const wino_t *p, const float *M, int64_t m0, int64_t t0, int64_t t1, float bias, float *y);
/* p->stacked: V for the block's tiles t0 .. t0 + used - 1 (whole images), every channel of x
 * (N, C, H, W); output channel o of those images from M[xi * mxs + o * Qs + u], + bias[n bias_ns + o] */
void td_wino4_input_stacked(const wino_t *p, const float *x, int64_t t0, int64_t used, float *V);
void td_wino4_output_stacked(const wino_t *p, const float *M, int64_t o, int64_t t0, int64_t used, const float *bias,
                             int64_t bias_ns, float *y);
/* For the weight gradient: Dt[xi * xs + (v0 + u) * Opad + o] = (A dY_t A^T)[xi] for the
 * segment's tiles (Y: scratch for segment_grads_to_pixels, 16 (NB + 2 tw) Opad floats);
 * dw = G^T dU G of the reduced products dU[36] (lane by lane). */
void td_wino4_grads(const wino_t *p, const float *dy, const segment *sg, int64_t xs, int64_t Opad, float *Y, float *Dt);
void td_wino4_weight_grad(const vf u[36], vf dw[9]);
#endif
