/* MPI (Open MPI) for data-parallel training and parallel sweeps: T._dist, wrapped by
 * lua/tdrl/dist.lua. Built with MPI when the Makefile finds it (TDRL_MPI), else every function
 * acts as one process of one (rank 0 of 1), so scripts run unchanged.
 *
 * MPI starts only under a launcher (mpirun / srun set OMPI_COMM_WORLD_SIZE, PMIX_RANK or
 * PMI_SIZE): a plain `./tdrl` never pays MPI's start-up. Failure never hangs a job: errors
 * return (MPI_ERRORS_RETURN) and become an MPI_Abort naming the rank; every collective is
 * non-blocking and waited on with a bound (TDRL_DIST_TIMEOUT seconds, default 1800), so a rank
 * that stopped calling collectives (a mismatched script) ends the job instead of blocking it;
 * a script that ends in an error on any rank aborts the job (host_dist_exit). */
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bind.h"
#include "host.h"

#ifdef TDRL_MPI
#include <mpi.h>
#endif

static int dist_rank = 0, dist_size = 1, local_rank = 0, local_size = 1;
#ifdef TDRL_MPI
static int dist_active = 0; /* MPI initialised by us and not finalised */
static double wait_limit = 1800;
#endif

#ifndef TDRL_MPI
static void identity_backward(td_node *n, td_tensor *g) { td_node_accum(n, 0, g); }
#endif

#ifdef TDRL_MPI
static MPI_Comm world = MPI_COMM_NULL;
/* the gradient buckets' all-reduces, started during a backward that may itself run collectives
 * on `world` (synchronised BatchNorm): on a communicator of their own the two streams never
 * have to agree on an interleaving */
static MPI_Comm grads_comm = MPI_COMM_NULL;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static _Noreturn void abort_job(const char *what) {
    fprintf(stderr, "tdrl: rank %d of %d: %s; aborting every rank\n", dist_rank, dist_size, what);
    fflush(stderr);
    MPI_Abort(world, 1);
    exit(1); /* MPI_Abort does not return; this keeps the compiler sure of it */
}

static void check_mpi(int rc, const char *op) {
    if (rc == MPI_SUCCESS) return;
    char err[MPI_MAX_ERROR_STRING], msg[MPI_MAX_ERROR_STRING + 64];
    int n = 0;
    MPI_Error_string(rc, err, &n);
    snprintf(msg, sizeof msg, "%s failed: %s", op, err);
    abort_job(msg);
}

/* Waits for a non-blocking operation, at most limit seconds (0: no limit). MPI makes progress
 * only inside its calls, so it is tested without pause (sleeping between tests cut a 10 MB
 * all-reduce to a seventh of its speed); after the first spins each test yields the core, so
 * that a rank waiting for a slower one on the same machine leaves it the CPU. */
static void wait_for(MPI_Request *req, const char *op, double limit) {
    double start = now_s();
    for (long spins = 0;; spins++) {
        int done = 0;
        check_mpi(MPI_Test(req, &done, MPI_STATUS_IGNORE), op);
        if (done) return;
        if (spins > 1000) sched_yield();
        if (limit > 0 && spins % 1024 == 0 && now_s() - start > limit) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s waited %.0f s for the other ranks (TDRL_DIST_TIMEOUT)", op, limit);
            abort_job(msg);
        }
    }
}

static int launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE") || getenv("PMI_RANK");
}

static MPI_Datatype mpi_type(td_dtype dt) {
    return dt == TD_F32 ? MPI_FLOAT : MPI_INT64_T;
}

static td_tensor *check_contiguous(lua_State *L, int idx, const char *fn) {
    td_tensor *t = tdl_check_tensor(L, idx);
    if (!td_is_contiguous(t)) luaL_error(L, "%s: the tensor must be contiguous (call :contiguous() first)", fn);
    return t;
}
#endif

