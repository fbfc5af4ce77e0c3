/* Optimiser kernels: fused in-place updates of one parameter tensor (SGD with momentum /
 * Nesterov / weight decay, Adam, AdamW), the squared L2 norm used by global-norm clipping, and
 * the exponential moving average of parameters. No allocation in the steady state: state
 * tensors are created by the caller once. Each fused kernel has a plain reference loop beside it
 * (the *_ref functions) that spells out PyTorch 1.13's sequence of tensor ops, in float32, one
 * rounding per op; tests compare the two.
 *
 * p, g, and the state tensors are float32 with the same number of elements; p and the state
 * must be contiguous (parameters and state made by tdrl are); a non-contiguous g is copied. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

#define PAR_MIN 32768


static int check_state(const char *op, const char *what, const td_tensor *p, const td_tensor *s) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (!s) return 0;
    if (s->dtype != TD_F32) return td_fail_int("%s: %s must be float32", op, what);
    if (td_numel(s) != td_numel(p))
        return td_fail_int("%s: %s of shape %s does not match the parameter's shape %s", op, what,
                           td_shape_str(s, b1, sizeof b1), td_shape_str(p, b2, sizeof b2));
    if (!td_is_contiguous(s)) return td_fail_int("%s: %s must be contiguous", op, what);
    return 0;
}

/* Checks p and g; returns a contiguous gradient (new reference) or NULL. */
static td_tensor *prepare(const char *op, td_tensor *p, td_tensor *g) {
    char b1[TD_SHAPE_BUF], b2[TD_SHAPE_BUF];
    if (p->dtype != TD_F32 || g->dtype != TD_F32) return td_fail("%s: parameters and gradients must be float32", op);
    if (!td_is_contiguous(p))
        return td_fail("%s: parameter of shape %s is not contiguous (an optimiser updates it in place)", op,
                       td_shape_str(p, b1, sizeof b1));
    if (td_numel(g) != td_numel(p))
        return td_fail("%s: gradient of shape %s for a parameter of shape %s", op, td_shape_str(g, b1, sizeof b1),
                       td_shape_str(p, b2, sizeof b2));
    td_bump_version(p, op); /* p is written in place: a graph that saved it is out of date */
    if (td_is_contiguous(g)) {
        td_retain(g);
        return g;
    }
    bool prev = td_set_grad_enabled(false);
    td_tensor *c = td_contiguous(g);
    td_set_grad_enabled(prev);
    return c;
}

/* ---- SGD -------------------------------------------------------------------------------------
 * PyTorch 1.13 (_single_tensor_sgd):
 *   d = maximize ? -g : g;  if wd: d = d + wd * p
 *   if momentum: buf = first ? d : momentum * buf + (1 - dampening) * d
 *                d = nesterov ? d + momentum * buf : buf
 *   p = p - lr * d                                                                      */
int td_sgd_update_(td_tensor *p, td_tensor *g, td_tensor *buf, bool first, double lr, double momentum,
                   double dampening, double weight_decay, bool nesterov, bool maximize) {
    const char *op = "sgd";
    if (momentum != 0 && !buf) return td_fail_int("%s: momentum needs a buffer", op);
    if (check_state(op, "momentum buffer", p, momentum != 0 ? buf : NULL)) return -1;
    td_tensor *gc = prepare(op, p, g);
    if (!gc) return -1;
    float *pp = td_f32(p), *bb = momentum != 0 ? td_f32(buf) : NULL;
    const float *gg = td_f32(gc);
    const float wd = (float)weight_decay, mom = (float)momentum, damp1 = (float)(1 - dampening), nlr = (float)-lr;
    const float sgn = maximize ? -1.0f : 1.0f;
    int64_t n = td_numel(p);
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = sgn * gg[i];
        if (wd != 0) d = d + wd * pp[i];
        if (bb) {
            float b = first ? d : bb[i] * mom + damp1 * d;
            bb[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        pp[i] = pp[i] + nlr * d;
    }
    td_release(gc);
    return 0;
}

/* The same as a sequence of whole-tensor ops, each rounded to float32 (the specification). */
int td_sgd_update_ref(td_tensor *p, td_tensor *g, td_tensor *buf, bool first, double lr, double momentum,
                      double dampening, double weight_decay, bool nesterov, bool maximize) {
    const char *op = "sgd_ref";
    if (momentum != 0 && !buf) return td_fail_int("%s: momentum needs a buffer", op);
    td_tensor *gc = prepare(op, p, g);
    if (!gc) return -1;
    int64_t n = td_numel(p);
    float *d = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!d) {
        td_release(gc);
        return td_fail_int("%s: out of memory", op);
    }
    float *pp = td_f32(p);
    const float *gg = td_f32(gc);
    for (int64_t i = 0; i < n; i++) d[i] = maximize ? -gg[i] : gg[i];
    if (weight_decay != 0)
        for (int64_t i = 0; i < n; i++) d[i] = d[i] + (float)weight_decay * pp[i];
    if (momentum != 0) {
        float *bb = td_f32(buf);
        if (first) memcpy(bb, d, sizeof(float) * (size_t)n);
        else {
            for (int64_t i = 0; i < n; i++) bb[i] = bb[i] * (float)momentum;
            for (int64_t i = 0; i < n; i++) bb[i] = bb[i] + (float)(1 - dampening) * d[i];
        }
        for (int64_t i = 0; i < n; i++) d[i] = nesterov ? d[i] + (float)momentum * bb[i] : bb[i];
    }
    for (int64_t i = 0; i < n; i++) pp[i] = pp[i] + (float)-lr * d[i];
    free(d);
    td_release(gc);
    return 0;
}

