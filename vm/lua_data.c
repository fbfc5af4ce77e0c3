/* Lua binding of the data core (ops/io/data.h), under the private table T._data; the public API is
 * lua/tdrl/data/. Sources and loaders are userdata with an idempotent closer for __gc/__close.
 * Sample ids handed to C (index tensors) are int64 and count from 0; task numbers count from 1. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../ops/io/data.h"
#include "bind.h"

#define SOURCE_MT "tdrl.data.Source"
#define LOADER_MT "tdrl.data.Loader"

typedef struct {
    td_source *s;
} source_box;
typedef struct {
    td_loader *l;
    int ntasks;
} loader_box;

static td_source *check_source(lua_State *L, int idx) {
    source_box *b = luaL_checkudata(L, idx, SOURCE_MT);
    if (!b->s) luaL_argerror(L, idx, "source was closed");
    return b->s;
}

static int push_source(lua_State *L, td_source *s) {
    if (!s) return tdl_error(L);
    source_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->s = s;
    luaL_setmetatable(L, SOURCE_MT);
    return 1;
}

static int source_close(lua_State *L) {
    source_box *b = luaL_checkudata(L, 1, SOURCE_MT);
    td_source_release(b->s);
    b->s = NULL;
    return 0;
}

/* A contiguous int64 1-D tensor of sample ids at idx (new reference kept alive on the stack as
 * a pushed tensor), or NULL when the argument is nil. */
static td_tensor *opt_ids(lua_State *L, int idx, const char *op) {
    if (lua_isnoneornil(L, idx)) return NULL;
    td_tensor *t = tdl_check_tensor(L, idx);
    if (t->dtype != TD_I64 || t->ndim != 1) {
        char sb[TD_SHAPE_BUF];
        luaL_error(L, "%s: sample ids must be a 1-D int64 tensor, got %s %s", op, td_dtype_name(t->dtype),
                   td_shape_str(t, sb, sizeof sb));
    }
    td_tensor *c = td_contiguous(t);
    tdl_push_tensor(L, c); /* keeps it alive until the call returns */
    return c;
}

/* Up to 4 floats from a table (one per channel); returns 0 when nil. */
static int opt_channels(lua_State *L, int idx, int c, float *out, const char *what) {
    if (lua_isnoneornil(L, idx)) return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)luaL_len(L, idx);
    if (n != c) luaL_error(L, "normalize: %s has %d values for %d channels", what, n, c);
    for (int i = 0; i < c; i++) {
        lua_geti(L, idx, i + 1);
        if (!lua_isnumber(L, -1)) luaL_error(L, "normalize: %s[%d] is not a number", what, i + 1);
        out[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    return 1;
}

/* ---- Source methods ---------------------------------------------------------------------- */
static int src_len(lua_State *L) {
    lua_pushinteger(L, check_source(L, 1)->n);
    return 1;
}

static int src_shape(lua_State *L) {
    td_source *s = check_source(L, 1);
    lua_pushinteger(L, s->c);
    lua_pushinteger(L, s->h);
    lua_pushinteger(L, s->w);
    return 3;
}

static int src_ntasks(lua_State *L) {
    lua_pushinteger(L, check_source(L, 1)->ntasks);
    return 1;
}

static int src_kind(lua_State *L) {
    static const char *const names[] = {"bytes", "files", "cmnist"};
    lua_pushstring(L, names[check_source(L, 1)->kind]);
    return 1;
}

static int src_what(lua_State *L) {
    lua_pushstring(L, check_source(L, 1)->what);
    return 1;
}

static int src_labels(lua_State *L) {
    td_source *s = check_source(L, 1);
    lua_Integer k = luaL_checkinteger(L, 2);
    if (k < 1 || k > s->ntasks) luaL_error(L, "labels: task %d out of range 1..%d", (int)k, s->ntasks);
    int64_t n = s->n;
    return tdl_push_tensor(L, td_from_data(TD_I64, 1, &n, s->labels + (k - 1) * s->n));
}

/* src:fill(ids, mean, std, nthreads) -> x (B, C, H, W), {labels (B) per task} */
static int src_fill(lua_State *L) {
    lua_settop(L, 5); /* fixed argument slots: helpers push below */
    td_source *s = check_source(L, 1);
    td_tensor *ids = opt_ids(L, 2, "batch");
    if (!ids) luaL_argerror(L, 2, "sample ids expected");
    float mean[4], std[4];
    int hm = opt_channels(L, 3, s->c, mean, "mean"), hs = opt_channels(L, 4, s->c, std, "std");
    int nt = (int)luaL_optinteger(L, 5, 1);
    int64_t b = ids->shape[0], xs[4] = {b, s->c, s->h, s->w};
    tdl_push_tensor(L, td_empty(TD_F32, 4, xs));
    td_tensor *x = tdl_check_tensor(L, -1);
    int xi = lua_gettop(L);
    int64_t *lab = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(s->ntasks * b + 1), 0);
    if (td_source_fill(s, td_i64(ids), b, td_f32(x), lab, hm ? mean : NULL, hs ? std : NULL, nt)) return tdl_error(L);
    lua_pushvalue(L, xi);
    lua_createtable(L, s->ntasks, 0);
    for (int k = 0; k < s->ntasks; k++) {
        tdl_push_tensor(L, td_from_data(TD_I64, 1, &b, lab + k * b));
        lua_rawseti(L, -2, k + 1);
    }
    return 2;
}

