/* Normalisation layers as fused ops: group_norm (and group_norm followed by SiLU in one pass, as
 * NCSN++ uses it everywhere), batch_norm (training and eval, running statistics updated in place,
 * PyTorch's conventions), layer_norm. Statistics in two passes over data that stays in cache
 * (mean, then squared deviations), vector partial sums, double across blocks. Forward and backward
 * side by side; the naive compositions in the tests are their specification. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TD_NN_INTERNAL
#include "nn.h"

#define PAR_MIN 32768

/* y[i] = x[i] * a + b (then SiLU, then dropout's factor of element i0 + i when d), n floats */
static inline void affine_row(float *y, const float *x, int64_t n, float a, float b, bool silu, const td_drop *d,
                              uint64_t i0) {
    int64_t i = 0;
    for (; i + TD_VW <= n; i += TD_VW) {
        td_vf z = td_vload(x + i) * a + b;
        if (silu) z = z * td_vsigmoid(z);
        if (d) z *= td_vdrop(d, i0 + (uint64_t)i);
        td_vstore(y + i, z);
    }
    for (; i < n; i++) {
        float z = x[i] * a + b;
        z = silu ? z / (1.0f + expf(-z)) : z;
        if (d) z = td_keep_hash(d->k0, d->k1, i0 + (uint64_t)i) >= d->thresh ? z * d->scale : 0.0f;
        y[i] = z;
    }
}

/* For one row of n: dz = dy (or dy * silu'(x a + b)) written to dz (may alias nothing), and
 * returns sums sum(dz * (x - mean)) in *sxd and sum(dz) in *sd. */
static inline void grad_row(float *dz, const float *dy, const float *x, int64_t n, float a, float b, float mean,
                            bool silu, double *sxd, double *sd, const td_drop *d, uint64_t i0) {
    td_vf s1 = {0}, s2 = {0};
    int64_t i = 0;
    for (; i + TD_VW <= n; i += TD_VW) {
        td_vf xv = td_vload(x + i), g = td_vload(dy + i);
        if (d) g *= td_vdrop(d, i0 + (uint64_t)i); /* dropout's backward first: the same factors */
        if (silu) {
            td_vf z = xv * a + b, s = td_vsigmoid(z);
            g = g * (s * (1.0f + z * (1.0f - s)));
            td_vstore(dz + i, g);
        }
        s1 += g * (xv - mean);
        s2 += g;
    }
    double a1 = td_vhsum(s1), a2 = td_vhsum(s2);
    for (; i < n; i++) {
        float g = dy[i];
        if (d) g = td_keep_hash(d->k0, d->k1, i0 + (uint64_t)i) >= d->thresh ? g * d->scale : 0.0f;
        if (silu) {
            float z = x[i] * a + b, s = 1.0f / (1.0f + expf(-z));
            g *= s * (1.0f + z * (1.0f - s));
            dz[i] = g;
        }
        a1 += (double)g * (x[i] - mean);
        a2 += g;
    }
    *sxd = a1;
    *sd = a2;
}

/* dx[i] (+)= k1 * g[i] + k2 * (x[i] - mean) + k3; acc: added to the gradient already in dx (the
 * input's other consumers'), which saves the separate accumulation pass */
static inline void dx_row(float *dx, const float *g, const float *x, int64_t n, float k1, float k2, float k3, float mean,
                          bool acc) {
    int64_t i = 0;
    for (; i + TD_VW <= n; i += TD_VW) {
        td_vf v = td_vload(g + i) * k1 + (td_vload(x + i) - mean) * k2 + k3;
        td_vstore(dx + i, acc ? td_vload(dx + i) + v : v);
    }
    for (; i < n; i++) dx[i] = (acc ? dx[i] : 0.0f) + (g[i] * k1 + (x[i] - mean) * k2 + k3);
}

static int check_affine(const char *op, td_tensor *x, td_tensor *p, const char *what, int64_t C) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (!p) return 0;
    if (p->dtype != TD_F32) return td_fail_int("%s: %s must be float32, got %s", op, what, td_dtype_name(p->dtype));
    if (p->ndim != 1 || p->shape[0] != C)
        return td_fail_int("%s: %s of shape (%s) for input (%s): needs (%lld)", op, what, td_shape_str(p, b1, sizeof b1),
                           td_shape_str(x, b2, sizeof b2), (long long)C);
    return 0;
}

/* ---- group norm --------------------------------------------------------------------------------- */
/* x (N, C, S) contiguous; stats (N, G, 2) = mean, rstd. */
static void gn_forward(float *y, float *stats, const float *x, const float *w, const float *b, int64_t N, int64_t C,
                       int64_t S, int64_t G, double eps, bool silu, const td_drop *d) {
    int64_t cg = C / G, M = cg * S;
    #pragma omp parallel for if (N * C * S > PAR_MIN) schedule(static)
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t gi = ng % G;
        const float *xp = x + ng * M;
        float *yp = y + ng * M;
        float mean = M ? (float)(td_vsum(xp, M) / (double)M) : 0.0f;
        double var = M ? td_vsumsq_dev(xp, M, mean) / (double)M : 0.0;
        float rstd = (float)(1.0 / sqrt(var + eps));
        stats[2 * ng] = mean;
        stats[2 * ng + 1] = rstd;
        for (int64_t j = 0; j < cg; j++) {
            int64_t c = gi * cg + j;
            float a = rstd * (w ? w[c] : 1.0f), bb = (b ? b[c] : 0.0f) - mean * a;
            affine_row(yp + j * S, xp + j * S, S, a, bb, silu, d, (uint64_t)(ng * M + j * S));
        }
    }
}

