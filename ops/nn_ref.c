/* Plain references for the fast kernels of linear.c, attention.c, rnn.c and loss.c: the
 * definitions written out as loops, in double, with no blocking, vectors or threads. The C tests
 * (tests/c/test_nn_kernels.c) hold the kernels to them, forward and backward. Outputs are
 * written, never added to; a NULL gradient output is skipped. */
#include <math.h>
#include <stdlib.h>

#include "nn.h"

/* ---- linear ------------------------------------------------------------------------------------ */
void td_linear_ref(const float *x, const float *w, const float *b, int64_t M, int64_t K, int64_t N, const float *dy,
                   float *y, float *dx, float *dw, float *db) {
    for (int64_t i = 0; i < M; i++) /* y (M,N) = x w^T + b */
        for (int64_t o = 0; o < N; o++) {
            double s = b ? b[o] : 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[i * K + k] * w[o * K + k];
            y[i * N + o] = (float)s;
        }
    if (!dy) return;
    for (int64_t i = 0; dx && i < M; i++) /* dx (M,K) = dy w */
        for (int64_t k = 0; k < K; k++) {
            double s = 0;
            for (int64_t o = 0; o < N; o++) s += (double)dy[i * N + o] * w[o * K + k];
            dx[i * K + k] = (float)s;
        }
    for (int64_t o = 0; o < N; o++) { /* dw (N,K) = dy^T x, db (N) = column sums of dy */
        for (int64_t k = 0; dw && k < K; k++) {
            double s = 0;
            for (int64_t i = 0; i < M; i++) s += (double)dy[i * N + o] * x[i * K + k];
            dw[o * K + k] = (float)s;
        }
        double s = 0;
        for (int64_t i = 0; i < M; i++) s += dy[i * N + o];
        if (db) db[o] = (float)s;
    }
}

/* ---- attention --------------------------------------------------------------------------------- */
/* element (t, c) of (bh)'s (T, C) matrix, stored (T, C), or (C, T) channels first */
static inline int64_t at(bool cf, int64_t bh, int64_t t, int64_t c, int64_t T, int64_t C) {
    return cf ? (bh * C + c) * T + t : (bh * T + t) * C + c;
}

void td_sdpa_ref(const td_sdpa_geom *g, const float *q, const float *k, const float *v, const float *dout,
                 const float *dw, float *out, float *w, float *dq, float *dk, float *dv) {
    int64_t Tq = g->Tq, Tk = g->Tk, D = g->D, Dv = g->Dv;
    bool cf = g->cf;
    double *P = malloc(sizeof(double) * (size_t)(2 * Tq * Tk + 1)), *dS = P + Tq * Tk;
    for (int64_t bh = 0; bh < g->BH; bh++) {
        for (int64_t i = 0; i < Tq; i++) { /* P = softmax(masked scale q k^T); a row with no key left: 0 */
            double *p = P + i * Tk, mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < Tk; j++) {
                double s = 0;
                for (int64_t d = 0; d < D; d++) s += (double)q[at(cf, bh, i, d, Tq, D)] * k[at(cf, bh, j, d, Tk, D)];
                s *= g->scale;
                bool dead = false;
                if (g->kpm) {
                    float m = g->kpm[(bh / g->heads) * Tk + j];
                    if (g->kpm_add) s += m;
                    else dead = m != 0;
                }
                if (g->am) {
                    float m = g->am[(bh * Tq + i) * Tk + j];
                    if (g->am_bool) dead |= m != 0;
                    else s += m;
                }
                p[j] = dead ? -INFINITY : s;
                if (p[j] > mx) mx = p[j];
            }
            for (int64_t j = 0; j < Tk; j++) sum += (p[j] = mx == -INFINITY ? 0 : exp(p[j] - mx));
            for (int64_t j = 0; j < Tk; j++) {
                p[j] = sum > 0 ? p[j] / sum : 0;
                w[(bh * Tq + i) * Tk + j] = (float)p[j];
            }
        }
        for (int64_t i = 0; i < Tq; i++) /* out = P v */
            for (int64_t e = 0; e < Dv; e++) {
                double s = 0;
                for (int64_t j = 0; j < Tk; j++) s += P[i * Tk + j] * v[at(cf, bh, j, e, Tk, Dv)];
                out[at(cf, bh, i, e, Tq, Dv)] = (float)s;
            }
        if (!dout && !dw) continue;
        for (int64_t i = 0; i < Tq; i++) { /* dP = dout v^T + dw; dS = P (dP - <dP, P>) */
            double *ds = dS + i * Tk, dot = 0;
            for (int64_t j = 0; j < Tk; j++) {
                double s = dw ? dw[(bh * Tq + i) * Tk + j] : 0;
                for (int64_t e = 0; dout && e < Dv; e++) s += (double)dout[at(cf, bh, i, e, Tq, Dv)] * v[at(cf, bh, j, e, Tk, Dv)];
                ds[j] = s;
                dot += s * P[i * Tk + j];
            }
            for (int64_t j = 0; j < Tk; j++) ds[j] = P[i * Tk + j] * (ds[j] - dot);
        }
        for (int64_t i = 0; dq && i < Tq; i++) /* dq = scale dS k */
            for (int64_t d = 0; d < D; d++) {
                double s = 0;
                for (int64_t j = 0; j < Tk; j++) s += dS[i * Tk + j] * k[at(cf, bh, j, d, Tk, D)];
                dq[at(cf, bh, i, d, Tq, D)] = (float)(g->scale * s);
            }
        for (int64_t j = 0; j < Tk; j++) { /* dk = scale dS^T q, dv = P^T dout */
            for (int64_t d = 0; dk && d < D; d++) {
                double s = 0;
                for (int64_t i = 0; i < Tq; i++) s += dS[i * Tk + j] * q[at(cf, bh, i, d, Tq, D)];
                dk[at(cf, bh, j, d, Tk, D)] = (float)(g->scale * s);
            }
            for (int64_t e = 0; dv && dout && e < Dv; e++) {
                double s = 0;
                for (int64_t i = 0; i < Tq; i++) s += P[i * Tk + j] * dout[at(cf, bh, i, e, Tq, Dv)];
                dv[at(cf, bh, j, e, Tk, Dv)] = (float)s;
            }
        }
    }
    free(P);
}