/* init() -> rank, size, local rank, local size; starts MPI when launched by mpirun / srun. */
static int l_init(lua_State *L) {
#ifdef TDRL_MPI
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited && !finalized && launched_by_mpi()) {
        int provided = 0;
        /* only the main thread calls MPI; OpenMP and loader threads never do */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return luaL_error(L, "dist.init: MPI_Init_thread failed");
        MPI_Comm_dup(MPI_COMM_WORLD, &world);
        MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
        MPI_Comm_dup(world, &grads_comm);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(world, &dist_rank);
        MPI_Comm_size(world, &dist_size);
        MPI_Comm node;
        MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, dist_rank, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &local_rank);
        MPI_Comm_size(node, &local_size);
        MPI_Comm_free(&node);
        dist_active = 1;
        const char *lim = getenv("TDRL_DIST_TIMEOUT");
        if (lim && *lim) {
            char *end;
            double v = strtod(lim, &end);
            if (*end || v < 0) fprintf(stderr, "tdrl: TDRL_DIST_TIMEOUT=%s is not a number of seconds; using %.0f\n", lim, wait_limit);
            else wait_limit = v;
        }
        /* ranks on one machine share its cores: unless TDRL_NUM_THREADS says otherwise, each
         * takes cores / ranks-on-this-machine threads */
        if (!getenv("TDRL_NUM_THREADS") && local_size > 1) {
            int n = td_get_num_threads() / local_size; /* the default: every core */
            td_set_num_threads(n < 1 ? 1 : n);
        }
        if (dist_size > 1 && host_set_progname) {
            static char name[64];
            snprintf(name, sizeof name, "%s (rank %d of %d)", TDRL_PROGNAME, dist_rank, dist_size);
            host_set_progname(name);
        }
    }
#else
    /* N copies of a job that each think they are alone would write the same files */
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (n && atoi(n) > 1)
        return luaL_error(L, "tdrl.dist: this tdrl was built without MPI but runs as one of %s processes under mpirun; "
                             "install libopenmpi-dev and rebuild (make clean all)", n);
#endif
    lua_pushinteger(L, dist_rank);
    lua_pushinteger(L, dist_size);
    lua_pushinteger(L, local_rank);
    lua_pushinteger(L, local_size);
    return 4;
}

static int l_available(lua_State *L) {
#ifdef TDRL_MPI
    lua_pushboolean(L, 1);
#else
    lua_pushboolean(L, 0);
#endif
    return 1;
}

/* all_reduce(tensors (a tensor or a list), op, bucket_bytes): in place, op "sum" | "max" |
 * "min". The tensors are packed into flat buckets of at most bucket_bytes and every bucket's
 * reduction is started before the first is waited on, so packing overlaps the transfers. */
static int l_all_reduce(lua_State *L) {
#ifdef TDRL_MPI
    const char *const ops[] = {"sum", "max", "min", NULL};
    int op_i = luaL_checkoption(L, 2, "sum", ops);
    lua_Integer bucket = luaL_optinteger(L, 3, 25 << 20);
    if (bucket < 4) return luaL_error(L, "dist.all_reduce: bucket of %d bytes is too small", (int)bucket);
    if (!dist_active || dist_size == 1) return 0;
    MPI_Op op = op_i == 0 ? MPI_SUM : op_i == 1 ? MPI_MAX : MPI_MIN;
    int n = 0;
    if (lua_istable(L, 1)) n = (int)luaL_len(L, 1);
    else { lua_createtable(L, 1, 0); lua_pushvalue(L, 1); lua_rawseti(L, -2, 1); lua_replace(L, 1); n = 1; }
    /* check every tensor before any transfer: all ranks must agree or none sends */
    td_dtype dt = TD_F32;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        td_tensor *t = check_contiguous(L, -1, "dist.all_reduce");
        if (i == 1) dt = t->dtype;
        else if (t->dtype != dt) return luaL_error(L, "dist.all_reduce: tensor %d is %s, the first %s", i, td_dtype_name(t->dtype), td_dtype_name(dt));
        lua_pop(L, 1);
    }
    size_t esz = td_dtype_size(dt);
    int64_t per = bucket / (int64_t)esz;
    if (per > INT32_MAX) per = INT32_MAX; /* MPI counts are ints */
    /* buckets: [first tensor, offset in it) runs of `per` elements; small tensors share one */
    int64_t total = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        total += td_numel(tdl_check_tensor(L, -1));
        lua_pop(L, 1);
    }
    if (total == 0) return 0;
    int nb = (int)((total + per - 1) / per);
    char *buf = lua_newuserdatauv(L, (size_t)total * esz, 0); /* collected with the stack: no leak on error */
    MPI_Request *reqs = lua_newuserdatauv(L, sizeof(MPI_Request) * (size_t)nb, 0);
    int64_t pos = 0;
    int started = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        td_tensor *t = tdl_check_tensor(L, -1);
        int64_t k = td_numel(t);
        memcpy(buf + pos * (int64_t)esz, (char *)t->storage->data + t->offset * (int64_t)esz, (size_t)k * esz);
        pos += k;
        lua_pop(L, 1);
        while (started < nb && ((int64_t)(started + 1) * per <= pos || pos == total)) {
            int64_t s0 = (int64_t)started * per, cnt = total - s0 < per ? total - s0 : per;
            check_mpi(MPI_Iallreduce(MPI_IN_PLACE, buf + s0 * (int64_t)esz, (int)cnt, mpi_type(dt), op,
                                     world, &reqs[started]), "dist.all_reduce");
            started++;
        }
    }
    for (int b = 0; b < nb; b++) wait_for(&reqs[b], "dist.all_reduce", wait_limit);
    pos = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        td_tensor *t = tdl_check_tensor(L, -1);
        int64_t k = td_numel(t);
        memcpy((char *)t->storage->data + t->offset * (int64_t)esz, buf + pos * (int64_t)esz, (size_t)k * esz);
        pos += k;
        lua_pop(L, 1);
    }