/* dx (or NULL), and per-(n,c) sums for the parameter gradients: sxd[n][c] = sum dz*(x-mean), sd = sum dz.
 * With SiLU, dz = dy silu'(.) of one group at a time goes to a per-thread scratch of M floats that
 * stays in L1/L2 until dx reads it (a full-size buffer had cost a write-back stream). Returns -1
 * when that scratch cannot be had. */
static int gn_backward(float *dx, bool acc, float *sxd, float *sd, const float *dy, const float *x, const float *stats,
                       const float *w, const float *b, int64_t N, int64_t C, int64_t S, int64_t G, bool silu,
                       const td_drop *d) {
    int64_t cg = C / G, M = cg * S;
    int failed = 0;
    #pragma omp parallel if (N * C * S > PAR_MIN / 2) reduction(| : failed)
    {
        float *zp = silu ? malloc(sizeof(float) * (size_t)(M + 1)) : NULL;
        if (silu && !zp) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t ng = 0; ng < N * G; ng++) {
            if (silu && !zp) continue;
            int64_t n = ng / G, gi = ng % G;
            const float *xp = x + ng * M, *gp = dy + ng * M;
            float mean = stats[2 * ng], rstd = stats[2 * ng + 1];
            double t1 = 0, t2 = 0; /* sum w*sd, sum w*sxd over the group */
            for (int64_t j = 0; j < cg; j++) {
                int64_t c = gi * cg + j;
                float wc = w ? w[c] : 1.0f, a = rstd * wc, bb = (b ? b[c] : 0.0f) - mean * a;
                double s1, s2;
                grad_row(silu ? zp + j * S : NULL, gp + j * S, xp + j * S, S, a, bb, mean, silu, &s1, &s2, d,
                         (uint64_t)(ng * M + j * S));
                sxd[n * C + c] = (float)s1;
                sd[n * C + c] = (float)s2;
                t1 += (double)wc * s2;
                t2 += (double)wc * s1;
            }
            if (!dx) continue;
            /* dx = rstd * (w dz - t1/M - xhat * rstd t2 / M), xhat = (x - mean) rstd */
            float k3 = (float)(-rstd * t1 / (double)M), k2 = (float)(-(double)rstd * rstd * rstd * t2 / (double)M);
            const float *src = silu ? zp : gp; /* (with dropout, silu: its factors are in dz) */
            for (int64_t j = 0; j < cg; j++) {
                int64_t c = gi * cg + j;
                float k1 = rstd * (w ? w[c] : 1.0f);
                dx_row(dx + ng * M + j * S, src + j * S, xp + j * S, S, k1, k2, k3, mean, acc);
            }
        }
        free(zp);
    }
    return failed ? -1 : 0;
}

static void group_norm_backward(td_node *n, td_tensor *g) {
    td_tensor *x = n->saved[0], *stats = n->saved[1], *w = n->saved[2], *b = n->saved[3];
    int64_t N = n->iarg[0], C = n->iarg[1], S = n->iarg[2], G = n->iarg[3];
    bool silu = n->iarg[4];
    uint64_t key = (uint64_t)n->iarg[6];
    td_drop drop = {(uint32_t)key, (uint32_t)(key >> 32), (uint32_t)n->iarg[7], (float)n->farg[0]};
    td_tensor *gc = td_contiguous(g);
    /* dx into the input's gradient when one is there and ours alone, else a new one */
    td_tensor *hold = gc && n->in[0] ? td_node_grad_holder(n, 0) : NULL;
    td_tensor *dx = hold ? NULL : (gc && n->in[0]) ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    float *sxd = malloc(sizeof(float) * (size_t)(N * C + 1)), *sd = malloc(sizeof(float) * (size_t)(N * C + 1));
    if (gc && sxd && sd && (!n->in[0] || dx || hold) &&
        gn_backward(hold ? td_f32(hold) : dx ? td_f32(dx) : NULL, hold != NULL, sxd, sd, td_f32(gc), td_f32(x), td_f32(stats),
                    w ? td_f32(w) : NULL, b ? td_f32(b) : NULL, N, C, S, G, silu, n->iarg[5] ? &drop : NULL) == 0) {
        if (dx) td_node_accum(n, 0, dx);
        if (n->in[1] || n->in[2]) {
            td_tensor *dw = td_empty(TD_F32, 1, &C), *db = td_empty(TD_F32, 1, &C);
            if (dw && db) {
                const float *st = td_f32(stats);
                for (int64_t c = 0; c < C; c++) {
                    double a = 0, s = 0;
                    for (int64_t i = 0; i < N; i++) {
                        a += (double)sxd[i * C + c] * st[2 * (i * G + c / (C / G)) + 1];
                        s += sd[i * C + c];
                    }
                    td_f32(dw)[c] = (float)a;
                    td_f32(db)[c] = (float)s;
                }
                if (n->in[1]) td_node_accum(n, 1, dw);
                if (n->in[2]) td_node_accum(n, 2, db);
            }
            td_release(dw);
            td_release(db);
        }
    }
    free(sxd);
    free(sd);
    td_release(dx);
    td_release(gc);
}

