/* The process, not the tensors: threads, memory counters, the clock, isatty, print width,
 * interrupts, the backward profiler and the raw sgemm and copy the benchmark measures its
 * ceilings by. */
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include "bind.h"

static int l_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1 || n > td_max_threads())
        return luaL_error(L, "set_num_threads: %I threads (1 to %d on this machine)", n, td_max_threads());
    if (td_set_num_threads((int)n)) return tdl_error(L);
    return 0;
}
static int l_get_num_threads(lua_State *L) {
    lua_pushinteger(L, td_get_num_threads());
    return 1;
}
static int l_empty_cache(lua_State *L) {
    td_empty_cache();
    return 0;
}

/* T.memory(): live_bytes (held by tensors), cached_bytes (freed, kept for reuse),
 * allocations (malloc calls), requests (storages created), allocated_bytes (in all) */
static int l_memory(lua_State *L) {
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)td_bytes_live());
    lua_setfield(L, -2, "live_bytes");
    lua_pushinteger(L, (lua_Integer)td_bytes_allocated());
    lua_setfield(L, -2, "allocated_bytes");
    lua_pushinteger(L, (lua_Integer)td_alloc_count());
    lua_setfield(L, -2, "allocations");
    lua_pushinteger(L, (lua_Integer)td_alloc_requests());
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)td_bytes_cached());
    lua_setfield(L, -2, "cached_bytes");
    lua_pushinteger(L, (lua_Integer)td_bytes_peak());
    lua_setfield(L, -2, "peak_bytes");
    return 1;
}

static int l_reset_peak_memory(lua_State *L) {
    (void)L;
    td_reset_peak();
    return 0;
}

/* T._sgemm(a, b, c): c = a @ b straight through cblas_sgemm on contiguous 2-D tensors, no
 * checks beyond shapes, with OpenBLAS's own threads (as many as tdrl's): the benchmark's
 * ceiling, measured from the same binary. tdrl's matmul keeps OpenBLAS single-threaded and
 * splits the product across its OpenMP threads instead (ops/matmul.c). */
static int l_raw_sgemm(lua_State *L) {
    td_tensor *a = tdl_check_tensor(L, 1), *b = tdl_check_tensor(L, 2), *c = tdl_check_tensor(L, 3);
    if (a->ndim != 2 || b->ndim != 2 || c->ndim != 2 || a->shape[1] != b->shape[0] || c->shape[0] != a->shape[0] ||
        c->shape[1] != b->shape[1] || !td_is_contiguous(a) || !td_is_contiguous(b) || !td_is_contiguous(c) ||
        a->dtype != TD_F32 || b->dtype != TD_F32 || c->dtype != TD_F32)
        return luaL_error(L, "_sgemm: needs contiguous float32 matrices a (M,K), b (K,N), c (M,N)");
    int M = (int)a->shape[0], K = (int)a->shape[1], N = (int)b->shape[1];
    openblas_set_num_threads(td_get_num_threads());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, td_f32(a), K, td_f32(b), N, 0.0f, td_f32(c), N);
    openblas_set_num_threads(1);
    return 0;
}

/* T.set_printoptions{linewidth = n} -> the previous options: rows of printed tensors wrap at n
 * columns (PyTorch's name; the REPL sets its terminal's width) */
static int l_set_printoptions(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int old = td_get_print_width();
    lua_getfield(L, 1, "linewidth");
    if (!lua_isnil(L, -1)) {
        lua_Integer w = luaL_checkinteger(L, -1);
        if (w < 20 || w > 100000) return luaL_error(L, "set_printoptions: linewidth must be 20 or more, got %d", (int)w);
        td_set_print_width((int)w);
    }
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, old);
    lua_setfield(L, -2, "linewidth");
    return 1;
}

/* T.clock(): monotonic wall-clock seconds (os.clock is CPU time, wrong with threads) */
static int l_clock(lua_State *L) {
    lua_pushnumber(L, td_clock());
    return 1;
}