#endif
    return 0;
}

#ifdef TDRL_MPI
/* a float tensor's sum over ranks in place (contiguous) */
static void sum_in_place(td_tensor *t, const char *op) {
    MPI_Request r;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, td_f32(t), (int)td_numel(t), MPI_FLOAT, MPI_SUM, world, &r), op);
    wait_for(&r, op, wait_limit);
}

/* y = sum over ranks of x on every rank, so d(sum of every rank's loss)/dx = sum over ranks
 * of dL/dy: the backward is the same all-reduce. Every rank runs its backward through the
 * same graph, so they meet at these nodes in the same order. */
static void sum_over_ranks_backward(td_node *n, td_tensor *g) {
    td_tensor *gs = td_clone(g);
    if (!gs) return;
    if (dist_active && dist_size > 1) sum_in_place(gs, "dist.sum_over_ranks (backward)");
    td_node_accum(n, 0, gs);
    td_release(gs);
}
#endif

/* ---- gradients summed during the backward ------------------------------------------------
 * A reducer, as PyTorch DDP's: the parameters are laid out once in flat float buckets of at
 * most bucket_bytes, in reverse registration order (the backward makes the last layers'
 * gradients first, so the first bucket fills first); a parameter larger than a bucket has one
 * of its own. During the backward (the autograd's grad hook) each parameter whose gradient is
 * final is copied into its bucket, and a full bucket's all-reduce starts at once, while the
 * earlier layers' gradients are still being made. Buckets start in their order on every rank
 * (a full bucket waits for the ones before it), as MPI needs collectives in one order on all
 * ranks whatever order a graph reports its leaves in. After the backward, every parameter not
 * reported (unused by this graph, or without requires_grad) counts as final with its gradient
 * or zeros, the remaining buckets start, and all are waited on (boundedly) and copied back. */
#ifdef TDRL_MPI
typedef struct {
    float *buf;       /* the bucket's gradients, flat */
    int64_t numel;
    int n_params;     /* parameters in it */
    int pending;      /* of those, not yet final in this backward */
    MPI_Request req;
    bool done;
} grad_bucket;

typedef struct {
    int n_params, n_buckets;
    td_tensor **params; /* retained, in registration order */
    int *bucket_of;     /* parameter -> its bucket */
    int64_t *offset;    /* parameter -> its first element in its bucket */
    bool *final;        /* parameter -> copied into its bucket in this backward */
    int *by_address;    /* parameter indices sorted by tensor address: a reported leaf's index */
    grad_bucket *buckets;
    int started;        /* buckets [0, started) are in flight or done */
    int started_early;  /* of those, started before the last backward returned (the overlap) */
} reducer;

#define REDUCER_MT "tdrl.dist.reducer"

static void reducer_free(reducer *r) {
    for (int i = 0; i < r->n_params && r->params; i++) td_release(r->params[i]);
    for (int b = 0; b < r->n_buckets && r->buckets; b++) free(r->buckets[b].buf);
    free(r->params), free(r->bucket_of), free(r->offset), free(r->final), free(r->by_address), free(r->buckets);
    memset(r, 0, sizeof *r);
}