static td_tensor *gn_impl(td_tensor *x, int64_t groups, td_tensor *weight, td_tensor *bias, double eps, bool silu,
                          double p, td_generator *gen) {
    const char *op = p > 0 ? "group_norm_silu_dropout" : silu ? "group_norm_silu" : "group_norm";
    char b1[TD_SHAPE_BUF];
    if (x->ndim < 2) return td_fail("%s: input must be (N,C,...), got shape (%s)", op, td_shape_str(x, b1, sizeof b1));
    if (x->dtype != TD_F32) return td_fail("%s: needs a float32 input, got %s", op, td_dtype_name(x->dtype));
    int64_t N = x->shape[0], C = x->shape[1], S = td_numel(x) / (N * C > 0 ? N * C : 1);
    if (groups < 1 || C % groups)
        return td_fail("%s: %lld groups do not divide the %lld channels of input (%s)", op, (long long)groups, (long long)C,
                       td_shape_str(x, b1, sizeof b1));
    if (check_affine(op, x, weight, "weight", C) || check_affine(op, x, bias, "bias", C)) return NULL;
    if (!(eps >= 0)) return td_fail("%s: eps must be >= 0", op);
    if (!(p >= 0 && p <= 1)) return td_fail("%s: dropout probability must be in [0, 1], got %g", op, p);
    td_drop drop = {0, 0, 0, 1.0f};
    uint64_t key = 0;
    if (p > 0) { /* as td_dropout draws and thresholds it */
        key = td_rand_u64(gen ? gen : td_default_generator());
        double t = p * 4294967296.0;
        drop = (td_drop){(uint32_t)key, (uint32_t)(key >> 32), t >= 4294967295.0 ? UINT32_MAX : (uint32_t)(t + 0.5),
                         p >= 1 ? 0.0f : (float)(1.0 / (1.0 - p))};
    }
    int64_t sshape[3] = {N, groups, 2};
    td_tensor *xc = td_nn_contig(x), *wc = (xc && weight) ? td_nn_contig(weight) : NULL;
    td_tensor *bc = (xc && bias) ? td_nn_contig(bias) : NULL, *stats = xc ? td_empty(TD_F32, 3, sshape) : NULL;
    td_tensor *y = stats ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    if (y && (!weight || wc) && (!bias || bc)) {
        gn_forward(td_f32(y), td_f32(stats), td_f32(xc), wc ? td_f32(wc) : NULL, bc ? td_f32(bc) : NULL, N, C, S, groups,
                   eps, silu, p > 0 ? &drop : NULL);
        td_tensor *ins[3] = {x, weight, bias};
        td_node *n = td_record(y, op, group_norm_backward, 3, ins);
        if (n) {
            n->iarg[0] = N;
            n->iarg[1] = C;
            n->iarg[2] = S;
            n->iarg[3] = groups;
            n->iarg[4] = silu;
            n->iarg[5] = p > 0;
            n->iarg[6] = (int64_t)key;
            n->iarg[7] = drop.thresh;
            n->farg[0] = drop.scale;
            td_node_save(n, 0, xc);
            td_node_save(n, 1, stats);
            td_node_save(n, 2, wc);
            td_node_save(n, 3, bc);
        }
    } else {
        td_release(y);
        y = NULL;
    }
    td_release(xc);
    td_release(wc);
    td_release(bc);
    td_release(stats);
    return y;
}

td_tensor *td_group_norm(td_tensor *x, int64_t groups, td_tensor *weight, td_tensor *bias, double eps, bool silu) {
    return gn_impl(x, groups, weight, bias, eps, silu, 0, NULL);
}

td_tensor *td_group_norm_silu_dropout(td_tensor *x, int64_t groups, td_tensor *weight, td_tensor *bias, double eps, double p,
                                      td_generator *gen) {
    return gn_impl(x, groups, weight, bias, eps, true, p, gen);
}

/* ---- batch norm ----------------------------------------------------------------------------------- */
/* Per-channel mean and sum of squared deviations of rows x (N, C): accumulated over rows,
 * vectorised across channels (planes, S > 1, go through bn_train_forward) */
static void bn_row_stats(const float *x, int64_t N, int64_t C, float *mean, double *ssd) {
    double *acc = calloc((size_t)C, sizeof(double));
    if (!acc) return;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) acc[c] += x[n * C + c];
    for (int64_t c = 0; c < C; c++) {
        mean[c] = N ? (float)(acc[c] / (double)N) : 0.0f;
        acc[c] = 0;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            double d = (double)x[n * C + c] - mean[c];
            acc[c] += d * d;
        }
    memcpy(ssd, acc, sizeof(double) * (size_t)C);
    free(acc);
}

/* y = x * a[c] + b[c] (then max(0, .)) */
static void bn_apply(float *y, const float *x, const float *a, const float *b, int64_t N, int64_t C, int64_t S, bool relu) {
    #pragma omp parallel for if (N * C * S > PAR_MIN) schedule(static)
    for (int64_t nc = 0; nc < N * C; nc++) {
        float *yr = y + nc * S;
        affine_row(yr, x + nc * S, S, a[nc % C], b[nc % C], false, NULL, 0);
        if (relu) /* the row is still in cache */
            for (int64_t i = 0; i < S; i++) yr[i] = yr[i] > 0.0f ? yr[i] : 0.0f;
    }
}

