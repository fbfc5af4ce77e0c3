/* The kernels' float maths, internal to ops/ (not part of the API):
 *  - scalar exp, sigmoid and tanh written so that GCC turns loops over them into SIMD code
 *    (glibc's expf is a scalar call per element; needs -fno-trapping-math, which the Makefile
 *    sets, so that floor may use vroundps);
 *  - vectors of TD_VW floats (GCC vector extensions: AVX2 or AVX-512) with load / store /
 *    broadcast / select, exp and sigmoid, row softmax, sums, and dropout's keep/drop hash. */
#ifndef TDRL_SIMD_H
#define TDRL_SIMD_H
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static inline float td_expf(float x) {
    /* exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] */
    x = x < -104.0f ? -104.0f : (x > 88.7f ? 88.7f : x);
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693145751953125f; /* ln 2 split in two for an exact product */
    r = r - n * 1.42860682030941723212e-6f;
    /* minimax polynomial for exp on the reduced range (Cephes expf) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* scale by 2^n in two steps so that n down to -150 gives denormals, not garbage */
    int32_t ni = (int32_t)n;
    int32_t n1 = ni >> 1, n2 = ni - n1;
    union { uint32_t u; float f; } s1 = {.u = (uint32_t)(n1 + 127) << 23}, s2 = {.u = (uint32_t)(n2 + 127) << 23};
    return p * s1.f * s2.f;
}

static inline float td_sigmoidf(float x) { return 1.0f / (1.0f + td_expf(-x)); }

static inline float td_tanhf(float x) {
    /* tanh = 1 - 2 / (exp(2x) + 1); near 0 use the odd series to keep relative accuracy */
    float ax = x < 0 ? -x : x;
    if (ax < 0.0625f) {
        float x2 = x * x;
        return x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    }
    float e = td_expf(2.0f * ax);
    float t = 1.0f - 2.0f / (e + 1.0f);
    return x < 0 ? -t : t;
}

/* ---- vectors ---------------------------------------------------------------------------------- */
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
#endif
