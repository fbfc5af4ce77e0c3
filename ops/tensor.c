/* Tensors: storage, reference counts, creation, errors, memory accounting, threads. */
#include "tensor.h"
#include "checked.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* ---- errors ------------------------------------------------------------------------------ */
static _Thread_local char err_buf[1024];

const char *td_last_error(void) { return err_buf[0] ? err_buf : "unknown error"; }

void *td_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return NULL;
}

int td_fail_int(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

char *td_dims_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    if (ndim == 0) {
        snprintf(buf, n, "scalar");
        return buf;
    }
    for (int i = 0; i < ndim && k < n; i++)
        k += snprintf(buf + k, n - k, i ? "x%lld" : "%lld", (long long)shape[i]);
    return buf;
}

char *td_shape_str(const td_tensor *t, char *buf, size_t n) { return td_dims_str(t->ndim, t->shape, buf, n); }

/* ---- interrupts and threads ---------------------------------------------------------------- */
volatile int td_interrupt_flag = 0;
volatile int td_interrupt_defer = 0, td_interrupt_pending = 0;
static int n_threads = 1;

void td_note_long_op(const char *op) {
    static int on = -1;
    if (on < 0) on = getenv("TDRL_TRACE_LONG_OPS") != NULL;
    if (!on) return;
    char line[128];
    int n = snprintf(line, sizeof line, "tdrl: %s started\n", op);
    if (n > 0 && write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) {
    }
}
void td_set_cache_limit(size_t bytes);
extern void openblas_set_num_threads(int);

/* libgomp sizes per-team arrays on the stack and starts every thread at the first parallel
 * region: 100,000 threads overflowed the stack, 2^31 - 1 ended in its own out-of-memory exit.
 * The ceiling is generous for oversubscription experiments and far from either. */
int td_max_threads(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores > 64 ? (int)(cores * 4 < 4096 ? cores * 4 : 4096) : 256;
}

int td_set_num_threads(int n) {
    if (n < 1 || n > td_max_threads())
        return td_fail_int("set_num_threads: %d threads (1 to %d on this machine)", n, td_max_threads());
    n_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(1); /* td_gemm splits products across the OpenMP threads itself */
    return 0;
}

int td_get_num_threads(void) { return n_threads; }

/* Denormal (subnormal) floats flushed to zero, on results (FTZ) and on inputs (DAZ), as
 * TensorFlow does on CPUs: an arithmetic op on one costs ~100 cycles in a microcode assist,
 * and at the start of training the score network's zero-initialised output convolutions make
 * gradients that small (a GroupNorm + SiLU backward ran 6-12x slower in the first steps). Set
 * in the main thread before any worker exists: OpenMP's threads inherit it. TDRL_DENORMALS=1
 * keeps IEEE gradual underflow. */
static void denormals_init(void) {
#if defined(__SSE__)
    const char *d = getenv("TDRL_DENORMALS");
    if (!(d && *d && strcmp(d, "0"))) _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ (bit 15) | DAZ (bit 6) */
#endif
}

void td_threads_init(void) {
    denormals_init();
    const char *s = getenv("TDRL_NUM_THREADS");
    long n = s ? strtol(s, NULL, 10) : 0, cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > td_max_threads()) cores = td_max_threads();
    if (s && (n < 1 || n > td_max_threads())) { /* no caller to raise an error to at start-up: say so, go on */
        fprintf(stderr, "tdrl: TDRL_NUM_THREADS=%s is not a thread count from 1 to %d; using %ld\n", s,
                td_max_threads(), cores);
        n = cores;
    }
    if (n <= 0) n = cores;
    td_set_num_threads((int)n);
    const char *c = getenv("TDRL_CACHE_MB");
    if (c) td_set_cache_limit((size_t)strtoull(c, NULL, 10) << 20);
}

/* ---- memory: accounting and a cache of freed blocks ------------------------------------------
 * Training loops allocate the same sizes every step. Freed blocks are kept in per-size free
 * lists and handed out again, so the steady state makes no malloc calls and touches no fresh
 * pages (PyTorch's CPU allocator returns them to the OS each step and pays in page faults).
 * The cache is bounded (TDRL_CACHE_MB, default 2048) and emptied by td_empty_cache(). */
#include <pthread.h>

static atomic_size_t bytes_live, bytes_total, bytes_peak;
static atomic_uint_fast64_t n_allocs, n_requests;
static size_t bytes_cached, cache_limit = (size_t)2048 << 20;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct cblock {
    struct cblock *next;
    void *data;
    size_t cap;
} cblock;
#define CACHE_BUCKETS 1024
static cblock *cache[CACHE_BUCKETS];