/* Training with planes (S > 1): per channel, the statistics and then at once its output, while
 * the channel's N S floats are still in L2 (statistics for every channel first, then the
 * outputs, read x a third time from memory). Fills mean, rstd, ssd and the applied a, b. */
static void bn_train_forward(float *y, const float *x, const float *w, const float *bias, int64_t N, int64_t C, int64_t S,
                             double eps, bool relu, float *mean, float *rstd, double *ssd, float *a, float *b) {
    #pragma omp parallel for if (N * C * S > PAR_MIN) schedule(static)
    for (int64_t c = 0; c < C; c++) { /* mean, then squared deviations (a second pass, from L2) */
        double s = 0, q = 0;
        for (int64_t n = 0; n < N; n++) s += td_vsum(x + (n * C + c) * S, S);
        float m = (float)(s / (double)(N * S));
        for (int64_t n = 0; n < N; n++) q += td_vsumsq_dev(x + (n * C + c) * S, S, m);
        float r = (float)(1.0 / sqrt(q / (double)(N * S) + eps)), ac = r * (w ? w[c] : 1.0f);
        float bc = (bias ? bias[c] : 0.0f) - m * ac;
        mean[c] = m, rstd[c] = r, ssd[c] = q, a[c] = ac, b[c] = bc;
        for (int64_t n = 0; n < N; n++) {
            float *yr = y + (n * C + c) * S;
            affine_row(yr, x + (n * C + c) * S, S, ac, bc, false, NULL, 0);
            if (relu)
                for (int64_t i = 0; i < S; i++) yr[i] = yr[i] > 0.0f ? yr[i] : 0.0f;
        }
    }
}

/* gm = g where x a[c] + b[c] > 0, else 0: the gradient through the fused ReLU */
static void relu_mask_grad(float *gm, const float *g, const float *x, const float *a, const float *b, int64_t N, int64_t C,
                           int64_t S) {
    #pragma omp parallel for if (N * C * S > PAR_MIN) schedule(static)
    for (int64_t nc = 0; nc < N * C; nc++) {
        float ac = a[nc % C], bc = b[nc % C];
        const float *xr = x + nc * S, *gr = g + nc * S;
        float *o = gm + nc * S;
        for (int64_t i = 0; i < S; i++) o[i] = xr[i] * ac + bc > 0.0f ? gr[i] : 0.0f;
    }
}

/* The fused ReLU's gradient read in place: g where x a + b > 0, else 0, never stored. sums
 * sum(g' (x - mean)) and sum(g') of one row; dx = k1 g' + k2 (x - mean) + k3 of one row. */
static inline void relu_grad_sums(const float *g, const float *x, int64_t n, float a, float b, float mean, double *sxd,
                                  double *sd) {
    td_vf s1 = {0}, s2 = {0};
    int64_t i = 0;
    for (; i + TD_VW <= n; i += TD_VW) {
        td_vf xv = td_vload(x + i), gv = td_vsel(xv * a + b > 0.0f, td_vload(g + i), td_vsplat(0.0f));
        s1 += gv * (xv - mean);
        s2 += gv;
    }
    double a1 = td_vhsum(s1), a2 = td_vhsum(s2);
    for (; i < n; i++) {
        float gv = x[i] * a + b > 0.0f ? g[i] : 0.0f;
        a1 += (double)gv * (x[i] - mean);
        a2 += gv;
    }
    *sxd = a1;
    *sd = a2;
}
static inline void relu_dx_row(float *dx, const float *g, const float *x, int64_t n, float a, float b, float k1, float k2,
                               float k3, float mean, bool acc) {
    int64_t i = 0;
    for (; i + TD_VW <= n; i += TD_VW) {
        td_vf xv = td_vload(x + i), gv = td_vsel(xv * a + b > 0.0f, td_vload(g + i), td_vsplat(0.0f));
        td_vf v = gv * k1 + (xv - mean) * k2 + k3;
        td_vstore(dx + i, acc ? td_vload(dx + i) + v : v);
    }
    for (; i < n; i++) {
        float gv = x[i] * a + b > 0.0f ? g[i] : 0.0f;
        dx[i] = (acc ? dx[i] : 0.0f) + (gv * k1 + (x[i] - mean) * k2 + k3);
    }
}

