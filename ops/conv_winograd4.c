/* Winograd F(4x4, 3x3): every 4x4 block of outputs from a 6x6 patch of the padded input,
 *     Y = A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A,
 * 36 multiplies per tile and channel pair instead of 144 (4x fewer than the direct products,
 * 1.78x fewer than F(2x2)), and per output pixel 2.25 transformed floats per channel to write
 * and read instead of 4. The price is accuracy: the transforms scale by up to 8 and 1/24, so the
 * rounding error is ~10x the direct sum's (still ~1e-6 of the output's scale in the tests).
 * Points 0, +-1, +-2 and infinity (Lavin and Gray, 2016):
 *     B^T = [4  0 -5  0 1 0;  0 -4 -4  1 1 0;  0 4 -4 -1 1 0;  0 -2 -1  2 1 0;  0 2 -1 -2 1 0;
 *            0  4  0 -5 0 1]
 *     G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * Only the transforms live here; td_winograd_conv (conv_winograd.c) runs them, with the
 * products, on blocks of tiles, as it does F(2x2)'s. */
#include <string.h>

#include "winograd.h"

static const float G[6][3] = {{0.25f, 0, 0},
                              {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                              {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                              {1.0f / 24, 1.0f / 12, 1.0f / 6},
                              {1.0f / 24, -1.0f / 12, 1.0f / 6},
                              {0, 0, 1}};

void td_wino4_weight(const vf g[9], vf u[36]) {
    vf t[6][3]; /* G g */
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
    for (int i = 0; i < 6; i++) /* (G g) G^T */
        for (int l = 0; l < 6; l++) u[i * 6 + l] = t[i][0] * G[l][0] + t[i][1] * G[l][1] + t[i][2] * G[l][2];
}

/* o = B^T z for a column of 6 vectors */
static inline void bt6(const vf z[6], vf o[6]) {
    vf a = z[4] - 4.0f * z[2], b = z[3] - 4.0f * z[1], c = z[4] - z[2], d = 2.0f * (z[3] - z[1]);
    o[0] = 4.0f * (z[0] - z[2]) + c;
    o[1] = a + b;
    o[2] = a - b;
    o[3] = c + d;
    o[4] = c - d;
    o[5] = 4.0f * (z[1] - z[3]) + (z[5] - z[3]);
}

/* o = A^T m for a column of 6 vectors */
static inline void at6(const vf m[6], vf o[4]) {
    vf p = m[1] + m[2], q = m[1] - m[2], r = m[3] + m[4], s = m[3] - m[4];
    o[0] = m[0] + p + r;
    o[1] = q + 2.0f * s;
    o[2] = p + 4.0f * r;
    o[3] = q + 8.0f * s + m[5];
}

/* The last step of the input transform for one vector of tiles: from h[s][r] = (d B)[r][s],
 * B^T (d B) to v[(6 i + s) cs], the XI planes of V */
static inline __attribute__((always_inline)) void input_rows_to_planes(vf h[6][6], float *v, int64_t cs) {
    for (int s = 0; s < 6; s++) {
        vf o[6];
        bt6(h[s], o);
        for (int i = 0; i < 6; i++) vst(v + (i * 6 + s) * cs, o[i]);
    }
}

/* The output transform of one vector of tiles: A^T M A + bias from m[(6 i + j) ms], as each
 * output row a's lanes in output order (seq[a][k], lane 4 l + b of the sequence: Y[a][b] of
 * tile lane l) */
static inline __attribute__((always_inline)) void output_tiles(const float *m, int64_t ms, vf bias, vf seq[4][4]) {
    vf w[4][6]; /* w[b][i] = (M A)[i][b] */
    for (int i = 0; i < 6; i++) {
        vf mi[6], o[4];
        for (int j = 0; j < 6; j++) mi[j] = vld(m + (i * 6 + j) * ms);
        at6(mi, o);
        for (int b = 0; b < 4; b++) w[b][i] = o[b];
    }
    vf Y[4][4]; /* Y[a][b]: output row 4 ty + a, column 4 tx + b */
    for (int b = 0; b < 4; b++) {
        vf o[4];
        at6(w[b], o);
        for (int a = 0; a < 4; a++) Y[a][b] = o[a] + bias;
    }
    for (int a = 0; a < 4; a++) {
        vf plo = SHUF(Y[a][0], Y[a][2], ILO), phi = SHUF(Y[a][0], Y[a][2], IHI);
        vf qlo = SHUF(Y[a][1], Y[a][3], ILO), qhi = SHUF(Y[a][1], Y[a][3], IHI);
        seq[a][0] = SHUF(plo, qlo, ILO);
        seq[a][1] = SHUF(plo, qlo, IHI);
        seq[a][2] = SHUF(phi, qhi, ILO);
        seq[a][3] = SHUF(phi, qhi, IHI);
    }
}

/* The input transform reads, for tile t = ty tw + tx of an image, the padded pixels (4 ty + r,
 * 4 tx + b), r, b < 6. Held as 24 planes P[(r % 4) * 6 + b][rho * tw + tx] = padded(4 rho + r % 4,
 * 4 tx + b), they sit at t (r < 4) and t + tw (r >= 4) of six planes: one vector of tiles is 36
 * loads however short the tile rows (F(2x2)'s fill_planes, with columns of stride 4). Fills rows
 * rho = 0 .. rows - 1 of the planes from padded rows 4 ty0 .. 4 (ty0 + rows) - 1 of the channel
 * plane x (H, W). */
#if defined(__AVX512F__)
/* td_wino4_fill for rows of fewer tiles than a vector (16x16 and 32x32 images): a vector of plane
 * positions holds g = VW / tw plane rows, its 4 VW padded floats pv = 4 tw / VW vectors of each
 * of g padded rows 4 apart, loaded masked (zero off the image). g and pv constant per call site. */
static inline __attribute__((always_inline)) void fill_grouped(const wino_t *p, const float *x, int64_t ty0,
                                                               int64_t rows, float *P, const int g, const int pv) {
    lmask cm[2][2]; /* [half][k]: the columns of vector k of a row piece, shifted by 4 half */
    for (int half = 0; half < 2; half++)
        for (int k = 0; k < pv; k++) cm[half][k] = row_mask(p, k * VW - p->pw + 4 * half);
    for (int64_t rho0 = 0; rho0 < rows; rho0 += g)
        for (int q = 0; q < 4; q++) {
            const float *rp[4];
            for (int j = 0; j < g; j++) {
                int64_t h = 4 * (ty0 + rho0 + j) + q - p->ph;
                rp[j] = h >= 0 && h < p->H ? x + h * p->W : NULL;
            }
            float *d = P + q * 6 * p->ps + rho0 * p->tw;
            for (int half = 0; half < 2; half++) { /* columns 4 tx + b, b < 4; then b = 4, 5 */
                vf a[4];
                for (int v = 0; v < 4; v++) {
                    const float *r = rp[v / pv];
                    a[v] = r ? load_masked(r, (v % pv) * VW - p->pw + 4 * half, cm[half][v % pv]) : (vf){0};
                }
                vf e01 = SHUF(a[0], a[1], EVEN), o01 = SHUF(a[0], a[1], ODD);
                vf e23 = SHUF(a[2], a[3], EVEN), o23 = SHUF(a[2], a[3], ODD);
                float *dh = d + 4 * half * p->ps;
                vst(dh, SHUF(e01, e23, EVEN));
                vst(dh + p->ps, SHUF(o01, o23, EVEN));
                if (half) continue;
                vst(dh + 2 * p->ps, SHUF(e01, e23, ODD));
                vst(dh + 3 * p->ps, SHUF(o01, o23, ODD));
            }
        }
}
#endif

void td_wino4_fill(const wino_t *p, const float *x, int64_t ty0, int64_t rows, float *P) {
    const float *next = x + p->H * p->W + (4 * ty0 - p->ph) * p->W; /* see fill_planes */
    for (int64_t j = 0; j < 4 * rows * p->W; j += 16) __builtin_prefetch(next + j);
#if defined(__AVX512F__)
    if (p->tw == 4 || p->tw == 8) {
        if (p->tw == 4) fill_grouped(p, x, ty0, rows, P, 4, 1);
        else fill_grouped(p, x, ty0, rows, P, 2, 2);
        return;
    }
#endif
    enum { KMAX = 8 }; /* vectors per row whose masks are kept (tw up to 8 VW) */
    lmask mk[KMAX][8];
    int64_t nk = ceil_div(p->tw, VW);
    for (int64_t i = 0; i < nk && i < KMAX; i++)
        for (int j = 0; j < 8; j++) mk[i][j] = row_mask(p, 4 * i * VW + (j / 4) * 4 + (j % 4) * VW - p->pw);
    for (int64_t R = 4 * ty0; R < 4 * (ty0 + rows); R++) {
        int64_t h = R - p->ph, rho = R / 4 - ty0;
        float *q = P + (R % 4) * 6 * p->ps + rho * p->tw;
        if (h < 0 || h >= p->H) {
            for (int b = 0; b < 6; b++)
                for (int64_t k = 0; k < p->tw; k += VW) vst(q + b * p->ps + k, (vf){0});
            continue;
        }
        const float *xr = x + h * p->W;
        for (int64_t i = 0; i < nk; i++) { /* VW at a time: the spill is the next row's, written next */
            int64_t k = i * VW, s0 = 4 * k - p->pw;
            const lmask *m = i < KMAX ? mk[i] : NULL;
            for (int half = 0; half < 2; half++) { /* columns 4 tx + b, b < 4; then b = 4, 5 */
                int64_t s = s0 + 4 * half;
                const lmask *mh = m ? m + 4 * half : NULL;
                vf a0 = load_row(p, xr, s, mh ? mh : NULL), a1 = load_row(p, xr, s + VW, mh ? mh + 1 : NULL);
                vf a2 = load_row(p, xr, s + 2 * VW, mh ? mh + 2 : NULL), a3 = load_row(p, xr, s + 3 * VW, mh ? mh + 3 : NULL);
                vf e01 = SHUF(a0, a1, EVEN), o01 = SHUF(a0, a1, ODD);
                vf e23 = SHUF(a2, a3, EVEN), o23 = SHUF(a2, a3, ODD);
                float *d = q + 4 * half * p->ps + k;
                vst(d, SHUF(e01, e23, EVEN));
                vst(d + p->ps, SHUF(o01, o23, EVEN));
                if (half) continue;
                vst(d + 2 * p->ps, SHUF(e01, e23, ODD));
                vst(d + 3 * p->ps, SHUF(o01, o23, ODD));
            }
        }
    }
}

/* V[xi * vxs + c * Qs + v0 + u] for u < n tiles starting at plane position u0, xi = 6 i + s.
 * Writes VW tiles at a time: past n into the next segment (written after this one) or into V's
 * slack. */
void td_wino4_input(const wino_t *p, const float *P, float *V, int64_t u0, int64_t n, int64_t v0) {
    int64_t cs = p->vxs;
    for (int64_t u = 0; u < n; u += VW) {
        vf h[6][6]; /* h[s][r] = (d B)[r][s] */
        for (int r = 0; r < 6; r++) {
            const float *q = P + (r % 4) * 6 * p->ps + u0 + u + (r / 4) * p->tw;
            vf z[6], o[6];
            for (int b = 0; b < 6; b++) z[b] = vld(q + b * p->ps);
            bt6(z, o);
            for (int s = 0; s < 6; s++) h[s][r] = o[s];
        }
        input_rows_to_planes(h, V + v0 + u, cs);
    }
}

/* Writes nothing outside tiles t0 .. t1 - 1 (another thread's). */
void td_wino4_output(const wino_t *p, const float *M, int64_t m0, int64_t t0, int64_t t1, float bias, float *y) {
    int64_t ms = p->mxs;
    int64_t ty = t0 / p->tw, tx = t0 - ty * p->tw; /* the next piece's tile, kept without divisions */
    for (int64_t t = t0; t < t1; t += VW) {
        vf seq[4][4];
        output_tiles(M + m0 + t - t0, ms, td_vsplat(bias), seq);
        store_tiles(p, 4, y, (const vf(*)[4])seq, t, t + VW < t1 ? t + VW : t1, &ty, &tx);
    }
}

#if defined(__AVX512F__)
/* Lane l of a stacked vector: tile l % T1 of image l / T1, counted from the vector's first
 * image; the gather offset of its patch's corner (padded row 4 ty, column 4 tx) from that image's
 * channel plane, and the lanes whose patch row r / column b falls on the image. */
typedef struct {
    __m512i base;
    __mmask16 row_ok[6], col_ok[6];
} stack_lanes;

static stack_lanes stacked_lanes(const wino_t *p) {
    stack_lanes s;
    int32_t base[VW];
    for (int r = 0; r < 6; r++) s.row_ok[r] = s.col_ok[r] = 0;
    for (int l = 0; l < VW; l++) {
        int64_t j = l / p->T1, tau = l % p->T1, ty = tau / p->tw, tx = tau % p->tw;
        int64_t h0 = 4 * ty - p->ph, w0 = 4 * tx - p->pw;
        base[l] = (int32_t)(j * p->C * p->H * p->W + h0 * p->W + w0);
        for (int r = 0; r < 6; r++) {
            if (h0 + r >= 0 && h0 + r < p->H) s.row_ok[r] |= (__mmask16)(1u << l);
            if (w0 + r >= 0 && w0 + r < p->W) s.col_ok[r] |= (__mmask16)(1u << l);
        }
    }
    s.base = _mm512_loadu_si512(base);
    return s;
}

void td_wino4_input_stacked(const wino_t *p, const float *x, int64_t t0, int64_t used, float *V) {
    stack_lanes s = stacked_lanes(p);
    int64_t cs = p->vxs, HW = p->H * p->W;
    for (int64_t u = 0; u < used; u += VW) {
        int64_t n = (t0 + u) / p->T1, left = used - u;
        __mmask16 live = left >= VW ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); /* images past the batch: none */
        for (int64_t c = 0; c < p->C; c++) {
            const float *xc = x + (n * p->C + c) * HW;
            vf h[6][6]; /* h[s][r] = (d B)[r][s] */
            for (int r = 0; r < 6; r++) {
                vf z[6], o[6];
                for (int b = 0; b < 6; b++) {
                    __m512i idx = _mm512_add_epi32(s.base, _mm512_set1_epi32((int32_t)(r * p->W + b)));
                    z[b] = (vf)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), live & s.row_ok[r] & s.col_ok[b], idx, xc, 4);
                }
                bt6(z, o);
                for (int q = 0; q < 6; q++) h[q][r] = o[q];
            }
            input_rows_to_planes(h, V + c * p->Qs + u, cs);
        }
    }
}