static int reducer_gc(lua_State *L) {
    reducer_free(luaL_checkudata(L, 1, REDUCER_MT));
    return 0;
}

static const td_tensor **sort_base;
static int by_address_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)sort_base[*(const int *)a], y = (uintptr_t)sort_base[*(const int *)b];
    return x < y ? -1 : x > y;
}

/* the index of parameter t, or -1 (a leaf of the graph that is no parameter: an input) */
static int param_index(const reducer *r, const td_tensor *t) {
    int lo = 0, hi = r->n_params - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, i = r->by_address[mid];
        if (r->params[i] == t) return i;
        if ((uintptr_t)r->params[i] < (uintptr_t)t) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Every started bucket's request tested once: MPI moves a non-blocking collective on only
 * inside its calls, so the backward calls in between its nodes. */
static void reducer_progress(reducer *r) {
    for (int b = 0; b < r->started; b++) {
        if (r->buckets[b].done) continue;
        int done = 0;
        check_mpi(MPI_Test(&r->buckets[b].req, &done, MPI_STATUS_IGNORE), "dist: gradient all-reduce");
        r->buckets[b].done = done;
    }
}

/* starts every full bucket whose predecessors have started */
static void reducer_start_full(reducer *r) {
    while (r->started < r->n_buckets && r->buckets[r->started].pending == 0) {
        grad_bucket *k = &r->buckets[r->started++];
        check_mpi(MPI_Iallreduce(MPI_IN_PLACE, k->buf, (int)k->numel, MPI_FLOAT, MPI_SUM, grads_comm, &k->req),
                  "dist: gradient all-reduce");
    }
}

/* Parameter i's gradient is final: into its bucket (zeros where it has none, as every rank
 * must send the same buffers); errors cannot unwind through the backward, and a bucket left
 * unsent would stall the other ranks, so they end the job. */
static void reducer_final(reducer *r, int i) {
    if (r->final[i]) return;
    r->final[i] = true;
    td_tensor *p = r->params[i];
    if (!p->grad || !td_is_contiguous(p->grad)) {
        td_tensor *g = p->grad ? td_contiguous(p->grad) : td_zeros(TD_F32, p->ndim, p->shape);
        if (!g) abort_job("dist: out of memory for a gradient");
        td_release(p->grad);
        p->grad = g;
    }
    grad_bucket *k = &r->buckets[r->bucket_of[i]];
    memcpy(k->buf + r->offset[i], td_f32(p->grad), sizeof(float) * (size_t)td_numel(p));
    if (--k->pending == 0) reducer_start_full(r);
}

static void hook_start(void *ud) {
    reducer *r = ud;
    for (int i = 0; i < r->n_params; i++)
        if (r->params[i]->grad_pending == 0) reducer_final(r, i); /* not in this graph */
}

static void hook_ready(td_tensor *leaf, void *ud) {
    reducer *r = ud;
    int i = param_index(r, leaf);
    if (i >= 0) reducer_final(r, i);
    reducer_progress(r);
}
#endif

/* gradient_reducer(params, bucket_bytes) -> a reducer of these parameters' gradients (under
 * MPI with more than one rank; its backward(loss) runs loss's backward and leaves every
 * parameter's .grad summed over ranks) */
static int l_gradient_reducer(lua_State *L) {
#ifdef TDRL_MPI
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer bucket = luaL_checkinteger(L, 2);
    if (bucket < 4) return luaL_error(L, "dist.gradient_reducer: bucket of %d bytes is too small", (int)bucket);
    int n = (int)luaL_len(L, 1);
    reducer *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REDUCER_MT);
    r->params = calloc((size_t)n + 1, sizeof *r->params);
    r->bucket_of = calloc((size_t)n + 1, sizeof *r->bucket_of);
    r->offset = calloc((size_t)n + 1, sizeof *r->offset);
    r->final = calloc((size_t)n + 1, sizeof *r->final);
    r->by_address = calloc((size_t)n + 1, sizeof *r->by_address);
    r->buckets = calloc((size_t)n + 1, sizeof *r->buckets);
    if (!r->params || !r->bucket_of || !r->offset || !r->final || !r->by_address || !r->buckets)
        return luaL_error(L, "dist.gradient_reducer: out of memory");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        td_tensor *p = tdl_check_tensor(L, -1);
        lua_pop(L, 1);
        if (p->dtype != TD_F32) return luaL_error(L, "dist.gradient_reducer: parameter %d is not float32", i + 1);
        td_retain(p);
        r->params[r->n_params++] = p;
        r->by_address[i] = i;
    }
    sort_base = (const td_tensor **)r->params;
    qsort(r->by_address, (size_t)n, sizeof *r->by_address, by_address_cmp);
    for (int k = 1; k < n; k++)
        if (r->params[r->by_address[k]] == r->params[r->by_address[k - 1]])
            return luaL_error(L, "dist.gradient_reducer: parameters %d and %d are the same tensor",
                              r->by_address[k - 1] + 1, r->by_address[k] + 1);
    /* buckets in reverse registration order, closed when the next parameter would overflow; the
     * first holds at most 1 MB (PyTorch DDP's first-bucket cap), so that a model whose gradients
     * fit in one bucket still starts sending while its backward goes on */
    int64_t per = bucket / 4, first = per < (1 << 20) / 4 ? per : (1 << 20) / 4;
    for (int i = n - 1; i >= 0; i--) {
        int64_t k = td_numel(r->params[i]), cap = r->n_buckets <= 1 ? first : per;
        grad_bucket *cur = &r->buckets[r->n_buckets > 0 ? r->n_buckets - 1 : 0];
        if (r->n_buckets == 0 || (cur->numel > 0 && cur->numel + k > cap)) cur = &r->buckets[r->n_buckets++];
        r->bucket_of[i] = (int)(cur - r->buckets);
        r->offset[i] = cur->numel;
        cur->numel += k;
        cur->n_params++;
    }
    for (int b = 0; b < r->n_buckets; b++) {
        if (r->buckets[b].numel > INT32_MAX) /* MPI counts are ints */
            return luaL_error(L, "dist.gradient_reducer: a parameter of more than 2^31 values");
        r->buckets[b].buf = malloc(sizeof(float) * (size_t)(r->buckets[b].numel ? r->buckets[b].numel : 1));
        if (!r->buckets[b].buf) return luaL_error(L, "dist.gradient_reducer: out of memory for the buckets");
    }
    return 1;
