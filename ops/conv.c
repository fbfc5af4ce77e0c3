/* Convolutions (conv2d, conv_transpose2d), average pooling and nearest upsampling, forward and
 * backward side by side.
 *
 * How the convolutions run. All three products (forward, gradient of the input, gradient of the
 * weight) go through two register-blocked micro-kernels written with GCC vector extensions,
 * under OpenMP over images; no BLAS call is made. (OpenBLAS runs these skinny shapes, 16 or 32
 * output channels against 10^5 pixels, at 15-40 GFLOP/s on two cores; the micro-kernel below
 * runs them at the single-core sgemm rate on each core, and needs no thread hand-over between
 * OpenMP and OpenBLAS.)
 *
 *   ukern: C[MR rows][NR pixels] = sum_k A[k][r] * B[off[k] + p]: the output channels are
 *          broadcast from a packed weight panel, the pixels are vector loads from B at a per-k
 *          offset. B is either
 *          - "direct": the zero-padded input of a chunk of images, one canvas per channel with
 *            the images one below the other, sharing their zero rows (frames_for). For stride 1
 *            the input pixels that meet tap (c, i, j) are the canvas shifted by c*cs + i*dh*Wp +
 *            j*dw, contiguous across output rows if the output is computed Wp wide (the
 *            Wp - OW extra columns per row, and the rows between images, are computed and
 *            dropped). No im2col copy at all.
 *          - "im2col": a column matrix (K, Q) built for a chunk of images (any stride), with
 *            off[k] = k*Q. Used for strided convolutions and for small images (4x4), where the
 *            dropped columns of the direct layout would cost more than the copy.
 *   wtile: acc[k][o] += sum_q B[off[k] + q] * Dt[q][o] (the weight gradient, transposed): taps
 *          are broadcast from the same B rows (direct or im2col), output channels are vector loads
 *          from the output gradient transposed to (pixel, channel), so the sum over a chunk's
 *          pixels stays in registers (pixels as the vector dimension needed ten vector loads
 *          per 24 multiply-adds, from L2; bench/README.md has the figures). For 3-wide kernels on
 *          the direct layout, it holds one pointer per kernel row and reads its three taps at
 *          fixed offsets.
 *
 * The gradient of the input of a stride-1 convolution is itself a stride-1 convolution of the
 * padded output gradient with the flipped, transposed weight, so it runs as a forward: direct,
 * or on small images over im2col columns of the padded dy; strided ones compute columns (W^T dy)
 * and scatter them back (col2im; stride-2 rows with vector permutes, as im2col gathers them).
 * The three products of 3x3 stride-1 layers with enough channels take Winograd F(2x2, 3x3)
 * instead (conv_winograd.c: 2.25x fewer products, on ukern too).
 * Images (or chunks of them) are handed to the threads dynamically, so a core shared with another
 * process slows the op by its own share only.
 * The plain loops td_conv2d_*_ref are the specification the tests hold these kernels to. */
#include <math.h>
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "conv_kern.h"

/* ---- layouts ----------------------------------------------------------------------------------- */
/* n floats; the sizes of the models' rows as one vector move each (a loop of 8 runs scalar) */
static inline void copy_row(float *restrict d, const float *restrict s, int64_t n) {
    switch (n) {
    case 4: memcpy(d, s, 16); return;
    case 8: memcpy(d, s, 32); return;
    case 16: memcpy(d, s, 64); return;
    case 32: memcpy(d, s, 128); return;
    default:
        for (int64_t i = 0; i < n; i++) d[i] = s[i];
    }
}

/* dst[c*dcs + j*Hp*Wp + r*Wp + col]: nb images of C planes (H,W) read from src[j*sis + c*scs + ...],
 * placed at (top, left) (negative: cropped) in a zero (Hp,Wp) frame. Fills whole frames only;
 * anything between nb*Hp*Wp and dcs is the caller's. */
static void pad_chunk(float *restrict dst, int64_t dcs, const float *restrict src, int64_t sis, int64_t scs, int64_t nb, int64_t C,
                      int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp) {
    int64_t w0 = left < 0 ? -left : 0, w1 = W < Wp - left ? W : Wp - left;
    int64_t plane = Hp * Wp;
    int64_t r0 = top > 0 ? top : 0, r1 = H + top < Hp ? H + top : Hp; /* frame rows that receive data */
    if (r1 < r0) r1 = r0;
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < nb; j++) {
            float *d = dst + c * dcs + j * plane;
            const float *s = src + j * sis + c * scs;
            if (r0 > 0) memset(d, 0, sizeof(float) * (size_t)(r0 * Wp));
            for (int64_t r = r0; r < r1; r++) {
                float *dr = d + r * Wp;
                const float *sr = s + (r - top) * W;
                if (w1 <= w0) {
                    memset(dr, 0, sizeof(float) * (size_t)Wp);
                    continue;
                }
                int64_t a = left + w0, b = left + w1; /* [a, b) of the frame row is data */
                /* rows are 4-64 floats: a memcpy call per row cost more than the copy (copy_row) */
                for (int64_t c0 = 0; c0 < a; c0++) dr[c0] = 0;
                copy_row(dr + a, sr + w0, b - a);
                for (int64_t c0 = b; c0 < Wp; c0++) dr[c0] = 0;
            }
            if (r1 < Hp) memset(d + r1 * Wp, 0, sizeof(float) * (size_t)((Hp - r1) * Wp));
        }
}

/* Stride-2 rows of im2col and col2im: d[i] = s[2i] and d[2i] += s[i] for i < n. Element by
 * element they ran at a few floats per cycle and took more time than the products of a
 * stride-2 convolution (im2col 22%, col2im 16% against the micro-kernels' 24%).
 * gather2 reads up to s[2n - 1], one float past the last it uses (im2col's frames have slack). */
static inline void gather2(float *restrict d, const float *restrict s, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(s + 2 * i), b = _mm512_loadu_ps(s + 2 * i + 16);
        _mm512_storeu_ps(d + i, _mm512_permutex2var_ps(a, even, b));
    }
#endif
    for (; i < n; i++) d[i] = s[2 * i];
}
static inline void scatter_add2(float *restrict d, const float *restrict s, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    /* s's 16 values spread to the even lanes of two vectors; the odd floats of d are neither
     * read nor written (masked), so the last one may lie past the end of dx */
    const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const __mmask16 ev = 0x5555;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(s + i);
        float *d0 = d + 2 * i, *d1 = d + 2 * i + 16;
        _mm512_mask_storeu_ps(d0, ev, _mm512_add_ps(_mm512_maskz_loadu_ps(ev, d0), _mm512_permutexvar_ps(lo, v)));
        _mm512_mask_storeu_ps(d1, ev, _mm512_add_ps(_mm512_maskz_loadu_ps(ev, d1), _mm512_permutexvar_ps(hi, v)));
    }
#endif
    for (; i < n; i++) d[2 * i] += s[i];
}

