/* Lua binding of the tensor core: the Tensor userdata (shaped like Lua's own io library: a
 * metatable, a method table, one idempotent closer for __gc and __close) and the module table
 * 'tdrl.core'. Lua numbers that name positions (dims, indices, starts) count from 1. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bind.h"
#include "../ops/checked.h"

/* ---- userdata -------------------------------------------------------------------------------- */
typedef struct {
    td_tensor *t;
} tensor_box;

td_tensor *tdl_opt_tensor(lua_State *L, int idx) {
    tensor_box *b = luaL_testudata(L, idx, TDL_TENSOR_MT);
    return b ? b->t : NULL;
}

td_tensor *tdl_check_tensor(lua_State *L, int idx) {
    tensor_box *b = luaL_testudata(L, idx, TDL_TENSOR_MT);
    if (!b) luaL_typeerror(L, idx, "tensor");
    if (!b->t) luaL_argerror(L, idx, "tensor was closed");
    return b->t;
}

/* The core's allocation checks cannot know which op asked ("tensor: shape ... holds more than
 * 2^40 elements"): name the Lua function that was called instead, as "zeros: shape ...". */
int tdl_error(lua_State *L) {
    /* A kernel stopped by Ctrl-C reports "<op>: interrupted". The stop hook that the SIGINT
     * handler set would fire on the call of the error handler and replace that message with a
     * bare "interrupted!" from no op: the kernel has stopped already, so the hook goes. */
    if (td_interrupt_flag) lua_sethook(L, NULL, 0, 0);
    const char *msg = td_last_error();
    lua_Debug ar;
    if (!strncmp(msg, "tensor: ", 8) && lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name)
        return luaL_error(L, "%s: %s", ar.name, msg + 8);
    return luaL_error(L, "%s", msg);
}

/* Memory held by tensors is invisible to Lua's collector, so tensor bytes drive collections of
 * their own: a full collection whenever the bytes held by tensors have grown by an eighth (and
 * at least GC_MIN_GROWTH) over the least they came to since the last one, so that garbage stays
 * within ~1/8 of what is live. Reporting every new storage as allocation debt instead (a step
 * per MB) ran ~200 full cycles in a training step of the score network, each traversing the
 * whole Lua heap while the other threads waited (45 ms of a 0.8 s step); this runs ~16. */
#define GC_MIN_GROWTH ((size_t)16 << 20)
static size_t gc_base; /* tensor bytes after the last collection, or the least since */

int tdl_push_tensor(lua_State *L, td_tensor *t) {
    if (!t) return tdl_error(L);
    tensor_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->t = t;
    luaL_setmetatable(L, TDL_TENSOR_MT);
    size_t live = td_bytes_live(), grow = gc_base / 8;
    if (live < gc_base) gc_base = live;
    else if (live > gc_base + (grow > GC_MIN_GROWTH ? grow : GC_MIN_GROWTH)) {
        lua_gc(L, LUA_GCCOLLECT);
        gc_base = td_bytes_live();
    }
    return 1;
}

static int tensor_close(lua_State *L) {
    tensor_box *b = luaL_checkudata(L, 1, TDL_TENSOR_MT);
    td_release(b->t);
    b->t = NULL;
    return 0;
}

/* The 0-d tensor made from a number belongs to a userdata pushed on the stack: a later argument
 * check that raises (x + {} after 1 + x's scalar was made) then leaks nothing. */
td_tensor *tdl_check_tensor_or_number(lua_State *L, int idx, td_tensor **owned) {
    *owned = NULL;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        td_tensor *t = lua_isinteger(L, idx) ? td_full(TD_F32, 0, NULL, (double)lua_tointeger(L, idx))
                                             : td_scalar((float)lua_tonumber(L, idx));
        tdl_push_tensor(L, t); /* raises when t is NULL */
        *owned = t;
        return t;
    }
    return tdl_check_tensor(L, idx);
}

/* ---- generators -------------------------------------------------------------------------- */
td_generator *tdl_opt_generator(lua_State *L, int idx) {
    td_generator *g = luaL_testudata(L, idx, TDL_GENERATOR_MT);
    return g ? g : td_default_generator();
}

static int gen_new(lua_State *L) {
    lua_Integer seed = luaL_optinteger(L, 1, 0);
    td_generator *g = lua_newuserdatauv(L, sizeof *g, 0);
    td_generator_seed(g, (uint64_t)seed);
    luaL_setmetatable(L, TDL_GENERATOR_MT);
    return 1;
}