static void batch_norm_backward(td_node *n, td_tensor *g) {
    /* stats (4, C): mean, rstd, and the applied scale a and shift b (for the fused ReLU's mask) */
    td_tensor *x = n->saved[0], *stats = n->saved[1], *w = n->saved[2];
    int64_t N = n->iarg[0], C = n->iarg[1], S = n->iarg[2];
    bool training = n->iarg[3], relu = n->iarg[4];
    td_tensor *gc = td_contiguous(g), *gm = NULL;
    if (!gc) return;
    const float *xs = td_f32(x), *gs = td_f32(gc), *mean = td_f32(stats), *rstd = td_f32(stats) + C;
    float *sxd = calloc((size_t)C, sizeof(float)), *sd = calloc((size_t)C, sizeof(float));
    td_tensor *hold = n->in[0] ? td_node_grad_holder(n, 0) : NULL; /* dx added into it: see group_norm_backward */
    td_tensor *dx = n->in[0] ? (hold ? (td_retain(hold), hold) : td_empty(TD_F32, x->ndim, x->shape)) : NULL;
    /* the ReLU's mask: applied in the passes below when rows are long (one pass less over
     * memory), stored first when they are single values */
    const float *ra = td_f32(stats) + 2 * C, *rb = td_f32(stats) + 3 * C;
    bool inline_relu = relu && S > 1;
    if (relu && !inline_relu) {
        gm = td_empty(TD_F32, gc->ndim, gc->shape);
        if (!gm) goto done;
        relu_mask_grad(td_f32(gm), gs, xs, td_f32(stats) + 2 * C, td_f32(stats) + 3 * C, N, C, S);
        gs = td_f32(gm);
    }
    if (!sxd || !sd || (n->in[0] && !dx)) goto done;
    if (S == 1) {
        double *a1 = calloc((size_t)(2 * C), sizeof(double));
        if (!a1) goto done;
        for (int64_t i = 0; i < N; i++)
            for (int64_t c = 0; c < C; c++) {
                float gv = gs[i * C + c];
                a1[c] += (double)gv * (xs[i * C + c] - mean[c]);
                a1[C + c] += gv;
            }
        for (int64_t c = 0; c < C; c++) {
            sxd[c] = (float)a1[c];
            sd[c] = (float)a1[C + c];
        }
        free(a1);
    } else {
        /* per channel: its sums, then at once its dx while its rows of x and g are still in L2 */
        double M = (double)(N * S);
        float *d = dx ? td_f32(dx) : NULL;
        #pragma omp parallel for if (N * C * S > PAR_MIN / 2) schedule(static)
        for (int64_t c = 0; c < C; c++) {
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < N; i++) {
                double a, b;
                if (inline_relu) relu_grad_sums(gs + (i * C + c) * S, xs + (i * C + c) * S, S, ra[c], rb[c], mean[c], &a, &b);
                else grad_row(NULL, gs + (i * C + c) * S, xs + (i * C + c) * S, S, 1, 0, mean[c], false, &a, &b, NULL, 0);
                s1 += a;
                s2 += b;
            }
            sxd[c] = (float)s1;
            sd[c] = (float)s2;
            if (!d) continue;
            float wr = rstd[c] * (w ? td_f32(w)[c] : 1.0f); /* as below */
            float k2 = training ? (float)(-(double)wr * rstd[c] * rstd[c] * sxd[c] / M) : 0.0f;
            float k3 = training ? (float)(-(double)wr * sd[c] / M) : 0.0f;
            for (int64_t i = 0; i < N; i++) {
                int64_t o = (i * C + c) * S;
                if (inline_relu) relu_dx_row(d + o, gs + o, xs + o, S, ra[c], rb[c], wr, k2, k3, mean[c], hold != NULL);
                else dx_row(d + o, gs + o, xs + o, S, wr, k2, k3, mean[c], hold != NULL);
            }
        }
        if (dx && !hold) td_node_accum(n, 0, dx);
    }
    if (dx && S == 1) {
        float *k1 = malloc(sizeof(float) * (size_t)(3 * C));
        if (!k1) goto done;
        float *k2 = k1 + C, *k3 = k1 + 2 * C;
        double M = (double)(N * S);
        for (int64_t c = 0; c < C; c++) {
            float wr = rstd[c] * (w ? td_f32(w)[c] : 1.0f);
            k1[c] = wr;
            /* training: dx = w rstd (g - sd/M - xhat rstd sxd / M) */
            k2[c] = training ? (float)(-(double)wr * rstd[c] * rstd[c] * sxd[c] / M) : 0.0f;
            k3[c] = training ? (float)(-(double)wr * sd[c] / M) : 0.0f;
        }
        float *d = td_f32(dx);
        #pragma omp parallel for if (N * C * S > PAR_MIN) schedule(static)
        for (int64_t nc = 0; nc < N * C; nc++) {
            int64_t c = nc % C;
            if (inline_relu)
                relu_dx_row(d + nc * S, gs + nc * S, xs + nc * S, S, ra[c], rb[c], k1[c], k2[c], k3[c], mean[c], hold != NULL);
            else dx_row(d + nc * S, gs + nc * S, xs + nc * S, S, k1[c], k2[c], k3[c], mean[c], hold != NULL);
        }
        free(k1);
        if (!hold) td_node_accum(n, 0, dx);
    }
    if (n->in[1] || n->in[2]) {
        td_tensor *dw = td_empty(TD_F32, 1, &C), *db = td_empty(TD_F32, 1, &C);
        if (dw && db) {
            for (int64_t c = 0; c < C; c++) {
                td_f32(dw)[c] = sxd[c] * rstd[c];
                td_f32(db)[c] = sd[c];
            }
            if (n->in[1]) td_node_accum(n, 1, dw);
            if (n->in[2]) td_node_accum(n, 2, db);
        }
        td_release(dw);
        td_release(db);
    }
done:
    free(sxd);
    free(sd);
    td_release(dx);
    td_release(gm);
    td_release(gc);
}