/* Output positions o in [0, n) with 0 <= o*s + base < W: [*lo, *hi). */
static inline void valid_range(int64_t n, int64_t s, int64_t base, int64_t W, int64_t *lo, int64_t *hi) {
    int64_t l = base >= 0 ? 0 : ceil_div(-base, s);
    int64_t h = (W - 1 - base) < 0 ? 0 : (W - 1 - base) / s + 1;
    if (h > n) h = n;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* cols[k][j*P + oh*OW + ow] = x_j[c][oh*sh - ph + i*dh][ow*sw - pw + jj*dw] (0 outside), k = (c,i,jj),
 * P = OH*OW, for nb images starting at x; columns [nb*P, Q) zero. The images are first copied
 * into zero frames (xp, C * nb * Hf * Wf floats, im2col_frame), so that every column row is a
 * plain run of the frame with no edge cases. */
static void im2col_frame(const td_conv_geom *g, int64_t *Hf, int64_t *Wf) {
    *Hf = (g->OH - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    *Wf = (g->OW - 1) * g->sw + (g->kw - 1) * g->dw + 1;
}
static void im2col_chunk(float *cols, float *xp, const float *x, int64_t nb, const td_conv_geom *g, int64_t Q) {
    int64_t P = g->OH * g->OW, HW = g->H * g->W, Hf, Wf;
    im2col_frame(g, &Hf, &Wf);
    int64_t plane = Hf * Wf;
    pad_chunk(xp, nb * plane, x, g->C * HW, HW, nb, g->C, g->H, g->W, g->ph, g->pw, Hf, Wf);
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t jj = 0; jj < g->kw; jj++) {
                float *row = cols + ((c * g->kh + i) * g->kw + jj) * Q;
                for (int64_t j = 0; j < nb; j++) {
                    const float *xf = xp + (c * nb + j) * plane + i * g->dh * Wf + jj * g->dw;
                    for (int64_t oh = 0; oh < g->OH; oh++) {
                        float *d = row + j * P + oh * g->OW;
                        const float *xr = xf + oh * g->sh * Wf;
                        if (g->sw == 1) copy_row(d, xr, g->OW);
                        else if (g->sw == 2) gather2(d, xr, g->OW);
                        else
                            for (int64_t ow = 0; ow < g->OW; ow++) d[ow] = xr[ow * g->sw];
                    }
                }
                memset(row + nb * P, 0, sizeof(float) * (size_t)(Q - nb * P));
            }
}

/* dx_j[c][ih][iw] += cols[k][j*P + p]: the adjoint of im2col_chunk. */
static void col2im_chunk(float *dx, const float *cols, int64_t nb, const td_conv_geom *g, int64_t Q) {
    int64_t P = g->OH * g->OW, HW = g->H * g->W;
    for (int64_t j = 0; j < nb; j++)
        for (int64_t c = 0; c < g->C; c++) {
            float *xc = dx + (j * g->C + c) * HW;
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t jj = 0; jj < g->kw; jj++) {
                    const float *row = cols + ((c * g->kh + i) * g->kw + jj) * Q + j * P;
                    int64_t base = jj * g->dw - g->pw, lo, hi;
                    valid_range(g->OW, g->sw, base, g->W, &lo, &hi);
                    for (int64_t oh = 0; oh < g->OH; oh++) {
                        int64_t ih = oh * g->sh - g->ph + i * g->dh;
                        if (ih < 0 || ih >= g->H) continue;
                        float *xr = xc + ih * g->W + base;
                        const float *s = row + oh * g->OW;
                        if (g->sw == 1)
                            for (int64_t ow = lo; ow < hi; ow++) xr[ow] += s[ow];
                        else if (g->sw == 2) scatter_add2(xr + 2 * lo, s + lo, hi - lo);
                        else
                            for (int64_t ow = lo; ow < hi; ow++) xr[ow * g->sw] += s[ow];
                    }
                }
        }
}

/* dst[p * ldd + o] = src[o * lds + p] for o < rows, p < cols (cols <= 64 or so). The reads run
 * along src's rows and the writes stay in a cols x ldd block that L1 holds; gathering a column of
 * src instead reads rows a plane (often 4 KB) apart, which all fall in one L1 set. */
static void transpose_into(float *restrict dst, int64_t ldd, const float *restrict src, int64_t lds, int64_t rows,
                           int64_t cols) {
    for (int64_t o = 0; o < rows; o++) {
        const float *s = src + o * lds;
        __builtin_prefetch(s + 2 * cols); /* the caller's next-but-one call reads there */
        __builtin_prefetch(s + 2 * cols + 16);
        for (int64_t p = 0; p < cols; p++) dst[p * ldd + o] = s[p];
    }
}

/* ---- path choice ------------------------------------------------------------------------------- */
#define DIRECT_LIMIT 1.5 /* computed / valid positions up to which the direct layout beats im2col */
#define WGRAD_DIRECT_LIMIT 1.5 /* the same for the weight gradient */

/* Stride-1 direct layout is worth it when the dropped columns (Wp - OW per row) are few. */
static bool direct_ok(int64_t rows, int64_t row_w, int64_t valid_pixels, double limit) {
    if (td_conv_path == 2) return false;
    if (td_conv_path == 1) return true;
    return valid_pixels > 0 && (double)round_up(rows * row_w, NR) <= limit * (double)valid_pixels;
}

/* Stride-1 direct layout over a chunk of m images: each channel is one canvas of m frames of F
 * rows (Wp wide), the image at row `pad` of its frame, then `pad` zero rows. When the padding is
 * within the kernel's reach (0 <= pad <= dil*(k-1)), F = H + pad: an image's bottom padding is the
 * next frame's top one, so 8x8 images cost 9 rows each instead of 10 and can take the direct path
 * (no im2col copy); image j's output rows are canvas rows j*F + oh. Otherwise one image per chunk
 * in its full padded frame (F = H + 2 pad, no trailing rows). */
typedef struct {
    int64_t F, tail; /* rows per frame, zero rows after the last frame */
    bool stacks;     /* chunks of several images allowed */
} frames_t;
static frames_t frames_for(int64_t H, int64_t pad, int64_t k, int64_t dil) {
    bool st = pad >= 0 && pad <= dil * (k - 1);
    return (frames_t){st ? H + pad : H + 2 * pad, st ? pad : 0, st};
}
/* floats per channel of a chunk of m images (room for the chunk size nb) */
static int64_t frames_cs(frames_t f, int64_t nb, int64_t Wp) { return (nb * f.F + f.tail) * Wp; }
/* canvas positions computed for m images: up to the last image's last output row */
static int64_t frames_q(frames_t f, int64_t m, int64_t OH, int64_t Wp) { return ((m - 1) * f.F + OH) * Wp; }
/* Writes the canvases of m images (C channels of (H, W), image stride sis, channel stride scs) into
 * dst (channel stride cs), zero everywhere else up to C * cs. */
static void frames_fill(float *dst, int64_t cs, frames_t f, const float *src, int64_t sis, int64_t scs, int64_t m,
                        int64_t C, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Wp) {
    pad_chunk(dst, cs, src, sis, scs, m, C, H, W, top, left, f.F, Wp);
    for (int64_t c = 0; c < C; c++) memset(dst + c * cs + m * f.F * Wp, 0, sizeof(float) * (size_t)(cs - m * f.F * Wp));
}

/* Images per im2col chunk: about 512 KB of columns, at least 1, at most `most`. */
static int64_t chunk_images(int64_t floats_per_image, int64_t most) {
    int64_t nb = (int64_t)(131072 / (floats_per_image > 0 ? floats_per_image : 1));
    if (nb < 1) nb = 1;
    if (nb > most) nb = most;
    return nb < 1 ? 1 : nb;
}

/* The direct layout's chunk: *nb images, the count up to what fits the scratch budget (`chans`
 * floats per canvas position) that computes the fewest dropped positions per valid one (8x8
 * images: 7 waste 1.39, 1-6 waste 1.5, once the rows are rounded to NR); and whether it beats
 * im2col (computed positions within `limit` times the valid ones). */
static double frames_waste(frames_t f, int64_t m, int64_t OH, int64_t OW, int64_t Wp) {
    return (double)round_up(frames_q(f, m, OH, Wp), NR) / (double)(m * OH * OW);
}
static bool direct_plan(frames_t f, int64_t OH, int64_t OW, int64_t Wp, int64_t chans, int64_t N, double limit,
                        int64_t *nb) {
    int64_t most = f.stacks ? chunk_images(chans * f.F * Wp, ceil_div(N, 4 * omp_get_max_threads())) : 1, m = 1;
    double best = frames_waste(f, 1, OH, OW, Wp);
    for (int64_t c = 2; c <= most; c++) {
        double w = frames_waste(f, c, OH, OW, Wp);
        if (w < best - 0.01) { /* a smaller chunk unless a larger one saves 1% */
            best = w;
            m = c;
        }
    }
    *nb = m;
    return direct_ok(frames_q(f, m, OH, Wp) / Wp, Wp, m * OH * OW, limit);
}

/* The same for the micro-kernel's columns: the chunk's P-pixel images are computed NR at a
 * time, so a chunk of one 8x8 image (64 pixels) would compute 96 columns. Up to twice the
 * memory (or 3 images) is allowed for a count that wastes less: 3 images of 64 are 4 x 48. */
static int64_t chunk_images_nr(int64_t floats_per_image, int64_t P, int64_t most) {
    int64_t nb = chunk_images(floats_per_image, most), best = nb, hi = nb * 2 > 3 ? nb * 2 : 3;
    if (hi > most) hi = most;
    double waste = (double)round_up(nb * P, NR) / (double)(nb * P);
    for (int64_t c = nb + 1; c <= hi; c++) {
        double w = (double)round_up(c * P, NR) / (double)(c * P);
        if (w < waste - 0.02) {
            waste = w;
            best = c;
        }
    }
    return best;
}

/* Packs w (rows, K) row-major into panels of MR rows: Ap[(b*K + k)*MR + r] = w[(b*MR + r)*K + k],
 * zero rows past `rows`. `flip` reads the transposed, flipped weight of a stride-1 input
 * gradient instead: rows = C, k = (o, i, j) -> w[o][c][kh-1-i][kw-1-j]. `trans` reads w^T:
 * rows = K of w (O, K), reduction over O. */