/* T.profile_backward(on) -> previous: time each backward function (tdrl.profile reads them);
 * T.profile_backward_report() -> {{name =, calls =, seconds =}, ...}; T.profile_backward_reset() */
static int l_profile_backward(lua_State *L) {
    lua_pushboolean(L, td_profile_enable(lua_toboolean(L, 1)));
    return 1;
}
static int l_profile_backward_report(lua_State *L) {
    int n = td_profile_count();
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        uint64_t calls;
        double seconds;
        const char *name = td_profile_entry(i, &calls, &seconds);
        lua_createtable(L, 0, 3);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_pushinteger(L, (lua_Integer)calls);
        lua_setfield(L, -2, "calls");
        lua_pushnumber(L, seconds);
        lua_setfield(L, -2, "seconds");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}
static int l_profile_backward_reset(lua_State *L) {
    (void)L;
    td_profile_reset();
    return 0;
}

/* T.defer_interrupts(on) -> previous: while on, a first Ctrl-C only sets a pending flag that
 * the job polls with T.interrupt_pending() at a safe point (a second one interrupts as usual) */
static int l_defer_interrupts(lua_State *L) {
    lua_pushboolean(L, td_interrupt_defer);
    td_interrupt_defer = lua_toboolean(L, 1);
    if (!td_interrupt_defer) td_interrupt_pending = 0;
    return 1;
}
static int l_interrupt_pending(lua_State *L) {
    lua_pushboolean(L, td_interrupt_pending);
    return 1;
}

/* T.isatty(fd = 1): whether stdout (or fd) is a terminal, for progress bars */
static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* One thread's share of T._copy: a plain loop the compiler vectorises, with ordinary stores like
 * every kernel's (not turned into a memcpy call: glibc's streams past the caches at this size,
 * which measures the memory alone, where the kernels' outputs stay in the last-level cache). */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void copy_floats(float *restrict d, const float *restrict s, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
}

/* T._copy(dst, src): dst = src over all of tdrl's threads, no checks beyond sizes: the ceiling of
 * the benchmark's memory-bound rows (the machine's copy bandwidth), measured from the same binary.
 * dst, src: contiguous float32 tensors of equal size. */
static int l_raw_copy(lua_State *L) {
    td_tensor *d = tdl_check_tensor(L, 1), *s = tdl_check_tensor(L, 2);
    if (!td_is_contiguous(d) || !td_is_contiguous(s) || d->dtype != TD_F32 || s->dtype != TD_F32 ||
        td_numel(d) != td_numel(s))
        return luaL_error(L, "_copy: needs contiguous float32 tensors of equal size");
    float *pd = td_f32(d);
    const float *ps = td_f32(s);
    int64_t n = td_numel(d);
    #pragma omp parallel num_threads(td_get_num_threads())
    {
        int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t chunk = (n / nt + 15) & ~(int64_t)15, lo = id * chunk, hi = lo + chunk > n ? n : lo + chunk;
        if (lo < hi) copy_floats(pd + lo, ps + lo, hi - lo);
    }
    return 0;
}

static const luaL_Reg sys_functions[] = {
    {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads}, {"memory", l_memory},
    {"reset_peak_memory", l_reset_peak_memory}, {"empty_cache", l_empty_cache}, {"clock", l_clock},
    {"isatty", l_isatty}, {"set_printoptions", l_set_printoptions}, {"defer_interrupts", l_defer_interrupts},
    {"interrupt_pending", l_interrupt_pending}, {"profile_backward", l_profile_backward},
    {"profile_backward_report", l_profile_backward_report}, {"profile_backward_reset", l_profile_backward_reset},
    {"_sgemm", l_raw_sgemm}, {"_copy", l_raw_copy}, {NULL, NULL}};

void tdl_register_sys(lua_State *L) { luaL_setfuncs(L, sys_functions, 0); }