/* ---- Adam / AdamW ------------------------------------------------------------------------------
 * PyTorch 1.13 (_single_tensor_adam; AdamW decays the parameter instead of the gradient):
 *   AdamW: p = p * (1 - lr * wd)          Adam: g = g + wd * p
 *   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
 *   step_size = lr / (1 - beta1^t);   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *   (amsgrad: vmax = max(vmax, v), used in place of v in denom)
 *   p = p - step_size * m / denom                                                        */
int td_adam_update_(td_tensor *p, td_tensor *g, td_tensor *m, td_tensor *v, td_tensor *vmax, int64_t step, double lr,
                    double beta1, double beta2, double eps, double weight_decay, bool decoupled, bool maximize) {
    const char *op = decoupled ? "adamw" : "adam";
    if (step < 1) return td_fail_int("%s: step counts from 1, got %lld", op, (long long)step);
    if (check_state(op, "exp_avg", p, m) || check_state(op, "exp_avg_sq", p, v) ||
        check_state(op, "max_exp_avg_sq", p, vmax))
        return -1;
    if (!m || !v) return td_fail_int("%s: missing state tensors", op);
    td_tensor *gc = prepare(op, p, g);
    if (!gc) return -1;
    float *pp = td_f32(p), *mm = td_f32(m), *vv = td_f32(v), *vx = vmax ? td_f32(vmax) : NULL;
    const float *gg = td_f32(gc);
    const double bc1 = 1 - pow(beta1, (double)step), bc2 = 1 - pow(beta2, (double)step);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)beta1, b2 = (float)beta2, omb1 = (float)(1 - beta1), omb2 = (float)(1 - beta2);
    const float fe = (float)eps, wd = (float)weight_decay, decay = (float)(1 - lr * weight_decay);
    const float sgn = maximize ? -1.0f : 1.0f;
    const bool dec = decoupled && weight_decay != 0, cpl = !decoupled && weight_decay != 0;
    int64_t n = td_numel(p);
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = sgn * gg[i], pi = pp[i];
        if (dec) pi = pi * decay;
        if (cpl) gi = gi + wd * pi;
        float mi = mm[i] * b1 + omb1 * gi;
        float vi = vv[i] * b2 + omb2 * gi * gi;
        mm[i] = mi;
        vv[i] = vi;
        if (vx) {
            vx[i] = vx[i] > vi ? vx[i] : vi;
            vi = vx[i];
        }
        float denom = sqrtf(vi) / bc2_sqrt + fe;
        pp[i] = pi + (-step_size * mi) / denom;
    }
    td_release(gc);
    return 0;
}