static float *pack_panels(const float *w, int64_t rows, int64_t K, int mode, const td_conv_geom *g) {
    int64_t nbk = ceil_div(rows, MR);
    float *Ap = aligned_alloc(64, (size_t)round_up(nbk * K * MR * (int64_t)sizeof(float) + 64, 64));
    if (!Ap) return td_fail("conv2d: out of memory packing weights");
    for (int64_t b = 0; b < nbk; b++)
        for (int64_t k = 0; k < K; k++)
            for (int r = 0; r < MR; r++) {
                int64_t row = b * MR + r;
                float v = 0;
                if (row < rows) {
                    if (mode == 0) v = w[row * K + k];
                    else if (mode == 1) { /* row = c, k = (o, i, j) */
                        int64_t kk = g->kh * g->kw, o = k / kk, i = (k % kk) / g->kw, j = k % g->kw;
                        v = w[((o * g->C + row) * g->kh + (g->kh - 1 - i)) * g->kw + (g->kw - 1 - j)];
                    } else { /* row = tap of w (O, rows), k = o */
                        v = w[k * rows + row];
                    }
                }
                Ap[(b * K + k) * MR + r] = v;
            }
    return Ap;
}

/* ---- forward ----------------------------------------------------------------------------------- */
int td_conv2d_fwd_kernel(const td_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    int64_t K = g->C * g->kh * g->kw, O = g->O, nob = ceil_div(O, MR), OHW = g->OH * g->OW, CHW = g->C * g->H * g->W;
    if (g->N == 0 || OHW == 0 || O == 0) return 0;
    int wm = td_winograd_tile(g->C, O, g->OH, g->OW, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw, g->ph, g->pw, false);
    if (wm)
        return td_winograd_conv(wm, g->N, g->C, g->H, g->W, O, g->ph, g->pw, g->OH, g->OW, x, w, false, b, g->bs, g->res,
                                g->scale ? g->scale : 1.0f, y);
    float *Ap = pack_panels(w, O, K, 0, g);
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(K ? K : 1));
    if (!Ap || !off) {
        free(Ap);
        free(off);
        return td_fail_int("conv2d: out of memory");
    }
    int64_t Wp = g->W + 2 * g->pw, Q, bsz, nb, row_w, cs = 0, ims = OHW; /* ims: tb's stride between images */
    frames_t fr = frames_for(g->H, g->ph, g->kh, g->dh);
    bool direct = g->sh == 1 && g->sw == 1 && direct_plan(fr, g->OH, g->OW, Wp, g->C + O, g->N, DIRECT_LIMIT, &nb);
    if (direct) {
        Q = round_up(frames_q(fr, nb, g->OH, Wp), NR);
        cs = frames_cs(fr, nb, Wp);
        for (int64_t c = 0; c < g->C; c++)
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = 0; j < g->kw; j++) off[(c * g->kh + i) * g->kw + j] = c * cs + i * g->dh * Wp + j * g->dw;
        int64_t need = (K ? off[K - 1] : 0) + Q;
        bsz = need > g->C * cs ? need : g->C * cs;
        row_w = Wp;
        ims = fr.F * Wp;
    } else {
        nb = chunk_images_nr(K * OHW, OHW, ceil_div(g->N, 4 * omp_get_max_threads()));
        Q = round_up(nb * OHW, NR);
        for (int64_t k = 0; k < K; k++) off[k] = k * Q;
        bsz = K * Q;
        row_w = g->OW;
    }
    int nt = td_conv_threads(2.0 * g->N * O * OHW * K);
    int64_t Hf, Wf;
    im2col_frame(g, &Hf, &Wf);
    int64_t frame = Hf * Wf;
    volatile int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *B = td_conv_scratch(t, 0, (size_t)bsz + 64), *tb = td_conv_scratch(t, 1, (size_t)(nob * MR * Q));
        float *xp = direct ? NULL : td_conv_scratch(t, 2, (size_t)(g->C * nb * frame) + 64);
        if (!B || !tb || (!direct && !xp)) failed = 1;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t ci = 0; ci < ceil_div(g->N, nb); ci++) {
            if (failed) continue;
            if (td_interrupted()) {
                failed = 2;
                continue;
            }
            int64_t n = ci * nb, m = g->N - n < nb ? g->N - n : nb;
            int64_t Qm = direct ? round_up(frames_q(fr, m, g->OH, Wp), NR) : Q;
            if (direct) {
                frames_fill(B, cs, fr, x + n * CHW, CHW, g->H * g->W, m, g->C, g->H, g->W, g->ph, g->pw, Wp);
                memset(B + g->C * cs, 0, sizeof(float) * (size_t)(bsz - g->C * cs));
            } else {
                im2col_chunk(B, xp, x + n * CHW, m, g, Q);
            }
            for (int64_t p0 = 0; p0 < Qm; p0 += NR)
                for (int64_t ob = 0; ob < nob; ob++) ukern(K, Ap + ob * K * MR, B + p0, off, tb + ob * MR * Q + p0, Q);
            for (int64_t j = 0; j < m; j++)
                for (int64_t o = 0; o < O; o++) {
                    float bias = b ? b[(n + j) * g->bs + o] : 0.0f, *yo = y + ((n + j) * O + o) * OHW;
                    float sc = g->scale ? g->scale : 1.0f;
                    const float *s = tb + o * Q + j * ims, *ro = g->res ? g->res + ((n + j) * O + o) * OHW : NULL;
                    for (int64_t oh = 0; oh < g->OH; oh++) {
                        const float *sr = s + oh * row_w;
                        float *yr = yo + oh * g->OW;
                        if (ro)
                            for (int64_t ow = 0; ow < g->OW; ow++) yr[ow] = (sr[ow] + bias + ro[oh * g->OW + ow]) * sc;
                        else if (sc != 1.0f)
                            for (int64_t ow = 0; ow < g->OW; ow++) yr[ow] = (sr[ow] + bias) * sc;
                        else
                            for (int64_t ow = 0; ow < g->OW; ow++) yr[ow] = sr[ow] + bias;
                    }
                }
        }
    }
    free(Ap);
    free(off);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}

