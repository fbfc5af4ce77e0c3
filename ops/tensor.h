/* libtdrl: float32 / int64 tensors with reverse-mode autograd. C11, no Lua inside.
 *
 * Conventions (read these before adding an op):
 * - Every function that can fail returns NULL (or -1) and leaves a message in td_last_error();
 *   all checks run before any allocation so a failed call leaks nothing.
 * - Functions returning td_tensor* return a NEW reference (refcount owned by the caller);
 *   arguments are borrowed. Release with td_release().
 * - Dimensions are 0-based in C (the Lua binding translates from 1-based). Negative dims count
 *   from the end. Index tensors (labels, gather/scatter indices, argmax results) hold 0-based
 *   int64 values in C and in Lua alike: they are data.
 * - An op that is differentiable records a td_node when grad mode is on and an input requires
 *   grad; its backward sits next to its forward in the same file.
 */
#ifndef TDRL_TENSOR_H
#define TDRL_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TD_MAX_DIMS 8
#define TD_NODE_MAX_IN 4
#define TD_NODE_MAX_SAVED 4

typedef enum { TD_F32 = 0, TD_I64 = 1 } td_dtype;

typedef struct td_storage {
    void *data;
    size_t nbytes;
    int refcount;
    bool external; /* data not owned (never freed by us) */
    /* Bumped by every in-place write (PyTorch's version counter): autograd notes it when it
     * saves a tensor and refuses a backward that would read a changed value. */
    uint64_t version;
    const char *last_inplace; /* the op of the latest in-place write, for the message */
} td_storage;

typedef struct td_node td_node;

typedef struct td_tensor {
    int refcount;
    td_dtype dtype;
    int ndim;
    int64_t shape[TD_MAX_DIMS];
    int64_t stride[TD_MAX_DIMS]; /* in elements */
    int64_t offset;              /* in elements */
    td_storage *storage;
    /* autograd */
    bool requires_grad; /* leaf: user asked for .grad; non-leaf: some input requires grad */
    struct td_tensor *grad; /* accumulated gradient of a leaf (NULL until backward) */
    td_node *node;          /* the op that produced this tensor (NULL for leaves) */
    int grad_pending;       /* a leaf's contributions still due in a hooked backward; 0 otherwise */
} td_tensor;