static int check_buffer(const char *op, td_tensor *x, td_tensor *p, const char *what, int64_t C) {
    char b1[TD_SHAPE_BUF];
    if (!p) return 0;
    if (check_affine(op, x, p, what, C)) return -1;
    if (!td_is_contiguous(p)) return td_fail_int("%s: %s must be contiguous (it is updated in place)", op, what);
    if (p->requires_grad && td_grad_enabled())
        return td_fail_int("%s: %s (%s) requires grad; running statistics are buffers", op, what, td_shape_str(p, b1, sizeof b1));
    return 0;
}

td_tensor *td_batch_norm(td_tensor *x, td_tensor *rm, td_tensor *rv, td_tensor *weight, td_tensor *bias, bool training,
                         double momentum, double eps, bool relu) {
    const char *op = relu ? "batch_norm_relu" : "batch_norm";
    char b1[TD_SHAPE_BUF];
    if (x->ndim < 2) return td_fail("%s: input must be (N,C) or (N,C,...), got shape (%s)", op, td_shape_str(x, b1, sizeof b1));
    if (x->dtype != TD_F32) return td_fail("%s: needs a float32 input, got %s", op, td_dtype_name(x->dtype));
    int64_t N = x->shape[0], C = x->shape[1], S = td_numel(x) / (N * C > 0 ? N * C : 1);
    if (check_affine(op, x, weight, "weight", C) || check_affine(op, x, bias, "bias", C) ||
        check_buffer(op, x, rm, "running_mean", C) || check_buffer(op, x, rv, "running_var", C))
        return NULL;
    if ((rm == NULL) != (rv == NULL)) return td_fail("%s: give both running_mean and running_var, or neither", op);
    if (!training && !rm) return td_fail("%s: eval mode needs running_mean and running_var", op);
    if (training && N * S <= 1)
        return td_fail("%s: expected more than 1 value per channel when training, got input %s", op, td_shape_str(x, b1, sizeof b1));
    if (!(eps >= 0)) return td_fail("%s: eps must be >= 0", op);
    int64_t sshape[2] = {4, C};
    td_tensor *xc = td_nn_contig(x), *wc = (xc && weight) ? td_nn_contig(weight) : NULL;
    td_tensor *bc = (xc && bias) ? td_nn_contig(bias) : NULL, *stats = xc ? td_empty(TD_F32, 2, sshape) : NULL;
    td_tensor *y = stats ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    double *ssd = malloc(sizeof(double) * (size_t)(C + 1));
    float *ab = malloc(sizeof(float) * (size_t)(2 * C + 1));
    if (!y || !ssd || !ab || (weight && !wc) || (bias && !bc)) {
        td_release(y);
        y = NULL;
        if (xc && stats && (!ssd || !ab)) td_fail("%s: out of memory", op);
        goto out;
    }
    float *mean = td_f32(stats), *rstd = td_f32(stats) + C;
    bool fused = training && S > 1;
    if (fused)
        bn_train_forward(td_f32(y), td_f32(xc), wc ? td_f32(wc) : NULL, bc ? td_f32(bc) : NULL, N, C, S, eps, relu, mean, rstd,
                         ssd, rstd + C, rstd + 2 * C);
    if (training) {
        if (!fused) bn_row_stats(td_f32(xc), N, C, mean, ssd); /* S == 1 */
        double M = (double)(N * S);
        for (int64_t c = 0; c < C && !fused; c++) rstd[c] = (float)(1.0 / sqrt(ssd[c] / M + eps));
        if (rm) {
            float *pm = td_f32(rm), *pv = td_f32(rv);
            for (int64_t c = 0; c < C; c++) {
                pm[c] = (float)((1 - momentum) * pm[c] + momentum * mean[c]);
                pv[c] = (float)((1 - momentum) * pv[c] + momentum * ssd[c] / (M - 1));
            }
        }
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = td_f32(rm)[c];
            rstd[c] = (float)(1.0 / sqrt((double)td_f32(rv)[c] + eps));
        }
    }
    for (int64_t c = 0; c < C && !fused; c++) {
        float a = rstd[c] * (wc ? td_f32(wc)[c] : 1.0f);
        ab[c] = a;
        ab[C + c] = (bc ? td_f32(bc)[c] : 0.0f) - mean[c] * a;
    }
    if (!fused) {
        memcpy(rstd + C, ab, sizeof(float) * (size_t)(2 * C)); /* a, b: what backward's ReLU mask reads */
        bn_apply(td_f32(y), td_f32(xc), ab, ab + C, N, C, S, relu);
    }
    td_tensor *ins[3] = {x, weight, bias};
    td_node *n = td_record(y, op, batch_norm_backward, 3, ins);
    if (n) {
        n->iarg[0] = N;
        n->iarg[1] = C;
        n->iarg[2] = S;
        n->iarg[3] = training;
        n->iarg[4] = relu;
        td_node_save(n, 0, xc);
        td_node_save(n, 1, stats);
        td_node_save(n, 2, wc);
    }
out:
    free(ssd);
    free(ab);
    td_release(xc);
    td_release(wc);
    td_release(bc);
    td_release(stats);
    return y;
}

