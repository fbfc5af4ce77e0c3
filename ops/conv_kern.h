/* Internal to the convolution files (conv.c, conv_winograd.c): the vector micro-kernel both
 * run their products on, and the per-thread scratch buffers they share. */
#ifndef TD_CONV_KERN_H
#define TD_CONV_KERN_H
#include <stddef.h>
#include <stdint.h>

#define TD_NN_INTERNAL
#include "nn.h"

/* ---- vector micro-kernels --------------------------------------------------------------------- */
#if defined(__AVX512F__)
#define VW 16 /* floats per vector register */
#define MR 8  /* output channels per micro-tile (broadcasts) */
#define NV 3  /* pixel vectors per micro-tile: 8 x 3 accumulators of 32 registers */
#else
#define VW 8
#define MR 4
#define NV 2
#endif
#define NR (NV * VW)
typedef float vf __attribute__((vector_size(VW * 4)));
_Static_assert(VW == TD_VW, "conv.c and nn.h agree on the vector width");
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4))); /* unaligned access */

static inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }
static inline int64_t ceil_div(int64_t a, int64_t m) { return (a + m - 1) / m; }

/* C[r * ldc + p] = sum_k Ap[k * MR + r] * B[off[k] + p], r < MR, p < NR */
static inline void ukern(int64_t K, const float *restrict Ap, const float *restrict B, const int64_t *restrict off,
                         float *restrict C, int64_t ldc) {
    vf acc[MR][NV];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = (vf){0};
    for (int64_t k = 0; k < K; k++) {
        const float *b = B + off[k];
        vf bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = *(const vfu *)(b + v * VW);
        const float *a = Ap + k * MR;
        for (int r = 0; r < MR; r++) {
            vf av = td_vsplat(a[r]);
            for (int v = 0; v < NV; v++) acc[r][v] += av * bv[v];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) *(vfu *)(C + r * ldc + v * VW) = acc[r][v];
}

/* The weight-gradient micro-kernel (conv_kern.c, wtile): acc[(r * T + j) * lda + o] += sum_{q < Q}
 * xr[r][q + j] * Dt[q * ldd + o] for r < WACC / (T nv), j < T, o < nv VW (Dt, ldd aligned to
 * vectors); nv 1, 2 or 4, T 1 or 3. */
#define WACC (VW == 16 ? 24 : 12) /* accumulators of a weight-gradient tile */
typedef void (*wtile_fn)(int64_t Q, const float *const *xr, const float *Dt, int64_t ldd, float *acc, int64_t lda);
wtile_fn td_conv_wtile(int nv, int T);
/* a T = 1 tile of the fewest rows (WACC / nv, 2/3 or 1/3 of it, in *R) that holds `rows` */
wtile_fn td_conv_wtile_rows(int nv, int rows, int *R);

/* Buffer `slot` (< TD_CONV_NSLOT) of OpenMP thread `tid`, at least n floats (contents undefined),
 * kept for the next call; NULL when out of memory. */
#define TD_CONV_NSLOT 3
#define TD_CONV_MAX_THREADS 64
float *td_conv_scratch(int tid, int slot, size_t n); /* conv_kern.c, as below */
/* threads worth starting for `flops` of work */
int td_conv_threads(double flops);

/* Winograd (conv_winograd.c, conv_winograd4.c). tile: the tile m (2: F(2x2, 3x3), 4: F(4x4,
 * 3x3)) the 3x3 stride-1 convolution (C -> O channels, output OH x OW, padding ph, pw) takes, or
 * 0 for none, by td_conv_path (0 auto: where it was measured faster, by C O / (C + O) against
 * WINO_MIN_GAIN and WINO4_MIN_GAIN (O rounded up to the direct kernel's MR there), or the _WGRAD
 * ones for the weight gradient, F(4x4) only on images of at least a vector of its tiles; 1, 2, 4 none; 3 always F(2x2); 5 always F(4x4)).
 * conv: y (N, O, OH, OW) = conv(x (N, C, H, W), w) + bias (bias may be NULL) in tiles of m; w is
 * (O, C, 3, 3), or with flip the (C, O, 3, 3) weight of the convolution whose input gradient this
 * is, flipped and transposed. 0, or -1 with the error set. */
#define WINO_MIN_GAIN 10
#define WINO4_MIN_GAIN 5
#define WINO_MIN_GAIN_WGRAD 10
#define WINO4_MIN_GAIN_WGRAD 2.4
#define WINO4_MIN_GAIN_SMALL 2.4 /* F(4x4) forward on small images, several to a vector */
int td_winograd_tile(int64_t C, int64_t O, int64_t OH, int64_t OW, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                     int64_t dh, int64_t dw, int64_t ph, int64_t pw, bool wgrad);
int td_winograd_conv(int m, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                     int64_t OW, const float *x, const float *w, bool flip, const float *bias, int64_t bias_ns,
                     const float *res, float scale, float *y);
/* (bias[n * bias_ns + o]: bias_ns 0 for one bias per channel, O for one per image; y = scale
 * (conv + bias + res), res (N, O, OH, OW) or NULL) */
/* its weight gradient in tiles of m: dw (O, C, 3, 3) of that forward (no flip) from x and dy (N, O, OH, OW) */
int td_winograd_wgrad(int m, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw, int64_t OH,
                      int64_t OW, const float *x, const float *dy, float *dw);
#endif
