/* libtdrl: fused neural-network kernels (conv.c, norm.c, attention.c, rnn.c, loss.c).
 *
 * Same conventions as tensor.h: new references returned, NULL + td_last_error() on failure
 * (every check before any allocation), autograd recorded when an input needs grad, backward
 * next to forward. Every fast kernel has a plain reference beside it (the *_ref functions),
 * which the C tests hold it to.
 *
 * Threads: these kernels use OpenMP only (no BLAS call inside a parallel region); the
 * convolution kernels use no BLAS at all (a register-blocked micro-kernel, see conv.c),
 * attention (long sequences) and the GRU cell call td_gemm outside any parallel region. */
#ifndef TDRL_NN_H
#define TDRL_NN_H

#include "tensor.h"

/* ---- convolution, pooling, resampling (conv.c) --------------------------------------------- */
typedef struct td_conv_opts {
    int64_t stride[2];         /* >= 1 */
    int64_t padding[2];        /* >= 0, both sides */
    int64_t dilation[2];       /* >= 1 */
    int64_t output_padding[2]; /* conv_transpose2d only: < stride or < dilation */
    int64_t groups;            /* 1 (other values are refused) */
    td_tensor *residual;       /* conv2d only: NULL, or a tensor of the output's shape ... */
    double scale;              /* ... and y = scale (conv + bias + residual), in the output pass (1) */
} td_conv_opts;
void td_conv_opts_default(td_conv_opts *o); /* stride 1, padding 0, dilation 1, groups 1, scale 1 */

/* x (N,C,H,W), w (O,C,kh,kw), b (O) or NULL -> (N,O,OH,OW) */
td_tensor *td_conv2d(td_tensor *x, td_tensor *w, td_tensor *b, const td_conv_opts *o);
/* x (N,C,H,W), w (C,O,kh,kw), b (O) or NULL -> (N,O,OH,OW), OH = (H-1)s - 2p + d(kh-1) + op + 1 */
td_tensor *td_conv_transpose2d(td_tensor *x, td_tensor *w, td_tensor *b, const td_conv_opts *o);
/* x (N,C,H,W) -> (N,C,(H-kh)/sh+1,(W-kw)/sw+1), no padding */
td_tensor *td_avg_pool2d(td_tensor *x, const int64_t kernel[2], const int64_t stride[2]);
/* x (N,C,H,W) -> (N,C,H*sh,W*sw) */
td_tensor *td_upsample_nearest2d(td_tensor *x, int64_t scale_h, int64_t scale_w);

/* The geometry of one convolution, as the raw kernels see it: input (N,C,H,W), weight
 * (O,C,kh,kw), output (N,O,OH,OW); all arrays contiguous float32. */
typedef struct td_conv_geom {
    int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
    int64_t bs; /* the forward's bias stride per image: 0 for a bias (O), O for one per image (N, O) */
    const float *res; /* the forward: NULL, or y = scale (conv + b + res), res of y's shape */
    float scale;      /* (0 is taken as 1) */
} td_conv_geom;
/* Raw kernels (exposed for the tests and the benchmark). fwd: y = conv(x, w) + b (b may be
 * NULL; b[n * bs + o]). bwd_data: dx = conv^T(dy, w) (+ bias per input channel when bias != NULL; written, not
 * accumulated). bwd_weight: dw (O,C,kh,kw) and db (O) written; either may be NULL.
 * Return 0, or -1 when interrupted / out of memory (error set). */
int td_conv2d_fwd_kernel(const td_conv_geom *g, const float *x, const float *w, const float *b, float *y);
int td_conv2d_bwd_data_kernel(const td_conv_geom *g, const float *dy, const float *w, const float *bias, float *dx);
int td_conv2d_bwd_weight_kernel(const td_conv_geom *g, const float *x, const float *dy, float *dw, float *db);
/* Plain loops: the specification. */
void td_conv2d_fwd_ref(const td_conv_geom *g, const float *x, const float *w, const float *b, float *y);
void td_conv2d_bwd_data_ref(const td_conv_geom *g, const float *dy, const float *w, float *dx);
void td_conv2d_bwd_weight_ref(const td_conv_geom *g, const float *x, const float *dy, float *dw, float *db);
/* Path selection, for tests: 0 automatic, 1 direct (stride-1 only; falls back otherwise),
 * 2 im2col / col2im everywhere, 3 Winograd F(2x2, 3x3) wherever it applies (3x3 kernels of
 * stride and dilation 1; automatic for the rest), 4 automatic without Winograd. */
