/* Tab completion for the REPL: globals and keywords; fields along a dotted chain (`a.b.c<TAB>`)
 * and methods after a colon (`x:ma<TAB>`, functions only). Fields are gathered from the value
 * itself when it is a table and through its metatable: `__index` when it is a table (followed a
 * few levels) and `__methods` (the tensor metatable keeps its method table there, its `__index`
 * being a C function) and `__fields` (names an `__index` function serves: a tensor's grad,
 * shape, requires_grad). After a subscript (`lst[1].na`, `cfg["m"].x`) the chain goes on
 * from the subscripted value; after a call (`x:size():`) nothing completes, since that would
 * mean running the call. Inside a string literal, file names complete.
 *
 * Everything that touches Lua runs inside one lua_pcall, so completion never raises; the chain
 * is walked with ordinary indexing (an `__index` function may run), the candidates are read
 * with raw access only.
 */
#include <stdlib.h>
#include <string.h>

#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

#define MAX_DEPTH 5      /* __index / __methods levels followed */
#define MAX_MATCHES 4096

static lua_State *comp_L;

static const char *const keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
};

static int is_keyword(const char *s, size_t n) {
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
        if (strlen(keywords[i]) == n && memcmp(keywords[i], s, n) == 0) return 1;
    return 0;
}

static int is_ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_ident_char(int c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

static int is_name(const char *s, size_t n) {
    if (n == 0 || !is_ident_start((unsigned char)s[0])) return 0;
    for (size_t i = 1; i < n; i++)
        if (!is_ident_char((unsigned char)s[i])) return 0;
    return !is_keyword(s, n);
}

/* ---- collecting candidates (inside lua_pcall) --------------------------------------------- */

/* Adds to the set at index `set` (name -> true) every string key of the table at `t` that is
 * an identifier starting with `partial` (with a function value when `funcs_only`). */
static void add_table_keys(lua_State *L, int t, int set, const char *partial, size_t plen,
                           int funcs_only) {
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        size_t kl;
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tolstring(L, -2, &kl);
            if (kl >= plen && memcmp(k, partial, plen) == 0 && is_name(k, kl) &&
                (!funcs_only || lua_type(L, -1) == LUA_TFUNCTION)) {
                lua_pushvalue(L, -2);
                lua_pushboolean(L, 1);
                lua_rawset(L, set);
            }
        }
        lua_pop(L, 1);
    }
}