void td_wino4_output_stacked(const wino_t *p, const float *M, int64_t o, int64_t t0, int64_t used, const float *bias,
                             int64_t bias_ns, float *y) {
    int64_t ms = p->mxs, OHW = p->OH * p->OW, g = VW / p->T1;
    int cols = (int)(4 * p->tw < p->OW ? 4 * p->tw : p->OW);
    for (int64_t u = 0; u < used; u += VW) {
        int64_t n = (t0 + u) / p->T1, imgs = (used - u) / p->T1 < g ? (used - u) / p->T1 : g;
        float bl[VW]; /* lane l's bias: its image's */
        for (int l = 0; l < VW; l++) bl[l] = bias ? bias[(n + (l / p->T1 < imgs ? l / p->T1 : 0)) * bias_ns + o] : 0.0f;
        vf seq[4][4];
        output_tiles(M + o * p->Qs + u, ms, vld(bl), seq);
        for (int64_t j = 0; j < imgs; j++) { /* image n + j: its tile rows, each 4 tw floats of the sequences */
            float *yo = y + ((n + j) * p->O + o) * OHW;
            for (int64_t ty = 0; ty < p->th; ty++) {
                int l0 = (int)(4 * (j * p->T1 + ty * p->tw));
                int rows = p->OH - 4 * ty < 4 ? (int)(p->OH - 4 * ty) : 4;
                store_rows(p, yo + 4 * ty * p->OW - l0, p->OW, rows, (const vf(*)[4])seq, 4, l0, l0 + cols);
            }
        }
    }
}
#endif

