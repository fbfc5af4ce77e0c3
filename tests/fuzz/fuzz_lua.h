/* For the readers written in Lua (checkpoints, trajectory files): one Lua state per fuzzer
 * process with the tdrl bindings preloaded and the library's own lua/ folder on the path.
 * FUZZ_LUA_SETUP defines fuzz_one(path), which loads the file and returns nil or the error
 * message. A message from Lua itself ("attempt to index a nil value", "bad argument #2 to
 * 'unpack'") means a reader let damage through unchecked: that is a finding too. */
#ifndef TDRL_FUZZ_LUA_H
#define TDRL_FUZZ_LUA_H
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"

int luaopen_tdrl_core(lua_State *L);
static lua_State *fuzz_L;

static void fuzz_lua_init(const char *setup) {
    fuzz_L = luaL_newstate();
    luaL_openlibs(fuzz_L);
    luaL_getsubtable(fuzz_L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(fuzz_L, luaopen_tdrl_core);
    lua_setfield(fuzz_L, -2, "tdrl.core");
    lua_pop(fuzz_L, 1);
    lua_getglobal(fuzz_L, "package");
    lua_pushstring(fuzz_L, TDRL_LUA_DIR "/?.lua;" TDRL_LUA_DIR "/?/init.lua");
    lua_setfield(fuzz_L, -2, "path");
    lua_pop(fuzz_L, 1);
    if (luaL_dostring(fuzz_L, setup) != LUA_OK) {
        fprintf(stderr, "fuzz setup: %s\n", lua_tostring(fuzz_L, -1));
        abort();
    }
}

/* Whether msg holds one of Lua's own messages: "<chunk>.lua:<line>: attempt to ..." or
 * "bad argument #<n> to" (plain substrings could come from names in the fuzzed file). */
static int lua_own_error(const char *msg) {
    for (const char *p = strstr(msg, ".lua:"); p; p = strstr(p + 1, ".lua:")) {
        const char *q = p + 5;
        if (*q < '0' || *q > '9') continue;
        while (*q >= '0' && *q <= '9') q++;
        if (strncmp(q, ": attempt to ", 13) == 0) return 1;
    }
    for (const char *p = strstr(msg, "bad argument #"); p; p = strstr(p + 1, "bad argument #")) {
        const char *q = p + 14;
        if (*q < '0' || *q > '9') continue;
        while (*q >= '0' && *q <= '9') q++;
        if (strncmp(q, " to '", 5) == 0) return 1;
    }
    return 0;
}

static void fuzz_lua_run(const char *name, const uint8_t *data, size_t size) {
    const char *p = fuzz_file(name, data, size);
    lua_getglobal(fuzz_L, "fuzz_one");
    lua_pushstring(fuzz_L, p);
    if (lua_pcall(fuzz_L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_one raised: %s\n", lua_tostring(fuzz_L, -1));
        abort();
    }
    const char *err = lua_tostring(fuzz_L, -1);
    if (err && lua_own_error(err)) {
        fprintf(stderr, "an unchecked error from Lua itself: %s\n", err);
        abort();
    }
    if (err && !strstr(err, p)) { /* every error about a file names it */
        fprintf(stderr, "an error that does not name the file %s: %s\n", p, err);
        abort();
    }
    lua_settop(fuzz_L, 0);
    lua_gc(fuzz_L, LUA_GCCOLLECT, 0);
}
#endif
