/* What the convolution files share (declared in conv_kern.h): the weight-gradient micro-kernels,
 * the per-thread scratch buffers, the thread count for a product, the path override. conv.c and
 * conv_winograd.c both call these; nothing here calls them back. */
#include <omp.h>
#include <stdlib.h>

#include "conv_kern.h"

int td_conv_path = 0;

/* Weight-gradient micro-kernel: acc[(r * T + j) * lda + o] += sum_{q < Q} xr[r][q + j] *
 * Dt[q * ldd + o] for R = WACC / (T nv) input rows r, j < T taps read from each row at offsets
 * 0..T-1, and o < nv * VW output channels. The taps are broadcast from their input rows, the
 * output channels are aligned vector loads from the transposed output gradient, so the reduction
 * over pixels stays in registers (no horizontal sums) and each pixel costs nv loads and WACC / nv
 * broadcasts for WACC fused multiply-adds. T = 1: any tap layout, one pointer per tap. T = 3: a
 * kernel 3 taps wide (dilation 1) on the direct layout, where the taps (c, i, 0..2) of a kernel
 * row are one canvas row: 24 tap pointers did not fit the registers and cost a stack load per two
 * multiply-adds (16 output channels ran at 40% of the forward's rate); 8 row pointers do. */
static inline __attribute__((always_inline)) void wtile(const int nv, const int T, const int R, int64_t Q,
                                                        const float *const *xr, const float *restrict Dt, int64_t ldd,
                                                        float *restrict acc, int64_t lda) {
    vf s[WACC];
    const float *x[WACC];
    #pragma GCC unroll 24
    for (int r = 0; r < R; r++) x[r] = xr[r];
    #pragma GCC unroll 24
    for (int i = 0; i < WACC; i++) s[i] = (vf){0};
    for (int64_t q = 0; q < Q; q++) {
        vf d[4];
        #pragma GCC unroll 4
        for (int v = 0; v < nv; v++) d[v] = *(const vf *)(Dt + q * ldd + v * VW);
        #pragma GCC unroll 24
        for (int r = 0; r < R; r++)
            #pragma GCC unroll 3
            for (int j = 0; j < T; j++) {
                vf a = td_vsplat(x[r][q + j]);
                #pragma GCC unroll 4
                for (int v = 0; v < nv; v++) s[(r * T + j) * nv + v] += a * d[v];
            }
    }
    #pragma GCC unroll 24
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 3
        for (int j = 0; j < T; j++)
            #pragma GCC unroll 4
            for (int v = 0; v < nv; v++) *(vfu *)(acc + (r * T + j) * lda + v * VW) += s[(r * T + j) * nv + v];
}
/* GCC's predictive commoning sees that x[r][q + 2] is the next step's x[r][q + 1] and carries the
 * values across steps in scalars, which spill: keep the three loads. */
#if defined(__clang__) /* clang has no predictive commoning (nor the optimize attribute) */
#define NO_PCOM
#else
#define NO_PCOM __attribute__((optimize("no-predictive-commoning")))
#endif
#define WTILE(nv, T)                                                                                                 \
    NO_PCOM static void wtile_##nv##_##T(int64_t Q, const float *const *xr, const float *Dt, int64_t ldd, float *acc, \
                                         int64_t lda) {                                                               \
        wtile(nv, T, WACC / (T * nv), Q, xr, Dt, ldd, acc, lda);                                                      \
    }
WTILE(1, 1)
WTILE(2, 1)
WTILE(4, 1)
WTILE(1, 3)
WTILE(2, 3)
WTILE(4, 3)
/* the tile for nv vectors of output channels and T taps per row (1 or 3) */
wtile_fn td_conv_wtile(int nv, int T) {
    if (T == 3) return nv == 4 ? wtile_4_3 : nv == 2 ? wtile_2_3 : wtile_1_3;
    return nv == 4 ? wtile_4_1 : nv == 2 ? wtile_2_1 : wtile_1_1;
}
/* T = 1 tiles of fewer rows (2/3 and 1/3 of the accumulators), for the last rows of a layer whose
 * row count is not a multiple of WACC / nv: 16 channels in tiles of 24 rows did a third of their
 * multiply-adds on discarded rows */
#define WTILE_R(nv, R)                                                                                       \
    NO_PCOM static void wtile_##nv##_1_r##R(int64_t Q, const float *const *xr, const float *Dt, int64_t ldd, \
                                            float *acc, int64_t lda) {                                      \
        wtile(nv, 1, (R) * WACC / 24, Q, xr, Dt, ldd, acc, lda);                                            \
    }
WTILE_R(1, 16)
WTILE_R(1, 8)
WTILE_R(2, 8)
WTILE_R(2, 4)
WTILE_R(4, 4)
WTILE_R(4, 2)
wtile_fn td_conv_wtile_rows(int nv, int rows, int *R) {
    int full = WACC / nv, two = 2 * full / 3, one = full / 3;
    if (rows > two || one == 0) return *R = full, td_conv_wtile(nv, 1);
    if (rows > one) return *R = two, nv == 4 ? wtile_4_1_r4 : nv == 2 ? wtile_2_1_r8 : wtile_1_1_r16;
    return *R = one, nv == 4 ? wtile_4_1_r2 : nv == 2 ? wtile_2_1_r4 : wtile_1_1_r8;
}

/* ---- per-thread scratch ------------------------------------------------------------------------ */
static struct {
    float *p;
    size_t cap; /* floats */
} pool[TD_CONV_MAX_THREADS][TD_CONV_NSLOT];
static size_t pool_bytes;

size_t td_nn_scratch_bytes(void) { return pool_bytes; }

float *td_conv_scratch(int tid, int slot, size_t n) {
    if (pool[tid][slot].cap >= n) return pool[tid][slot].p;
    size_t want = n + n / 4 + 64;
    float *p = aligned_alloc(64, (want * sizeof(float) + 63) & ~(size_t)63);
    if (!p) return NULL;
    free(pool[tid][slot].p);
    #pragma omp atomic
    pool_bytes += (want - pool[tid][slot].cap) * sizeof(float);
    pool[tid][slot].p = p;
    pool[tid][slot].cap = want;
    return p;
}

int td_conv_threads(double flops) {
    int t = omp_get_max_threads();
    if (t > TD_CONV_MAX_THREADS) t = TD_CONV_MAX_THREADS;
    if (flops < 2e6) t = 1; /* a parallel region costs more than it saves */
    return t < 1 ? 1 : t;
}
