/* Vectorisable float maths: exp within ~1 ulp over the normal float range, written so that GCC
 * turns loops over it into SIMD code (glibc's expf is a scalar call per element). Needs
 * -fno-trapping-math (floor may then use vroundps), which the Makefile sets. */
#ifndef TDRL_FASTMATH_H
#define TDRL_FASTMATH_H
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
#endif