/* ---- gradient of the input ------------------------------------------------------------------------ */
int td_conv2d_bwd_data_kernel(const td_conv_geom *g, const float *dy, const float *w, const float *bias, float *dx) {
    int64_t K = g->C * g->kh * g->kw, O = g->O, OHW = g->OH * g->OW, HW = g->H * g->W, CHW = g->C * HW;
    if (g->N == 0 || CHW == 0) return 0;
    /* a 3x3 stride-1 input gradient is the 3x3 convolution of dy padded by 2 - p */
    int wm = td_winograd_tile(O, g->C, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw, 2 - g->ph, 2 - g->pw, false);
    if (wm)
        return td_winograd_conv(wm, g->N, O, g->OH, g->OW, g->C, 2 - g->ph, 2 - g->pw, g->H, g->W, dy, w, true, bias, 0, NULL,
                                1.0f, dx);
    int64_t Wq = g->W + g->dw * (g->kw - 1), qh = g->dh * (g->kh - 1) - g->ph, qw = g->dw * (g->kw - 1) - g->pw;
    frames_t fr = frames_for(g->OH, qh, g->kh, g->dh); /* frames of the padded dy */
    int64_t nb = 1, cs = 0;
    bool direct = g->sh == 1 && g->sw == 1 && direct_plan(fr, g->H, g->W, Wq, O + g->C, g->N, DIRECT_LIMIT, &nb);
    /* stride 1 on small images: the same flipped-weight convolution, over im2col columns of the
     * padded dy (g2: the convolution dy -> dx) instead of the direct layout */
    bool flip = !direct && g->sh == 1 && g->sw == 1;
    td_conv_geom g2 = {g->N, O, g->OH, g->OW, g->C, g->kh, g->kw, 1, 1, g->dh * (g->kh - 1) - g->ph,
                       g->dw * (g->kw - 1) - g->pw, g->dh, g->dw, g->H, g->W, 0, NULL, 1.0f};
    int64_t Kr = direct || flip ? O * g->kh * g->kw : O; /* reduction length of the micro-kernel */
    int64_t rows = direct || flip ? g->C : K;           /* rows it produces */
    int64_t nrb = ceil_div(rows, MR);
    float *Ap = pack_panels(w, rows, Kr, direct || flip ? 1 : 2, g);
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(Kr ? Kr : 1));
    if (!Ap || !off) {
        free(Ap);
        free(off);
        return td_fail_int("conv2d: out of memory");
    }
    int64_t Q, bsz;
    if (direct) {
        Q = round_up(frames_q(fr, nb, g->H, Wq), NR);
        cs = frames_cs(fr, nb, Wq);
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = 0; j < g->kw; j++) off[(o * g->kh + i) * g->kw + j] = o * cs + i * g->dh * Wq + j * g->dw;
        int64_t need = (Kr ? off[Kr - 1] : 0) + Q;
        bsz = need > O * cs ? need : O * cs;
    } else if (flip) {
        nb = chunk_images_nr(Kr * HW, HW, ceil_div(g->N, 4 * omp_get_max_threads()));
        Q = round_up(nb * HW, NR);
        for (int64_t k = 0; k < Kr; k++) off[k] = k * Q;
        bsz = Kr * Q;
    } else {
        nb = chunk_images_nr((K > O ? K : O) * OHW, OHW, ceil_div(g->N, 4 * omp_get_max_threads()));
        Q = round_up(nb * OHW, NR);
        for (int64_t o = 0; o < O; o++) off[o] = o * Q;
        bsz = O * Q;
    }
    int nt = td_conv_threads(2.0 * g->N * O * OHW * K);
    int64_t Hf, Wf;
    im2col_frame(&g2, &Hf, &Wf);
    volatile int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *B = td_conv_scratch(t, 0, (size_t)bsz + 64), *tb = td_conv_scratch(t, 1, (size_t)(nrb * MR * Q));
        float *xp = flip ? td_conv_scratch(t, 2, (size_t)(O * nb * Hf * Wf) + 64) : NULL;
        if (!B || !tb || (flip && !xp)) failed = 1;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t ci = 0; ci < ceil_div(g->N, nb); ci++) {
            if (failed) continue;
            if (td_interrupted()) {
                failed = 2;
                continue;
            }
            int64_t n = ci * nb, m = g->N - n < nb ? g->N - n : nb;
            int64_t Qm = direct ? round_up(frames_q(fr, m, g->H, Wq), NR) : Q;
            if (direct) {
                frames_fill(B, cs, fr, dy + n * O * OHW, O * OHW, OHW, m, O, g->OH, g->OW, qh, qw, Wq);
                memset(B + O * cs, 0, sizeof(float) * (size_t)(bsz - O * cs));
            } else if (flip) {
                im2col_chunk(B, xp, dy + n * O * OHW, m, &g2, Q);
            } else { /* dyb[o][j*OHW + p] */
                for (int64_t o = 0; o < O; o++) {
                    for (int64_t j = 0; j < m; j++)
                        memcpy(B + o * Q + j * OHW, dy + ((n + j) * O + o) * OHW, sizeof(float) * (size_t)OHW);
                    memset(B + o * Q + m * OHW, 0, sizeof(float) * (size_t)(Q - m * OHW));
                }
            }
            for (int64_t p0 = 0; p0 < Qm; p0 += NR)
                for (int64_t rb = 0; rb < nrb; rb++) ukern(Kr, Ap + rb * Kr * MR, B + p0, off, tb + rb * MR * Q + p0, Q);
            if (direct) {
                for (int64_t j = 0; j < m; j++)
                    for (int64_t c = 0; c < g->C; c++) {
                        float bb = bias ? bias[c] : 0.0f, *xo = dx + (n + j) * CHW + c * HW;
                        for (int64_t h = 0; h < g->H; h++) {
                            const float *sr = tb + c * Q + (j * fr.F + h) * Wq;
                            float *xr = xo + h * g->W;
                            for (int64_t ww = 0; ww < g->W; ww++) xr[ww] = sr[ww] + bb;
                        }
                    }
            } else if (flip) {
                for (int64_t j = 0; j < m; j++)
                    for (int64_t c = 0; c < g->C; c++) {
                        float bb = bias ? bias[c] : 0.0f, *xo = dx + ((n + j) * g->C + c) * HW;
                        const float *sr = tb + c * Q + j * HW;
                        for (int64_t i = 0; i < HW; i++) xo[i] = sr[i] + bb;
                    }
            } else {
                float *xo = dx + n * CHW;
                for (int64_t j = 0; j < m; j++)
                    for (int64_t c = 0; c < g->C; c++) {
                        float bb = bias ? bias[c] : 0.0f, *p = xo + (j * g->C + c) * HW;
                        for (int64_t i = 0; i < HW; i++) p[i] = bb;
                    }
                col2im_chunk(xo, tb, m, g, Q);
            }
        }
    }
    free(Ap);
    free(off);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}

/* ---- gradient of the weight and bias -------------------------------------------------------------- */
/* db[n][o] = sum of dy over image n's plane o: the gradient of a bias per image (N, O) */
static void bias_grad_per_image(const td_conv_geom *g, const float *dy, float *db) {
    int64_t NO = g->N * g->O, OHW = g->OH * g->OW;
    #pragma omp parallel for if (NO * OHW > 65536) schedule(static)
    for (int64_t i = 0; i < NO; i++) db[i] = (float)td_vsum(dy + i * OHW, OHW);
}

static void bias_grad(const td_conv_geom *g, const float *dy, float *db) {
    int64_t O = g->O, OHW = g->OH * g->OW;
    #pragma omp parallel for if (g->N * O * OHW > 65536) schedule(static)
    for (int64_t o = 0; o < O; o++) {
        double s = 0;
        for (int64_t n = 0; n < g->N; n++) s += td_vsum(dy + (n * O + o) * OHW, OHW);
        db[o] = (float)s;
    }
}

