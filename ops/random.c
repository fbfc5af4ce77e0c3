/* Seeded generators (xoshiro256**, seeded through splitmix64) and tensor fills.
 * Normals use Box-Muller in double; every draw goes through an explicit generator object. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

int td_check_inplace(const td_tensor *t, const char *op);

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void td_generator_seed(td_generator *g, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) g->s[i] = splitmix64(&x);
    g->seed = seed;
    g->has_spare = 0;
    g->spare = 0;
}

/* xoshiro256** never leaves the all-zero state (every draw is 0, and Box-Muller's
 * `while (u1 <= 0)` then spins for ever), so a state from a file is checked before it is used. */
int td_generator_set_state(td_generator *g, const uint64_t s[4], uint64_t seed, int has_spare, double spare) {
    if (!(s[0] | s[1] | s[2] | s[3]))
        return td_fail_int("Generator:set_state: the xoshiro256** state (values 1-4) is all zeros, which never changes");
    if (has_spare != 0 && has_spare != 1)
        return td_fail_int("Generator:set_state: value 6 (has a spare normal) is %d, not 0 or 1", has_spare);
    if (has_spare && !isfinite(spare))
        return td_fail_int("Generator:set_state: value 7 (the spare normal) is %g, not a finite number", spare);
    memcpy(g->s, s, sizeof g->s);
    g->seed = seed;
    g->has_spare = has_spare;
    g->spare = has_spare ? spare : 0;
    return 0;
}

static td_generator default_gen;
static int default_init;

td_generator *td_default_generator(void) {
    if (!default_init) {
        td_generator_seed(&default_gen, 0x5eed);
        default_init = 1;
    }
    return &default_gen;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t td_rand_u64(td_generator *g) {
    uint64_t *s = g->s;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

double td_rand_uniform(td_generator *g) { return (double)(td_rand_u64(g) >> 11) * 0x1.0p-53; }

double td_rand_normal(td_generator *g) {
    if (g->has_spare) {
        g->has_spare = 0;
        return g->spare;
    }
    double u1, u2 = td_rand_uniform(g);
    do u1 = td_rand_uniform(g); while (u1 <= 0);
    double r = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    g->spare = r * sin(th);
    g->has_spare = 1;
    return r * cos(th);
}

/* Fills t (any layout) in logical order through a contiguous scratch copy when needed. */
typedef double (*draw_fn)(td_generator *g, double a, double b);
static double draw_uniform(td_generator *g, double lo, double hi) { return lo + (hi - lo) * td_rand_uniform(g); }
static double draw_normal(td_generator *g, double m, double s) { return m + s * td_rand_normal(g); }
static double draw_int(td_generator *g, double lo, double hi) {
    uint64_t span = (uint64_t)(hi - lo);
    /* rejection sampling for an unbiased integer in [0, span) */
    uint64_t lim = UINT64_MAX - UINT64_MAX % span, r;
    do r = td_rand_u64(g); while (r >= lim);
    return lo + (double)(r % span);
}

static int fill(td_tensor *t, td_generator *g, draw_fn f, double a, double b, const char *op) {
    if (td_check_inplace(t, op)) return -1;
    if (!g) g = td_default_generator();
    int64_t n = td_numel(t);
    if (td_is_contiguous(t)) {
        if (t->dtype == TD_F32) {
            float *p = td_f32(t);
            for (int64_t i = 0; i < n; i++) p[i] = (float)f(g, a, b);
        } else {
            int64_t *p = td_i64(t);
            for (int64_t i = 0; i < n; i++) p[i] = (int64_t)f(g, a, b);
        }
        return 0;
    }
    int64_t idx[TD_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        td_set(t, idx, f(g, a, b));
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return 0;
}

int td_uniform_(td_tensor *t, td_generator *g, double lo, double hi) {
    if (t->dtype != TD_F32) return td_fail_int("uniform_: needs a float32 tensor, got %s (use randint)", td_dtype_name(t->dtype));
    if (!(lo <= hi)) return td_fail_int("uniform_: low %g is above high %g", lo, hi);
    return fill(t, g, draw_uniform, lo, hi, "uniform_");
}

int td_normal_(td_tensor *t, td_generator *g, double mean, double std) {
    /* an int64 tensor took truncated normals, silently mostly 0, -1 and 1 */
    if (t->dtype != TD_F32) return td_fail_int("normal_: needs a float32 tensor, got %s", td_dtype_name(t->dtype));
    if (!(std >= 0)) return td_fail_int("normal_: standard deviation %g is negative", std);
    return fill(t, g, draw_normal, mean, std, "normal_");
}

int td_randint_(td_tensor *t, td_generator *g, int64_t lo, int64_t hi) {
    if (hi <= lo) return td_fail_int("randint: empty range [%lld, %lld)", (long long)lo, (long long)hi);
    return fill(t, g, draw_int, (double)lo, (double)hi, "randint");
}

td_tensor *td_randperm(td_generator *g, int64_t n) {
    if (n < 0) return td_fail("randperm: negative size %lld", (long long)n);
    if (!g) g = td_default_generator();
    td_tensor *t = td_arange(0, (double)n, 1, TD_I64);
    if (!t) return NULL;
    int64_t *p = td_i64(t);
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)draw_int(g, 0, (double)(i + 1)), tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    return t;
}