/* Candidates from the value at `v`: its own keys (a table) and what its metatable offers. */
static void add_fields(lua_State *L, int v, int set, const char *partial, size_t plen,
                       int funcs_only, int depth) {
    if (depth > MAX_DEPTH) return;
    luaL_checkstack(L, 8, NULL);
    v = lua_absindex(L, v);
    if (lua_type(L, v) == LUA_TTABLE) add_table_keys(L, v, set, partial, plen, funcs_only);
    if (!lua_getmetatable(L, v)) return;
    int mt = lua_gettop(L);
    if (lua_getfield(L, mt, "__methods") == LUA_TTABLE) /* raw enough: metatables rarely have one */
        add_fields(L, -1, set, partial, plen, funcs_only, depth + 1);
    lua_pop(L, 1);
    /* fields an __index function serves (a tensor's grad, shape, requires_grad, ...) */
    if (!funcs_only) {
        if (lua_getfield(L, mt, "__fields") == LUA_TTABLE) add_table_keys(L, lua_gettop(L), set, partial, plen, 0);
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "__index");
    if (lua_rawget(L, mt) == LUA_TTABLE && !lua_rawequal(L, -1, v))
        add_fields(L, -1, set, partial, plen, funcs_only, depth + 1);
    lua_pop(L, 2);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Completion state between the pcall'd collector and readline's generator. */
static char **found = NULL;
static int n_found = 0, next_found = 0;
static int found_keyword = 0; /* the single match is a keyword: append a space */

static void clear_found(void) {
    for (int i = next_found; i < n_found; i++) free(found[i]);
    free(found);
    found = NULL;
    n_found = next_found = 0;
}

/* Walks the chain `c` (n bytes) from the globals: names joined by '.', and subscripts with an
 * integer or a quoted string key (`lst[1].b`, `cfg["model"]`). Leaves the value on the stack
 * and returns 1, or returns 0 (with nothing to complete) on anything else: a call, an
 * expression subscript, a ':' before the end. Inside collect's lua_pcall. */
static int walk_chain(lua_State *L, const char *c, size_t n) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    size_t i = 0;
    int first = 1;
    while (i < n) {
        int t = lua_type(L, -1);
        if (t != LUA_TTABLE && t != LUA_TUSERDATA && t != LUA_TSTRING) return 0;
        if (c[i] == '[') {
            size_t j = i + 1;
            if (j < n && (c[j] == '"' || c[j] == '\'')) { /* ["key"] */
                char q = c[j];
                size_t k = j + 1;
                while (k < n && c[k] != q && c[k] != '\\') k++;
                if (k + 1 >= n || c[k] != q || c[k + 1] != ']') return 0;
                lua_pushlstring(L, c + j + 1, k - j - 1);
                i = k + 2;
            } else { /* [integer] */
                size_t k = j;
                while (k < n && c[k] >= '0' && c[k] <= '9') k++;
                if (k == j || k >= n || c[k] != ']') return 0;
                lua_pushinteger(L, strtoll(c + j, NULL, 10));
                i = k + 1;
            }
        } else {
            if (!first) {
                if (c[i] != '.') return 0;
                i++;
            }
            size_t e = i;
            while (e < n && is_ident_char((unsigned char)c[e])) e++;
            if (!is_name(c + i, e - i)) return 0;
            lua_pushlstring(L, c + i, e - i);
            i = e;
        }
        lua_gettable(L, -2);
        lua_remove(L, -2);
        first = 0;
    }
    return !lua_isnil(L, -1);
}

/* collect(text, prefix): fills `found` with full replacement texts of `text`, sorted. `prefix`
 * is what stands before text on the line when text starts with '.' or ':' after a subscript
 * (`lst[1]` in `lst[1].na`): the chain to complete is prefix .. text. */
static int collect(lua_State *L) {
    size_t tlen, plen0;
    const char *text = luaL_checklstring(L, 1, &tlen);
    const char *before = luaL_optlstring(L, 2, "", &plen0);
    lua_newtable(L); /* the set */
    int set = lua_gettop(L);
    /* split text into chain, separator and partial name */
    const char *sep = NULL;
    for (const char *p = text + tlen; p > text; p--)
        if (p[-1] == '.' || p[-1] == ':') {
            sep = p - 1;
            break;
        }
    const char *partial = sep ? sep + 1 : text;
    size_t plen = tlen - (size_t)(partial - text);
    int funcs_only = sep && *sep == ':';
    if (sep) {
        /* the value before the separator: an empty chain (". after a call") completes nothing,
         * not the globals */
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, before, plen0);
        luaL_addlstring(&b, text, (size_t)(sep - text));
        luaL_pushresult(&b);
        size_t cl;
        const char *chain = lua_tolstring(L, -1, &cl);
        if (cl == 0 || !walk_chain(L, chain, cl)) return 0;
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    }
    add_fields(L, -1, set, partial, plen, funcs_only, 0);
    if (!sep) { /* keywords */
        for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
            if (strncmp(keywords[i], partial, plen) == 0) {
                lua_pushstring(L, keywords[i]);
                lua_pushboolean(L, 1);
                lua_rawset(L, set);
            }
    }
    /* set -> sorted C strings, each prefixed with the chain */
    size_t prefix = (size_t)(partial - text);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, set) != 0 && n < MAX_MATCHES) {
        lua_pop(L, 1);
        n++;
    }
    if (n == 0) return 0;
    found = calloc((size_t)n, sizeof *found);
    if (found == NULL) return 0;
    lua_pushnil(L);
    while (lua_next(L, set) != 0) {
        lua_pop(L, 1);
        if (n_found >= n) {
            lua_pop(L, 1);
            break;
        }
        size_t kl;
        const char *k = lua_tolstring(L, -1, &kl);
        char *s = malloc(prefix + kl + 1);
        if (s == NULL) continue;
        memcpy(s, text, prefix);
        memcpy(s + prefix, k, kl + 1);
        found[n_found++] = s;
    }
    qsort(found, (size_t)n_found, sizeof *found, cmp_str);
    found_keyword = !sep && n_found == 1 && is_keyword(found[0], strlen(found[0]));
    return 0;
}