int td_conv2d_bwd_weight_kernel(const td_conv_geom *g, const float *x, const float *dy, float *dw, float *db) {
    int64_t K = g->C * g->kh * g->kw, O = g->O, OHW = g->OH * g->OW, HW = g->H * g->W, CHW = g->C * HW;
    if (!dw || g->N == 0 || OHW == 0 || K == 0) {
        if (db) bias_grad(g, dy, db);
        if (dw) memset(dw, 0, sizeof(float) * (size_t)(O * K));
        return 0;
    }
    int wm = td_winograd_tile(g->C, O, g->OH, g->OW, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw, g->ph, g->pw, true);
    if (wm) {
        if (td_winograd_wgrad(wm, g->N, g->C, g->H, g->W, O, g->ph, g->pw, g->OH, g->OW, x, dy, dw)) return -1;
        if (db) bias_grad(g, dy, db);
        return 0;
    }
    int64_t Opad = round_up(O, VW), Kpad = round_up(K, WACC);
    /* direct: the chunk's frames (frames_for; full padded ones when they cannot share rows) one
     * after another; dy's positions outside an image's output are zero in Dt */
    int64_t Wp = g->W + 2 * g->pw;
    frames_t fr = frames_for(g->H, g->ph, g->kh, g->dh);
    int64_t plane = fr.F * Wp;
    bool direct = g->sh == 1 && g->sw == 1 && td_conv_path != 2 &&
                  (td_conv_path == 1 || (double)plane <= WGRAD_DIRECT_LIMIT * (double)OHW);
    bool rows3 = direct && g->kw == 3 && g->dw == 1; /* tiles of whole kernel rows (wtile, T = 3) */
    int64_t per_image = direct ? (g->C + Opad) * plane : (K + Opad) * OHW;
    int64_t nbmax = chunk_images(per_image, ceil_div(g->N, 4 * omp_get_max_threads()));
    int64_t Qmax = direct ? nbmax * plane : nbmax * OHW;
    int64_t bsz = direct ? g->C * frames_cs(fr, nbmax, Wp) + g->kh * g->dh * Wp + g->kw * g->dw + 2 * VW : K * Qmax;
    int nt = td_conv_threads(2.0 * g->N * O * OHW * K);
    int64_t Hf, Wf;
    im2col_frame(g, &Hf, &Wf);
    int64_t frame = Hf * Wf;
    float *part = calloc((size_t)(nt * Kpad * Opad), sizeof(float)); /* per thread: dw^T (Kpad, Opad) */
    double *dbp = calloc((size_t)(nt * O), sizeof(double)); /* per thread: db, summed while dy is in cache */
    if (!part || !dbp) {
        free(part);
        free(dbp);
        return td_fail_int("conv2d: out of memory");
    }
    volatile int failed = 0;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        float *acc = part + t * Kpad * Opad;
        int64_t *off = malloc(sizeof(int64_t) * (size_t)K);
        float *B = td_conv_scratch(t, 0, (size_t)bsz + 64), *Dt = td_conv_scratch(t, 1, (size_t)(Qmax * Opad));
        float *xp = direct ? NULL : td_conv_scratch(t, 2, (size_t)(g->C * nbmax * frame) + 64);
        if (!B || !Dt || !off || (!direct && !xp)) failed = 1;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t ci = 0; ci < ceil_div(g->N, nbmax); ci++) {
            if (failed) continue;
            if (td_interrupted()) {
                failed = 2;
                continue;
            }
            int64_t n = ci * nbmax, m = g->N - n < nbmax ? g->N - n : nbmax, Qk;
            const float *dyn = dy + n * O * OHW;
            if (db)
                for (int64_t j = 0; j < m; j++)
                    for (int64_t o = 0; o < O; o++) dbp[t * O + o] += td_vsum(dyn + (j * O + o) * OHW, OHW);
            if (direct) { /* B: [c][j][F][Wp]; Dt[q][o], q = (j, h, w) over (m, F, Wp): dy at h < OH, w < OW */
                Qk = frames_q(fr, m, g->OH, Wp);
                int64_t cs = frames_cs(fr, m, Wp);
                for (int64_t c = 0; c < g->C; c++)
                    for (int64_t i = 0; i < g->kh; i++)
                        for (int64_t j = 0; j < g->kw; j++)
                            off[(c * g->kh + i) * g->kw + j] = c * cs + i * g->dh * Wp + j * g->dw;
                int64_t xsz = g->C * cs, need = off[K - 1] + Qk;
                frames_fill(B, cs, fr, x + n * CHW, CHW, HW, m, g->C, g->H, g->W, g->ph, g->pw, Wp);
                if (need > xsz) memset(B + xsz, 0, sizeof(float) * (size_t)(need - xsz));
                for (int64_t j = 0; j < m; j++)
                    for (int64_t h = 0; h < (j < m - 1 ? fr.F : g->OH); h++) {
                        float *d = Dt + (j * plane + h * Wp) * Opad; /* zero what dy does not fill */
                        if (h >= g->OH) {
                            memset(d, 0, sizeof(float) * (size_t)(Wp * Opad));
                            continue;
                        }
                        transpose_into(d, Opad, dyn + j * O * OHW + h * g->OW, OHW, O, g->OW);
                        if (Opad > O)
                            for (int64_t w = 0; w < g->OW; w++) memset(d + w * Opad + O, 0, sizeof(float) * (size_t)(Opad - O));
                        memset(d + g->OW * Opad, 0, sizeof(float) * (size_t)((Wp - g->OW) * Opad));
                    }
            } else { /* B: columns (K, Qk); Dt[q][o], q = (j, p) */
                Qk = m * OHW;
                for (int64_t k = 0; k < K; k++) off[k] = k * Qk;
                im2col_chunk(B, xp, x + n * CHW, m, g, Qk);
                if (Opad > O) memset(Dt, 0, sizeof(float) * (size_t)(Qk * Opad));
                for (int64_t j = 0; j < m; j++)
                    for (int64_t p0 = 0; p0 < OHW; p0 += 64)
                        transpose_into(Dt + (j * OHW + p0) * Opad, Opad, dyn + j * O * OHW + p0, OHW, O,
                                       OHW - p0 < 64 ? OHW - p0 : 64);
            }
            for (int64_t o0 = 0; o0 < Opad; ) {
                int64_t left = (Opad - o0) / VW;
                int nv = left >= 4 ? 4 : left >= 2 ? 2 : 1, T = rows3 ? 3 : 1, R = WACC / (T * nv);
                wtile_fn tile = td_conv_wtile(nv, T);
                for (int64_t r0 = 0; r0 < K / T; r0 += R) { /* rows of T taps: k = row * T + j */
                    const float *xr[WACC];
                    for (int r = 0; r < R; r++) xr[r] = B + off[r0 + r < K / T ? (r0 + r) * T : 0]; /* past K: discarded */
                    tile(Qk, xr, Dt + o0, Opad, acc + r0 * T * Opad + o0, Opad);
                }
                o0 += nv * VW;
            }
        }
        free(off);
    }
    if (!failed) {
        for (int64_t o = 0; o < O; o++)
            for (int64_t k = 0; k < K; k++) {
                float s = 0;
                for (int t = 0; t < nt; t++) s += part[(t * Kpad + k) * Opad + o];
                dw[o * K + k] = s;
            }
        for (int64_t o = 0; db && o < O; o++) {
            double s = 0;
            for (int t = 0; t < nt; t++) s += dbp[t * O + o];
            db[o] = (float)s;
        }
    }
    free(dbp);
    free(part);
    if (failed == 2) return td_fail_int("conv2d: interrupted");
    if (failed) return td_fail_int("conv2d: out of memory for scratch buffers");
    return 0;
}

/* ---- reference loops (the specification) -------------------------------------------------------- */
void td_conv2d_fwd_ref(const td_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t o = 0; o < g->O; o++)
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    double s = b ? b[n * g->bs + o] : 0;
                    int64_t yi = ((n * g->O + o) * g->OH + oh) * g->OW + ow;
                    for (int64_t c = 0; c < g->C; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t ih = oh * g->sh - g->ph + i * g->dh, iw = ow * g->sw - g->pw + j * g->dw;
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                s += (double)x[((n * g->C + c) * g->H + ih) * g->W + iw] *
                                     w[((o * g->C + c) * g->kh + i) * g->kw + j];
                            }
                    double sc = g->scale ? g->scale : 1;
                    y[yi] = g->res ? (float)((s + g->res[yi]) * sc) : (float)(s * sc);
                }
}

void td_conv2d_bwd_data_ref(const td_conv_geom *g, const float *dy, const float *w, float *dx) {
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t c = 0; c < g->C; c++)
            for (int64_t ih = 0; ih < g->H; ih++)
                for (int64_t iw = 0; iw < g->W; iw++) {
                    double s = 0;
                    for (int64_t o = 0; o < g->O; o++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t th = ih + g->ph - i * g->dh, tw = iw + g->pw - j * g->dw;
                                if (th < 0 || tw < 0 || th % g->sh || tw % g->sw) continue;
                                int64_t oh = th / g->sh, ow = tw / g->sw;
                                if (oh >= g->OH || ow >= g->OW) continue;
                                s += (double)dy[((n * g->O + o) * g->OH + oh) * g->OW + ow] *
                                     w[((o * g->C + c) * g->kh + i) * g->kw + j];
                            }
                    dx[((n * g->C + c) * g->H + ih) * g->W + iw] = (float)s;
                }
}

void td_conv2d_bwd_weight_ref(const td_conv_geom *g, const float *x, const float *dy, float *dw, float *db) {
    for (int64_t o = 0; o < g->O; o++) {
        if (db) {
            double s = 0;
            for (int64_t n = 0; n < g->N; n++)
                for (int64_t p = 0; p < g->OH * g->OW; p++) s += dy[(n * g->O + o) * g->OH * g->OW + p];
            db[o] = (float)s;
        }
        if (!dw) continue;
        for (int64_t c = 0; c < g->C; c++)
            for (int64_t i = 0; i < g->kh; i++)
                for (int64_t j = 0; j < g->kw; j++) {
                    double s = 0;
                    for (int64_t n = 0; n < g->N; n++)
                        for (int64_t oh = 0; oh < g->OH; oh++)
                            for (int64_t ow = 0; ow < g->OW; ow++) {
                                int64_t ih = oh * g->sh - g->ph + i * g->dh, iw = ow * g->sw - g->pw + j * g->dw;
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                s += (double)x[((n * g->C + c) * g->H + ih) * g->W + iw] *
                                     dy[((n * g->O + o) * g->OH + oh) * g->OW + ow];
                            }
                    dw[((o * g->C + c) * g->kh + i) * g->kw + j] = (float)s;
                }
    }
}

/* ---- tensor ops --------------------------------------------------------------------------------- */
void td_conv_opts_default(td_conv_opts *o) {
    memset(o, 0, sizeof *o);
    o->stride[0] = o->stride[1] = 1;
    o->dilation[0] = o->dilation[1] = 1;
    o->groups = 1;
    o->scale = 1;
}

/* A contiguous float view of t without recording anything (new reference). */
static td_tensor *raw_contig(td_tensor *t) {
    bool prev = td_set_grad_enabled(false);
    td_tensor *c = td_contiguous(t);
    td_set_grad_enabled(prev);
    return c;
}