size_t td_bytes_live(void) { return atomic_load(&bytes_live); }
size_t td_bytes_allocated(void) { return atomic_load(&bytes_total); }
uint64_t td_alloc_count(void) { return atomic_load(&n_allocs); }
uint64_t td_alloc_requests(void) { return atomic_load(&n_requests); }
size_t td_bytes_cached(void) { return bytes_cached; }
size_t td_bytes_peak(void) { return atomic_load(&bytes_peak); }
void td_reset_peak(void) { atomic_store(&bytes_peak, atomic_load(&bytes_live)); }

/* Capacity class of a request: 64-byte steps up to 4 KB, then 4 KB pages, then 1/16 steps of
 * the power of two (at most ~6% slack), so that near sizes share blocks. */
static size_t round_cap(size_t n) {
    if (n <= 4096) return n ? (n + 63) & ~(size_t)63 : 64;
    if (n <= (1u << 20)) return (n + 4095) & ~(size_t)4095;
    size_t p = (size_t)1 << (63 - __builtin_clzll(n)), step = p / 16;
    return (n + step - 1) / step * step;
}

static size_t bucket_of(size_t cap) { return (cap * 0x9E3779B97F4A7C15ull >> 40) % CACHE_BUCKETS; }

static void *cache_take(size_t cap) {
    void *p = NULL;
    pthread_mutex_lock(&cache_lock);
    for (cblock **b = &cache[bucket_of(cap)]; *b; b = &(*b)->next)
        if ((*b)->cap == cap) {
            cblock *hit = *b;
            *b = hit->next;
            p = hit->data;
            bytes_cached -= cap;
            free(hit);
            break;
        }
    pthread_mutex_unlock(&cache_lock);
    return p;
}