/* ---- GRU cell ---------------------------------------------------------------------------------- */
void td_gru_cell_ref(const float *x, const float *h, const float *w_ih, const float *w_hh, const float *b_ih,
                     const float *b_hh, int64_t B, int64_t I, int64_t Hd, const float *dy, float *y, float *dx, float *dh,
                     float *dw_ih, float *dw_hh, float *db_ih, float *db_hh) {
    int64_t H3 = 3 * Hd;
    /* gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh (B,3Hd), their gradients, and dh's direct part dy z (B,Hd) */
    float *gi = malloc(sizeof(float) * (size_t)(4 * B * H3 + B * Hd + 1)), *gh = gi + B * H3, *dgi = gh + B * H3;
    float *dgh = dgi + B * H3, *dhz = dgh + B * H3;
    td_linear_ref(x, w_ih, b_ih, B, I, H3, NULL, gi, NULL, NULL, NULL);
    td_linear_ref(h, w_hh, b_hh, B, Hd, H3, NULL, gh, NULL, NULL, NULL);
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < Hd; j++) {
            const float *ai = gi + b * H3 + j, *ah = gh + b * H3 + j;
            double r = 1 / (1 + exp(-((double)ai[0] + ah[0]))), z = 1 / (1 + exp(-((double)ai[Hd] + ah[Hd])));
            double n = tanh(ai[2 * Hd] + r * ah[2 * Hd]), hp = h[b * Hd + j];
            y[b * Hd + j] = (float)((1 - z) * n + z * hp);
            if (!dy) continue;
            double gy = dy[b * Hd + j], dn = gy * (1 - z) * (1 - n * n), dz = gy * (hp - n) * z * (1 - z);
            double dr = dn * ah[2 * Hd] * r * (1 - r);
            float *di = dgi + b * H3 + j, *dg = dgh + b * H3 + j;
            di[0] = dg[0] = (float)dr;
            di[Hd] = dg[Hd] = (float)dz;
            di[2 * Hd] = (float)dn;
            dg[2 * Hd] = (float)(dn * r);
            dhz[b * Hd + j] = (float)(gy * z);
        }
    if (dy) {
        td_linear_ref(x, w_ih, b_ih, B, I, H3, dgi, gi, dx, dw_ih, db_ih);
        td_linear_ref(h, w_hh, b_hh, B, Hd, H3, dgh, gh, dh, dw_hh, db_hh);
        for (int64_t i = 0; dh && i < B * Hd; i++) dh[i] += dhz[i];
    }
    free(gi);
}

/* ---- losses ------------------------------------------------------------------------------------ */
/* loss: the n values l for "none", else their mean or sum */
static void reduce_ref(const double *l, int64_t n, td_reduction red, float *loss) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (red == TD_REDUCE_NONE) loss[i] = (float)l[i];
        s += l[i];
    }
    if (red != TD_REDUCE_NONE) loss[0] = (float)(red == TD_REDUCE_MEAN ? s / (double)n : s);
}