/* src:stats(ids or nil) -> {mean per channel}, {std per channel} */
static int src_stats(lua_State *L) {
    lua_settop(L, 2); /* fixed argument slots: helpers push below */
    td_source *s = check_source(L, 1);
    td_tensor *ids = opt_ids(L, 2, "stats");
    double mean[4], std[4];
    if (td_source_stats(s, ids ? td_i64(ids) : NULL, ids ? ids->shape[0] : s->n, mean, std, 1)) return tdl_error(L);
    lua_createtable(L, s->c, 0);
    lua_createtable(L, s->c, 0);
    for (int c = 0; c < s->c; c++) {
        lua_pushnumber(L, mean[c]);
        lua_rawseti(L, -3, c + 1);
        lua_pushnumber(L, std[c]);
        lua_rawseti(L, -2, c + 1);
    }
    return 2;
}

static int src_check_labels(lua_State *L) {
    td_source *s = check_source(L, 1);
    lua_Integer k = luaL_checkinteger(L, 2), nc = luaL_checkinteger(L, 3);
    if (td_source_check_labels(s, (int)k - 1, nc)) return tdl_error(L);
    return 0;
}

/* src:save(path, {key = "value"}, nthreads) */
static int src_save(lua_State *L) {
    td_source *s = check_source(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int n = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                luaL_error(L, "cache: %s: metadata must map strings to strings", path);
            n++;
            lua_pop(L, 1);
        }
    }
    int nt = (int)luaL_optinteger(L, 4, 1);
    td_kv *kv = lua_newuserdatauv(L, sizeof(td_kv) * (size_t)(n + 1), 0);
    lua_createtable(L, n, 0); /* keeps converted strings alive */
    int keep = lua_gettop(L), i = 0;
    if (n) {
        lua_pushnil(L);
        while (lua_next(L, 3) && i < n) {
            kv[i].key = (char *)lua_tostring(L, -2);
            lua_pushvalue(L, -1);
            kv[i].value = (char *)lua_tostring(L, -1);
            lua_rawseti(L, keep, i + 1);
            i++;
            lua_pop(L, 1);
        }
    }
    if (td_source_save(s, path, kv, n, nt)) return tdl_error(L);
    return 0;
}

static const luaL_Reg source_methods[] = {
    {"len", src_len},   {"shape", src_shape}, {"ntasks", src_ntasks}, {"kind", src_kind},
    {"what", src_what}, {"labels", src_labels}, {"fill", src_fill},   {"stats", src_stats},
    {"check_labels", src_check_labels}, {"save", src_save}, {"close", source_close}, {NULL, NULL}};

/* ---- constructors -------------------------------------------------------------------------- */
static int l_idx_source(lua_State *L) {
    const char *im = luaL_checkstring(L, 1), *lb = luaL_checkstring(L, 2);
    return push_source(L, td_idx_source(im, lb, luaL_optinteger(L, 3, 0)));
}

static int l_idx_load(lua_State *L) { return tdl_push_tensor(L, td_idx_load(luaL_checkstring(L, 1))); }