static int gen_seed(lua_State *L) {
    td_generator *g = luaL_checkudata(L, 1, TDL_GENERATOR_MT);
    td_generator_seed(g, (uint64_t)luaL_checkinteger(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* The state as an int64 tensor of 7 values (for checkpoints). */
static int gen_get_state(lua_State *L) {
    td_generator *g = luaL_checkudata(L, 1, TDL_GENERATOR_MT);
    int64_t v[7], n = 7;
    memcpy(v, g->s, sizeof g->s);
    v[4] = (int64_t)g->seed;
    v[5] = g->has_spare;
    memcpy(&v[6], &g->spare, sizeof(double));
    return tdl_push_tensor(L, td_from_data(TD_I64, 1, &n, v));
}

static int gen_set_state(lua_State *L) {
    td_generator *g = luaL_checkudata(L, 1, TDL_GENERATOR_MT);
    td_tensor *t = tdl_check_tensor(L, 2);
    if (t->dtype != TD_I64 || t->ndim != 1 || t->shape[0] != 7)
        return luaL_error(L, "Generator:set_state: expected an int64 tensor of 7 values (from get_state)");
    int64_t v[7];
    td_tensor *c = td_contiguous(t);
    if (!c) return tdl_error(L);
    memcpy(v, td_i64(c), sizeof v);
    td_release(c);
    uint64_t st[4];
    double spare;
    memcpy(st, v, sizeof st);
    memcpy(&spare, &v[6], sizeof spare);
    int has_spare = v[5] == 0 || v[5] == 1 ? (int)v[5] : -1;
    if (td_generator_set_state(g, st, (uint64_t)v[4], has_spare, spare)) return tdl_error(L);
    lua_settop(L, 1);
    return 1;
}

static int gen_tostring(lua_State *L) {
    td_generator *g = luaL_checkudata(L, 1, TDL_GENERATOR_MT);
    lua_pushfstring(L, "tdrl.Generator(seed %I)", (lua_Integer)g->seed);
    return 1;
}

static int manual_seed(lua_State *L) {
    td_generator_seed(td_default_generator(), (uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

/* ---- argument helpers ---------------------------------------------------------------------- */
/* Lua dim (1-based, negative from the end) -> C dim (0-based, negative kept). */
static int cdim(lua_State *L, int idx) {
    lua_Integer d = luaL_checkinteger(L, idx);
    if (d == 0) luaL_argerror(L, idx, "dimensions count from 1 (or from -1 at the end)");
    /* checked here, before the cast to int: 2^32 + 1 would otherwise become dimension 1 */
    if (d > TD_MAX_DIMS + 1 || d < -(TD_MAX_DIMS + 1))
        luaL_argerror(L, idx, lua_pushfstring(L, "dimension %I out of range (tensors have at most %d)", d, TD_MAX_DIMS));
    return d > 0 ? (int)(d - 1) : (int)d;
}

static int optcdim(lua_State *L, int idx, int def) { return lua_isnoneornil(L, idx) ? def : cdim(L, idx); }

int tdl_check_shape(lua_State *L, int idx, int64_t *shape, int *next_idx) {
    int nd = 0;
    if (lua_istable(L, idx)) {
        nd = (int)luaL_len(L, idx);
        if (nd > TD_MAX_DIMS) luaL_argerror(L, idx, "too many dimensions");
        for (int i = 0; i < nd; i++) {
            lua_geti(L, idx, i + 1);
            if (!lua_isinteger(L, -1)) luaL_argerror(L, idx, "shape entries must be integers");
            shape[i] = lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
        if (next_idx) *next_idx = idx + 1;
        return nd;
    }
    while (lua_type(L, idx + nd) == LUA_TNUMBER) {
        if (nd >= TD_MAX_DIMS) luaL_argerror(L, idx + nd, "too many dimensions");
        if (!lua_isinteger(L, idx + nd)) luaL_argerror(L, idx + nd, "sizes must be integers");
        shape[nd] = lua_tointeger(L, idx + nd);
        nd++;
    }
    if (next_idx) *next_idx = idx + nd;
    return nd;
}

static td_dtype check_dtype_name(lua_State *L, int idx, const char *s) {
    if (!strcmp(s, "float32") || !strcmp(s, "float")) return TD_F32;
    if (!strcmp(s, "int64") || !strcmp(s, "long") || !strcmp(s, "int")) return TD_I64;
    luaL_argerror(L, idx, lua_pushfstring(L, "unknown dtype '%s' (float32 or int64)", s));
    return TD_F32;
}

typedef struct {
    td_dtype dtype;
    td_generator *gen;
    bool requires_grad;
} create_opts;

/* Trailing options: a dtype string, a Generator, or a table {dtype=, generator=, requires_grad=}. */
static create_opts check_opts(lua_State *L, int idx) {
    create_opts o = {TD_F32, td_default_generator(), false};
    for (int i = idx; i <= lua_gettop(L); i++) {
        if (lua_type(L, i) == LUA_TSTRING) {
            o.dtype = check_dtype_name(L, i, lua_tostring(L, i));
        } else if (luaL_testudata(L, i, TDL_GENERATOR_MT)) {
            o.gen = lua_touserdata(L, i);
        } else if (lua_istable(L, i)) {
            if (lua_getfield(L, i, "dtype") == LUA_TSTRING) o.dtype = check_dtype_name(L, i, lua_tostring(L, -1));
            lua_pop(L, 1);
            lua_getfield(L, i, "generator");
            if (luaL_testudata(L, -1, TDL_GENERATOR_MT)) o.gen = lua_touserdata(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, i, "requires_grad");
            o.requires_grad = lua_toboolean(L, -1);
            lua_pop(L, 1);
        } else if (!lua_isnil(L, i)) {
            luaL_argerror(L, i, "expected a size, a dtype name, a Generator or an options table");
        }
    }
    return o;
}

/* A Lua number for an int64 tensor: an integer as it is, a float truncated when it lies within
 * int64's range; false for a float outside it (1e300, nan) or a non-number. */
static bool to_i64(lua_State *L, int idx, int64_t *out) {
    if (lua_isinteger(L, idx)) return *out = lua_tointeger(L, idx), true;
    if (lua_type(L, idx) != LUA_TNUMBER) return false;
    double v = lua_tonumber(L, idx);
    if (!(v >= -0x1p63 && v < 0x1p63)) return false;
    *out = (int64_t)v;
    return true;
}

static int64_t check_i64(lua_State *L, int idx, const char *op) {
    int64_t v = 0;
    if (!to_i64(L, idx, &v))
        luaL_error(L, "%s: %s is not a value an int64 tensor can hold", op, luaL_tolstring(L, idx, NULL));
    return v;
}

static int push_created(lua_State *L, td_tensor *t, create_opts o) {
    if (t && o.requires_grad && td_set_requires_grad(t, true)) {
        td_release(t);
        t = NULL;
    }
    return tdl_push_tensor(L, t);
}

/* ---- creation -------------------------------------------------------------------------------- */
static int l_empty_like(lua_State *L, double fillv, int kind) {
    int64_t shape[TD_MAX_DIMS];
    int next;
    int nd = tdl_check_shape(L, 1, shape, &next);
    create_opts o = check_opts(L, next);
    td_tensor *t = kind == 0 ? td_full(o.dtype, nd, shape, fillv) : td_empty(o.dtype, nd, shape);
    if (t && kind == 1 && td_normal_(t, o.gen, 0, 1)) { td_release(t); t = NULL; }
    if (t && kind == 2 && td_uniform_(t, o.gen, 0, 1)) { td_release(t); t = NULL; }
    if (t && kind == 3) memset(t->storage->data, 0, t->storage->nbytes);
    return push_created(L, t, o);
}
static int l_zeros(lua_State *L) { return l_empty_like(L, 0, 0); }
static int l_ones(lua_State *L) { return l_empty_like(L, 1, 0); }
static int l_randn(lua_State *L) { return l_empty_like(L, 0, 1); }
static int l_rand(lua_State *L) { return l_empty_like(L, 0, 2); }
static int l_empty(lua_State *L) { return l_empty_like(L, 0, 3); }

static int l_full(lua_State *L) {
    int64_t shape[TD_MAX_DIMS];
    luaL_checktype(L, 1, LUA_TTABLE);
    int nd = tdl_check_shape(L, 1, shape, NULL);
    double v = luaL_checknumber(L, 2);
    create_opts o = check_opts(L, 3);
    int64_t iv = o.dtype == TD_I64 ? check_i64(L, 2, "full") : 0; /* before allocating: it may raise */
    td_tensor *t = td_full(o.dtype, nd, shape, v);
    if (t && o.dtype == TD_I64) td_fill_i64_(t, iv);
    return push_created(L, t, o);
}

static int l_arange(lua_State *L) {
    double a = luaL_checknumber(L, 1), b, step = 1;
    int next = 2;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        b = lua_tonumber(L, 2);
        next = 3;
        if (lua_type(L, 3) == LUA_TNUMBER) {
            step = lua_tonumber(L, 3);
            next = 4;
        }
    } else {
        b = a;
        a = 0;
    }
    create_opts o = check_opts(L, next);
    bool all_int = lua_isinteger(L, 1) && (next < 3 || lua_isinteger(L, 2)) && (next < 4 || lua_isinteger(L, 3));
    if (all_int && !lua_istable(L, next) && lua_type(L, next) != LUA_TSTRING) o.dtype = TD_F32;
    return push_created(L, td_arange(a, b, step, o.dtype), o);
}

static int l_linspace(lua_State *L) {
    return tdl_push_tensor(L, td_linspace(luaL_checknumber(L, 1), luaL_checknumber(L, 2), luaL_checkinteger(L, 3)));
}

static int l_eye(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    return tdl_push_tensor(L, td_eye(n, luaL_optinteger(L, 2, n)));
}

static int l_randint(lua_State *L) {
    lua_Integer lo = luaL_checkinteger(L, 1), hi = luaL_checkinteger(L, 2);
    int64_t shape[TD_MAX_DIMS];
    int next;
    int nd = tdl_check_shape(L, 3, shape, &next);
    create_opts o = check_opts(L, next);
    o.dtype = TD_I64;
    td_tensor *t = td_empty(TD_I64, nd, shape);
    if (t && td_randint_(t, o.gen, lo, hi)) {
        td_release(t);
        t = NULL;
    }
    return tdl_push_tensor(L, t);
}

static int l_randperm(lua_State *L) {
    return tdl_push_tensor(L, td_randperm(tdl_opt_generator(L, 2), luaL_checkinteger(L, 1)));
}

/* T.tensor(nested tables or a number [, dtype]) */
static void infer_shape(lua_State *L, int idx, int depth, int *nd, int64_t *shape) {
    if (depth >= TD_MAX_DIMS) luaL_error(L, "tensor: nesting deeper than %d levels", TD_MAX_DIMS);
    int64_t n = (int64_t)luaL_len(L, idx);
    shape[depth] = n;
    *nd = depth + 1;
    if (n > 0) {
        lua_geti(L, idx, 1);
        if (lua_istable(L, -1)) infer_shape(L, lua_gettop(L), depth + 1, nd, shape);
        lua_pop(L, 1);
    }
}

static void fill_from(lua_State *L, int idx, int depth, int nd, const int64_t *shape, td_tensor *t, int64_t *pos) {
    int64_t n = (int64_t)luaL_len(L, idx);
    if (n != shape[depth])
        luaL_error(L, "tensor: ragged nested table (level %d has %d entries where %d were expected)", depth + 1, (int)n,
                   (int)shape[depth]);
    for (int64_t i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        if (depth + 1 < nd) {
            if (!lua_istable(L, -1)) luaL_error(L, "tensor: expected a table at level %d, entry %d", depth + 2, (int)i);
            fill_from(L, lua_gettop(L), depth + 1, nd, shape, t, pos);
        } else {
            double v;
            int64_t iv = 0;
            if (lua_isboolean(L, -1)) v = iv = lua_toboolean(L, -1);
            else if (lua_type(L, -1) == LUA_TNUMBER) v = lua_tonumber(L, -1);
            else return (void)luaL_error(L, "tensor: entry %d at level %d is a %s, not a number", (int)i, depth + 1,
                                         luaL_typename(L, -1));
            if (t->dtype == TD_I64 && !lua_isboolean(L, -1) && !to_i64(L, -1, &iv))
                return (void)luaL_error(L, "tensor: entry %d at level %d is %s, out of int64's range", (int)i, depth + 1,
                                        luaL_tolstring(L, -1, NULL));
            if (t->dtype == TD_F32) td_f32(t)[*pos] = (float)v;
            else td_i64(t)[*pos] = iv;
            (*pos)++;
        }
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) {
    create_opts o = check_opts(L, 2);
    if (lua_type(L, 1) == LUA_TNUMBER) {
        int64_t iv = o.dtype == TD_I64 ? check_i64(L, 1, "tensor") : 0;
        td_tensor *t = td_full(o.dtype, 0, NULL, lua_tonumber(L, 1));
        if (t && o.dtype == TD_I64) td_fill_i64_(t, iv);
        return push_created(L, t, o);
    }
    if (tdl_opt_tensor(L, 1)) {
        td_tensor *src = tdl_check_tensor(L, 1);
        td_tensor *t = td_to_dtype(src, lua_isnoneornil(L, 2) ? src->dtype : o.dtype);
        td_tensor *c = t ? td_clone(t) : NULL;
        td_release(t);
        return push_created(L, c, o);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t shape[TD_MAX_DIMS];
    int nd = 0;
    infer_shape(L, 1, 0, &nd, shape);
    /* validate fully before allocating, so a ragged table leaks nothing */
    int64_t count = 1;
    for (int i = 0; i < nd; i++) count *= shape[i];
    (void)count;
    td_tensor *t = td_empty(o.dtype, nd, shape);
    if (!t) return tdl_error(L);
    tdl_push_tensor(L, t); /* owned by Lua from here: an error below frees it */
    int64_t pos = 0;
    fill_from(L, 1, 0, nd, shape, t, &pos);
    if (o.requires_grad && td_set_requires_grad(t, true)) return tdl_error(L);
    return 1;
}

/* ---- properties and indexing ------------------------------------------------------------- */
/* A size (x:size(), x.shape) is a plain list of integers whose metatable only gives it a
 * printable form: print(x:size()) shows {8, 32, 32, 16}. */
#define TDL_SIZE_MT "tdrl.Size"

static int size_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '{');
    lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) luaL_addstring(&b, ", ");
        lua_rawgeti(L, 1, i);
        luaL_addvalue(&b); /* numbers convert in place */
    }
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
    return 1;
}

static int push_shape(lua_State *L, const td_tensor *t) {
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    luaL_setmetatable(L, TDL_SIZE_MT);
    return 1;
}

static int m_size(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return push_shape(L, t);
    int d = td_norm_dim(t, cdim(L, 2), "size");
    if (d < 0) return tdl_error(L);
    lua_pushinteger(L, t->shape[d]);
    return 1;
}

static int m_stride(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->stride[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int m_dim(lua_State *L) { lua_pushinteger(L, tdl_check_tensor(L, 1)->ndim); return 1; }
static int m_numel(lua_State *L) { lua_pushinteger(L, td_numel(tdl_check_tensor(L, 1))); return 1; }
static int m_dtype(lua_State *L) { lua_pushstring(L, td_dtype_name(tdl_check_tensor(L, 1)->dtype)); return 1; }
static int m_is_contiguous(lua_State *L) { lua_pushboolean(L, td_is_contiguous(tdl_check_tensor(L, 1))); return 1; }

/* The element at idx as a Lua value: an int64 element as an integer, read as one (through a
 * double 2^53 + 1 read back as 2^53). */
static void push_elem(lua_State *L, const td_tensor *t, const int64_t *idx) {
    if (t->dtype == TD_I64) lua_pushinteger(L, td_get_i64(t, idx));
    else lua_pushnumber(L, td_get(t, idx));
}

static int m_item(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    if (td_numel(t) != 1) {
        char b[TD_SHAPE_BUF];
        return luaL_error(L, "item: the tensor has %d elements (shape %s), not one", (int)td_numel(t),
                          td_shape_str(t, b, sizeof b));
    }
    int64_t zero[TD_MAX_DIMS] = {0}; /* the one element: every size is 1 */
    push_elem(L, t, zero);
    return 1;
}

/* Reads 1-based indices from idx.. into a 0-based full index for t. */
static void check_index_args(lua_State *L, td_tensor *t, int idx, int count, int64_t *out, const char *op) {
    if (count != t->ndim) {
        char b[TD_SHAPE_BUF];
        luaL_error(L, "%s: %d indices given for a tensor of shape %s", op, count, td_shape_str(t, b, sizeof b));
    }
    for (int i = 0; i < count; i++) {
        lua_Integer k = luaL_checkinteger(L, idx + i);
        int64_t n = t->shape[i];
        int64_t z = k > 0 ? k - 1 : n + k;
        if (k == 0 || z < 0 || z >= n) {
            char b[TD_SHAPE_BUF];
            luaL_error(L, "%s: index %d out of range for dimension %d of size %d (shape %s)", op, (int)k, i + 1, (int)n,
                       td_shape_str(t, b, sizeof b));
        }
        out[i] = z;
    }
}

static int m_get(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int64_t idx[TD_MAX_DIMS];
    check_index_args(L, t, 2, lua_gettop(L) - 1, idx, "get");
    push_elem(L, t, idx);
    return 1;
}

static int m_set(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int top = lua_gettop(L);
    double v = luaL_checknumber(L, top);
    int64_t iv = t->dtype == TD_I64 ? check_i64(L, top, "set") : 0;
    int64_t idx[TD_MAX_DIMS];
    check_index_args(L, t, 2, top - 2, idx, "set");
    if (td_grad_enabled() && t->requires_grad)
        return luaL_error(L, "set: in-place change of a tensor that requires grad (use tdrl.no_grad)");
    td_bump_version(t, "set");
    if (t->dtype == TD_I64) td_set_i64(t, idx, iv);
    else td_set(t, idx, v);
    lua_settop(L, 1);
    return 1;
}

/* Nested Lua tables of the values. */
static void push_table(lua_State *L, td_tensor *t, int d, int64_t *idx) {
    if (t->ndim == 0) {
        push_elem(L, t, idx);
        return;
    }
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        idx[d] = i;
        if (d == t->ndim - 1) push_elem(L, t, idx);
        else push_table(L, t, d + 1, idx);
        lua_rawseti(L, -2, i + 1);
    }
}

static int m_totable(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int64_t idx[TD_MAX_DIMS] = {0};
    luaL_checkstack(L, t->ndim + 4, "totable");
    push_table(L, t, 0, idx);
    return 1;
}

/* Entry k of the table on the stack top as an integer into *v; false (the table popped or not)
 * when it is not one: a string or a fraction is an error, never position 0. */
static bool range_int(lua_State *L, int k, lua_Integer *v) {
    lua_geti(L, -1, k);
    int ok;
    *v = lua_tointegerx(L, -1, &ok);
    ok = ok && lua_type(L, -1) == LUA_TNUMBER;
    lua_pop(L, 1);
    return ok;
}

/* x[{spec1, spec2, ...}]: a number selects (1-based), {a, b[, step]} keeps a..b inclusive,
 * {} keeps the whole dimension. Returns a view. */
static td_tensor *index_table(lua_State *L, td_tensor *t, int tidx) {
    int n = (int)luaL_len(L, tidx);
    if (n > t->ndim) {
        char b[TD_SHAPE_BUF];
        luaL_error(L, "index: %d index entries for a tensor of shape %s", n, td_shape_str(t, b, sizeof b));
    }
    td_retain(t);
    td_tensor *cur = t;
    int d = 0;
    for (int i = 1; i <= n; i++) {
        int ty = lua_geti(L, tidx, i);
        td_tensor *next = NULL;
        int64_t size = cur->shape[d];
        int isint;
        lua_Integer k = lua_tointegerx(L, -1, &isint);
        if (ty == LUA_TNUMBER && !isint) {
            next = td_fail("index: entry %d is %g, not an integer", i, (double)lua_tonumber(L, -1));
        } else if (ty == LUA_TNUMBER) {
            next = k == 0 ? td_fail("index: entry %d is 0 (indices count from 1)", i)
                          : td_select(cur, d, k > 0 ? k - 1 : k);
        } else if (ty == LUA_TTABLE) {
            lua_Integer m = luaL_len(L, -1);
            lua_Integer a = 1, b = size, step = 1;
            bool ok = m <= 3 && (m < 1 || range_int(L, 1, &a)) && (m < 2 || range_int(L, 2, &b)) &&
                      (m < 3 || range_int(L, 3, &step));
            if (m == 1) b = a;
            if (ok && a < 0) a += size + 1;
            if (ok && b < 0) b += size + 1;
            next = !ok ? td_fail("index: entry %d must be a range {first, last[, step]} of integers", i)
                   : (a < 1 || b > size || b < a - 1)
                       ? td_fail("index: range {%lld, %lld} out of bounds for dimension %d of size %lld", (long long)a,
                                 (long long)b, d + 1, (long long)size)
                       : td_slice(cur, d, a - 1, b, step);
            d++;
        } else {
            next = td_fail("index: entry %d must be a number or a range table, got %s", i, lua_typename(L, ty));
        }
        lua_pop(L, 1);
        td_release(cur);
        if (!next) tdl_error(L);
        cur = next;
    }
    return cur;
}

static int m_index(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    switch (lua_type(L, 2)) {
    case LUA_TSTRING: {
        const char *k = lua_tostring(L, 2);
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1; /* a method */
        lua_pop(L, 1);
        if (!strcmp(k, "grad")) {
            if (!t->grad) return lua_pushnil(L), 1;
            td_retain(t->grad);
            return tdl_push_tensor(L, t->grad);
        }
        if (!strcmp(k, "shape")) return push_shape(L, t);
        if (!strcmp(k, "ndim")) return lua_pushinteger(L, t->ndim), 1;
        if (!strcmp(k, "requires_grad")) return lua_pushboolean(L, t->requires_grad), 1;
        if (!strcmp(k, "is_leaf")) return lua_pushboolean(L, t->node == NULL), 1;
        if (!strcmp(k, "grad_fn")) return t->node ? (lua_pushstring(L, t->node->name), 1) : (lua_pushnil(L), 1);
        return lua_pushnil(L), 1;
    }
    case LUA_TNUMBER: {
        lua_Integer k = luaL_checkinteger(L, 2);
        if (t->ndim == 0) return luaL_error(L, "index: cannot index a 0-dimensional tensor (use item())");
        if (k == 0) return luaL_error(L, "index: indices count from 1");
        td_tensor *s = td_select(t, 0, k > 0 ? k - 1 : k);
        if (!s) return tdl_error(L);
        if (s->ndim == 0) {
            push_elem(L, s, NULL);
            td_release(s);
            return 1;
        }
        return tdl_push_tensor(L, s);
    }
    case LUA_TTABLE:
        return tdl_push_tensor(L, index_table(L, t, 2));
    default:
        return lua_pushnil(L), 1;
    }
}

static int m_newindex(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (!strcmp(k, "grad")) {
            td_tensor *g = lua_isnil(L, 3) ? NULL : tdl_check_tensor(L, 3);
            if (g && (g->ndim != t->ndim || memcmp(g->shape, t->shape, sizeof(int64_t) * t->ndim)))
                return luaL_error(L, "grad: assigned gradient has a different shape from the tensor");
            if (g && (g->dtype != TD_F32 || t->dtype != TD_F32))
                return luaL_error(L, "grad: gradients are float32, got a %s gradient for a %s tensor",
                                  td_dtype_name(g->dtype), td_dtype_name(t->dtype));
            td_retain(g);
            td_release(t->grad);
            t->grad = g;
            return 0;
        }
        if (!strcmp(k, "requires_grad")) {
            if (td_set_requires_grad(t, lua_toboolean(L, 3))) return tdl_error(L);
            return 0;
        }
        return luaL_error(L, "tensor: cannot set field '%s'", k);
    }
    td_tensor *view;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer k = luaL_checkinteger(L, 2);
        if (t->ndim == 0 || k == 0) return luaL_error(L, "index: invalid index %d", (int)k);
        view = td_select(t, 0, k > 0 ? k - 1 : k);
        if (!view) return tdl_error(L);
    } else if (lua_istable(L, 2)) {
        view = index_table(L, t, 2);
    } else {
        return luaL_error(L, "tensor: invalid index of type %s", luaL_typename(L, 2));
    }
    int rc;
    if (lua_type(L, 3) == LUA_TNUMBER) {
        int64_t iv;
        rc = view->dtype == TD_I64 && !to_i64(L, 3, &iv)
                 ? td_fail_int("index assignment: %g is not a value an int64 tensor can hold", (double)lua_tonumber(L, 3))
             : view->dtype == TD_I64 ? td_fill_i64_(view, iv)
                                     : td_fill_(view, lua_tonumber(L, 3));
    } else {
        td_tensor *src = tdl_opt_tensor(L, 3);
        rc = src ? td_copy_(view, src) : td_fail_int("index assignment: value must be a number or a tensor");
    }
    td_release(view);
    if (rc) return tdl_error(L);
    return 0;
}

static int m_tostring(lua_State *L) {
    tensor_box *b = luaL_checkudata(L, 1, TDL_TENSOR_MT);
    if (!b->t) return lua_pushliteral(L, "[closed tensor]"), 1;
    char *s = td_format(b->t);
    if (!s) return tdl_error(L);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int m_len(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
    return 1;
}

/* ---- views ------------------------------------------------------------------------------ */
static int m_view_like(lua_State *L, bool reshape) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int64_t shape[TD_MAX_DIMS];
    int nd = tdl_check_shape(L, 2, shape, NULL);
    return tdl_push_tensor(L, reshape ? td_reshape(t, nd, shape) : td_view(t, nd, shape));
}
static int m_view(lua_State *L) { return m_view_like(L, false); }
static int m_reshape(lua_State *L) { return m_view_like(L, true); }

static int m_expand(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int64_t shape[TD_MAX_DIMS];
    int nd = tdl_check_shape(L, 2, shape, NULL);
    return tdl_push_tensor(L, td_expand(t, nd, shape));
}

static int m_expand_as(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1), *o = tdl_check_tensor(L, 2);
    return tdl_push_tensor(L, td_expand(t, o->ndim, o->shape));
}

static int m_transpose(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) { /* t:t() on a matrix */
        if (t->ndim > 2) return luaL_error(L, "transpose: give two dimensions for a %d-dimensional tensor", t->ndim);
        return tdl_push_tensor(L, t->ndim < 2 ? (td_retain(t), t) : td_transpose(t, 0, 1));
    }
    return tdl_push_tensor(L, td_transpose(t, cdim(L, 2), cdim(L, 3)));
}

static int m_permute(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int64_t p[TD_MAX_DIMS];
    int n = tdl_check_shape(L, 2, p, NULL), perm[TD_MAX_DIMS];
    if (n != t->ndim) {
        char b[TD_SHAPE_BUF];
        return luaL_error(L, "permute: %d dimensions given for a tensor of shape %s", n, td_shape_str(t, b, sizeof b));
    }
    for (int i = 0; i < n; i++) {
        if (p[i] == 0 || p[i] > n || p[i] < -n)
            return luaL_error(L, "permute: entry %d is %I, not a dimension of a %d-dimensional tensor (1..%d or -%d..-1)",
                              i + 1, (lua_Integer)p[i], n, n, n);
        perm[i] = p[i] > 0 ? (int)p[i] - 1 : (int)p[i];
    }
    return tdl_push_tensor(L, td_permute(t, perm));
}

static int m_narrow(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = cdim(L, 2);
    lua_Integer start = luaL_checkinteger(L, 3);
    if (start < 1) return luaL_argerror(L, 3, "start counts from 1");
    return tdl_push_tensor(L, td_narrow(t, d, start - 1, luaL_checkinteger(L, 4)));
}

/* x:slice(dim, first, last[, step]): elements first..last inclusive, negative from the end */
static int m_slice(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = td_norm_dim(t, cdim(L, 2), "slice");
    if (d < 0) return tdl_error(L);
    int64_t size = t->ndim ? t->shape[d] : 0;
    lua_Integer a = luaL_optinteger(L, 3, 1), b = luaL_optinteger(L, 4, size), step = luaL_optinteger(L, 5, 1);
    if (a < 0) a += size + 1;
    if (b < 0) b += size + 1;
    if (a < 1 || b > size || b < a - 1)
        return luaL_error(L, "slice: range %d..%d out of bounds for dimension %d of size %d", (int)a, (int)b, d + 1, (int)size);
    return tdl_push_tensor(L, td_slice(t, d, a - 1, b, step));
}

static int m_select(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = cdim(L, 2);
    lua_Integer i = luaL_checkinteger(L, 3);
    if (i == 0) return luaL_argerror(L, 3, "indices count from 1");
    return tdl_push_tensor(L, td_select(t, d, i > 0 ? i - 1 : i));
}

static int m_squeeze(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_squeeze(t, optcdim(L, 2, TD_ALL_DIMS)));
}