extern int td_conv_path;
/* Bytes held by the kernels' per-thread scratch buffers (they grow to the largest call, and
 * are reused: a training loop allocates nothing after its first step). The buffers belong to
 * OpenMP thread numbers: convolutions must not run from two OS threads at once. */
size_t td_nn_scratch_bytes(void);

/* ---- affine layer and dropout (linear.c, dropout.c) ------------------------------------------ */
/* x (..., K), w (N, K), b (N) or NULL -> (..., N) = x w^T + b */
td_tensor *td_linear(td_tensor *x, td_tensor *w, td_tensor *b);
/* zeroes each element with probability p, scales the rest by 1/(1-p); the mask is a hash of one
 * draw from gen (NULL: the default generator) and the element's position, recomputed backward */
td_tensor *td_dropout(td_tensor *x, double p, td_generator *gen);

/* ---- normalisation (norm.c) ----------------------------------------------------------------- */
/* x (N,C,*) ; weight, bias (C) or NULL; biased variance; silu: fused SiLU after the affine */
td_tensor *td_group_norm(td_tensor *x, int64_t groups, td_tensor *weight, td_tensor *bias, double eps, bool silu);
/* dropout(silu(group_norm(x))) in the same passes, forward and backward: the mask that
 * td_dropout(y, p, gen) would draw (the same key from gen, the same hash), never stored */
td_tensor *td_group_norm_silu_dropout(td_tensor *x, int64_t groups, td_tensor *weight, td_tensor *bias, double eps, double p,
                                      td_generator *gen);
/* x (N,C) or (N,C,*); running_mean/var (C) or NULL (then training must be true). training:
 * batch statistics, running buffers updated in place (running = (1-m) running + m batch,
 * unbiased variance); eval: running statistics. relu: fused max(0, .) after the affine. */
td_tensor *td_batch_norm(td_tensor *x, td_tensor *running_mean, td_tensor *running_var, td_tensor *weight,
                         td_tensor *bias, bool training, double momentum, double eps, bool relu);
/* normalises over the last n_dims dims; weight/bias of those dims' shape, or NULL */
td_tensor *td_layer_norm(td_tensor *x, int n_dims, td_tensor *weight, td_tensor *bias, double eps);

/* ---- attention (attention.c) ---------------------------------------------------------------- */
typedef struct td_sdpa_opts {
    td_tensor *attn_mask;        /* broadcastable to (...,Tq,Tk), or NULL */
    bool bool_mask;              /* float attn_mask read as boolean (an int64 one always is) */
    td_tensor *key_padding_mask; /* (B,Tk) with B the first leading dim ((Tk) without leading dims), or NULL */
    bool key_padding_additive;   /* float key_padding_mask added to the scores instead */
    double scale;                /* NAN: 1/sqrt(D) */
    bool channels_first;         /* q, k, v, out as (...,D,T): see below */
} td_sdpa_opts;
/* q (...,Tq,D), k (...,Tk,D), v (...,Tk,Dv) with equal leading dims -> out (...,Tq,Dv); with
 * channels_first q (...,D,Tq), k (...,D,Tk), v (...,Dv,Tk) -> out (...,Dv,Tq), the layout of a
 * feature map's (B, C, H*W) view: spatial attention without transposing copies (same products,
 * the GEMMs' operands transposed).
 * Boolean masks: nonzero = masked (score -inf). Additive masks are added to the scaled scores.
 * *weights (if not NULL) receives the softmax weights (...,Tq,Tk), differentiable w.r.t. q and k
 * (a loss may use both outputs). A fully masked row gets zero weights (PyTorch gives NaN). */