/* A Lua array of strings at idx -> const char ** in a userdata pushed on the stack. */
static const char **check_strings(lua_State *L, int idx, int64_t *n) {
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (int64_t)luaL_len(L, idx);
    const char **p = lua_newuserdatauv(L, sizeof(char *) * (size_t)(*n + 1), 0);
    for (int64_t i = 0; i < *n; i++) {
        lua_geti(L, idx, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "entry %d of the path list is not a string", (int)i + 1);
        p[i] = lua_tostring(L, -1); /* the table keeps it alive */
        lua_pop(L, 1);
    }
    return p;
}

static int l_cifar_source(lua_State *L) {
    int64_t n;
    const char **p = check_strings(L, 1, &n);
    return push_source(L, td_cifar_source(p, (int)n, (int)luaL_checkinteger(L, 2)));
}

static int l_synthetic_source(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1), seed = luaL_optinteger(L, 2, 0), scale = luaL_optinteger(L, 3, 1);
    return push_source(L, td_synthetic_source_scaled(n, (uint64_t)seed, (int)scale));
}

static int l_pad_source(lua_State *L) {
    td_source *g = check_source(L, 1);
    return push_source(L, td_pad_source(g, (int)luaL_checkinteger(L, 2), (int)luaL_optinteger(L, 3, 1)));
}

static int l_cmnist_source(lua_State *L) {
    td_source *d = check_source(L, 1);
    return push_source(L, td_cmnist_source(d, (uint64_t)luaL_optinteger(L, 2, 0)));
}

/* files_source(paths, labels (K, N) int64 tensor, c, h, w, what) */
static int l_files_source(lua_State *L) {
    int64_t n;
    const char **p = check_strings(L, 1, &n);
    td_tensor *lab = tdl_check_tensor(L, 2);
    char sb[TD_SHAPE_BUF];
    if (lab->dtype != TD_I64 || lab->ndim != 2 || lab->shape[1] != n)
        luaL_error(L, "files: labels must be an int64 (tasks, %d) tensor, got %s %s", (int)n, td_dtype_name(lab->dtype),
                   td_shape_str(lab, sb, sizeof sb));
    int c = (int)luaL_checkinteger(L, 3), h = (int)luaL_checkinteger(L, 4), w = (int)luaL_checkinteger(L, 5);
    const char *what = luaL_optstring(L, 6, "files");
    td_tensor *lc = td_contiguous(lab);
    if (!lc) return tdl_error(L);
    td_source *s = td_source_new_files(p, n, td_i64(lc), (int)lab->shape[0], c, h, w, what);
    td_release(lc);
    return push_source(L, s);
}

/* bytes_source(images (N, C, H, W) float in [0, 1], labels (K, N) int64, what): values are
 * rounded to bytes. */
static int l_bytes_source(lua_State *L) {
    td_tensor *im = tdl_check_tensor(L, 1), *lab = tdl_check_tensor(L, 2);
    char sb[TD_SHAPE_BUF], sb2[TD_SHAPE_BUF];
    if (im->dtype != TD_F32 || im->ndim != 4 || lab->dtype != TD_I64 || lab->ndim != 2 || lab->shape[1] != im->shape[0])
        luaL_error(L, "from_tensors: images must be float (N, C, H, W) and labels int64 (tasks, N); got %s %s and %s %s",
                   td_dtype_name(im->dtype), td_shape_str(im, sb, sizeof sb), td_dtype_name(lab->dtype),
                   td_shape_str(lab, sb2, sizeof sb2));
    td_tensor *ic = td_contiguous(im);
    if (!ic) return tdl_error(L);
    tdl_push_tensor(L, ic);
    td_tensor *lc = td_contiguous(lab);
    if (!lc) return tdl_error(L);
    tdl_push_tensor(L, lc);
    td_source *s = td_source_new_bytes(im->shape[0], (int)im->shape[1], (int)im->shape[2], (int)im->shape[3],
                                       (int)lab->shape[0], luaL_optstring(L, 3, "tensors"));
    if (!s) return tdl_error(L);
    int64_t np = td_numel(im);
    const float *f = td_f32(ic);
    for (int64_t i = 0; i < np; i++) {
        float v = f[i] * 255 + 0.5f;
        s->pixels[i] = v != v || v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
    }
    if (td_numel(lab)) memcpy(s->labels, td_i64(lc), sizeof(int64_t) * (size_t)td_numel(lab));
    return push_source(L, s);
}