static char *generator(const char *text, int state) {
    (void)text;
    (void)state;
    if (next_found < n_found) return found[next_found++]; /* readline frees it */
    return NULL;
}

/* The subscripted value before `start` when text there starts with '.' or ':' (`lst[1]` in
 * `lst[1].na`): names, dots and balanced [ ] groups, scanned back. A call before it (`f().`)
 * gives "" (nothing is run to complete). */
static size_t chain_before(const char *line, size_t start) {
    size_t i = start;
    while (i > 0) {
        char c = line[i - 1];
        if (c == ']') {
            int depth = 0;
            while (i > 0) {
                char d = line[--i];
                if (d == ']') depth++;
                else if (d == '[' && --depth == 0) break;
            }
            if (depth != 0) return start;
        } else if (is_ident_char((unsigned char)c) || c == '.') {
            i--;
        } else {
            break;
        }
    }
    return i;
}

char **host_complete(const char *line, int start, int end) {
    size_t len = strlen(line);
    if (start < 0 || end < start || (size_t)end > len) return NULL;
    char *text = strndup(line + start, (size_t)(end - start));
    if (text == NULL) return NULL;
    clear_found();
    found_keyword = 0;
    lua_State *L = comp_L;
    int top = lua_gettop(L);
    char **m = NULL;
    if (lua_checkstack(L, 4)) {
        lua_pushcfunction(L, collect);
        lua_pushstring(L, text);
        if (text[0] == '.' || text[0] == ':') {
            size_t b = chain_before(line, (size_t)start);
            lua_pushlstring(L, line + b, (size_t)start - b);
        } else {
            lua_pushliteral(L, "");
        }
        int status = lua_pcall(L, 2, 0, 0);
        lua_settop(L, top);
        if (status == LUA_OK && n_found > 0) m = rl_completion_matches(text, generator);
    }
    clear_found();
    free(text);
    return m;
}

static char **attempt(const char *text, int start, int end) {
    (void)text;
    rl_completion_append_character = '\0';
    if (rl_completion_quote_character) { /* inside a string literal: file names */
        rl_attempted_completion_over = 0;
        return NULL;
    }
    rl_attempted_completion_over = 1;
    char **m = host_complete(rl_line_buffer, start, end);
    if (m && found_keyword) rl_completion_append_character = ' ';
    return m;
}

/* Lists matches by their last name only ("zeros", not "T.zeros"). */
static void display(char **matches, int n, int max_length) {
    (void)max_length;
    char **short_names = calloc((size_t)n + 2, sizeof *short_names);
    if (short_names == NULL) return;
    int maxlen = 0;
    for (int i = 0; i <= n; i++) {
        const char *s = matches[i];
        const char *d = strrchr(s, '.'), *c = strrchr(s, ':');
        if (c && (!d || c > d)) d = c;
        short_names[i] = (char *)(d ? d + 1 : s);
        int l = (int)strlen(short_names[i]);
        if (i > 0 && l > maxlen) maxlen = l;
    }
    rl_display_match_list(short_names, n, maxlen);
    rl_forced_update_display();
    free(short_names);
}

void host_completion_init(lua_State *L) {
    comp_L = L;
    rl_attempted_completion_function = attempt;
    rl_completion_display_matches_hook = display;
    /* '.' and ':' are not word breaks: the whole chain a.b:c is the text to complete */
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{}()[],+-*/%^~#";
    rl_completer_quote_characters = "\"'";
    rl_sort_completion_matches = 0; /* already sorted */
    /* a second TAB lists the candidates even right after a partial completion (T.ze -> T.zero);
     * bound before ~/.inputrc is read, so a user's own setting wins */
    rl_variable_bind("show-all-if-unmodified", "on");
}