static bool cache_put(void *data, size_t cap) {
    bool kept = false;
    pthread_mutex_lock(&cache_lock);
    if (bytes_cached + cap <= cache_limit) {
        cblock *b = malloc(sizeof *b);
        if (b) {
            b->data = data;
            b->cap = cap;
            b->next = cache[bucket_of(cap)];
            cache[bucket_of(cap)] = b;
            bytes_cached += cap;
            kept = true;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return kept;
}

void td_set_cache_limit(size_t bytes) {
    cache_limit = bytes;
    if (bytes_cached > bytes) td_empty_cache();
}

void td_empty_cache(void) {
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_BUCKETS; i++)
        while (cache[i]) {
            cblock *b = cache[i];
            cache[i] = b->next;
            free(b->data);
            free(b);
        }
    bytes_cached = 0;
    pthread_mutex_unlock(&cache_lock);
}

size_t td_dtype_size(td_dtype dt) { return dt == TD_F32 ? 4 : 8; }
const char *td_dtype_name(td_dtype dt) { return dt == TD_F32 ? "float32" : "int64"; }

static td_storage *storage_new(size_t nbytes) {
    td_storage *s = malloc(sizeof *s);
    if (!s) return td_fail("out of memory allocating a storage");
    size_t cap = round_cap(nbytes);
    s->data = cache_take(cap);
    if (!s->data) {
        s->data = aligned_alloc(64, cap); /* 64-byte alignment for vector loads */
        if (!s->data) {
            td_empty_cache();
            s->data = aligned_alloc(64, cap);
        }
        if (!s->data) {
            free(s);
            return td_fail("out of memory allocating %zu bytes", nbytes);
        }
        atomic_fetch_add(&n_allocs, 1);
    }
    atomic_fetch_add(&n_requests, 1);
    s->nbytes = nbytes;
    s->refcount = 1;
    s->external = false;
    s->version = 0;
    s->last_inplace = NULL;
    size_t live = atomic_fetch_add(&bytes_live, nbytes) + nbytes, peak = atomic_load(&bytes_peak);
    while (live > peak && !atomic_compare_exchange_weak(&bytes_peak, &peak, live)) {}
    atomic_fetch_add(&bytes_total, nbytes);
    return s;
}

static void storage_release(td_storage *s) {
    if (!s || --s->refcount > 0) return;
    if (!s->external) {
        atomic_fetch_sub(&bytes_live, s->nbytes);
        size_t cap = round_cap(s->nbytes);
        if (!cache_put(s->data, cap)) free(s->data);
    }
    free(s);
}

/* ---- lifetime -------------------------------------------------------------------------------- */
void td_retain(td_tensor *t) {
    if (t) t->refcount++;
}

void td_node_release(td_node *n); /* autograd.c */

/* Releasing the last reference to a result frees its graph, which releases its inputs, and so
 * on: iterate over a pending list instead of recursing, so that a long chain of ops (a loop
 * of 10^6 additions) cannot overflow the C stack. */
static _Thread_local td_tensor **pending;
static _Thread_local size_t n_pending, cap_pending;
static _Thread_local int releasing;

static void tensor_free(td_tensor *t) {
    storage_release(t->storage);
    td_release(t->grad);
    if (t->node) td_node_release(t->node);
    free(t);
}

void td_release(td_tensor *t) {
    if (!t || --t->refcount > 0) return;
    if (n_pending == cap_pending) {
        size_t c = cap_pending ? cap_pending * 2 : 256;
        td_tensor **p = realloc(pending, c * sizeof *p);
        if (!p) { /* out of memory: fall back to recursion */
            tensor_free(t);
            return;
        }
        pending = p;
        cap_pending = c;
    }
    pending[n_pending++] = t;
    if (releasing) return;
    releasing = 1;
    while (n_pending) tensor_free(pending[--n_pending]);
    releasing = 0;
}

/* ---- creation -------------------------------------------------------------------------------- */
int64_t td_numel(const td_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int check_shape(int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 0 || ndim > TD_MAX_DIMS) return td_fail_int("tensor: %d dimensions (at most %d)", ndim, TD_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return td_fail_int("tensor: negative size %lld in dimension %d", (long long)shape[i], i + 1);
    int64_t n = td_shape_numel(ndim, shape, TD_MAX_NUMEL);
    if (n < 0) {
        char b[TD_SHAPE_BUF];
        return td_fail_int("tensor: shape %s holds more than 2^40 elements", td_dims_str(ndim, shape, b, sizeof b));
    }
    *numel = n;
    return 0;
}

static td_tensor *tensor_struct(td_dtype dt, int ndim, const int64_t *shape) {
    td_tensor *t = calloc(1, sizeof *t);
    if (!t) return td_fail("out of memory");
    t->refcount = 1;
    t->dtype = dt;
    t->ndim = ndim;
    int64_t st = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = st;
        st *= shape[i] ? shape[i] : 1;
    }
    return t;
}

td_tensor *td_empty(td_dtype dt, int ndim, const int64_t *shape) {
    int64_t n = 0;
    if (check_shape(ndim, shape, &n)) return NULL;
    td_tensor *t = tensor_struct(dt, ndim, shape);
    if (!t) return NULL;
    t->storage = storage_new((size_t)n * td_dtype_size(dt));
    if (!t->storage) {
        free(t);
        return NULL;
    }
    return t;
}

td_tensor *td_zeros(td_dtype dt, int ndim, const int64_t *shape) {
    td_tensor *t = td_empty(dt, ndim, shape);
    if (t) memset(t->storage->data, 0, t->storage->nbytes);
    return t;
}

td_tensor *td_full(td_dtype dt, int ndim, const int64_t *shape, double value) {
    td_tensor *t = td_empty(dt, ndim, shape);
    if (!t) return NULL;
    int64_t n = td_numel(t);
    if (dt == TD_F32) {
        float *p = td_f32(t), v = (float)value;
        for (int64_t i = 0; i < n; i++) p[i] = v;
    } else {
        int64_t *p = td_i64(t), v = td_i64_of_double(value);
        for (int64_t i = 0; i < n; i++) p[i] = v;
    }
    return t;
}

td_tensor *td_scalar(float v) { return td_full(TD_F32, 0, NULL, v); }

td_tensor *td_from_data(td_dtype dt, int ndim, const int64_t *shape, const void *data) {
    td_tensor *t = td_empty(dt, ndim, shape);
    if (t && t->storage->nbytes) memcpy(t->storage->data, data, t->storage->nbytes);
    return t;
}

td_tensor *td_arange(double start, double end, double step, td_dtype dt) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
        return td_fail("arange: invalid range (start %g, end %g, step %g)", start, end, step);
    double nd = ceil((end - start) / step);
    /* the count checked as a double: T.arange(1e300) cast to int64 was undefined */
    if (nd > (double)TD_MAX_NUMEL)
        return td_fail("arange: %g elements from %g to %g by %g (at most 2^40)", nd, start, end, step);
    int64_t n = nd > 0 ? (int64_t)nd : 0;
    td_tensor *t = td_empty(dt, 1, &n);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) {
        double v = start + (double)i * step;
        if (dt == TD_F32) td_f32(t)[i] = (float)v;
        else td_i64(t)[i] = td_i64_of_double(v);
    }
    return t;
}