static int m_unsqueeze(lua_State *L) { return tdl_push_tensor(L, td_unsqueeze(tdl_check_tensor(L, 1), cdim(L, 2))); }
static int m_contiguous(lua_State *L) { return tdl_push_tensor(L, td_contiguous(tdl_check_tensor(L, 1))); }
static int m_clone(lua_State *L) { return tdl_push_tensor(L, td_clone(tdl_check_tensor(L, 1))); }
static int m_detach(lua_State *L) { return tdl_push_tensor(L, td_detach(tdl_check_tensor(L, 1))); }
static int m_float(lua_State *L) { return tdl_push_tensor(L, td_to_dtype(tdl_check_tensor(L, 1), TD_F32)); }
static int m_long(lua_State *L) { return tdl_push_tensor(L, td_to_dtype(tdl_check_tensor(L, 1), TD_I64)); }

static int m_flatten(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int s = optcdim(L, 2, 0), e = optcdim(L, 3, -1);
    if (t->ndim == 0) return tdl_push_tensor(L, td_reshape(t, 1, (int64_t[]){1}));
    int a = td_norm_dim(t, s, "flatten"), b = td_norm_dim(t, e, "flatten");
    if (a < 0 || b < 0) return tdl_error(L);
    int64_t shape[TD_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i <= a || i > b) shape[k++] = t->shape[i];
        else shape[k - 1] *= t->shape[i];
    }
    return tdl_push_tensor(L, td_reshape(t, k, shape));
}