static int l_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    td_kv *kv = NULL;
    int nkv = 0;
    td_source *s = td_source_open(path, &kv, &nkv);
    if (!s) return tdl_error(L);
    push_source(L, s);
    lua_createtable(L, 0, nkv);
    for (int i = 0; i < nkv; i++) {
        lua_pushstring(L, kv[i].value);
        lua_setfield(L, -2, kv[i].key);
    }
    td_kv_free(kv, nkv); /* lua_pushstring can only fail on memory: accepted leak then */
    return 2;
}

/* celeba_read(attr_path, partition_path, split) -> {image names}, labels (K, n) int64, {attribute names} */
static int l_celeba_read(lua_State *L) {
    const char *a = luaL_checkstring(L, 1), *p = luaL_checkstring(L, 2);
    int split = (int)luaL_checkinteger(L, 3);
    td_celeba c;
    if (td_celeba_read(a, p, split, &c)) return tdl_error(L);
    int64_t shape[2] = {c.nattr, c.n};
    td_tensor *lab = td_from_data(TD_I64, 2, shape, c.labels);
    if (!lab) {
        td_celeba_free(&c);
        return tdl_error(L);
    }
    /* from here only memory errors can interrupt: the names are copied into Lua first */
    lua_createtable(L, (int)c.n, 0);
    for (int64_t i = 0; i < c.n; i++) {
        lua_pushstring(L, c.images[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_createtable(L, c.nattr, 0);
    for (int k = 0; k < c.nattr; k++) {
        lua_pushstring(L, c.attr_names[k]);
        lua_rawseti(L, -2, k + 1);
    }
    td_celeba_free(&c);
    tdl_push_tensor(L, lab);
    lua_insert(L, -2);
    return 3;
}

/* ---- images --------------------------------------------------------------------------------- */
static int l_image_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int ch = (int)luaL_optinteger(L, 2, 0), h = (int)luaL_optinteger(L, 3, 0), w = (int)luaL_optinteger(L, 4, 0);
    return tdl_push_tensor(L, td_image_load(path, ch, h, w));
}

static int l_image_info(lua_State *L) {
    int h, w, c;
    if (td_image_info(luaL_checkstring(L, 1), &h, &w, &c)) return tdl_error(L);
    lua_pushinteger(L, h);
    lua_pushinteger(L, w);
    lua_pushinteger(L, c);
    return 3;
}

static int l_resize(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    return tdl_push_tensor(L, td_image_resize(t, luaL_checkinteger(L, 2), luaL_checkinteger(L, 3)));
}

static int l_save_png(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (td_image_save_png(path, tdl_check_tensor(L, 2))) return tdl_error(L);
    return 0;
}

/* png_encode(w, h, pix) -> the PNG file's bytes: pix is a canvas's table of w * h packed
 * 0xRRGGBB integers, row by row (tdrl.plot.canvas) */
static int l_png_encode(lua_State *L) {
    lua_Integer w = luaL_checkinteger(L, 1), h = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (w < 1 || h < 1 || w > 1 << 15 || h > 1 << 15)
        return luaL_error(L, "png_encode: size %dx%d (1 to 32768 a side)", (int)w, (int)h);
    size_t n = (size_t)(w * h);
    uint8_t *px = lua_newuserdatauv(L, 3 * n, 0); /* freed by the collector, even on an error */
    for (size_t i = 0; i < n; i++) {
        lua_Integer c = (lua_rawgeti(L, 3, (lua_Integer)i + 1), lua_tointeger(L, -1));
        lua_pop(L, 1);
        px[3 * i] = (uint8_t)(c >> 16), px[3 * i + 1] = (uint8_t)(c >> 8), px[3 * i + 2] = (uint8_t)c;
    }
    size_t len;
    uint8_t *png = td_png_encode(px, (int)w, (int)h, 3, &len);
    if (!png) return tdl_error(L);
    lua_pushlstring(L, (const char *)png, len);
    free(png);
    return 1;
}

static int l_grid(lua_State *L) {
    td_tensor *t = tdl_check_tensor(L, 1);
    int nrow = (int)luaL_optinteger(L, 2, 8), pad = (int)luaL_optinteger(L, 3, 2);
    float v = (float)luaL_optnumber(L, 4, 1.0);
    return tdl_push_tensor(L, td_image_grid(t, nrow, pad, v));
}

/* palette() -> {{r, g, b} bytes, ...}, {names}; shapes() -> {names}; shape_mask(k) -> (7, 7) float */
static int l_palette(lua_State *L) {
    lua_createtable(L, TD_PALETTE_SIZE, 0);
    lua_createtable(L, TD_PALETTE_SIZE, 0);
    for (int i = 0; i < TD_PALETTE_SIZE; i++) {
        lua_createtable(L, 3, 0);
        for (int c = 0; c < 3; c++) {
            lua_pushinteger(L, td_palette[i][c]);
            lua_rawseti(L, -2, c + 1);
        }
        lua_rawseti(L, -3, i + 1);
        lua_pushstring(L, td_palette_names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 2;
}

static int l_shapes(lua_State *L) {
    lua_createtable(L, TD_SHAPES, 0);
    for (int i = 0; i < TD_SHAPES; i++) {
        lua_pushstring(L, td_shape_names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_shape_mask(lua_State *L) {
    lua_Integer k = luaL_checkinteger(L, 1);
    const uint8_t *m = td_shape_mask((int)k);
    if (!m) luaL_error(L, "shape_mask: shape %d out of range 0..%d", (int)k, TD_SHAPES - 1);
    int64_t shape[2] = {TD_SHAPE_SIZE, TD_SHAPE_SIZE};
    td_tensor *t = td_empty(TD_F32, 2, shape);
    if (t)
        for (int i = 0; i < TD_SHAPE_SIZE * TD_SHAPE_SIZE; i++) td_f32(t)[i] = m[i];
    return tdl_push_tensor(L, t);
}

/* ---- the loader ----------------------------------------------------------------------------- */
static loader_box *check_loader(lua_State *L, int idx) {
    loader_box *b = luaL_checkudata(L, idx, LOADER_MT);
    if (!b->l) luaL_argerror(L, idx, "loader was closed");
    return b;
}

static int loader_close(lua_State *L) {
    loader_box *b = luaL_checkudata(L, 1, LOADER_MT);
    td_loader_free(b->l);
    b->l = NULL;
    return 0;
}

/* loader(src, ids or nil, batch, drop_last, mean, std, prefetch, nthreads) */
static int l_loader(lua_State *L) {
    lua_settop(L, 8); /* fixed argument slots: helpers push below */
    td_source *s = check_source(L, 1);
    td_tensor *ids = opt_ids(L, 2, "loader");
    lua_Integer batch = luaL_checkinteger(L, 3);
    int drop = lua_toboolean(L, 4);
    float mean[4], std[4];
    int hm = opt_channels(L, 5, s->c, mean, "mean"), hs = opt_channels(L, 6, s->c, std, "std");
    int pre = lua_isnoneornil(L, 7) ? 1 : lua_toboolean(L, 7);
    int nt = (int)luaL_optinteger(L, 8, 1);
    loader_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->l = NULL;
    b->ntasks = s->ntasks;
    luaL_setmetatable(L, LOADER_MT);
    b->l = td_loader_new(s, ids ? td_i64(ids) : NULL, ids ? ids->shape[0] : s->n, batch, drop, hm ? mean : NULL,
                         hs ? std : NULL, pre, nt);
    if (!b->l) return tdl_error(L);
    return 1;
}

static int loader_start(lua_State *L) {
    lua_settop(L, 2); /* fixed argument slots: helpers push below */
    loader_box *b = check_loader(L, 1);
    td_tensor *perm = opt_ids(L, 2, "loader");
    if (td_loader_start(b->l, perm ? td_i64(perm) : NULL, perm ? perm->shape[0] : 0)) return tdl_error(L);
    return 0;
}

/* -> x, {labels per task}; nothing at the end of the epoch */
static int loader_next(lua_State *L) {
    loader_box *b = check_loader(L, 1);
    td_tensor *x, *lab[TD_SRC_MAX_TASKS];
    int rc = td_loader_next(b->l, &x, lab);
    if (rc < 0) return tdl_error(L);
    if (rc == 0) return 0;
    /* push everything; tdl_push_tensor only fails on memory, and then the rest leak */
    tdl_push_tensor(L, x);
    lua_createtable(L, b->ntasks, 0);
    for (int k = 0; k < b->ntasks; k++) {
        tdl_push_tensor(L, lab[k]);
        lua_rawseti(L, -2, k + 1);
    }
    return 2;
}

static int loader_batches(lua_State *L) {
    lua_pushinteger(L, td_loader_num_batches(check_loader(L, 1)->l));
    return 1;
}

static const luaL_Reg loader_methods[] = {
    {"start", loader_start}, {"next", loader_next}, {"batches", loader_batches}, {"close", loader_close}, {NULL, NULL}};

/* ---- file system helpers (no lfs in plain Lua) --------------------------------------------- */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* listdir(path) -> sorted {names}, {kind per name: "file", "dir" or "other"}; nil, message if unreadable */
static int l_listdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    size_t cap = 64, n = 0;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    int oom = !names;
    while (!oom && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* ., .. and hidden files */
        if (n == cap) {
            char **nn = realloc(names, 2 * cap * sizeof *names);
            if (!nn) {
                oom = 1;
                break;
            }
            names = nn;
            cap *= 2;
        }
        size_t len = strlen(e->d_name) + 1;
        if (!(names[n] = malloc(len))) {
            oom = 1;
            break;
        }
        memcpy(names[n++], e->d_name, len);
    }
    closedir(d);
    if (oom) {
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        return luaL_error(L, "listdir: %s: out of memory", path);
    }
    qsort(names, n, sizeof *names, cmp_str);
    /* copy into Lua tables; the C strings are freed before any Lua error can happen below */
    char *full = NULL;
    size_t plen = strlen(path);
    int ok = 1;
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const char *kind = "other";
        char *nf = realloc(full, plen + strlen(names[i]) + 2);
        if (nf) {
            full = nf;
            sprintf(full, "%s/%s", path, names[i]);
            struct stat st;
            if (stat(full, &st) == 0) kind = S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other";
        } else {
            ok = 0;
        }
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        lua_pushstring(L, kind);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        free(names[i]);
    }
    free(names);
    free(full);
    if (!ok) return luaL_error(L, "listdir: out of memory");
    return 2;
}

/* stat(path) -> size, mtime, kind  or nil, message */
static int l_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_pushinteger(L, (lua_Integer)st.st_mtime);
    lua_pushstring(L, S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other");
    return 3;
}

/* mkdir_p(path): creates path and its parents; raises an error naming the part that failed. */
static int l_mkdir_p(lua_State *L) {
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    char *p = lua_newuserdatauv(L, len + 1, 0);
    memcpy(p, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char keep = p[i];
        p[i] = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return luaL_error(L, "mkdir: %s: %s", p, strerror(errno));
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) return luaL_error(L, "mkdir: %s exists and is not a folder", p);
        p[i] = keep;
    }
    return 0;
}

static const luaL_Reg data_functions[] = {
    {"idx_source", l_idx_source},
    {"idx_load", l_idx_load},
    {"cifar_source", l_cifar_source},
    {"synthetic_source", l_synthetic_source},
    {"cmnist_source", l_cmnist_source},
    {"pad_source", l_pad_source},
    {"files_source", l_files_source},
    {"bytes_source", l_bytes_source},
    {"open", l_open},
    {"celeba_read", l_celeba_read},
    {"image_load", l_image_load},
    {"image_info", l_image_info},
    {"resize", l_resize},
    {"save_png", l_save_png},
    {"png_encode", l_png_encode},
    {"grid", l_grid},
    {"palette", l_palette},
    {"shapes", l_shapes},
    {"shape_mask", l_shape_mask},
    {"loader", l_loader},
    {"listdir", l_listdir},
    {"stat", l_stat},
    {"mkdir_p", l_mkdir_p},
    {NULL, NULL},
};

void tdl_register_data(lua_State *L) {
    luaL_newmetatable(L, SOURCE_MT);
    luaL_newlib(L, source_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, source_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, source_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    luaL_newmetatable(L, LOADER_MT);
    luaL_newlib(L, loader_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, loader_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, loader_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    luaL_newlib(L, data_functions);
    lua_setfield(L, -2, "_data");
}