/* ---- errors ---------------------------------------------------------------------------- */
const char *td_last_error(void);
/* Formats into the thread-local error buffer; always returns NULL for `return td_fail(...)`. */
void *td_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int td_fail_int(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "3x4" style shape text into buf (returns buf). */
char *td_shape_str(const td_tensor *t, char *buf, size_t n);
char *td_dims_str(int ndim, const int64_t *shape, char *buf, size_t n);
#define TD_SHAPE_BUF 96

/* ---- interrupts and threads ------------------------------------------------------------ */
/* Set from a signal handler; long kernels poll it and fail with "interrupted". */
extern volatile int td_interrupt_flag;
/* A long job (a training loop) may ask that the first Ctrl-C only be recorded (pending) so it
 * can stop at a step boundary and save a consistent checkpoint; a second Ctrl-C interrupts. */
extern volatile int td_interrupt_defer, td_interrupt_pending;
static inline bool td_interrupted(void) { return td_interrupt_flag != 0; }
/* With TDRL_TRACE_LONG_OPS set, writes "tdrl: <op> started" to stderr when a long kernel that
 * polls td_interrupt_flag starts: a test waits for that line before it sends Ctrl-C, rather
 * than guessing with a delay when the kernel is running. */
void td_note_long_op(const char *op);
/* OpenMP threads; OpenBLAS stays single-threaded (td_gemm splits products). -1 (error set, the
 * setting unchanged) outside 1..td_max_threads(). */
int td_set_num_threads(int n);
int td_max_threads(void);
int td_get_num_threads(void);
void td_threads_init(void); /* reads TDRL_NUM_THREADS (default: all cores) */

/* ---- memory accounting ------------------------------------------------------------------- */
size_t td_bytes_live(void);     /* bytes held by storages now */
size_t td_bytes_allocated(void); /* total ever allocated (for growth checks in tests) */
uint64_t td_alloc_count(void);  /* malloc calls made for storages so far (cache misses) */
uint64_t td_alloc_requests(void); /* storages created so far (cache hits included) */
size_t td_bytes_cached(void);   /* freed blocks kept for reuse */
size_t td_bytes_peak(void);     /* the most bytes live at once since start or td_reset_peak() */
void td_reset_peak(void);
void td_empty_cache(void);      /* returns the cached blocks to the system */
void td_set_cache_limit(size_t bytes); /* TDRL_CACHE_MB sets it at start-up */

/* ---- lifetime ---------------------------------------------------------------------------- */
void td_retain(td_tensor *t);
void td_release(td_tensor *t); /* NULL-safe */

/* ---- creation ---------------------------------------------------------------------------- */
td_tensor *td_empty(td_dtype dt, int ndim, const int64_t *shape);
td_tensor *td_zeros(td_dtype dt, int ndim, const int64_t *shape);
td_tensor *td_full(td_dtype dt, int ndim, const int64_t *shape, double value);
td_tensor *td_scalar(float v); /* 0-d float tensor */
td_tensor *td_arange(double start, double end, double step, td_dtype dt);
td_tensor *td_linspace(double start, double end, int64_t n);
td_tensor *td_eye(int64_t n, int64_t m);
/* Copies `data` (n elements of dt) into a new tensor of the given shape. */
td_tensor *td_from_data(td_dtype dt, int ndim, const int64_t *shape, const void *data);
int64_t td_numel(const td_tensor *t);
bool td_is_contiguous(const td_tensor *t);
size_t td_dtype_size(td_dtype dt);
const char *td_dtype_name(td_dtype dt); /* "float32", "int64" */
static inline float *td_f32(const td_tensor *t) { return (float *)t->storage->data + t->offset; }
static inline int64_t *td_i64(const td_tensor *t) { return (int64_t *)t->storage->data + t->offset; }
int td_norm_dim(const td_tensor *t, int dim, const char *op); /* -1 on error */

/* element access by full index (0-based); returns value as double */
double td_get(const td_tensor *t, const int64_t *idx);
void td_set(td_tensor *t, const int64_t *idx, double v);
/* int64 elements as integers (exact past 2^53); a float32 element converts */
int64_t td_get_i64(const td_tensor *t, const int64_t *idx);
void td_set_i64(td_tensor *t, const int64_t *idx, int64_t v);
/* double -> int64 truncating, saturating at the ends, NaN -> 0 (a bare cast is undefined there) */
int64_t td_i64_of_double(double v);
/* element by flat row-major position of the logical shape */
double td_get_flat(const td_tensor *t, int64_t i);

/* ---- views (share storage; differentiable) ------------------------------------------------ */
td_tensor *td_view(td_tensor *t, int ndim, const int64_t *shape); /* -1 allowed once; needs compatible strides */
td_tensor *td_reshape(td_tensor *t, int ndim, const int64_t *shape); /* view if possible else copy */
td_tensor *td_transpose(td_tensor *t, int d0, int d1);
td_tensor *td_permute(td_tensor *t, const int *perm);
td_tensor *td_narrow(td_tensor *t, int dim, int64_t start, int64_t len);
td_tensor *td_slice(td_tensor *t, int dim, int64_t start, int64_t stop, int64_t step);
td_tensor *td_select(td_tensor *t, int dim, int64_t index);
td_tensor *td_squeeze(td_tensor *t, int dim); /* dim = TD_ALL_DIMS squeezes all */
td_tensor *td_unsqueeze(td_tensor *t, int dim);
td_tensor *td_expand(td_tensor *t, int ndim, const int64_t *shape); /* -1 keeps a size */
td_tensor *td_contiguous(td_tensor *t); /* same tensor (retained) when already contiguous */
td_tensor *td_clone(td_tensor *t);
td_tensor *td_detach(td_tensor *t);     /* shares storage, no graph */
td_tensor *td_to_dtype(td_tensor *t, td_dtype dt);
#define TD_ALL_DIMS 1000

/* ---- joining, splitting, indexing (shape.c) ------------------------------------------------ */
td_tensor *td_cat(td_tensor **ts, int n, int dim);
td_tensor *td_stack(td_tensor **ts, int n, int dim);
td_tensor *td_index_select(td_tensor *t, int dim, td_tensor *index);
td_tensor *td_gather(td_tensor *t, int dim, td_tensor *index);
td_tensor *td_scatter_add(td_tensor *t, int dim, td_tensor *index, td_tensor *src);
td_tensor *td_masked_fill(td_tensor *t, td_tensor *mask, double value);
td_tensor *td_where(td_tensor *cond, td_tensor *a, td_tensor *b);

/* ---- in-place (never recorded; refused on tensors that need grad while grad mode is on) ---- */
/* Marks an in-place write of t's storage by op (td_check_inplace does it for the ops that check). */
void td_bump_version(td_tensor *t, const char *op);
int td_fill_(td_tensor *t, double v);
int td_fill_i64_(td_tensor *t, int64_t v); /* exact for int64 tensors */
int td_copy_(td_tensor *dst, td_tensor *src); /* broadcasts src to dst */
int td_add_(td_tensor *dst, td_tensor *src, double alpha); /* dst += alpha * src (broadcast) */
int td_mul_scalar_(td_tensor *dst, double s);

/* ---- elementwise (elementwise.c) ---------------------------------------------------------- */
typedef enum {
    TD_ADD, TD_SUB, TD_MUL, TD_DIV, TD_POW, TD_MAXIMUM, TD_MINIMUM,
    TD_EQ, TD_NE, TD_LT, TD_LE, TD_GT, TD_GE,
    TD_BINARY_COUNT
} td_binary_op;
typedef enum {
    TD_NEG, TD_EXP, TD_LOG, TD_SQRT, TD_RSQRT, TD_ABS, TD_SIN, TD_COS, TD_TANH, TD_SIGMOID,
    TD_RELU, TD_SILU, TD_ELU, TD_GELU, TD_SQUARE, TD_SIGN, TD_RECIPROCAL, TD_LOG1P, TD_EXPM1,
    TD_FLOOR, TD_CEIL, TD_ROUND,
    TD_UNARY_COUNT
} td_unary_op;
extern const char *const td_binary_names[TD_BINARY_COUNT];
extern const char *const td_unary_names[TD_UNARY_COUNT];
extern const char *const td_binary_docs[TD_BINARY_COUNT]; /* one line each, for help() */
extern const char *const td_unary_docs[TD_UNARY_COUNT];

td_tensor *td_binary(td_binary_op op, td_tensor *a, td_tensor *b);
td_tensor *td_binary_scalar(td_binary_op op, td_tensor *a, double s, bool scalar_first);
/* (a + b) * s, fused when a and b are dense float tensors of one shape (else a + b then * s) */
td_tensor *td_add_scaled(td_tensor *a, td_tensor *b, double s);
td_tensor *td_unary(td_unary_op op, td_tensor *a);
td_tensor *td_elu(td_tensor *a, double alpha);
td_tensor *td_clamp(td_tensor *a, double lo, double hi); /* +-INFINITY for an open side */
/* Broadcast result shape of two shapes; returns ndim or -1 (error set, naming op). */
int td_broadcast_shape(const char *op, const td_tensor *a, const td_tensor *b, int64_t *out);
/* Sum g down to `shape` (undoing broadcasting); new reference. */
td_tensor *td_sum_to(td_tensor *g, int ndim, const int64_t *shape);

/* ---- reductions (reduce.c): dims is a bitmask of 0-based dims; 0 mask = all dims ---------- */
td_tensor *td_sum(td_tensor *t, uint32_t dims, bool keepdim);
td_tensor *td_mean(td_tensor *t, uint32_t dims, bool keepdim);
td_tensor *td_var(td_tensor *t, uint32_t dims, bool keepdim, int correction);
td_tensor *td_std(td_tensor *t, uint32_t dims, bool keepdim, int correction);
td_tensor *td_logsumexp(td_tensor *t, uint32_t dims, bool keepdim);
td_tensor *td_norm(td_tensor *t, double p, uint32_t dims, bool keepdim);
/* max/min along one dim: values (differentiable) and int64 indices; dim < 0 + all=true: global */
int td_max_dim(td_tensor *t, int dim, bool keepdim, bool is_min, td_tensor **values, td_tensor **indices);
td_tensor *td_max_all(td_tensor *t, bool is_min);
td_tensor *td_argmax(td_tensor *t, int dim, bool keepdim, bool is_min); /* dim = TD_ALL_DIMS: flat */
td_tensor *td_softmax(td_tensor *t, int dim);
td_tensor *td_log_softmax(td_tensor *t, int dim);

/* ---- matmul (matmul.c) ----------------------------------------------------------------- */
td_tensor *td_matmul(td_tensor *a, td_tensor *b);
/* C (M,N) = alpha * op(A) op(B) + beta * C on contiguous-or-transposed 2-D float views. */
int td_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
            int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* ---- random (random.c) ------------------------------------------------------------------- */
typedef struct td_generator {
    uint64_t s[4];   /* xoshiro256** state */
    uint64_t seed;
    double spare;    /* cached second Box-Muller normal */
    int has_spare;
} td_generator;
td_generator *td_default_generator(void);
void td_generator_seed(td_generator *g, uint64_t seed);
/* Refuses (-1, g unchanged) a state xoshiro cannot leave (all zeros) or a malformed spare. */
int td_generator_set_state(td_generator *g, const uint64_t s[4], uint64_t seed, int has_spare, double spare);
uint64_t td_rand_u64(td_generator *g);
double td_rand_uniform(td_generator *g); /* [0, 1) */
double td_rand_normal(td_generator *g);
int td_uniform_(td_tensor *t, td_generator *g, double lo, double hi);
int td_normal_(td_tensor *t, td_generator *g, double mean, double std);
int td_randint_(td_tensor *t, td_generator *g, int64_t lo, int64_t hi); /* [lo, hi) */
td_tensor *td_randperm(td_generator *g, int64_t n);

/* ---- autograd (autograd.c) --------------------------------------------------------------- */
typedef void (*td_backward_fn)(td_node *n, td_tensor *gout);
struct td_node {
    int refcount;
    const char *name;          /* op name, for messages */
    td_backward_fn backward;
    int n_in;
    td_tensor *in[TD_NODE_MAX_IN];       /* inputs; slot NULL when it needs no grad */
    td_tensor *saved[TD_NODE_MAX_SAVED]; /* detached tensors the backward needs */
    uint64_t saved_version[TD_NODE_MAX_SAVED]; /* their storages' versions when saved */
    int64_t iarg[TD_MAX_DIMS * 2];
    double farg[4];
    int out_ndim;
    int64_t out_shape[TD_MAX_DIMS];
    td_tensor *gout;           /* gradient accumulated for this node's output during backward */
    int topo_mark;
    bool freed;
};
bool td_grad_enabled(void);
bool td_set_grad_enabled(bool on); /* returns the previous mode */
bool td_needs_grad(const td_tensor *t);
/* Creates the node for `out` if any of ins requires grad (and grad mode is on); returns it
 * (borrowed, owned by out) or NULL when none is needed. Inputs that don't need grad are
 * stored as NULL slots. */
td_node *td_record(td_tensor *out, const char *name, td_backward_fn bw, int n_in, td_tensor **ins);
void td_node_save(td_node *n, int slot, td_tensor *t); /* stores a detached alias */
/* Adds g (new ref consumed? no: borrowed) to the gradient of input slot k. */
void td_node_accum(td_node *n, int k, td_tensor *g);
/* The float32 buffer that already holds input k's gradient, contiguous and of its shape, for a
 * kernel to add into directly (a GEMM with beta = 1, where td_node_accum would take a fresh
 * product and add it in a second pass); NULL when there is none yet. Borrowed. */
td_tensor *td_node_grad_holder(td_node *n, int k);
/* Runs backprop from root. grad may be NULL for a 1-element root. Returns 0 or -1. */
int td_backward(td_tensor *root, td_tensor *grad, bool retain_graph);
/* Told during td_backward when each leaf's gradient is final, so a data-parallel reducer can
 * start sending it while the rest of the backward runs (PyTorch DDP's autograd hooks).
 * start (may be NULL): the graph is counted and no node has run yet; every leaf of the graph
 * has grad_pending > 0, so a leaf with 0 is not in it and gets no gradient from this backward.
 * ready: called once per leaf of the graph, as soon as every node that takes it has run; its
 * .grad is then final (NULL when no node gave it one). Both run on the thread of td_backward.
 * Set per thread; NULL (the default) costs nothing: no count is made. */
typedef struct td_grad_hook {
    void (*start)(void *ud);
    void (*ready)(td_tensor *leaf, void *ud);
    void *ud;
} td_grad_hook;
const td_grad_hook *td_set_grad_hook(const td_grad_hook *h); /* returns the previous hook */
int td_set_requires_grad(td_tensor *t, bool on); /* only on leaves */
void td_zero_grad(td_tensor *t);

/* ---- profile (profile.c): while enabled, td_backward adds each node's wall time under its
 * name; entries i < td_profile_count() read back with their calls and seconds ---------------- */
bool td_profile_enable(bool on); /* returns the previous setting */
bool td_profile_enabled(void);
void td_profile_add(const char *name, double seconds);
int td_profile_count(void);
const char *td_profile_entry(int i, uint64_t *calls, double *seconds);
void td_profile_reset(void);
double td_clock(void); /* seconds, monotonic */

/* ---- optimiser updates (optim.c): in place, fused, one call per parameter; _ref: the plain
 * op-by-op versions the tests compare them with ---------------------------------------------- */
int td_sgd_update_(td_tensor *p, td_tensor *g, td_tensor *buf, bool first, double lr, double momentum, double dampening,
                   double weight_decay, bool nesterov, bool maximize);
int td_adam_update_(td_tensor *p, td_tensor *g, td_tensor *m, td_tensor *v, td_tensor *vmax, int64_t step, double lr,
                    double beta1, double beta2, double eps, double weight_decay, bool decoupled, bool maximize);
int td_sgd_update_ref(td_tensor *p, td_tensor *g, td_tensor *buf, bool first, double lr, double momentum,
                      double dampening, double weight_decay, bool nesterov, bool maximize);
int td_adam_update_ref(td_tensor *p, td_tensor *g, td_tensor *m, td_tensor *v, td_tensor *vmax, int64_t step,
                       double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                       bool maximize);
int td_sum_squares(td_tensor *t, double *out);
int td_ema_update_(td_tensor *shadow, td_tensor *p, double decay);

/* ---- printing (print.c) ------------------------------------------------------------------ */
/* Returns a malloc'd string (caller frees) or NULL. */
char *td_format(const td_tensor *t);
/* The width (columns) that printed rows are wrapped to: 80 unless the host sets the terminal's. */
void td_set_print_width(int columns);
int td_get_print_width(void);

/* ---- file I/O (io/safetensors.c, io/npy.c) ------------------------------------------------ */
typedef struct td_named {
    char *name;
    td_tensor *t;
} td_named;
typedef struct td_kv {
    char *key;
    char *value;
} td_kv;
/* Removes PATH.tmp.<pid> files left by saves whose process is gone; returns how many
 * (stale_tmp.c). Every atomic save calls it first. */
int td_remove_stale_tmp(const char *path);
/* Writes atomically (temporary file + rename). */
int td_safetensors_save(const char *path, const td_named *ts, int n, const td_kv *meta, int n_meta);
/* On success fills malloc'd arrays (free with td_named_free / td_kv_free). */
int td_safetensors_load(const char *path, td_named **ts, int *n, td_kv **meta, int *n_meta);
int td_safetensors_parse(const void *buf, size_t len, const char *what, td_named **ts, int *n,
                         td_kv **meta, int *n_meta);
void td_named_free(td_named *ts, int n);
void td_kv_free(td_kv *kv, int n);
int td_npy_save(const char *path, td_tensor *t);
td_tensor *td_npy_load(const char *path);
td_tensor *td_npy_parse(const void *buf, size_t len, const char *what);

#endif
