/* Compiling a Jupyter cell. A cell runs like a REPL chunk (`return <code>` first, so that an
 * expression shows its value); a cell whose last line, or last statement after a ';', is an
 * expression shows that value as IPython does (`m = nn.Linear(2, 3); m`); a trailing ';' keeps
 * it quiet. The splitting is chunk.c's (the REPL does the same); a syntax error is always
 * reported from the user's code as typed, never from the wrapper. */
#define TDRL_KERNEL_INTERNAL
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "kernel.h"

int kcell_is_quiet(const char *s, size_t n) {
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    return n > 0 && s[n - 1] == ';';
}

int kcell_load_expression(lua_State *L, const char *code, size_t len, const char *chunk) {
    return host_chunk_load_return(L, code, len, 0, chunk);
}

int kcell_compile(lua_State *L, const char *code, size_t len, const char *chunk) {
    int quiet = kcell_is_quiet(code, len); /* "x;" runs quietly: no last expression to find */
    size_t rlen = len; /* the return form without the trailing ';' ("return f(x;)" is no Lua) */
    if (quiet) {
        while (rlen > 0 && code[rlen - 1] != ';') rlen--;
        rlen--;
    }
    if (host_chunk_load_return(L, code, rlen, 0, chunk) == LUA_OK) return LUA_OK;
    lua_pop(L, 1);
    int status = luaL_loadbuffer(L, code, len, chunk);
    if (status == LUA_OK) {
        if (!quiet && host_chunk_last_expression(L, code, len, chunk, 1)) lua_remove(L, -2);
        return LUA_OK;
    }
    lua_pop(L, 1);
    /* "x = 1; x;": the value is computed and kept quiet */
    if (status == LUA_ERRSYNTAX && host_chunk_last_expression(L, code, rlen, chunk, 0)) return LUA_OK;
    status = host_chunk_error(L, code, len, chunk);
    if (status == LUA_OK) { /* compiles after all (a form the wrapper cannot take) */
        status = host_chunk_compile(L, code, len, chunk);
        if (status == HOST_CHUNK_INCOMPLETE) status = host_chunk_error(L, code, len, chunk);
    }
    return status;
}