/* ---- layer norm ------------------------------------------------------------------------------------ */
static void layer_norm_backward(td_node *n, td_tensor *g) {
    td_tensor *x = n->saved[0], *stats = n->saved[1], *w = n->saved[2];
    int64_t R = n->iarg[0], D = n->iarg[1];
    td_tensor *gc = td_contiguous(g);
    if (!gc) return;
    const float *xs = td_f32(x), *gs = td_f32(gc), *st = td_f32(stats), *wp = w ? td_f32(w) : NULL;
    bool need_p = n->in[1] || n->in[2];
    int nt = omp_get_max_threads();
    if (R * D <= PAR_MIN) nt = 1;
    float *part = need_p ? calloc((size_t)(nt * 2 * D), sizeof(float)) : NULL;
    float *tmp = malloc(sizeof(float) * (size_t)(nt * D + 1));
    td_tensor *dx = n->in[0] ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    if ((need_p && !part) || !tmp || (n->in[0] && !dx)) goto done;
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        float *pw = need_p ? part + t * 2 * D : NULL, *pb = need_p ? pw + D : NULL, *gw = tmp + t * D;
        for (int64_t r = R * t / T; r < R * (t + 1) / T; r++) {
            const float *xr = xs + r * D, *gr = gs + r * D;
            float mean = st[2 * r], rstd = st[2 * r + 1];
            double s1 = 0, s2 = 0; /* sum gw, sum gw * xhat */
            for (int64_t i = 0; i < D; i++) {
                float xh = (xr[i] - mean) * rstd, gv = gr[i];
                gw[i] = wp ? gv * wp[i] : gv;
                s1 += gw[i];
                s2 += (double)gw[i] * xh;
                if (pw) {
                    pw[i] += gv * xh;
                    pb[i] += gv;
                }
            }
            if (dx) {
                float k2 = (float)(-(double)rstd * rstd * s2 / (double)D), k3 = (float)(-(double)rstd * s1 / (double)D);
                dx_row(td_f32(dx) + r * D, gw, xr, D, rstd, k2, k3, mean, false);
            }
        }
    }
    if (dx) td_node_accum(n, 0, dx);
    if (need_p) {
        int64_t nd = (int)n->iarg[2];
        td_tensor *dw = td_empty(TD_F32, (int)nd, x->shape + x->ndim - nd), *db = td_empty(TD_F32, (int)nd, x->shape + x->ndim - nd);
        if (dw && db) {
            for (int64_t i = 0; i < D; i++) {
                float a = 0, b = 0;
                for (int t = 0; t < nt; t++) {
                    a += part[t * 2 * D + i];
                    b += part[t * 2 * D + D + i];
                }
                td_f32(dw)[i] = a;
                td_f32(db)[i] = b;
            }
            if (n->in[1]) td_node_accum(n, 1, dw);
            if (n->in[2]) td_node_accum(n, 2, db);
        }
        td_release(dw);
        td_release(db);
    }
done:
    free(part);
    free(tmp);
    td_release(dx);
    td_release(gc);
}

td_tensor *td_layer_norm(td_tensor *x, int nd, td_tensor *weight, td_tensor *bias, double eps) {
    const char *op = "layer_norm";
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (x->dtype != TD_F32) return td_fail("%s: needs a float32 input, got %s", op, td_dtype_name(x->dtype));
    if (nd < 1 || nd > x->ndim)
        return td_fail("%s: cannot normalise over the last %d dims of input (%s)", op, nd, td_shape_str(x, b1, sizeof b1));
    td_tensor *ps[2] = {weight, bias};
    const char *names[2] = {"weight", "bias"};
    for (int i = 0; i < 2; i++) {
        td_tensor *p = ps[i];
        if (!p) continue;
        if (p->dtype != TD_F32) return td_fail("%s: %s must be float32", op, names[i]);
        if (p->ndim != nd || memcmp(p->shape, x->shape + x->ndim - nd, sizeof(int64_t) * (size_t)nd))
            return td_fail("%s: %s of shape (%s) does not match the last %d dims of input (%s)", op, names[i],
                           td_shape_str(p, b1, sizeof b1), nd, td_shape_str(x, b2, sizeof b2));
    }
    if (!(eps >= 0)) return td_fail("%s: eps must be >= 0", op);
    int64_t D = 1;
    for (int i = x->ndim - nd; i < x->ndim; i++) D *= x->shape[i];
    int64_t R = D ? td_numel(x) / D : 0, sshape[2] = {R, 2};
    td_tensor *xc = td_nn_contig(x), *wc = (xc && weight) ? td_nn_contig(weight) : NULL;
    td_tensor *bc = (xc && bias) ? td_nn_contig(bias) : NULL, *stats = xc ? td_empty(TD_F32, 2, sshape) : NULL;
    td_tensor *y = stats ? td_empty(TD_F32, x->ndim, x->shape) : NULL;
    if (!y || (weight && !wc) || (bias && !bc)) {
        td_release(y);
        y = NULL;
        goto out;
    }
    const float *xs = td_f32(xc), *wp = wc ? td_f32(wc) : NULL, *bp = bc ? td_f32(bc) : NULL;
    float *ys = td_f32(y), *st = td_f32(stats);
    #pragma omp parallel for if (R * D > PAR_MIN) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = xs + r * D;
        float *yr = ys + r * D;
        float mean = D ? (float)(td_vsum(xr, D) / (double)D) : 0.0f;
        float rstd = (float)(1.0 / sqrt((D ? td_vsumsq_dev(xr, D, mean) / (double)D : 0.0) + eps));
        st[2 * r] = mean;
        st[2 * r + 1] = rstd;
        if (!wp && !bp) {
            affine_row(yr, xr, D, rstd, -mean * rstd, false, NULL, 0);
            continue;
        }
        int64_t i = 0;
        for (; i + TD_VW <= D; i += TD_VW) {
            td_vf v = (td_vload(xr + i) - mean) * rstd;
            if (wp) v *= td_vload(wp + i);
            if (bp) v += td_vload(bp + i);
            td_vstore(yr + i, v);
        }
        for (; i < D; i++) yr[i] = (xr[i] - mean) * rstd * (wp ? wp[i] : 1.0f) + (bp ? bp[i] : 0.0f);
    }
    td_tensor *ins[3] = {x, weight, bias};
    td_node *n = td_record(y, op, layer_norm_backward, 3, ins);
    if (n) {
        n->iarg[0] = R;
        n->iarg[1] = D;
        n->iarg[2] = nd;
        td_node_save(n, 0, xc);
        td_node_save(n, 1, stats);
        td_node_save(n, 2, wc);
    }