td_tensor *td_sdpa(td_tensor *q, td_tensor *k, td_tensor *v, const td_sdpa_opts *o, td_tensor **weights);
/* For tests: 0 automatic, 1 vector loops per (batch, head), 2 per-(batch, head) GEMMs. */
extern int td_attention_path;

/* ---- recurrent cells (rnn.c) ---------------------------------------------------------------- */
/* x (B,I), h (B,Hd), w_ih (3Hd,I), w_hh (3Hd,Hd), b_ih, b_hh (3Hd) or NULL -> h' (B,Hd).
 * Gates in PyTorch's order (r, z, n). */
td_tensor *td_gru_cell(td_tensor *x, td_tensor *h, td_tensor *w_ih, td_tensor *w_hh, td_tensor *b_ih,
                       td_tensor *b_hh);

/* ---- losses (loss.c) ------------------------------------------------------------------------ */
typedef enum { TD_REDUCE_NONE = 0, TD_REDUCE_MEAN = 1, TD_REDUCE_SUM = 2 } td_reduction;
/* "none" / "mean" / "sum" -> 0..2, or -1 */
int td_reduction_parse(const char *s);
/* logits (N,C) or (N,C,d...), labels int64 (N) or (N,d...) in [0,C); "none" gives labels' shape */
td_tensor *td_cross_entropy(td_tensor *logits, td_tensor *labels, td_reduction red);
td_tensor *td_nll_loss(td_tensor *logp, td_tensor *labels, td_reduction red);
/* max(x,0) - x t + log(1 + exp(-|x|)); with pos_weight p (one value, or one per position of the
 * last dim): (1 - t) x + (1 + (p - 1) t) log(1 + exp(-x)). Mean over all elements. */
td_tensor *td_bce_with_logits(td_tensor *x, td_tensor *target, td_tensor *pos_weight, td_reduction red);
td_tensor *td_mse_loss(td_tensor *a, td_tensor *b, td_reduction red);
td_tensor *td_l1_loss(td_tensor *a, td_tensor *b, td_reduction red);
/* -0.5 sum_last(1 + logvar - mu^2 - exp(logvar)) per sample; mean / sum over samples */
td_tensor *td_gaussian_kl(td_tensor *mu, td_tensor *logvar, td_reduction red);

/* ---- internal helpers shared by the kernel files (not part of the API) -------------------------- */
#ifdef TD_NN_INTERNAL
#include <math.h>
#include "fastmath.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#define TD_VW 16
#else
#define TD_VW 8
#endif
typedef float td_vf __attribute__((vector_size(TD_VW * 4)));
typedef float td_vfu __attribute__((vector_size(TD_VW * 4), aligned(4))); /* unaligned access */
typedef int32_t td_vi __attribute__((vector_size(TD_VW * 4)));
static inline td_vf td_vload(const float *p) { return *(const td_vfu *)p; }
static inline void td_vstore(float *p, td_vf v) { *(td_vfu *)p = v; }
/* every lane = a (not `(td_vf){0} + a`: 0 + a is not a for a = -0, so the compiler keeps the add
 * and cannot fold the broadcast into a memory operand) */