static void geom_to_node(td_node *n, const td_conv_geom *g) {
    int64_t v[16] = {g->N, g->C, g->H, g->W, g->O, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw, g->OH, g->OW, g->bs};
    n->farg[0] = g->scale;
    memcpy(n->iarg, v, sizeof v);
}

static td_conv_geom geom_from_node(const td_node *n) {
    const int64_t *v = n->iarg;
    td_conv_geom g = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15],
                      NULL, (float)n->farg[0]};
    return g;
}

/* Common checks of conv2d / conv_transpose2d; fills geometry pieces. */
static int check_conv(const char *op, td_tensor *x, td_tensor *w, td_tensor *b, const td_conv_opts *o, bool transposed) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF], b3[TD_SHAPE_BUF];
    if (x->ndim != 4)
        return td_fail_int("%s: input must be 4-D (N,C,H,W), got shape (%s)", op, td_shape_str(x, b1, sizeof b1));
    if (w->ndim != 4)
        return td_fail_int("%s: weight must be 4-D (%s,kh,kw), got shape (%s)", op, transposed ? "C,O" : "O,C",
                           td_shape_str(w, b1, sizeof b1));
    if (x->dtype != TD_F32 || w->dtype != TD_F32 || (b && b->dtype != TD_F32))
        return td_fail_int("%s: needs float32 tensors (input %s, weight %s)", op, td_dtype_name(x->dtype), td_dtype_name(w->dtype));
    if (o->groups != 1) return td_fail_int("%s: groups = %lld is not supported (only 1)", op, (long long)o->groups);
    if (w->shape[transposed ? 0 : 1] != x->shape[1])
        return td_fail_int("%s: input (%s) has %lld channels but weight (%s) expects %lld", op,
                           td_shape_str(x, b1, sizeof b1), (long long)x->shape[1], td_shape_str(w, b2, sizeof b2),
                           (long long)w->shape[transposed ? 0 : 1]);
    int64_t O = w->shape[transposed ? 1 : 0];
    bool per_image = !transposed && b && b->ndim == 2 && b->shape[0] == x->shape[0] && b->shape[1] == O;
    if (b && !per_image && (b->ndim != 1 || b->shape[0] != O)) {
        if (transposed)
            return td_fail_int("%s: bias of shape (%s) for weight (%s): needs (%lld)", op, td_shape_str(b, b3, sizeof b3),
                               td_shape_str(w, b2, sizeof b2), (long long)O);
        return td_fail_int("%s: bias of shape (%s) for input (%s) and weight (%s): needs (%lld), or (%lld,%lld) for one per image",
                           op, td_shape_str(b, b3, sizeof b3), td_shape_str(x, b1, sizeof b1), td_shape_str(w, b2, sizeof b2),
                           (long long)O, (long long)x->shape[0], (long long)O);
    }
    for (int i = 0; i < 2; i++) {
        if (o->stride[i] < 1 || o->dilation[i] < 1 || o->padding[i] < 0 || o->output_padding[i] < 0)
            return td_fail_int("%s: stride (%lld,%lld) and dilation (%lld,%lld) must be >= 1, padding (%lld,%lld) >= 0", op,
                               (long long)o->stride[0], (long long)o->stride[1], (long long)o->dilation[0],
                               (long long)o->dilation[1], (long long)o->padding[0], (long long)o->padding[1]);
        if (w->shape[2 + i] < 1) return td_fail_int("%s: empty kernel (%s)", op, td_shape_str(w, b2, sizeof b2));
    }
    if (!transposed && (o->output_padding[0] || o->output_padding[1]))
        return td_fail_int("%s: output_padding applies to conv_transpose2d only", op);
    if (transposed)
        for (int i = 0; i < 2; i++)
            if (o->output_padding[i] >= o->stride[i] && o->output_padding[i] >= o->dilation[i])
                return td_fail_int("%s: output_padding %lld must be smaller than stride %lld or dilation %lld", op,
                                   (long long)o->output_padding[i], (long long)o->stride[i], (long long)o->dilation[i]);
    return 0;
}

/* y = s (conv(x, w) + b + r): dy reaches the convolution as s dy, which is s folded into a copy
 * of the (small) weight for dx and into dw and db afterwards; r's gradient is s dy itself (dy,
 * shared, when s = 1) */
static void conv2d_backward(td_node *n, td_tensor *g) {
    td_conv_geom ge = geom_from_node(n);
    td_tensor *x = n->saved[0], *w = n->saved[1], *gc = td_contiguous(g);
    if (!gc) return;
    float s = ge.scale ? ge.scale : 1.0f;
    if (n->in[3]) {
        td_tensor *dr = s == 1.0f ? (td_retain(gc), gc) : td_binary_scalar(TD_MUL, gc, s, false);
        td_node_accum(n, 3, dr);
        td_release(dr);
    }
    if (n->in[0]) {
        td_tensor *dx = td_empty(TD_F32, 4, x->shape), *ws = s == 1.0f ? (td_retain(w), w) : td_binary_scalar(TD_MUL, w, s, false);
        if (dx && ws && td_conv2d_bwd_data_kernel(&ge, td_f32(gc), td_f32(ws), NULL, td_f32(dx)) == 0)
            td_node_accum(n, 0, dx);
        td_release(dx);
        td_release(ws);
    }
    if (n->in[1] || n->in[2]) {
        int64_t dbshape[2] = {ge.N, ge.O};
        td_tensor *dw = n->in[1] ? td_empty(TD_F32, 4, w->shape) : NULL;
        td_tensor *db = n->in[2] ? (ge.bs ? td_empty(TD_F32, 2, dbshape) : td_empty(TD_F32, 1, &ge.O)) : NULL;
        if (db && ge.bs) bias_grad_per_image(&ge, td_f32(gc), td_f32(db));
        if ((!n->in[1] || dw) && (!n->in[2] || db) &&
            td_conv2d_bwd_weight_kernel(&ge, td_f32(x), td_f32(gc), dw ? td_f32(dw) : NULL,
                                        db && !ge.bs ? td_f32(db) : NULL) == 0) {
            for (int64_t i = 0; s != 1.0f && dw && i < td_numel(dw); i++) td_f32(dw)[i] *= s;
            for (int64_t i = 0; s != 1.0f && db && i < td_numel(db); i++) td_f32(db)[i] *= s;
            if (dw) td_node_accum(n, 1, dw);
            if (db) td_node_accum(n, 2, db);
        }
        td_release(dw);
        td_release(db);
    }
    td_release(gc);
}

/* Runs a convolution-shaped kernel (the conv forward, or for conv_transpose2d the conv's input
 * gradient) on contiguous copies of x, w, b into a new (oshape) tensor, and records its node. */
typedef int (*conv_kernel_fn)(const td_conv_geom *g, const float *x, const float *w, const float *b, float *y);
static td_tensor *conv_apply(td_conv_geom *g, const int64_t *oshape, td_tensor *x, td_tensor *w, td_tensor *b,
                             td_tensor *r, conv_kernel_fn kernel, const char *name, td_backward_fn backward) {
    td_tensor *xc = raw_contig(x), *wc = xc ? raw_contig(w) : NULL, *bc = (wc && b) ? raw_contig(b) : NULL;
    td_tensor *rc = (wc && r) ? raw_contig(r) : NULL;
    td_tensor *y = (wc && (!b || bc) && (!r || rc)) ? td_empty(TD_F32, 4, oshape) : NULL;
    g->res = rc ? td_f32(rc) : NULL;
    if (y && kernel(g, td_f32(xc), td_f32(wc), bc ? td_f32(bc) : NULL, td_f32(y))) {
        td_release(y);
        y = NULL;
    }
    g->res = NULL;
    td_release(rc);
    if (y) {
        td_tensor *ins[4] = {x, w, b, r};
        td_node *n = td_record(y, name, backward, r ? 4 : 3, ins);
        if (n) {
            geom_to_node(n, g);
            td_node_save(n, 0, xc);
            td_node_save(n, 1, wc);
        }
    }
    td_release(xc);
    td_release(wc);
    td_release(bc);
    return y;
}

/* The extent of a dilated kernel, d (k - 1) + 1, and the output size along one axis:
 * conv (in + 2p - extent) / s + 1, transposed (in - 1) s - 2p + extent + op. In checked
 * arithmetic: a stride of 2^62 wrapped the transposed size to 3. False on overflow or when
 * the size passes TD_MAX_NUMEL; *out may be < 1 (the callers say the output is empty). */