/* o = A z for a column of 4 vectors, A = (A^T)^T */
static inline void a4(const vf z[4], vf o[6]) {
    vf p = z[0] + z[2], q = z[1] + z[3], r = z[0] + 4.0f * z[2], s = 2.0f * z[1] + 8.0f * z[3];
    o[0] = z[0];
    o[1] = p + q;
    o[2] = p - q;
    o[3] = r + s;
    o[4] = r - s;
    o[5] = z[3];
}

void td_wino4_grads(const wino_t *p, const float *dy, const segment *sg, int64_t xs, int64_t Opad, float *Y, float *Dt) {
    int64_t ty0 = segment_grads_to_pixels(p, dy, sg, Opad, Y), cols = 4 * p->tw;
    for (int64_t t = sg->ta, ty = t / p->tw, tx = t - ty * p->tw; t < sg->tb; t++, tx = tx + 1 < p->tw ? tx + 1 : (ty++, 0)) {
        const float *y0 = Y + (4 * (ty - ty0) * cols + 4 * tx) * Opad;
        float *d = Dt + (sg->v0 + t - sg->ta) * Opad;
        for (int64_t o = 0; o < Opad; o += VW) {
            vf w[6][4]; /* w[s][r] = (dY A^T)[r][s] */
            for (int r = 0; r < 4; r++) {
                vf z[4], q[6];
                for (int b = 0; b < 4; b++) z[b] = vld(y0 + (r * cols + b) * Opad + o);
                a4(z, q);
                for (int s = 0; s < 6; s++) w[s][r] = q[s];
            }
            for (int s = 0; s < 6; s++) { /* A (dY A^T) */
                vf q[6];
                a4(w[s], q);
                for (int i = 0; i < 6; i++) vst(d + (i * 6 + s) * xs + o, q[i]);
            }
        }
    }
}

void td_wino4_weight_grad(const vf u[36], vf dw[9]) {
    vf t[3][6]; /* G^T dU */
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 6; b++) {
            vf s = G[0][i] * u[b];
            for (int a = 1; a < 6; a++) s += G[a][i] * u[a * 6 + b];
            t[i][b] = s;
        }
    for (int i = 0; i < 3; i++) /* (G^T dU) G */
        for (int j = 0; j < 3; j++) {
            vf s = t[i][0] * G[0][j];
            for (int b = 1; b < 6; b++) s += t[i][b] * G[b][j];
            dw[i * 3 + j] = s;
        }
}