/* split(size_or_sizes, dim) and chunk(n, dim): tables of narrow views. As many parts as the
 * dimension holds (5,000 rows split by 1 are 5,000 views): the part sizes live in a userdata,
 * not in a fixed array. */
static int split_impl(lua_State *L, bool chunk) {
    const char *op = chunk ? "chunk" : "split";
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = td_norm_dim(t, optcdim(L, 3, 0), op);
    if (d < 0) return tdl_error(L);
    if (t->ndim == 0) return luaL_error(L, "%s: cannot split a 0-dimensional tensor", op);
    int64_t size = t->shape[d], n = 0, *sizes;
    if (!chunk && lua_istable(L, 2)) {
        lua_Integer m = luaL_len(L, 2);
        int64_t total = 0;
        if (m < 0) return luaL_error(L, "split: the size list has length %I", m);
        sizes = lua_newuserdatauv(L, sizeof *sizes * (size_t)(m ? m : 1), 0);
        for (lua_Integer i = 0; i < m; i++) {
            int ok;
            lua_geti(L, 2, i + 1);
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok || lua_type(L, -1) != LUA_TNUMBER)
                return luaL_error(L, "split: size %I is %s, not an integer", i + 1, luaL_tolstring(L, -1, NULL));
            if (v < 0) return luaL_error(L, "split: size %I is %I (sizes are >= 0)", i + 1, v);
            if (!td_add_ok(total, v, &total)) total = INT64_MAX;
            sizes[n++] = v;
            lua_pop(L, 1);
        }
        if (total != size)
            return luaL_error(L, "split: sizes add up to %I but dimension %d has size %I", (lua_Integer)total, d + 1,
                              (lua_Integer)size);
    } else {
        lua_Integer k = luaL_checkinteger(L, 2);
        if (k <= 0) return luaL_argerror(L, 2, "must be positive");
        int64_t part = chunk ? size / k + (size % k != 0) : k;
        if (part == 0) part = 1;
        int64_t parts = size / part + (size % part != 0);
        sizes = lua_newuserdatauv(L, sizeof *sizes * (size_t)(parts ? parts : 1), 0);
        for (int64_t s = 0; n < parts; s += part) sizes[n++] = size - s < part ? size - s : part;
    }
    if (n > INT_MAX) return luaL_error(L, "%s: %I parts are more than a Lua table holds", op, (lua_Integer)n);
    lua_createtable(L, (int)n, 0);
    int64_t start = 0;
    for (int64_t i = 0; i < n; i++) {
        tdl_push_tensor(L, td_narrow(t, d, start, sizes[i]));
        lua_rawseti(L, -2, i + 1);
        start += sizes[i];
    }
    return 1;
}
static int m_split(lua_State *L) { return split_impl(L, false); }
static int m_chunk(lua_State *L) { return split_impl(L, true); }

