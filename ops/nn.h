/* libtdrl: fused neural-network kernels (conv.c, norm.c, linear.c, attention.c, rnn.c, loss.c).
 *
 * Same conventions as tensor.h: new references returned, NULL + td_last_error() on failure
 * (every check before any allocation), autograd recorded when an input needs grad, backward
 * next to forward. Every fast kernel has a plain reference beside it (the *_ref functions;
 * nn_ref.c for linear, attention, the GRU cell and the losses), which the C tests hold it to.
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
/* x (M,K), w (N,K), b (N) or NULL -> y (M,N); given dy (M,N): dx (M,K), dw (N,K), db (N) */
void td_linear_ref(const float *x, const float *w, const float *b, int64_t M, int64_t K, int64_t N, const float *dy,
                   float *y, float *dx, float *dw, float *db);
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
/* Plain double-precision loops: the specification the tests hold the kernels to. y of the
 * forward (batch norm: training statistics) and, given dy, dx (written) and dw, db (added to, in
 * double; always given, of the parameters' size); w and b may be NULL (1 and 0).
 * group: x (N,C,S), w, b (C); batch: x (N,C,S), w, b (C); layer: x (R,n), w, b (n). */
void td_group_norm_ref(const float *x, int64_t N, int64_t C, int64_t S, int64_t G, const float *w, const float *b,
                       double eps, bool silu, const float *dy, float *y, float *dx, double *dw, double *db);
void td_batch_norm_ref(const float *x, int64_t N, int64_t C, int64_t S, const float *w, const float *b, double eps,
                       const float *dy, float *y, float *dx, double *dw, double *db);
void td_layer_norm_ref(const float *x, int64_t R, int64_t n, const float *w, const float *b, double eps, const float *dy,
                       float *y, float *dx, double *dw, double *db);

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
/* The reference's view: BH (batch, head)s of q (Tq,D), k (Tk,D), v (Tk,Dv), out (Tq,Dv); channels
 * first each stored transposed. The masks as td_sdpa reads them, expanded: */
typedef struct td_sdpa_geom {
    int64_t BH, Tq, Tk, D, Dv;
    double scale;
    bool cf;
    const float *am; /* (BH,Tq,Tk) or NULL: added to the scaled scores, or nonzero = masked if am_bool */
    bool am_bool;
    const float *kpm; /* (BH/heads,Tk) or NULL: nonzero = masked, or added if kpm_add */
    int64_t heads;
    bool kpm_add;
} td_sdpa_geom;
/* out and the weights w (BH,Tq,Tk); given dout (out's shape) and/or dw (w's shape): dq, dk, dv
 * (dv needs dout) */
void td_sdpa_ref(const td_sdpa_geom *g, const float *q, const float *k, const float *v, const float *dout,
                 const float *dw, float *out, float *w, float *dq, float *dk, float *dv);

/* ---- recurrent cells (rnn.c) ---------------------------------------------------------------- */
/* x (B,I), h (B,Hd), w_ih (3Hd,I), w_hh (3Hd,Hd), b_ih, b_hh (3Hd) or NULL -> h' (B,Hd).
 * Gates in PyTorch's order (r, z, n). */
td_tensor *td_gru_cell(td_tensor *x, td_tensor *h, td_tensor *w_ih, td_tensor *w_hh, td_tensor *b_ih,
                       td_tensor *b_hh);
/* the same shapes as raw arrays -> y (B,Hd); given dy (B,Hd): every input's gradient */
void td_gru_cell_ref(const float *x, const float *h, const float *w_ih, const float *w_hh, const float *b_ih,
                     const float *b_hh, int64_t B, int64_t I, int64_t Hd, const float *dy, float *y, float *dx, float *dh,
                     float *dw_ih, float *dw_hh, float *db_ih, float *db_hh);

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
/* References: loss (one value, or the per-sample / per-element values for "none") and, given
 * dy (the loss's shape), the inputs' gradients. Scores x (N,C,S) with S = prod(d...), labels (N,S);
 * logp: x holds log-probabilities (nll_loss). The pair losses over n elements, pos_weight pw of P
 * values repeating along them (or NULL). The KL over R rows of D. */
void td_cross_entropy_ref(const float *x, const int64_t *labels, int64_t N, int64_t C, int64_t S, bool logp,
                          td_reduction red, const float *dy, float *loss, float *dx);
void td_bce_with_logits_ref(const float *x, const float *t, int64_t n, const float *pw, int64_t P, td_reduction red,
                            const float *dy, float *loss, float *dx, float *dt);
void td_mse_loss_ref(const float *a, const float *b, int64_t n, td_reduction red, const float *dy, float *loss, float *da,
                     float *db);
void td_l1_loss_ref(const float *a, const float *b, int64_t n, td_reduction red, const float *dy, float *loss, float *da,
                    float *db);
void td_gaussian_kl_ref(const float *mu, const float *logvar, int64_t R, int64_t D, td_reduction red, const float *dy,
                        float *loss, float *dmu, float *dlogvar);

/* ---- internal helpers shared by the kernel files (not part of the API) -------------------------- */
#ifdef TD_NN_INTERNAL
#include "simd.h"
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