td_tensor *td_linspace(double start, double end, int64_t n) {
    if (n < 0) return td_fail("linspace: negative count %lld", (long long)n);
    td_tensor *t = td_empty(TD_F32, 1, &n);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++)
        td_f32(t)[i] = (float)(n == 1 ? start : start + (end - start) * (double)i / (double)(n - 1));
    return t;
}

td_tensor *td_eye(int64_t n, int64_t m) {
    int64_t shape[2] = {n, m}; /* td_zeros checks the product before i * m + i is formed */
    td_tensor *t = td_zeros(TD_F32, 2, shape);
    if (!t) return NULL;
    for (int64_t i = 0; i < n && i < m; i++) td_f32(t)[i * m + i] = 1;
    return t;
}

bool td_is_contiguous(const td_tensor *t) {
    int64_t st = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != st) return false;
        st *= t->shape[i];
    }
    return true;
}

int td_norm_dim(const td_tensor *t, int dim, const char *op) {
    int nd = t->ndim;
    int d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= (nd ? nd : 1)) {
        char b[TD_SHAPE_BUF];
        return td_fail_int("%s: dimension %d out of range for a tensor of shape %s", op,
                           dim < 0 ? dim : dim + 1, td_shape_str(t, b, sizeof b));
    }
    return d;
}

static int64_t offset_of(const td_tensor *t, const int64_t *idx) {
    int64_t o = t->offset;
    for (int i = 0; i < t->ndim; i++) o += idx[i] * t->stride[i];
    return o;
}

double td_get(const td_tensor *t, const int64_t *idx) {
    int64_t o = offset_of(t, idx);
    return t->dtype == TD_F32 ? ((float *)t->storage->data)[o] : (double)((int64_t *)t->storage->data)[o];
}

void td_set(td_tensor *t, const int64_t *idx, double v) {
    int64_t o = offset_of(t, idx);
    if (t->dtype == TD_F32) ((float *)t->storage->data)[o] = (float)v;
    else ((int64_t *)t->storage->data)[o] = td_i64_of_double(v);
}

/* int64 elements read and written as integers: through a double, 2^53 + 1 became 2^53 and
 * 2^63 - 1 became -2^63. */
int64_t td_get_i64(const td_tensor *t, const int64_t *idx) {
    int64_t o = offset_of(t, idx);
    return t->dtype == TD_I64 ? ((int64_t *)t->storage->data)[o] : td_i64_of_double(((float *)t->storage->data)[o]);
}

void td_set_i64(td_tensor *t, const int64_t *idx, int64_t v) {
    int64_t o = offset_of(t, idx);
    if (t->dtype == TD_I64) ((int64_t *)t->storage->data)[o] = v;
    else ((float *)t->storage->data)[o] = (float)v;
}

int64_t td_i64_of_double(double v) {
    if (v != v) return 0;
    if (v >= 0x1p63) return INT64_MAX;
    if (v < -0x1p63) return INT64_MIN;
    return (int64_t)v;
}

double td_get_flat(const td_tensor *t, int64_t i) {
    int64_t idx[TD_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? i % t->shape[d] : 0;
        i = t->shape[d] ? i / t->shape[d] : 0;
    }
    return td_get(t, idx);
}

/* ---- strided copy (the one gather-to-contiguous loop every op reuses) ------------------- */
/* Copies the logical contents of src into the contiguous buffer dst (same dtype). Dims that are
 * contiguous with the next are merged first (a channel slice of NCHW is N runs of C H W), and each
 * thread walks its rows with a counter, not with divisions per row (three 64-bit divisions per
 * 32-float row cost four times the copy). */