int td_adam_update_ref(td_tensor *p, td_tensor *g, td_tensor *m, td_tensor *v, td_tensor *vmax, int64_t step,
                       double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                       bool maximize) {
    const char *op = "adam_ref";
    if (step < 1) return td_fail_int("%s: step counts from 1", op);
    td_tensor *gc = prepare(op, p, g);
    if (!gc) return -1;
    int64_t n = td_numel(p);
    float *gi = malloc(sizeof(float) * (size_t)(n ? n : 1)), *den = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!gi || !den) {
        free(gi);
        free(den);
        td_release(gc);
        return td_fail_int("%s: out of memory", op);
    }
    float *pp = td_f32(p), *mm = td_f32(m), *vv = td_f32(v);
    const float *gg = td_f32(gc);
    for (int64_t i = 0; i < n; i++) gi[i] = maximize ? -gg[i] : gg[i];
    if (decoupled) {
        for (int64_t i = 0; i < n; i++) pp[i] = pp[i] * (float)(1 - lr * weight_decay);
    } else if (weight_decay != 0) {
        for (int64_t i = 0; i < n; i++) gi[i] = gi[i] + (float)weight_decay * pp[i];
    }
    for (int64_t i = 0; i < n; i++) mm[i] = mm[i] * (float)beta1;
    for (int64_t i = 0; i < n; i++) mm[i] = mm[i] + (float)(1 - beta1) * gi[i];
    for (int64_t i = 0; i < n; i++) vv[i] = vv[i] * (float)beta2;
    for (int64_t i = 0; i < n; i++) vv[i] = vv[i] + (float)(1 - beta2) * gi[i] * gi[i];
    double bc1 = 1 - pow(beta1, (double)step), bc2 = 1 - pow(beta2, (double)step);
    const float *src = vv;
    if (vmax) {
        float *vx = td_f32(vmax);
        for (int64_t i = 0; i < n; i++) vx[i] = vx[i] > vv[i] ? vx[i] : vv[i];
        src = vx;
    }
    for (int64_t i = 0; i < n; i++) den[i] = sqrtf(src[i]);
    for (int64_t i = 0; i < n; i++) den[i] = den[i] / (float)sqrt(bc2);
    for (int64_t i = 0; i < n; i++) den[i] = den[i] + (float)eps;
    for (int64_t i = 0; i < n; i++) pp[i] = pp[i] + ((float)-(lr / bc1) * mm[i]) / den[i];
    free(gi);
    free(den);
    td_release(gc);
    return 0;
}

/* ---- norms and EMA ----------------------------------------------------------------------------- */
/* Sum of squares of t's elements, accumulated in double (any layout). */
int td_sum_squares(td_tensor *t, double *out) {
    if (t->dtype != TD_F32) return td_fail_int("grad_norm: tensors must be float32");
    td_tensor *c;
    if (td_is_contiguous(t)) {
        c = t;
        td_retain(c);
    } else {
        bool prev = td_set_grad_enabled(false);
        c = td_contiguous(t);
        td_set_grad_enabled(prev);
        if (!c) return -1;
    }
    const float *x = td_f32(c);
    int64_t n = td_numel(c);
    double s = 0;
    /* blocks of 1024 summed in 16 float lanes (vectorised), each block added in double; the
     * threads' partial sums are combined in thread order, so the result does not vary from run
     * to run at a given thread count */
    int64_t nb = n / 1024;
    double part[256] = {0};
    int nt = 1, want = omp_get_max_threads() < 256 ? omp_get_max_threads() : 256;
    #pragma omp parallel if (n > 4 * PAR_MIN) num_threads(want)
    {
        int id = omp_get_thread_num();
        #pragma omp single
        nt = omp_get_num_threads();
        double mine = 0;
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < nb; b++) {
            float acc[16] = {0};
            const float *xb = x + b * 1024;
            for (int i = 0; i < 1024; i += 16)
                for (int k = 0; k < 16; k++) acc[k] += xb[i + k] * xb[i + k];
            double t = 0;
            for (int k = 0; k < 16; k++) t += acc[k];
            mine += t;
        }
        part[id] = mine;
    }
    for (int k = 0; k < nt; k++) s += part[k];
    for (int64_t i = nb * 1024; i < n; i++) s += (double)x[i] * x[i];
    td_release(c);
    *out = s;
    return 0;
}

/* shadow = shadow - (1 - decay) * (shadow - p)   (score_sde's ExponentialMovingAverage) */
int td_ema_update_(td_tensor *shadow, td_tensor *p, double decay) {
    if (check_state("ema", "shadow", p, shadow)) return -1;
    td_tensor *pc = prepare("ema", shadow, p); /* p read like a gradient: any layout */
    if (!pc) return -1;
    float *s = td_f32(shadow);
    const float *x = td_f32(pc);
    const float omd = (float)(1 - decay);
    int64_t n = td_numel(shadow);
    #pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) s[i] = s[i] - omd * (s[i] - x[i]);
    td_release(pc);
    return 0;
}
