/* One element of a foreign dtype, already in host byte order, into float32 or int64: shared by
 * the .npy and safetensors readers. kind: 'f' IEEE float (size 2 is half), 'h' half,
 * 'g' bfloat16, 'i' signed, 'u' unsigned, 'b' bool. */
#ifndef TDRL_IO_CONVERT_H
#define TDRL_IO_CONVERT_H
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float td_half_to_float(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float f;
    if (e == 0) f = ldexpf((float)m, -24);
    else if (e == 31) f = m ? NAN : INFINITY;
    else f = ldexpf((float)(m + 1024), e - 25);
    return (h & 0x8000) ? -f : f;
}

static inline void td_convert_elem(char kind, int size, const unsigned char *b, float *df, int64_t *di, int64_t k) {
    switch (kind) {
    case 'h': { uint16_t v; memcpy(&v, b, 2); df[k] = td_half_to_float(v); break; }
    case 'f':
        if (size == 2) { uint16_t v; memcpy(&v, b, 2); df[k] = td_half_to_float(v); }
        else if (size == 4) { float v; memcpy(&v, b, 4); df[k] = v; }
        else { double v; memcpy(&v, b, 8); df[k] = (float)v; }
        break;
    case 'g': { uint16_t v; memcpy(&v, b, 2); uint32_t u = (uint32_t)v << 16; float f; memcpy(&f, &u, 4); df[k] = f; break; }
    case 'i':
        switch (size) {
        case 1: { int8_t v; memcpy(&v, b, 1); di[k] = v; break; }
        case 2: { int16_t v; memcpy(&v, b, 2); di[k] = v; break; }
        case 4: { int32_t v; memcpy(&v, b, 4); di[k] = v; break; }
        default: { int64_t v; memcpy(&v, b, 8); di[k] = v; break; }
        }
        break;
    case 'u':
        switch (size) {
        case 1: di[k] = b[0]; break;
        case 2: { uint16_t v; memcpy(&v, b, 2); di[k] = v; break; }
        default: { uint32_t v; memcpy(&v, b, 4); di[k] = v; break; }
        }
        break;
    default: di[k] = b[0] != 0; break;
    }
}
#endif
