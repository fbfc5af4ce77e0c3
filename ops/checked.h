/* Checked size arithmetic: the one place where sizes that come from users or files are
 * multiplied and added. A shape whose product wraps around 2^64 (3x4x7x0x6DB6DB6DB6DB6DB7
 * "is" 12 elements in wrapping arithmetic) must be refused, not trusted, so every product of
 * sizes (element counts, byte counts, strides, file offsets, conv output sizes) goes through
 * these instead of `*` and `+`. */
#ifndef TDRL_CHECKED_H
#define TDRL_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most elements one tensor may hold (2^40: 4 TiB of float32), so that element counts
 * times 8-byte element sizes and offsets within a storage never come near 2^63. */
#define TD_MAX_NUMEL ((int64_t)1 << 40)

/* *r = a * b; false when the exact product does not fit. */
static inline bool td_mul_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool td_add_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_add_overflow(a, b, r); }
static inline bool td_sub_ok(int64_t a, int64_t b, int64_t *r) { return !__builtin_sub_overflow(a, b, r); }
static inline bool td_zmul_ok(size_t a, size_t b, size_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool td_zadd_ok(size_t a, size_t b, size_t *r) { return !__builtin_add_overflow(a, b, r); }

/* The element count of a shape of non-negative sizes, or -1 when one is negative or the
 * product exceeds `limit` (TD_MAX_NUMEL for a tensor that is to be allocated). A zero size
 * anywhere makes the product 0 whatever the others are, as for any tensor; the others must
 * still each be within the limit, so that a view with a zero cannot smuggle 2^62 strides. */
static inline int64_t td_shape_numel(int ndim, const int64_t *shape, int64_t limit) {
    int64_t n = 1;
    bool zero = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] > limit) return -1;
        if (shape[i] == 0) zero = true;
        else if (!td_mul_ok(n, shape[i], &n) || n > limit) return -1;
    }
    return zero ? 0 : n;
}

#endif