/* T.cat({a, b, ...}, dim) / T.stack */
static int join_impl(lua_State *L, bool stack) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    if (n < 1) return luaL_error(L, "%s: needs a non-empty list of tensors", stack ? "stack" : "cat");
    td_tensor **ts = lua_newuserdatauv(L, sizeof(td_tensor *) * (size_t)n, 0); /* freed by the GC */
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        ts[i] = tdl_opt_tensor(L, -1);
        if (!ts[i]) return luaL_error(L, "%s: entry %d is not a tensor", stack ? "stack" : "cat", i + 1);
        lua_pop(L, 1);
    }
    int d = optcdim(L, 2, 0);
    return tdl_push_tensor(L, stack ? td_stack(ts, n, d) : td_cat(ts, n, d));
}
static int l_cat(lua_State *L) { return join_impl(L, false); }
static int l_stack(lua_State *L) { return join_impl(L, true); }

static int m_index_select(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = cdim(L, 2);
    return tdl_push_tensor(L, td_index_select(t, d, tdl_check_tensor(L, 3)));
}
static int m_gather(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = cdim(L, 2);
    return tdl_push_tensor(L, td_gather(t, d, tdl_check_tensor(L, 3)));
}
static int m_scatter_add(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int d = cdim(L, 2);
    return tdl_push_tensor(L, td_scatter_add(t, d, tdl_check_tensor(L, 3), tdl_check_tensor(L, 4)));
}
static int m_masked_fill(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_masked_fill(t, tdl_check_tensor(L, 2), luaL_checknumber(L, 3)));
}
static int l_where(lua_State *L) {
    lua_settop(L, 3); /* fixed slots: a number's tensor is pushed above them */
    td_tensor *c = tdl_check_tensor(L, 1), *oa, *ob;
    td_tensor *a = tdl_check_tensor_or_number(L, 2, &oa), *b = tdl_check_tensor_or_number(L, 3, &ob);
    td_tensor *r = td_where(c, a, b);
    return tdl_push_tensor(L, r);
}

