/* os.execute as the host wraps it, in every mode (batch, REPL, kernel):
 * - C's stdout is flushed first, so that a partial line written before a program runs comes out
 *   before the program's own output (in the kernel both go through one pipe);
 * - a program stopped by Ctrl-C stops the calling Lua code too. While system() waits, SIGINT is
 *   ignored in this process (glibc), so the terminal's Ctrl-C kills only the child: a loop that
 *   runs programs would go on with the next one, press after press. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

static int l_execute(lua_State *L) {
    fflush(NULL);
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    if (lua_gettop(L) >= 3 && lua_isnil(L, 1) && lua_type(L, 2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, 2), "signal") == 0 && lua_tointeger(L, 3) == SIGINT) {
        host_interrupted = 1; /* batch mode exits with 130, as for a Ctrl-C in Lua code */
        return luaL_error(L, "os.execute: interrupted (the program was stopped by Ctrl-C)");
    }
    return lua_gettop(L);
}

void host_wrap_execute(lua_State *L) {
    if (lua_getglobal(L, "os") != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "execute");
    lua_pushcclosure(L, l_execute, 1);
    lua_setfield(L, -2, "execute");
    lua_pop(L, 1);
}