#else
    return luaL_error(L, "dist.gradient_reducer: this tdrl was built without MPI");
#endif
}

#ifdef TDRL_MPI
/* reducer:backward(loss): loss's backward, every bucket's all-reduce started as it fills, then
 * waited on and copied back into the parameters' .grad (sums over ranks) */
static int l_reducer_backward(lua_State *L) {
    reducer *r = luaL_checkudata(L, 1, REDUCER_MT);
    td_tensor *root = tdl_check_tensor(L, 2);
    if (!dist_active || dist_size == 1) return td_backward(root, NULL, false) ? tdl_error(L) : 0;
    for (int b = 0; b < r->n_buckets; b++) {
        r->buckets[b].pending = r->buckets[b].n_params;
        r->buckets[b].done = false;
    }
    memset(r->final, 0, sizeof *r->final * (size_t)r->n_params);
    r->started = 0;
    td_grad_hook hook = {hook_start, hook_ready, r};
    const td_grad_hook *prev = td_set_grad_hook(&hook);
    int rc = td_backward(root, NULL, false);
    td_set_grad_hook(prev);
    r->started_early = r->started;
    /* td_backward fails only before its first node runs, where nothing has been sent */
    if (rc != 0 && r->started == 0) return tdl_error(L);
    for (int i = 0; i < r->n_params; i++) reducer_final(r, i);
    for (int b = 0; b < r->n_buckets; b++) wait_for(&r->buckets[b].req, "dist: gradient all-reduce", wait_limit);
    for (int i = 0; i < r->n_params; i++)
        memcpy(td_f32(r->params[i]->grad), r->buckets[r->bucket_of[i]].buf + r->offset[i],
               sizeof(float) * (size_t)td_numel(r->params[i]));
    if (rc != 0) return tdl_error(L);
    return 0;
}

/* reducer:buckets() -> the number of buckets, a list of their sizes in values, and how many
 * the last backward started before it returned */