/* ---- in-place -------------------------------------------------------------------------------- */
static int ret_self(lua_State *L, int rc) {
    if (rc) return tdl_error(L);
    lua_settop(L, 1);
    return 1;
}
static int m_fill_(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    luaL_checknumber(L, 2);
    return ret_self(L, t->dtype == TD_I64 ? td_fill_i64_(t, check_i64(L, 2, "fill_")) : td_fill_(t, lua_tonumber(L, 2)));
}
static int m_zero_(lua_State *L) { return ret_self(L, td_fill_(tdl_check_tensor(L, 1), 0)); }
static int m_copy_(lua_State *L) { return ret_self(L, td_copy_(tdl_check_tensor(L, 1), tdl_check_tensor(L, 2))); }
static int m_add_(lua_State *L) {
    lua_settop(L, 3); /* fixed slots: a number's tensor is pushed above them */
    td_tensor *t = tdl_check_tensor(L, 1), *o;
    td_tensor *s = tdl_check_tensor_or_number(L, 2, &o);
    (void)o;
    return ret_self(L, td_add_(t, s, luaL_optnumber(L, 3, 1.0)));
}
static int m_mul_(lua_State *L) { return ret_self(L, td_mul_scalar_(tdl_check_tensor(L, 1), luaL_checknumber(L, 2))); }
static int m_uniform_(lua_State *L) {
    return ret_self(L, td_uniform_(tdl_check_tensor(L, 1), tdl_opt_generator(L, 4), luaL_optnumber(L, 2, 0),
                                   luaL_optnumber(L, 3, 1)));
}
static int m_normal_(lua_State *L) {
    return ret_self(L, td_normal_(tdl_check_tensor(L, 1), tdl_opt_generator(L, 4), luaL_optnumber(L, 2, 0),
                                  luaL_optnumber(L, 3, 1)));
}