/* d loss / d l[i] given the loss's gradient dy */
static double dl_ref(const float *dy, td_reduction red, int64_t n, int64_t i) {
    return red == TD_REDUCE_NONE ? dy[i] : red == TD_REDUCE_MEAN ? dy[0] / (double)n : dy[0];
}

void td_cross_entropy_ref(const float *x, const int64_t *labels, int64_t N, int64_t C, int64_t S, bool logp,
                          td_reduction red, const float *dy, float *loss, float *dx) {
    int64_t R = N * S;
    double *l = malloc(sizeof(double) * (size_t)(R + 1));
    for (int64_t r = 0; r < R; r++) { /* row r = (n, s): scores x[n, :, s] */
        const float *xr = x + (r / S) * C * S + r % S;
        double mx = -INFINITY, sum = 0, lse = 0;
        if (!logp) {
            for (int64_t j = 0; j < C; j++) mx = fmax(mx, xr[j * S]);
            for (int64_t j = 0; j < C; j++) sum += exp(xr[j * S] - mx);
            lse = mx + log(sum);
        }
        l[r] = lse - xr[labels[r] * S]; /* -log_softmax(x)[y], or -x[y] for log-probabilities */
        for (int64_t j = 0; dy && j < C; j++)
            dx[xr - x + j * S] = (float)(dl_ref(dy, red, R, r) * ((logp ? 0 : exp(xr[j * S] - lse)) - (j == labels[r])));
    }
    reduce_ref(l, R, red, loss);
    free(l);
}

/* the elementwise losses: kind 'b' binary cross entropy with logits, 'm' squared error, 'l' absolute error */
static void pair_ref(char kind, const float *a, const float *t, int64_t n, const float *pw, int64_t P, td_reduction red,
                     const float *dy, float *loss, float *da, float *dt) {
    double *l = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) {
        double x = a[i], y = t[i], ga, gt;
        if (kind == 'b') { /* (1 - y) x + (1 + (p - 1) y) softplus(-x), p = 1 without pos_weight */
            double p = pw ? pw[i % P] : 1, sp = fmax(-x, 0) + log1p(exp(-fabs(x)));
            l[i] = (1 - y) * x + (1 + (p - 1) * y) * sp;
            ga = (1 - y) - (1 + (p - 1) * y) / (1 + exp(x));
            gt = -x + (p - 1) * sp;
        } else if (kind == 'm') {
            l[i] = (x - y) * (x - y);
            ga = 2 * (x - y);
            gt = -ga;
        } else {
            l[i] = fabs(x - y);
            ga = x > y ? 1 : x < y ? -1 : 0;
            gt = -ga;
        }
        if (dy && da) da[i] = (float)(dl_ref(dy, red, n, i) * ga);
        if (dy && dt) dt[i] = (float)(dl_ref(dy, red, n, i) * gt);
    }
    reduce_ref(l, n, red, loss);
    free(l);
}

void td_bce_with_logits_ref(const float *x, const float *t, int64_t n, const float *pw, int64_t P, td_reduction red,
                            const float *dy, float *loss, float *dx, float *dt) {
    pair_ref('b', x, t, n, pw, P, red, dy, loss, dx, dt);
}
void td_mse_loss_ref(const float *a, const float *b, int64_t n, td_reduction red, const float *dy, float *loss, float *da,
                     float *db) {
    pair_ref('m', a, b, n, NULL, 1, red, dy, loss, da, db);
}
void td_l1_loss_ref(const float *a, const float *b, int64_t n, td_reduction red, const float *dy, float *loss, float *da,
                    float *db) {
    pair_ref('l', a, b, n, NULL, 1, red, dy, loss, da, db);
}

void td_gaussian_kl_ref(const float *mu, const float *logvar, int64_t R, int64_t D, td_reduction red, const float *dy,
                        float *loss, float *dmu, float *dlogvar) {
    double *l = malloc(sizeof(double) * (size_t)(R + 1));
    for (int64_t r = 0; r < R; r++) {
        double s = 0;
        for (int64_t i = r * D; i < (r + 1) * D; i++) {
            double m = mu[i], lv = logvar[i];
            s += 1 + lv - m * m - exp(lv);
            if (dy && dmu) dmu[i] = (float)(dl_ref(dy, red, R, r) * m);
            if (dy && dlogvar) dlogvar[i] = (float)(dl_ref(dy, red, R, r) * 0.5 * (exp(lv) - 1));
        }
        l[r] = -0.5 * s;
    }
    reduce_ref(l, R, red, loss);
    free(l);
}