out:
    td_release(xc);
    td_release(wc);
    td_release(bc);
    td_release(stats);
    return y;
}

/* ---- references ------------------------------------------------------------------------------------ */
/* The textbook formulas in double, the specification the kernels above are tested against: rows of
 * n values, value i of row r at x[at(r, i)], its weight and bias at [param(r, i)]; y = (x - mean)
 * rstd w + b (then SiLU); given R = dy, the gradient of sum(y R) w.r.t. x, w and b. */
typedef struct {
    int64_t C, S, G;
} norm_layout;
typedef int64_t (*norm_index)(int64_t r, int64_t i, const norm_layout *q);
static void norm_ref(const float *x, const float *R, int64_t rows, int64_t n, norm_index at, const norm_layout *ctx,
                     const float *wv, const float *bv, norm_index pidx, double eps, float *y, float *dx, double *dw,
                     double *db, bool silu) {
    for (int64_t r = 0; r < rows; r++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += x[at(r, i, ctx)];
        m /= n;
        for (int64_t i = 0; i < n; i++) v += (x[at(r, i, ctx)] - m) * (x[at(r, i, ctx)] - m);
        v /= n;
        double rs = 1 / sqrt(v + eps), s1 = 0, s2 = 0;
        double *g = malloc(sizeof(double) * n);
        for (int64_t i = 0; i < n; i++) {
            int64_t k = at(r, i, ctx), p = pidx(r, i, ctx);
            double xh = (x[k] - m) * rs, wa = wv ? wv[p] : 1, z = xh * wa + (bv ? bv[p] : 0), gz = R[k];
            if (silu) {
                double sg = 1 / (1 + exp(-z));
                y[k] = (float)(z * sg);
                gz *= sg * (1 + z * (1 - sg));
            } else {
                y[k] = (float)z;
            }
            dw[p] += gz * xh;
            db[p] += gz;
            g[i] = gz * wa;
            s1 += g[i];
            s2 += g[i] * xh;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t k = at(r, i, ctx);
            double xh = (x[k] - m) * rs;
            dx[k] = (float)(rs * (g[i] - s1 / n - xh * s2 / n));
        }
        free(g);
    }
}
static int64_t gn_at(int64_t r, int64_t i, const norm_layout *q) { return r * (q->C / q->G) * q->S + i; }
static int64_t gn_p(int64_t r, int64_t i, const norm_layout *q) { return (r % q->G) * (q->C / q->G) + i / q->S; }
static int64_t bn_at(int64_t r, int64_t i, const norm_layout *q) { return ((i / q->S) * q->C + r) * q->S + i % q->S; }
static int64_t bn_p(int64_t r, int64_t i, const norm_layout *q) { (void)i, (void)q; return r; }
static int64_t ln_at(int64_t r, int64_t i, const norm_layout *q) { return r * q->S + i; }
static int64_t ln_p(int64_t r, int64_t i, const norm_layout *q) { (void)r, (void)q; return i; }

void td_group_norm_ref(const float *x, int64_t N, int64_t C, int64_t S, int64_t G, const float *w, const float *b,
                       double eps, bool silu, const float *dy, float *y, float *dx, double *dw, double *db) {
    norm_layout q = {C, S, G};
    norm_ref(x, dy, N * G, C / G * S, gn_at, &q, w, b, gn_p, eps, y, dx, dw, db, silu);
}
void td_batch_norm_ref(const float *x, int64_t N, int64_t C, int64_t S, const float *w, const float *b, double eps,
                       const float *dy, float *y, float *dx, double *dw, double *db) {
    norm_layout q = {C, S, 0};
    norm_ref(x, dy, C, N * S, bn_at, &q, w, b, bn_p, eps, y, dx, dw, db, false);
}
void td_layer_norm_ref(const float *x, int64_t R, int64_t n, const float *w, const float *b, double eps, const float *dy,
                       float *y, float *dx, double *dw, double *db) {
    norm_layout q = {0, n, 0};
    norm_ref(x, dy, R, n, ln_at, &q, w, b, ln_p, eps, y, dx, dw, db, false);
}