static int l_reducer_buckets(lua_State *L) {
    reducer *r = luaL_checkudata(L, 1, REDUCER_MT);
    lua_pushinteger(L, r->n_buckets);
    lua_createtable(L, r->n_buckets, 0);
    for (int b = 0; b < r->n_buckets; b++) {
        lua_pushinteger(L, r->buckets[b].numel);
        lua_rawseti(L, -2, b + 1);
    }
    lua_pushinteger(L, r->started_early);
    return 3;
}
#endif

/* sum_over_ranks(x) -> a new float tensor: x summed over the ranks, with a gradient (the
 * statistics of synchronised BatchNorm); one process: a copy of x */
static int l_sum_over_ranks(lua_State *L) {
    td_tensor *x = tdl_check_tensor(L, 1);
    if (x->dtype != TD_F32) return luaL_error(L, "dist.sum_over_ranks: expected a float32 tensor, got %s", td_dtype_name(x->dtype));
    td_tensor *y = td_empty(TD_F32, x->ndim, x->shape);
    if (!y) return tdl_error(L);
    bool grad = td_set_grad_enabled(false); /* the copy is no op of the graph; the node below is */
    int rc = td_copy_(y, x);
    td_set_grad_enabled(grad);
    if (rc != 0) { td_release(y); return tdl_error(L); }
#ifdef TDRL_MPI
    if (dist_active && dist_size > 1) sum_in_place(y, "dist.sum_over_ranks");
    td_tensor *ins[1] = {x};
    td_record(y, "sum_over_ranks", sum_over_ranks_backward, 1, ins);
#else
    td_tensor *ins[1] = {x};
    td_record(y, "sum_over_ranks", identity_backward, 1, ins);
#endif
    return tdl_push_tensor(L, y);
}

/* broadcast(tensor, root): root's values into every rank's tensor (same shape everywhere). */
static int l_broadcast(lua_State *L) {
#ifdef TDRL_MPI
    int root = (int)luaL_optinteger(L, 2, 0);
    if (root < 0 || root >= dist_size) return luaL_error(L, "dist.broadcast: root %d is not a rank (0 to %d)", root, dist_size - 1);
    td_tensor *t = check_contiguous(L, 1, "dist.broadcast");
    if (!dist_active || dist_size == 1) return 0;
    /* the shapes first, so that a mismatch is an error on every rank, not a corrupt copy */
    int64_t mine[9] = {t->ndim}, roots[9];
    for (int d = 0; d < t->ndim && d < 8; d++) mine[d + 1] = t->shape[d];
    memcpy(roots, mine, sizeof mine);
    MPI_Request r;
    check_mpi(MPI_Ibcast(roots, 9, MPI_INT64_T, root, world, &r), "dist.broadcast");
    wait_for(&r, "dist.broadcast", wait_limit);
    if (memcmp(roots, mine, sizeof mine) != 0) abort_job("dist.broadcast: the tensor's shape differs from the root's");
    check_mpi(MPI_Ibcast((char *)t->storage->data + t->offset * (int64_t)td_dtype_size(t->dtype), (int)td_numel(t),
                         mpi_type(t->dtype), root, world, &r), "dist.broadcast");
    wait_for(&r, "dist.broadcast", wait_limit);
#else
    (void)tdl_check_tensor(L, 1);
#endif
    return 0;
}

/* all_gather_string(s [, timeout]) -> {s of rank 0, s of rank 1, ...}: results of sweeps
 * travel as JSON text. timeout (seconds, 0 none): a rank that finished its share of a sweep
 * waits here for the slowest one, which may take hours. */
static int l_all_gather_string(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_createtable(L, dist_size, 0);
#ifdef TDRL_MPI
    if (dist_active && dist_size > 1) {
        double limit = luaL_optnumber(L, 2, wait_limit);
        if (len > INT32_MAX) return luaL_error(L, "dist.all_gather_string: %zu bytes is more than 2 GiB", len);
        int *lens = lua_newuserdatauv(L, sizeof(int) * 2 * (size_t)dist_size, 0), *offs = lens + dist_size;
        int me = (int)len;
        MPI_Request r;
        check_mpi(MPI_Iallgather(&me, 1, MPI_INT, lens, 1, MPI_INT, world, &r), "dist.all_gather");
        wait_for(&r, "dist.all_gather", limit);
        int64_t tot = 0;
        for (int i = 0; i < dist_size; i++) { offs[i] = (int)tot; tot += lens[i]; }
        if (tot > INT32_MAX) abort_job("dist.all_gather: more than 2 GiB in all");
        char *all = lua_newuserdatauv(L, (size_t)tot + 1, 0);
        check_mpi(MPI_Iallgatherv(s, me, MPI_CHAR, all, lens, offs, MPI_CHAR, world, &r), "dist.all_gather");
        wait_for(&r, "dist.all_gather", wait_limit);
        for (int i = 0; i < dist_size; i++) {
            lua_pushlstring(L, all + offs[i], (size_t)lens[i]);
            lua_rawseti(L, -4, i + 1);
        }
        lua_pop(L, 2);
        return 1;
    }
#endif
    lua_pushlstring(L, s, len);
    lua_rawseti(L, -2, 1);
    return 1;
}