static bool conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int64_t op, bool transposed,
                          int64_t *extent, int64_t *out) {
    int64_t e, t, u;
    if (!td_mul_ok(d, k - 1, &e) || !td_add_ok(e, 1, &e) || !td_mul_ok(p, 2, &u)) return false;
    *extent = e;
    if (!transposed) {
        if (!td_add_ok(in, u, &t) || !td_sub_ok(t, e, &t)) return false;
        *out = t < 0 ? 0 : t / s + 1;
    } else {
        if (!td_mul_ok(in - 1, s, &t) || !td_sub_ok(t, u, &t) || !td_add_ok(t, e, &t) || !td_add_ok(t, op, &t)) return false;
        *out = t;
    }
    return *out <= TD_MAX_NUMEL;
}

td_tensor *td_conv2d(td_tensor *x, td_tensor *w, td_tensor *b, const td_conv_opts *o) {
    td_conv_opts def;
    if (!o) {
        td_conv_opts_default(&def);
        o = &def;
    }
    if (check_conv("conv2d", x, w, b, o, false)) return NULL;
    td_conv_geom g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2], w->shape[3],
                      o->stride[0], o->stride[1], o->padding[0], o->padding[1], o->dilation[0], o->dilation[1], 0, 0,
                      b && b->ndim == 2 ? w->shape[0] : 0, NULL, 1.0f};
    int64_t eh, ew;
    if (!conv_out_size(g.H, g.kh, g.sh, g.ph, g.dh, 0, false, &eh, &g.OH) ||
        !conv_out_size(g.W, g.kw, g.sw, g.pw, g.dw, 0, false, &ew, &g.OW))
        return td_fail("conv2d: stride (%lld,%lld), padding (%lld,%lld) or dilation (%lld,%lld) overflows the output size",
                       (long long)g.sh, (long long)g.sw, (long long)g.ph, (long long)g.pw, (long long)g.dh, (long long)g.dw);
    if (g.H + 2 * g.ph < eh || g.W + 2 * g.pw < ew) {
        char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
        return td_fail("conv2d: input (%s) padded by (%lld,%lld) is smaller than the kernel %lldx%lld (dilated) of weight (%s)",
                       td_shape_str(x, b1, sizeof b1), (long long)g.ph, (long long)g.pw, (long long)eh, (long long)ew,
                       td_shape_str(w, b2, sizeof b2));
    }
    int64_t oshape[4] = {g.N, g.O, g.OH, g.OW};
    td_tensor *r = o->residual;
    if (r && (r->dtype != TD_F32 || r->ndim != 4 || memcmp(r->shape, oshape, sizeof oshape))) {
        char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF], b3[TD_SHAPE_BUF];
        return td_fail("conv2d: residual of shape (%s) for input (%s) and weight (%s): needs the output's (%lld,%lld,%lld,%lld), float32",
                       td_shape_str(r, b1, sizeof b1), td_shape_str(x, b2, sizeof b2), td_shape_str(w, b3, sizeof b3),
                       (long long)g.N, (long long)g.O, (long long)g.OH, (long long)g.OW);
    }
    g.scale = o->scale ? (float)o->scale : 1.0f;
    return conv_apply(&g, oshape, x, w, b, r, td_conv2d_fwd_kernel, "conv2d", conv2d_backward);
}

/* conv_transpose2d is the adjoint of a convolution whose input has the transposed conv's output
 * shape: forward = that conv's input gradient, backward = its forward (input) and weight gradient. */
static void conv_transpose2d_backward(td_node *n, td_tensor *g) {
    td_conv_geom ge = geom_from_node(n); /* the adjoint conv: input (N,O,OH',OW') -> output x's shape */
    td_tensor *x = n->saved[0], *w = n->saved[1], *gc = td_contiguous(g);
    if (!gc) return;
    if (n->in[0]) {
        td_tensor *dx = td_empty(TD_F32, 4, x->shape);
        if (dx && td_conv2d_fwd_kernel(&ge, td_f32(gc), td_f32(w), NULL, td_f32(dx)) == 0) td_node_accum(n, 0, dx);
        td_release(dx);
    }
    if (n->in[1]) { /* dw[c][o][i][j] = sum x[n][c][p] * gy-window: the adjoint conv's weight gradient */
        td_tensor *dw = td_empty(TD_F32, 4, w->shape);
        if (dw && td_conv2d_bwd_weight_kernel(&ge, td_f32(gc), td_f32(x), td_f32(dw), NULL) == 0) td_node_accum(n, 1, dw);
        td_release(dw);
    }
    if (n->in[2]) {
        int64_t C = ge.C, HW = ge.H * ge.W;
        td_tensor *db = td_empty(TD_F32, 1, &C);
        if (db) {
            float *d = td_f32(db);
            const float *gp = td_f32(gc);
            for (int64_t c = 0; c < C; c++) {
                double s = 0;
                for (int64_t i = 0; i < ge.N; i++) s += td_vsum(gp + (i * C + c) * HW, HW);
                d[c] = (float)s;
            }
            td_node_accum(n, 2, db);
        }
        td_release(db);
    }
    td_release(gc);
}

td_tensor *td_conv_transpose2d(td_tensor *x, td_tensor *w, td_tensor *b, const td_conv_opts *o) {
    td_conv_opts def;
    if (!o) {
        td_conv_opts_default(&def);
        o = &def;
    }
    if (check_conv("conv_transpose2d", x, w, b, o, true)) return NULL;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[1];
    int64_t kh = w->shape[2], kw = w->shape[3];
    int64_t eh, ew, OH, OW;
    if (!conv_out_size(H, kh, o->stride[0], o->padding[0], o->dilation[0], o->output_padding[0], true, &eh, &OH) ||
        !conv_out_size(W, kw, o->stride[1], o->padding[1], o->dilation[1], o->output_padding[1], true, &ew, &OW))
        return td_fail("conv_transpose2d: stride (%lld,%lld), padding (%lld,%lld) or dilation (%lld,%lld) makes an output "
                       "of more than 2^40 elements per side", (long long)o->stride[0], (long long)o->stride[1],
                       (long long)o->padding[0], (long long)o->padding[1], (long long)o->dilation[0],
                       (long long)o->dilation[1]);
    if (OH < 1 || OW < 1) {
        char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
        return td_fail("conv_transpose2d: input (%s) with weight (%s) gives an empty output (%lldx%lld)",
                       td_shape_str(x, b1, sizeof b1), td_shape_str(w, b2, sizeof b2), (long long)OH, (long long)OW);
    }
    /* the adjoint conv: input (N,O,OH,OW), weight (C,O,kh,kw) as (out=C, in=O), output (N,C,H,W) */
    td_conv_geom g = {N, O, OH, OW, C, kh, kw, o->stride[0], o->stride[1], o->padding[0], o->padding[1],
                      o->dilation[0], o->dilation[1], H, W, 0, NULL, 1.0f};
    int64_t oshape[4] = {N, O, OH, OW};
    return conv_apply(&g, oshape, x, w, b, NULL, td_conv2d_bwd_data_kernel, "conv_transpose2d", conv_transpose2d_backward);
}

/* ---- average pooling ------------------------------------------------------------------------------ */
/* The 2x2 case of both pooling and nearest upsampling (what the U-Net resamples with), as loops
 * of constant stride that the compiler vectorises (interleaving shuffles); the general loops
 * below, with the window a runtime count, ran scalar. y[i] = s (r0[2i] + r0[2i+1] + r1[2i] +
 * r1[2i+1]) for i < n */
static inline void pool2_row(float *restrict y, const float *restrict r0, const float *restrict r1, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) y[i] = (r0[2 * i] + r0[2 * i + 1] + (r1[2 * i] + r1[2 * i + 1])) * s;
}
/* d[2i] = d[2i+1] = s v[i] for i < n */
static inline void spread2_row(float *restrict d, const float *restrict v, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) d[2 * i] = d[2 * i + 1] = v[i] * s;
}

/* x planes (P, H, W) -> y (P, OH, OW): mean over kh x kw windows at stride (sh, sw) */
static void avgpool_fwd(const float *x, float *y, int64_t P, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, int64_t OH, int64_t OW) {
    float inv = 1.0f / (float)(kh * kw);
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2) {
        #pragma omp parallel for if (P * H * W > 65536) schedule(static)
        for (int64_t r = 0; r < P * OH; r++) {
            const float *x0 = x + (r / OH) * H * W + (r % OH) * 2 * W;
            pool2_row(y + r * OW, x0, x0 + W, OW, 0.25f);
        }
        return;
    }
    #pragma omp parallel for if (P * H * W > 65536) schedule(static)
    for (int64_t p = 0; p < P; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            float *yr = yp + oh * OW;
            for (int64_t ow = 0; ow < OW; ow++) yr[ow] = 0;
            for (int64_t i = 0; i < kh; i++) {
                const float *xr = xp + (oh * sh + i) * W;
                for (int64_t ow = 0; ow < OW; ow++) {
                    const float *xw = xr + ow * sw;
                    float s = 0;
                    for (int64_t j = 0; j < kw; j++) s += xw[j];
                    yr[ow] += s;
                }
            }
            for (int64_t ow = 0; ow < OW; ow++) yr[ow] *= inv;
        }
    }
}