/* ---- elementwise ------------------------------------------------------------------------------ */
static int binary_op(lua_State *L, td_binary_op op) {
    bool na = lua_type(L, 1) == LUA_TNUMBER, nb = lua_type(L, 2) == LUA_TNUMBER;
    td_tensor *r;
    /* number op tensor keeps the tensor's dtype rules: the scalar path, no tensor for the number */
    if (na && !nb) {
        r = td_binary_scalar(op, tdl_check_tensor(L, 2), lua_tonumber(L, 1), true);
    } else if (nb && !na) {
        r = td_binary_scalar(op, tdl_check_tensor(L, 1), lua_tonumber(L, 2), false);
    } else {
        td_tensor *oa, *ob;
        lua_settop(L, 2); /* fixed slots: a number's tensor is pushed above them */
        td_tensor *a = tdl_check_tensor_or_number(L, 1, &oa), *b = tdl_check_tensor_or_number(L, 2, &ob);
        r = td_binary(op, a, b);
    }
    return tdl_push_tensor(L, r);
}
#define BIN(name, op) static int m_##name(lua_State *L) { return binary_op(L, op); }
BIN(add, TD_ADD) BIN(sub, TD_SUB) BIN(mul, TD_MUL) BIN(div, TD_DIV) BIN(pow, TD_POW)
BIN(maximum, TD_MAXIMUM) BIN(minimum, TD_MINIMUM)
BIN(eq, TD_EQ) BIN(ne, TD_NE) BIN(lt, TD_LT) BIN(le, TD_LE) BIN(gt, TD_GT) BIN(ge, TD_GE)
#undef BIN

static int unary_op(lua_State *L, td_unary_op op) { return tdl_push_tensor(L, td_unary(op, tdl_check_tensor(L, 1))); }
#define UN(name, op) static int m_##name(lua_State *L) { return unary_op(L, op); }
UN(neg, TD_NEG) UN(exp, TD_EXP) UN(log, TD_LOG) UN(sqrt, TD_SQRT) UN(rsqrt, TD_RSQRT) UN(abs, TD_ABS)
UN(sin, TD_SIN) UN(cos, TD_COS) UN(tanh, TD_TANH) UN(sigmoid, TD_SIGMOID) UN(relu, TD_RELU) UN(silu, TD_SILU)
UN(gelu, TD_GELU) UN(square, TD_SQUARE) UN(sign, TD_SIGN) UN(reciprocal, TD_RECIPROCAL) UN(log1p, TD_LOG1P)
UN(expm1, TD_EXPM1) UN(floor, TD_FLOOR) UN(ceil, TD_CEIL) UN(round, TD_ROUND)
#undef UN

static int m_elu(lua_State *L) { return tdl_push_tensor(L, td_elu(tdl_check_tensor(L, 1), luaL_optnumber(L, 2, 1.0))); }
static int m_clamp(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    double lo = lua_isnoneornil(L, 2) ? -INFINITY : luaL_checknumber(L, 2);
    double hi = lua_isnoneornil(L, 3) ? INFINITY : luaL_checknumber(L, 3);
    return tdl_push_tensor(L, td_clamp(t, lo, hi));
}

/* ---- reductions ------------------------------------------------------------------------------- */
/* dims argument: nil (all), a number, or a table of numbers -> bitmask */
static uint32_t check_dims(lua_State *L, int idx, td_tensor *t) {
    uint32_t mask = 0;
    if (lua_isnoneornil(L, idx)) return 0;
    int n = lua_istable(L, idx) ? (int)luaL_len(L, idx) : 1;
    for (int i = 0; i < n; i++) {
        int d;
        if (lua_istable(L, idx)) {
            lua_geti(L, idx, i + 1);
            d = cdim(L, -1);
            lua_pop(L, 1);
        } else {
            d = cdim(L, idx);
        }
        int nd = td_norm_dim(t, d, "reduce");
        if (nd < 0) tdl_error(L);
        if (t->ndim) mask |= 1u << nd;
    }
    return mask;
}

static int m_sum(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_sum(t, check_dims(L, 2, t), lua_toboolean(L, 3)));
}
static int m_mean(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_mean(t, check_dims(L, 2, t), lua_toboolean(L, 3)));
}
/* var(dims, keepdim, correction = 1) */
static int m_var(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_var(t, check_dims(L, 2, t), lua_toboolean(L, 3), (int)luaL_optinteger(L, 4, 1)));
}
static int m_std(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_std(t, check_dims(L, 2, t), lua_toboolean(L, 3), (int)luaL_optinteger(L, 4, 1)));
}
static int m_logsumexp(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_logsumexp(t, check_dims(L, 2, t), lua_toboolean(L, 3)));
}
/* norm(p = 2, dims, keepdim) */
static int m_norm(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_norm(t, luaL_optnumber(L, 2, 2), check_dims(L, 3, t), lua_toboolean(L, 4)));
}

/* max() -> 0-d value; max(dim, keepdim) -> values, indices (0-based, int64) */
static int max_impl(lua_State *L, bool is_min) {
    td_tensor *t = tdl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return tdl_push_tensor(L, td_max_all(t, is_min));
    if (tdl_opt_tensor(L, 2)) return binary_op(L, is_min ? TD_MINIMUM : TD_MAXIMUM);
    td_tensor *v, *ix;
    if (td_max_dim(t, cdim(L, 2), lua_toboolean(L, 3), is_min, &v, &ix)) return tdl_error(L);
    tdl_push_tensor(L, v);
    tdl_push_tensor(L, ix);
    return 2;
}
static int m_max(lua_State *L) { return max_impl(L, false); }
static int m_min(lua_State *L) { return max_impl(L, true); }
static int m_argmax(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_argmax(t, optcdim(L, 2, TD_ALL_DIMS), lua_toboolean(L, 3), false));
}
static int m_argmin(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_argmax(t, optcdim(L, 2, TD_ALL_DIMS), lua_toboolean(L, 3), true));
}
static int m_softmax(lua_State *L) { return tdl_push_tensor(L, td_softmax(tdl_check_tensor(L, 1), optcdim(L, 2, -1))); }
static int m_log_softmax(lua_State *L) {
    return tdl_push_tensor(L, td_log_softmax(tdl_check_tensor(L, 1), optcdim(L, 2, -1)));
}

static int m_matmul(lua_State *L) { return tdl_push_tensor(L, td_matmul(tdl_check_tensor(L, 1), tdl_check_tensor(L, 2))); }

/* ---- autograd ---------------------------------------------------------------------------------- */
static int m_requires_grad_(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return ret_self(L, td_set_requires_grad(t, lua_isnone(L, 2) ? true : lua_toboolean(L, 2)));
}

/* backward([grad][, retain_graph]) or backward({retain_graph = true}) */
static int m_backward(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1), *g = tdl_opt_tensor(L, 2);
    bool retain = false;
    for (int i = 2; i <= 3; i++) {
        if (lua_isboolean(L, i)) retain = lua_toboolean(L, i);
        if (lua_istable(L, i)) {
            lua_getfield(L, i, "retain_graph");
            retain = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
    }
    if (td_backward(t, g, retain)) return tdl_error(L);
    return 0;
}

static int m_zero_grad(lua_State *L) {
    td_zero_grad(tdl_check_tensor(L, 1));
    return 0;
}

static int l_set_grad_enabled(lua_State *L) {
    lua_pushboolean(L, td_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}
static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, td_grad_enabled());
    return 1;
}