/* broadcast_string(s, root) -> root's string on every rank */
static int l_broadcast_string(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
#ifdef TDRL_MPI
    int root = (int)luaL_optinteger(L, 2, 0);
    if (root < 0 || root >= dist_size) return luaL_error(L, "dist.broadcast: root %d is not a rank (0 to %d)", root, dist_size - 1);
    if (dist_active && dist_size > 1) {
        if (len > INT32_MAX) return luaL_error(L, "dist.broadcast: %zu bytes is more than 2 GiB", len);
        int n = (int)len;
        MPI_Request r;
        check_mpi(MPI_Ibcast(&n, 1, MPI_INT, root, world, &r), "dist.broadcast");
        wait_for(&r, "dist.broadcast", wait_limit);
        char *b = lua_newuserdatauv(L, (size_t)n + 1, 0);
        if (dist_rank == root) memcpy(b, s, len);
        check_mpi(MPI_Ibcast(b, n, MPI_CHAR, root, world, &r), "dist.broadcast");
        wait_for(&r, "dist.broadcast", wait_limit);
        lua_pushlstring(L, b, (size_t)n);
        return 1;
    }
#endif
    lua_pushlstring(L, s, len);
    return 1;
}

/* barrier([timeout]) */
static int l_barrier(lua_State *L) {
#ifdef TDRL_MPI
    if (dist_active && dist_size > 1) {
        double limit = luaL_optnumber(L, 1, wait_limit);
        MPI_Request r;
        check_mpi(MPI_Ibarrier(world, &r), "dist.barrier");
        wait_for(&r, "dist.barrier", limit);
    }
#endif
    return 0;
}

/* abort(message): ends every rank of the job at once, with the message and this rank */
static int l_abort(lua_State *L) {
    const char *msg = luaL_optstring(L, 1, "aborted");
#ifdef TDRL_MPI
    if (dist_active) abort_job(msg);
#endif
    return luaL_error(L, "%s", msg);
}

void host_dist_exit(int status) {
#ifdef TDRL_MPI
    if (!dist_active) return;
    if ((status == 130 || status == 143) && dist_size > 1) {
        /* Ctrl-C or SIGTERM reaches every rank and the trainer stops them all at one step
         * (rank 0 saving a checkpoint): wait, boundedly, for the others, then end cleanly */
        MPI_Request r;
        check_mpi(MPI_Ibarrier(world, &r), "the final barrier");
        wait_for(&r, "the final barrier after an interrupt", 60);
        dist_active = 0;
        MPI_Finalize();
        return;
    }
    dist_active = 0;
    if (status != 0 && dist_size > 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "exiting with status %d after the error above", status);
        abort_job(msg);
    }
    MPI_Finalize();
#else
    (void)status;
#endif
}

void tdl_register_dist(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"init", l_init}, {"available", l_available}, {"all_reduce", l_all_reduce}, {"broadcast", l_broadcast},
        {"all_gather_string", l_all_gather_string}, {"broadcast_string", l_broadcast_string},
        {"barrier", l_barrier}, {"sum_over_ranks", l_sum_over_ranks}, {"abort", l_abort},
        {"gradient_reducer", l_gradient_reducer}, {NULL, NULL}};
#ifdef TDRL_MPI
    static const luaL_Reg methods[] = {{"backward", l_reducer_backward}, {"buckets", l_reducer_buckets}, {NULL, NULL}};
    if (luaL_newmetatable(L, REDUCER_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, reducer_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
#endif
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "_dist"); /* T._dist: private, tdrl.dist is the interface */
}
