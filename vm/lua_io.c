/* Lua bindings of the file readers and writers:
 *   T.save(path, {name = tensor, ...} [, {key = "value", ...}])   -- names written sorted
 *   local tensors, meta = T.load(path)                            -- name -> tensor, key -> string
 *   T.save_npy(path, tensor); local t = T.load_npy(path)
 * Errors are Lua errors carrying the core's message. */
#include <stdlib.h>
#include <string.h>

#include "bind.h"

#define TDL_IO_HOLDER_MT "tdrl.io.loaded"

/* Owns the arrays td_safetensors_load returned until they are handed to Lua, so that a Lua
 * error (out of memory) in between frees them through __gc. */
typedef struct {
    td_named *ts;
    int n;
    td_kv *kv;
    int nkv;
} io_holder;

static void holder_clear(io_holder *h) {
    td_named_free(h->ts, h->n);
    td_kv_free(h->kv, h->nkv);
    h->ts = NULL;
    h->kv = NULL;
    h->n = h->nkv = 0;
}

static int holder_gc(lua_State *L) {
    holder_clear(luaL_checkudata(L, 1, TDL_IO_HOLDER_MT));
    return 0;
}

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const td_named *)a)->name, ((const td_named *)b)->name);
}

static int cmp_kv(const void *a, const void *b) { return strcmp(((const td_kv *)a)->key, ((const td_kv *)b)->key); }

/* A string key of a table being traversed (no conversion: that would break lua_next). */
static const char *check_key(lua_State *L, const char *what, const char *path) {
    if (lua_type(L, -2) != LUA_TSTRING) {
        if (lua_type(L, -2) == LUA_TNUMBER)
            luaL_error(L, "save: %s: %s must be keyed by names, not a list (found key %s)", path, what,
                       luaL_tolstring(L, -2, NULL));
        luaL_error(L, "save: %s: %s keys must be strings, found a %s", path, what, luaL_typename(L, -2));
    }
    size_t len;
    const char *k = lua_tolstring(L, -2, &len);
    if (strlen(k) != len) luaL_error(L, "save: %s: %s key contains a NUL byte", path, what);
    return k;
}

static int l_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_meta = !lua_isnoneornil(L, 3);
    if (has_meta) luaL_checktype(L, 3, LUA_TTABLE);

    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        check_key(L, "the tensor table", path);
        if (!tdl_opt_tensor(L, -1))
            luaL_error(L, "save: %s: value of '%s' is a %s, not a tensor", path, lua_tostring(L, -2),
                       luaL_typename(L, -1));
        n++;
        lua_pop(L, 1);
    }
    /* Arrays live in userdata so an error anywhere below frees them. Names and tensors are
     * borrowed from the argument tables, which stay on the stack. */
    td_named *ts = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ts, 0);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2) && i < n) {
        ts[i].name = (char *)lua_tostring(L, -2);
        ts[i].t = tdl_check_tensor(L, -1);
        i++;
        lua_pop(L, 1);
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp_named);

    int nm = 0;
    td_kv *kv = NULL;
    if (has_meta) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            check_key(L, "metadata", path);
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && t != LUA_TNUMBER)
                luaL_error(L, "save: %s: metadata value of '%s' is a %s, not a string", path, lua_tostring(L, -2),
                           luaL_typename(L, -1));
            nm++;
            lua_pop(L, 1);
        }
        kv = lua_newuserdatauv(L, (size_t)(nm ? nm : 1) * sizeof *kv, 0);
        /* Values converted from numbers must stay alive: keep them in a table. */
        lua_newtable(L);
        int keep = lua_gettop(L);
        i = 0;
        lua_pushnil(L);
        while (lua_next(L, 3) && i < nm) {
            kv[i].key = (char *)lua_tostring(L, -2);
            size_t len;
            const char *v = lua_tolstring(L, -1, &len); /* converts the copy on the stack only */
            if (strlen(v) != len) luaL_error(L, "save: %s: metadata value of '%s' contains a NUL byte", path, kv[i].key);
            kv[i].value = (char *)v;
            lua_pushvalue(L, -1);
            lua_rawseti(L, keep, i + 1);
            i++;
            lua_pop(L, 1);
        }
        qsort(kv, (size_t)nm, sizeof *kv, cmp_kv);
    }
    if (td_safetensors_save(path, ts, n, kv, nm) != 0) return tdl_error(L);
    return 0;
}

static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    io_holder *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, TDL_IO_HOLDER_MT);
    if (td_safetensors_load(path, &h->ts, &h->n, &h->kv, &h->nkv) != 0) return tdl_error(L);
    lua_createtable(L, 0, h->n);
    for (int i = 0; i < h->n; i++) {
        td_tensor *t = h->ts[i].t;
        h->ts[i].t = NULL; /* ownership passes to the userdata */
        tdl_push_tensor(L, t);
        lua_setfield(L, -2, h->ts[i].name);
    }
    lua_createtable(L, 0, h->nkv);
    for (int i = 0; i < h->nkv; i++) {
        lua_pushstring(L, h->kv[i].value);
        lua_setfield(L, -2, h->kv[i].key);
    }
    holder_clear(h); /* frees the names and metadata strings now */
    return 2;
}

static int l_save_npy(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    td_tensor *t = tdl_check_tensor(L, 2);
    if (td_npy_save(path, t) != 0) return tdl_error(L);
    return 0;
}

static int l_load_npy(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    return tdl_push_tensor(L, td_npy_load(path));
}

void tdl_register_io(lua_State *L) {
    if (luaL_newmetatable(L, TDL_IO_HOLDER_MT)) {
        lua_pushcfunction(L, holder_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"save", l_save},
        {"load", l_load},
        {"save_npy", l_save_npy},
        {"load_npy", l_load_npy},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