static void avgpool_bwd(float *dx, const float *dy, int64_t P, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, int64_t OH, int64_t OW) {
    float inv = 1.0f / (float)(kh * kw);
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2) {
        #pragma omp parallel for if (P * H * W > 65536) schedule(static)
        for (int64_t p = 0; p < P; p++) {
            float *xp = dx + p * H * W;
            for (int64_t oh = 0; oh < OH; oh++) {
                float *x0 = xp + 2 * oh * W;
                spread2_row(x0, dy + (p * OH + oh) * OW, OW, 0.25f);
                memcpy(x0 + W, x0, sizeof(float) * (size_t)W);
                if (W > 2 * OW) x0[W - 1] = x0[2 * W - 1] = 0; /* an odd width's last column */
            }
            if (H > 2 * OH) memset(xp + (H - 1) * W, 0, sizeof(float) * (size_t)W);
        }
        return;
    }
    #pragma omp parallel for if (P * H * W > 65536) schedule(static)
    for (int64_t p = 0; p < P; p++) {
        float *xp = dx + p * H * W;
        const float *yp = dy + p * OH * OW;
        memset(xp, 0, sizeof(float) * (size_t)(H * W));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t i = 0; i < kh; i++) {
                float *xr = xp + (oh * sh + i) * W;
                for (int64_t ow = 0; ow < OW; ow++) {
                    float v = yp[oh * OW + ow] * inv;
                    for (int64_t j = 0; j < kw; j++) xr[ow * sw + j] += v;
                }
            }
    }
}

static void avg_pool2d_backward(td_node *n, td_tensor *g) {
    const int64_t *a = n->iarg; /* N C H W kh kw sh sw OH OW */
    td_tensor *gc = td_contiguous(g);
    int64_t shape[4] = {a[0], a[1], a[2], a[3]};
    td_tensor *dx = gc ? td_empty(TD_F32, 4, shape) : NULL;
    if (dx) {
        avgpool_bwd(td_f32(dx), td_f32(gc), a[0] * a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
        td_node_accum(n, 0, dx);
    }
    td_release(dx);
    td_release(gc);
}

td_tensor *td_avg_pool2d(td_tensor *x, const int64_t kernel[2], const int64_t stride[2]) {
    char b1[TD_SHAPE_BUF];
    if (x->ndim != 4)
        return td_fail("avg_pool2d: input must be 4-D (N,C,H,W), got shape (%s)", td_shape_str(x, b1, sizeof b1));
    if (x->dtype != TD_F32) return td_fail("avg_pool2d: needs a float32 input, got %s", td_dtype_name(x->dtype));
    int64_t kh = kernel[0], kw = kernel[1], sh = stride ? stride[0] : kh, sw = stride ? stride[1] : kw;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1)
        return td_fail("avg_pool2d: kernel (%lld,%lld) and stride (%lld,%lld) must be >= 1", (long long)kh, (long long)kw,
                       (long long)sh, (long long)sw);
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (H < kh || W < kw)
        return td_fail("avg_pool2d: input (%s) is smaller than the window %lldx%lld", td_shape_str(x, b1, sizeof b1),
                       (long long)kh, (long long)kw);
    int64_t OH = (H - kh) / sh + 1, OW = (W - kw) / sw + 1, oshape[4] = {N, C, OH, OW};
    td_tensor *xc = raw_contig(x), *y = xc ? td_empty(TD_F32, 4, oshape) : NULL;
    if (y) {
        avgpool_fwd(td_f32(xc), td_f32(y), N * C, H, W, kh, kw, sh, sw, OH, OW);
        td_node *n = td_record(y, "avg_pool2d", avg_pool2d_backward, 1, &x);
        if (n) {
            int64_t a[10] = {N, C, H, W, kh, kw, sh, sw, OH, OW};
            memcpy(n->iarg, a, sizeof a);
        }
    }
    td_release(xc);
    return y;
}

/* ---- nearest upsampling ------------------------------------------------------------------------- */
static void upsample_backward(td_node *n, td_tensor *g) {
    const int64_t *a = n->iarg; /* N C H W sh sw */
    int64_t P = a[0] * a[1], H = a[2], W = a[3], sh = a[4], sw = a[5], OW = W * sw, shape[4] = {a[0], a[1], H, W};
    td_tensor *gc = td_contiguous(g), *dx = gc ? td_empty(TD_F32, 4, shape) : NULL;
    if (dx) {
        const float *gy = td_f32(gc);
        float *d = td_f32(dx);
        if (sh == 2 && sw == 2) {
            #pragma omp parallel for if (P * H * W > 65536) schedule(static)
            for (int64_t r = 0; r < P * H; r++) pool2_row(d + r * W, gy + r * 2 * OW, gy + r * 2 * OW + OW, W, 1.0f);
        } else
        #pragma omp parallel for if (P * H * W > 65536) schedule(static)
        for (int64_t p = 0; p < P; p++)
            for (int64_t h = 0; h < H; h++) {
                float *dr = d + (p * H + h) * W;
                for (int64_t w = 0; w < W; w++) dr[w] = 0;
                for (int64_t i = 0; i < sh; i++) {
                    const float *gr = gy + (p * H * sh + h * sh + i) * OW;
                    for (int64_t w = 0; w < W; w++) {
                        float s = 0;
                        for (int64_t j = 0; j < sw; j++) s += gr[w * sw + j];
                        dr[w] += s;
                    }
                }
            }
        td_node_accum(n, 0, dx);
    }
    td_release(dx);
    td_release(gc);
}

td_tensor *td_upsample_nearest2d(td_tensor *x, int64_t sh, int64_t sw) {
    char b1[TD_SHAPE_BUF];
    if (x->ndim != 4)
        return td_fail("upsample_nearest2d: input must be 4-D (N,C,H,W), got shape (%s)", td_shape_str(x, b1, sizeof b1));
    if (x->dtype != TD_F32) return td_fail("upsample_nearest2d: needs a float32 input, got %s", td_dtype_name(x->dtype));
    if (sh < 1 || sw < 1)
        return td_fail("upsample_nearest2d: scale (%lld,%lld) must be a positive integer", (long long)sh, (long long)sw);
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], P = N * C, OW, OH;
    /* checked: a scale of 2^62 wrapped H * sh and the output was written anywhere */
    if (!td_mul_ok(W, sw, &OW) || !td_mul_ok(H, sh, &OH) || OW > TD_MAX_NUMEL || OH > TD_MAX_NUMEL)
        return td_fail("upsample_nearest2d: scale (%lld,%lld) of input (%s) makes an output of more than 2^40 elements",
                       (long long)sh, (long long)sw, td_shape_str(x, b1, sizeof b1));
    int64_t oshape[4] = {N, C, OH, OW};
    td_tensor *xc = raw_contig(x), *y = xc ? td_empty(TD_F32, 4, oshape) : NULL;
    if (y) {
        const float *s = td_f32(xc);
        float *d = td_f32(y);
        #pragma omp parallel for if (P * H * W * sh * sw > 65536) schedule(static)
        for (int64_t p = 0; p < P; p++)
            for (int64_t h = 0; h < H; h++) {
                const float *sr = s + (p * H + h) * W;
                float *d0 = d + (p * H * sh + h * sh) * OW;
                if (sw == 2) spread2_row(d0, sr, W, 1.0f);
                else
                    for (int64_t w = 0; w < W; w++)
                        for (int64_t j = 0; j < sw; j++) d0[w * sw + j] = sr[w];
                for (int64_t i = 1; i < sh; i++) memcpy(d0 + i * OW, d0, sizeof(float) * (size_t)OW);
            }
        td_node *n = td_record(y, "upsample_nearest2d", upsample_backward, 1, &x);
        if (n) {
            int64_t a[6] = {N, C, H, W, sh, sw};
            memcpy(n->iarg, a, sizeof a);
        }
    }
    td_release(xc);
    return y;
}