/* T.no_grad(fn, ...): runs fn with gradients off, restores the mode even on error */
static int l_no_grad(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    bool prev = td_set_grad_enabled(false);
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    td_set_grad_enabled(prev);
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* ---- threads, memory, raw BLAS ------------------------------------------------------------- */
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

/* ---- registration --------------------------------------------------------------------------- */
/* Functions that take a tensor first: both methods (x:exp()) and module functions (T.exp(x)). */
static const luaL_Reg tensor_methods[] = {
    {"size", m_size}, {"stride", m_stride}, {"dim", m_dim}, {"numel", m_numel}, {"type", m_dtype}, {"dtype", m_dtype},
    {"is_contiguous", m_is_contiguous}, {"item", m_item}, {"get", m_get}, {"set", m_set}, {"totable", m_totable},
    {"tolist", m_totable}, {"view", m_view}, {"reshape", m_reshape}, {"expand", m_expand}, {"expand_as", m_expand_as},
    {"transpose", m_transpose}, {"t", m_transpose}, {"permute", m_permute}, {"narrow", m_narrow}, {"slice", m_slice},
    {"select", m_select}, {"squeeze", m_squeeze}, {"unsqueeze", m_unsqueeze}, {"contiguous", m_contiguous},
    {"clone", m_clone}, {"detach", m_detach}, {"float", m_float}, {"long", m_long}, {"int", m_long},
    {"flatten", m_flatten}, {"split", m_split}, {"chunk", m_chunk}, {"index_select", m_index_select},
    {"gather", m_gather}, {"scatter_add", m_scatter_add}, {"masked_fill", m_masked_fill}, {"fill_", m_fill_},
    {"zero_", m_zero_}, {"copy_", m_copy_}, {"add_", m_add_}, {"mul_", m_mul_}, {"uniform_", m_uniform_},
    {"normal_", m_normal_}, {"add", m_add}, {"sub", m_sub}, {"mul", m_mul}, {"div", m_div}, {"pow", m_pow},
    {"maximum", m_maximum}, {"minimum", m_minimum}, {"eq", m_eq}, {"ne", m_ne}, {"lt", m_lt}, {"le", m_le},
    {"gt", m_gt}, {"ge", m_ge}, {"neg", m_neg}, {"exp", m_exp}, {"log", m_log}, {"sqrt", m_sqrt},
    {"rsqrt", m_rsqrt}, {"abs", m_abs}, {"sin", m_sin}, {"cos", m_cos}, {"tanh", m_tanh}, {"sigmoid", m_sigmoid},
    {"relu", m_relu}, {"silu", m_silu}, {"gelu", m_gelu}, {"elu", m_elu}, {"square", m_square}, {"sign", m_sign},
    {"reciprocal", m_reciprocal}, {"log1p", m_log1p}, {"expm1", m_expm1}, {"floor", m_floor}, {"ceil", m_ceil},
    {"round", m_round}, {"clamp", m_clamp}, {"sum", m_sum}, {"mean", m_mean}, {"var", m_var}, {"std", m_std},
    {"logsumexp", m_logsumexp}, {"norm", m_norm}, {"max", m_max}, {"min", m_min}, {"argmax", m_argmax},
    {"argmin", m_argmin}, {"softmax", m_softmax}, {"log_softmax", m_log_softmax}, {"matmul", m_matmul},
    {"requires_grad_", m_requires_grad_}, {"backward", m_backward}, {"zero_grad", m_zero_grad},
    {"close", tensor_close}, {NULL, NULL}};

static const luaL_Reg module_functions[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"empty", l_empty}, {"full", l_full},
    {"randn", l_randn}, {"rand", l_rand}, {"randint", l_randint}, {"randperm", l_randperm}, {"arange", l_arange},
    {"linspace", l_linspace}, {"eye", l_eye}, {"cat", l_cat}, {"stack", l_stack}, {"where", l_where},
    {"manual_seed", manual_seed}, {"Generator", gen_new}, {"set_grad_enabled", l_set_grad_enabled},
    {"is_grad_enabled", l_is_grad_enabled}, {"no_grad", l_no_grad}, {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads}, {"memory", l_memory}, {"reset_peak_memory", l_reset_peak_memory}, {"defer_interrupts", l_defer_interrupts}, {"interrupt_pending", l_interrupt_pending}, {"isatty", l_isatty}, {"empty_cache", l_empty_cache}, {"clock", l_clock}, {"set_printoptions", l_set_printoptions}, {"_sgemm", l_raw_sgemm}, {"_copy", l_raw_copy},
    {"profile_backward", l_profile_backward}, {"profile_backward_report", l_profile_backward_report},
    {"profile_backward_reset", l_profile_backward_reset}, {NULL, NULL}};

static const luaL_Reg generator_methods[] = {
    {"seed", gen_seed}, {"get_state", gen_get_state}, {"set_state", gen_set_state}, {NULL, NULL}};

void tdl_register_tensor(lua_State *L) {
    /* module table on top */
    luaL_setfuncs(L, module_functions, 0);
    luaL_setfuncs(L, tensor_methods, 0);

    luaL_newmetatable(L, TDL_TENSOR_MT);
    lua_newtable(L); /* method table */
    luaL_setfuncs(L, tensor_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods"); /* for the REPL's completion */
    lua_pushcclosure(L, m_index, 1);
    lua_setfield(L, -2, "__index");
    /* the fields m_index serves, for tab completion (x.gr<TAB> -> x.grad) */
    static const char *const fields[] = {"grad", "shape", "ndim", "requires_grad", "is_leaf", "grad_fn"};
    lua_createtable(L, 0, (int)(sizeof fields / sizeof *fields));
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, fields[i]);
    }
    lua_setfield(L, -2, "__fields");
    static const luaL_Reg meta[] = {
        {"__newindex", m_newindex}, {"__tostring", m_tostring}, {"__gc", tensor_close}, {"__close", tensor_close},
        {"__len", m_len}, {"__add", m_add}, {"__sub", m_sub}, {"__mul", m_mul}, {"__div", m_div}, {"__pow", m_pow},
        {"__unm", m_neg}, {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, "tdrl.Tensor");
    lua_setfield(L, -2, "__name");
    lua_getfield(L, -1, "__methods");
    lua_setfield(L, -3, "Tensor"); /* T.Tensor: the method table, for users adding methods */
    lua_pop(L, 1);

    luaL_newmetatable(L, TDL_SIZE_MT);
    lua_pushcfunction(L, size_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, TDL_GENERATOR_MT);
    lua_newtable(L);
    luaL_setfuncs(L, generator_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gen_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

int luaopen_tdrl_core(lua_State *L) {
    lua_newtable(L);
    tdl_register_tensor(L);
    tdl_register_io(L);
    tdl_register_docs(L);
    void (*const families[])(lua_State *) = {tdl_register_nn, tdl_register_optim, tdl_register_data, tdl_register_extra};
    for (size_t i = 0; i < sizeof families / sizeof *families; i++)
        if (families[i]) families[i](L);
    return 1;
}