#if TD_VW == 16
static inline td_vf td_vsplat(float a) { return (td_vf){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
#else
static inline td_vf td_vsplat(float a) { return (td_vf){a, a, a, a, a, a, a, a}; }
#endif
static inline float td_vhsum(td_vf v) {
    float s = 0;
    for (int l = 0; l < TD_VW; l++) s += v[l];
    return s;
}
/* lanes of a where mask (-1) else b */
static inline td_vf td_vsel(td_vi mask, td_vf a, td_vf b) { return (td_vf)(((td_vi)a & mask) | ((td_vi)b & ~mask)); }
/* exp within 2 ulp where the result is a normal float, denormals below -87.3, 0 from -104 and inf
 * above 88.72 (Cephes expf polynomial after range reduction by ln 2) */
#if defined(__AVX512F__) && TD_VW == 16
/* AVX-512: n = round(x log2 e) in one instruction and the scaling by 2^n (vscalefps) exact down
 * to denormals and up to overflow: 14 instructions where the portable version below takes ~25
 * (GroupNorm + SiLU runs one per activation, forward and backward). NaN propagates. */
static inline td_vf td_vexp(td_vf x) {
    __m512 v = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(88.8f), (__m512)x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    td_vf rr = (td_vf)r, p = td_vsplat(1.9875691500e-4f);
    p = p * rr + 1.3981999507e-3f;
    p = p * rr + 8.3334519073e-3f;
    p = p * rr + 4.1665795894e-2f;
    p = p * rr + 1.6666665459e-1f;
    p = p * rr + 5.0000001201e-1f;
    p = p * (rr * rr) + rr + 1.0f;
    return (td_vf)_mm512_scalef_ps((__m512)p, n);
}
#else
/* the same range and results without AVX-512: n by conversion with a nearest-integer fix, 2^n
 * applied as two factors so that n from -150 (denormals) to 128 (overflow to inf) is exact */
static inline td_vf td_vexp(td_vf x) {
    x = td_vsel(x > 88.8f, td_vsplat(88.8f), x);
    x = td_vsel(x < -104.0f, td_vsplat(-104.0f), x);
    td_vf fx = x * 1.44269504088896341f;
    td_vi ni = __builtin_convertvector(fx, td_vi); /* toward zero: round to nearest below */
    td_vf nf = __builtin_convertvector(ni, td_vf);
    td_vi up = (nf - fx) > 0.5f, dn = (fx - nf) > 0.5f; /* nearest integer */
    ni = ni + up - dn;                                  /* masks are -1 where true */
    nf = __builtin_convertvector(ni, td_vf);
    td_vf r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    td_vf p = td_vsplat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    td_vi n1 = ni >> 1, n2 = ni - n1;
    return p * (td_vf)((n1 + 127) << 23) * (td_vf)((n2 + 127) << 23);
}
#endif
/* 1 / (1 + e^-x); with AVX-512 the division is a 14-bit reciprocal and one Newton step (~1 ulp):
 * a vector division takes ~10 cycles, as long as the exponential, and GroupNorm + SiLU runs it
 * on every activation, forward and backward */
static inline td_vf td_vsigmoid(td_vf x) {
    td_vf d = 1.0f + td_vexp(-x);
#if defined(__AVX512F__) && TD_VW == 16
    td_vf r = (td_vf)_mm512_rcp14_ps((__m512)d);
    return r * (2.0f - d * r);
#else
    return 1.0f / d;
#endif
}
/* One row of L floats: y = softmax(x) (or log_softmax), y may be x. Vector lanes for the max,
 * the exponentials and the partial sums (float per lane, double across lanes and the tail); -inf
 * entries get exactly 0 and a row of -inf comes back all 0 (log: -inf), not NaN. Shared by the
 * softmax op (reduce.c) and attention (attention.c). */
static inline void td_softmax_row(float *y, const float *x, int64_t L, bool logsm) {
    int64_t nv = L / TD_VW * TD_VW;
    td_vf vm = td_vsplat(-INFINITY);
    for (int64_t i = 0; i < nv; i += TD_VW) {
        td_vf v = td_vload(x + i);
        vm = td_vsel(v > vm, v, vm);
    }
    float m = -INFINITY;
    for (int l = 0; l < TD_VW; l++) m = vm[l] > m ? vm[l] : m;
    for (int64_t i = nv; i < L; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) m = 0;
    td_vf acc = {0};
    for (int64_t i = 0; i < nv; i += TD_VW) {
        td_vf v = td_vload(x + i), e = td_vexp(v - m);
        e = td_vsel(v == -INFINITY, td_vsplat(0.0f), e);
        if (!logsm) td_vstore(y + i, e);
        acc += e;
    }
    double s = td_vhsum(acc);
    for (int64_t i = nv; i < L; i++) {
        float e = x[i] == -INFINITY ? 0.0f : td_expf(x[i] - m);
        if (!logsm) y[i] = e;
        s += e;
    }
    if (logsm) {
        float ls = (float)log(s) + m;
        for (int64_t i = 0; i < L; i++) y[i] = x[i] - ls;
    } else {
        float inv = s > 0 ? (float)(1.0 / s) : 0;
        int64_t i = 0;
        for (; i < nv; i += TD_VW) td_vstore(y + i, td_vload(y + i) * inv);
        for (; i < L; i++) y[i] *= inv;
    }
}
/* Dropout's keep/drop decision of element i: a counter-based hash of (key, i), kept when
 * hash >= thresh (P(keep) = 1 - thresh / 2^32). 32-bit avalanche mixer ("lowbias32", C.
 * Wellons), two rounds keyed by both halves of the 64-bit key. Shared by dropout (dropout.c)
 * and GroupNorm + SiLU + dropout (norm.c), which make the same mask from the same key. */
typedef struct {
    uint32_t k0, k1, thresh;
    float scale; /* 1 / (1 - p) */
} td_drop;
/* one round of the mixer, on a uint32_t or on a vector of them */
#define TD_MIX32_ROUND(h) ((h) ^= (h) >> 16, (h) *= 0x7feb352dU, (h) ^= (h) >> 15, (h) *= 0x846ca68bU, (h) ^= (h) >> 16)
static inline uint32_t td_mix32(uint32_t h) {
    TD_MIX32_ROUND(h);
    return h;
}
static inline uint32_t td_keep_hash(uint32_t k0, uint32_t k1, uint64_t i) {
    return td_mix32(td_mix32((uint32_t)i ^ k0) + (k1 ^ (uint32_t)(i >> 32)));
}
typedef uint32_t td_vu __attribute__((vector_size(TD_VW * 4)));
static inline td_vu td_vmix32(td_vu h) {
    TD_MIX32_ROUND(h);
    return h;
}
/* the factors (scale or 0) of elements i0 .. i0 + VW - 1, as td_keep_hash decides them */
static inline td_vf td_vdrop(const td_drop *d, uint64_t i0) {
    td_vu lane, lo0;
    for (int l = 0; l < TD_VW; l++) lane[l] = (uint32_t)l, lo0[l] = (uint32_t)i0;
    td_vu lo = lo0 + lane, hi = (lo0 - lo0) + (uint32_t)(i0 >> 32);
    hi -= (td_vu)(lo < lo0); /* a carry into the high half past 2^32 elements */
    td_vu h = td_vmix32(td_vmix32(lo ^ d->k0) + (d->k1 ^ hi));
    return td_vsel((td_vi)(h >= d->thresh), td_vsplat(d->scale), td_vsplat(0.0f));
}
/* sum of n floats, vector partial sums, double across blocks */
static inline double td_vsum(const float *p, int64_t n) {
    td_vf a = {0}, b = {0};
    int64_t i = 0;
    for (; i + 2 * TD_VW <= n; i += 2 * TD_VW) {
        a += td_vload(p + i);
        b += td_vload(p + i + TD_VW);
    }
    double s = td_vhsum(a + b);
    for (; i < n; i++) s += p[i];
    return s;
}
/* sum of (p[i] - m)^2 */
static inline double td_vsumsq_dev(const float *p, int64_t n, float m) {
    td_vf a = {0}, b = {0};
    int64_t i = 0;
    for (; i + 2 * TD_VW <= n; i += 2 * TD_VW) {
        td_vf d0 = td_vload(p + i) - m, d1 = td_vload(p + i + TD_VW) - m;
        a += d0 * d0;
        b += d1 * d1;
    }
    double s = td_vhsum(a + b);
    for (; i < n; i++) s += (double)(p[i] - m) * (p[i] - m);
    return s;
}
/* linear.c: C (M,N,ldc) = A (M,K) W^T + bias rows; out (N) = column sums of G (M,N,ld) */
int td_linear_rows(float *C, int64_t ldc, const float *A, int64_t M, int64_t K, const float *W, int64_t N,
                   const float *bias);
void td_colsum(float *out, const float *G, int64_t M, int64_t N, int64_t ld);
/* contiguous version of t without recording a graph node (new reference) */
static inline td_tensor *td_nn_contig(td_tensor *t) {
    bool prev = td_set_grad_enabled(false);
    td_tensor *c = td_contiguous(t);
    td_set_grad_enabled(prev);
    return c;
}
#endif

#endif