void td_copy_to_contiguous(const td_tensor *src, void *dst) {
    int64_t n = td_numel(src);
    if (n == 0) return;
    size_t es = td_dtype_size(src->dtype);
    if (td_is_contiguous(src)) {
        memcpy(dst, (char *)src->storage->data + src->offset * es, (size_t)n * es);
        return;
    }
    int64_t shape[TD_MAX_DIMS], stride[TD_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < src->ndim; d++) {
        if (src->shape[d] == 1) continue;
        if (nd && stride[nd - 1] == src->stride[d] * src->shape[d]) { /* merge with the dim before */
            shape[nd - 1] *= src->shape[d];
            stride[nd - 1] = src->stride[d];
            continue;
        }
        shape[nd] = src->shape[d];
        stride[nd] = src->stride[d];
        nd++;
    }
    const char *base = (const char *)src->storage->data + src->offset * es;
    if (nd == 0) { /* one element, every dim of size 1 */
        memcpy(dst, base, es);
        return;
    }
    int64_t inner = shape[nd - 1], is = stride[nd - 1], rows = n / inner;
    #pragma omp parallel if (n > 65536)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt, idx[TD_MAX_DIMS] = {0}, o = 0, rem = r0;
        for (int d = nd - 2; d >= 0; d--) {
            idx[d] = rem % shape[d];
            rem /= shape[d];
            o += idx[d] * stride[d];
        }
        for (int64_t r = r0; r < r1; r++) {
            char *q = (char *)dst + (size_t)(r * inner) * es;
            if (is == 1) memcpy(q, base + o * es, (size_t)inner * es);
            else if (es == 4)
                for (int64_t i = 0; i < inner; i++) ((float *)q)[i] = ((const float *)base)[o + i * is];
            else
                for (int64_t i = 0; i < inner; i++) ((int64_t *)q)[i] = ((const int64_t *)base)[o + i * is];
            for (int d = nd - 2; d >= 0; d--) { /* the next row */
                o += stride[d];
                if (++idx[d] < shape[d]) break;
                o -= stride[d] * shape[d];
                idx[d] = 0;
            }
        }
    }
}

/* ---- views ------------------------------------------------------------------------------- */
/* A new tensor struct aliasing t's storage with the given geometry (no graph). */
td_tensor *td_alias(const td_tensor *t, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset) {
    td_tensor *v = calloc(1, sizeof *v);
    if (!v) return td_fail("out of memory");
    v->refcount = 1;
    v->dtype = t->dtype;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = shape[i];
        v->stride[i] = stride[i];
    }
    v->offset = offset;
    v->storage = t->storage;
    t->storage->refcount++;
    return v;
}

td_tensor *td_detach(td_tensor *t) { return td_alias(t, t->ndim, t->shape, t->stride, t->offset); }

td_tensor *td_to_dtype(td_tensor *t, td_dtype dt) {
    if (t->dtype == dt) {
        td_retain(t);
        return t;
    }
    td_tensor *c = td_contiguous(t);
    if (!c) return NULL;
    td_tensor *o = td_empty(dt, t->ndim, t->shape);
    if (o) {
        int64_t n = td_numel(t);
        if (dt == TD_F32)
            for (int64_t i = 0; i < n; i++) td_f32(o)[i] = (float)td_i64(c)[i];
        else
            for (int64_t i = 0; i < n; i++) {
                float v = td_f32(c)[i];
                td_i64(o)[i] = td_i64_of_double(v);
            }
    }
    td_release(c);
    return o;
}

/* ---- in-place ---------------------------------------------------------------------------- */
void td_bump_version(td_tensor *t, const char *op) {
    t->storage->version++;
    t->storage->last_inplace = op;
}

/* The gate of every in-place op: refuses a tensor in the graph while grad mode is on, and
 * otherwise counts the write (under no_grad too: a saved tensor changed there is what the
 * version counter exists to catch). */
int td_check_inplace(const td_tensor *t, const char *op) {
    if (td_grad_enabled() && (t->requires_grad || t->node))
        return td_fail_int("%s: in-place change of a tensor that requires grad (use tdrl.no_grad or detach)", op);
    td_bump_version((td_tensor *)t, op);
    return 0;
}

/* v for a float tensor, iv for an int64 one (so that integers past 2^53 stay exact) */
static int fill_impl(td_tensor *t, double v, int64_t iv) {
    if (td_check_inplace(t, "fill_")) return -1;
    int64_t n = td_numel(t);
    if (td_is_contiguous(t)) {
        if (t->dtype == TD_F32) {
            float *p = td_f32(t), f = (float)v;
            for (int64_t i = 0; i < n; i++) p[i] = f;
        } else {
            int64_t *p = td_i64(t);
            for (int64_t i = 0; i < n; i++) p[i] = iv;
        }
        return 0;
    }
    int64_t idx[TD_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == TD_F32) td_set(t, idx, v);
        else td_set_i64(t, idx, iv);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return 0;
}

int td_fill_(td_tensor *t, double v) { return fill_impl(t, v, td_i64_of_double(v)); }
int td_fill_i64_(td_tensor *t, int64_t v) { return fill_impl(t, (double)v, v); }
