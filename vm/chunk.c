/* Compiling a chunk of typed code as lua.c does (`return <code>` first, then the statements),
 * with one answer to "is this complete?": the REPL's continuation prompt and the kernel's
 * is_complete_request must never disagree, so both come from here. A chunk whose last line, or
 * last statement after a ';', is an expression (`x = 1; x`) is complete and shows that value,
 * as IPython does.
 *
 * That value passes through a call, `return __tdrl_values(<expr>)`, not a bare `return f(x)`:
 * a tail call would drop from a traceback the frames of the functions the last line called.
 * The closing parenthesis goes on the expression's own line (a trailing comment is cut off
 * first), so that a runtime error on that line reports the user's own line number. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

/* Is the syntax error message on the stack top one that more input could fix? */
static int ends_early(lua_State *L) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    static const char mark[] = "<eof>";
    size_t ml = sizeof mark - 1;
    return msg && len >= ml && strcmp(msg + len - ml, mark) == 0;
}

/* A statement starts with a name, '(', ';', '::' or a comment; code starting otherwise
 * ("1 +* 2", "{1,") was meant as an expression, and the return form's message says more. */
static int starts_statement(const char *buf, size_t len) {
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
    if (i == len) return 1;
    int c = (unsigned char)buf[i];
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '(' || c == ';' || c == ':' ||
           (c == '-' && i + 1 < len && buf[i + 1] == '-');
}

static int load_return(lua_State *L, const char *buf, size_t len, const char *name) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "return ");
    luaL_addlstring(&b, buf, len);
    luaL_pushresult(&b);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    int status = luaL_loadbuffer(L, s, n, name);
    lua_remove(L, -2);
    return status;
}

int host_chunk_compile(lua_State *L, const char *buf, size_t len, const char *name) {
    int ret_status = load_return(L, buf, len, name);
    if (ret_status == LUA_OK) return LUA_OK;
    int ret_early = ret_status == LUA_ERRSYNTAX && ends_early(L);
    int status = luaL_loadbuffer(L, buf, len, name);
    if (status == LUA_OK) {
        lua_remove(L, -2);
        return LUA_OK;
    }
    if (status == LUA_ERRSYNTAX && (ends_early(L) || ret_early)) {
        lua_pop(L, 2);
        return HOST_CHUNK_INCOMPLETE;
    }
    if (starts_statement(buf, len)) {
        lua_remove(L, -2);
        return status;
    }
    lua_pop(L, 1);
    return ret_status;
}

/* The end of the code on the line that starts at `s` (before `end`), leaving out a trailing
 * "--" comment found outside quoted strings; *semis gets the positions just after each ';'
 * outside strings (at most max). A long string or comment ([[ ]]) is not followed: a wrong
 * cut there only makes a compile fail, and the next form is tried. */
static size_t line_code_end(const char *code, size_t s, size_t end, size_t *semis, int *n_semis, int max) {
    char q = 0;
    *n_semis = 0;
    for (size_t i = s; i < end; i++) {
        char c = code[i];
        if (q) {
            if (c == '\\') i++;
            else if (c == q) q = 0;
        } else if (c == '"' || c == '\'') {
            q = c;
        } else if (c == '-' && i + 1 < end && code[i + 1] == '-') {
            return i;
        } else if (c == ';' && *n_semis < max) {
            semis[(*n_semis)++] = i + 1;
        }
    }
    return end;
}

int host_chunk_load_return(lua_State *L, const char *code, size_t len, size_t at, const char *chunk) {
    static const char head[] = "local __tdrl_values = function(...) return ... end; ",
                      ret[] = "return __tdrl_values(";
    size_t ls = len;
    while (ls > at && code[ls - 1] != '\n') ls--; /* the start of the last line */
    size_t semis[1];
    int n_semis;
    size_t cut = line_code_end(code, ls > at ? ls : at, len, semis, &n_semis, 0);
    for (int form = 0; form < 2; form++) {
        /* form 0: ')' on the last line (its comment cut off); form 1: ')' on a line of its own */
        size_t body = form == 0 ? cut : len;
        const char *tail = form == 0 ? ")" : "\n)";
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, head);
        luaL_addlstring(&b, code, at);
        luaL_addstring(&b, ret);
        luaL_addlstring(&b, code + at, body - at);
        luaL_addstring(&b, tail);
        luaL_pushresult(&b);
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        int status = luaL_loadbuffer(L, s, n, chunk);
        lua_remove(L, -2);
        if (status == LUA_OK || form == 1 || cut == len) return status;
        lua_pop(L, 1);
    }
    return LUA_ERRSYNTAX; /* not reached */
}

static int is_name_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Tries `code` with `return` before byte p. Pushes the function and returns 1, or 0 with the
 * stack unchanged. */
static int try_split(lua_State *L, const char *code, size_t len, size_t p, const char *chunk, int ident_only) {
    while (p < len && (code[p] == ' ' || code[p] == '\t' || code[p] == '\r')) p++;
    if (p >= len || code[p] == '\n' || (code[p] == '-' && p + 1 < len && code[p + 1] == '-')) return 0;
    if (ident_only && !is_name_start((unsigned char)code[p])) return 0;
    if (host_chunk_load_return(L, code, len, p, chunk) == LUA_OK) return 1;
    lua_pop(L, 1);
    return 0;
}

int host_chunk_last_expression(lua_State *L, const char *code, size_t len, const char *chunk, int ident_only) {
    int tries = 0;
    size_t end = len;
    while (tries < 64) {
        size_t s = end;
        while (s > 0 && code[s - 1] != '\n') s--;
        size_t semis[16];
        int n_semis;
        line_code_end(code, s, end, semis, &n_semis, 16);
        for (int k = n_semis - 1; k >= 0 && tries < 64; k--, tries++)
            if (try_split(L, code, len, semis[k], chunk, ident_only)) return 1;
        if (s == 0) break; /* the whole cell: already tried */
        tries++;
        if (try_split(L, code, len, s, chunk, ident_only)) return 1;
        end = s - 1;
    }
    return 0;
}

int host_chunk_error(lua_State *L, const char *buf, size_t len, const char *name) {
    int ret_status = load_return(L, buf, len, name);
    int status = luaL_loadbuffer(L, buf, len, name);
    if (ret_status == LUA_OK || status == LUA_OK) { /* nothing wrong after all */
        lua_pop(L, 2);
        return LUA_OK;
    }
    if (starts_statement(buf, len)) {
        lua_remove(L, -2);
        return status;
    }
    lua_pop(L, 1);
    return ret_status;
}

const char *host_chunk_state(lua_State *L, const char *buf, size_t len) {
    int top = lua_gettop(L);
    int status = host_chunk_compile(L, buf, len, "=chunk");
    if (status == HOST_CHUNK_INCOMPLETE && host_chunk_last_expression(L, buf, len, "=chunk", 0)) status = LUA_OK;
    lua_settop(L, top);
    return status == LUA_OK ? "complete" : status == HOST_CHUNK_INCOMPLETE ? "incomplete" : "invalid";
}
