/* The tdrl Jupyter kernel (`tdrl --kernel -f CONNECTION_FILE`): the shell loop and its
 * handlers. A cell runs like a REPL chunk: `return <code>` is tried first, so an expression
 * shows its value; a cell whose last line is an expression shows it as well (IPython's habit);
 * a trailing ';' keeps it quiet. Values show as text (tensors by their summary), tdrl.plot
 * figures as PNG images; `display(x)` shows a figure, an image file, a batch of images or any
 * value below the cell at once. Errors come back with their traceback; the kernel itself never
 * stops on a user's error nor on a message it does not understand.
 *
 * Interrupts: SIGINT (Jupyter's "signal" mode) and interrupt_request on the control channel
 * (which sends SIGINT to this thread) both go through the host's handler (host.c), which stops
 * Lua code and sets td_interrupt_flag for long C kernels. SIGINT stays blocked while the kernel
 * waits for requests; one that arrived meanwhile is dropped before the next cell starts. */
#define _GNU_SOURCE
#define TDRL_KERNEL_INTERNAL
#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../ops/tensor.h"
#include "host.h"
#include "kernel.h"

#ifndef TDRL_KERNEL_ZMQ
int host_kernel(lua_State *L, int argc, char **argv) {
    (void)L;
    (void)argc;
    (void)argv;
    fprintf(stderr, "tdrl: this binary was built without the Jupyter kernel (ZeroMQ and OpenSSL headers were "
                    "missing).\nInstall them and rebuild: apt-get install -y libzmq3-dev libssl-dev && make\n");
    return 1;
}
#else
#include <readline/readline.h>
#include <zmq.h>

static lua_State *KL;
static int helper_ref = LUA_NOREF;
static long exec_count = 0;
static json_t *cur_header = NULL; /* header of the request being served (main thread) */

typedef struct {
    long line;
    char *code;
} hist_entry;
static hist_entry *hist = NULL;
static size_t n_hist = 0, cap_hist = 0;

/* ---- the Lua side (display, results, inspection) -------------------------------------------- */

extern const char tdrl_kernel_lua[]; /* kernel_lua.c */

/* A MIME bundle table {mime = string} -> JSON data (binary image types in base64). */
static json_t *bundle_json(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    json_t *data = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
            const char *mime = lua_tostring(L, -2);
            size_t n;
            const char *v = lua_tolstring(L, -1, &n);
            int binary = strncmp(mime, "image/", 6) == 0 && strcmp(mime, "image/svg+xml") != 0;
            if (binary) {
                char *b = kw_base64((const unsigned char *)v, n);
                if (b) json_object_set_new(data, mime, json_string(b));
                free(b);
            } else {
                json_object_set_new(data, mime, kw_string(v, n));
            }
        }
        lua_pop(L, 1);
    }
    return data;
}

/* K.publish(bundle): display_data below the cell being run */
/* K.shell_pending() -> true when a request waits on the shell channel: read by
 * require('tdrl.kernel').shell_pending() in a cell (the tests use it to know that a request is
 * queued behind the running one, which no message from the client can tell them) */
static int l_shell_pending(lua_State *L) {
    zmq_pollitem_t it = {kw.shell, 0, ZMQ_POLLIN, 0};
    lua_pushboolean(L, zmq_poll(&it, 1, 0) > 0 && (it.revents & ZMQ_POLLIN));
    return 1;
}

static int l_publish(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    json_t *data = bundle_json(L, 1);
    kio_flush(); /* text printed before comes first */
    kw_publish(cur_header, "display_data",
               json_pack("{s:o, s:{}, s:{}}", "data", data, "metadata", "transient"));
    return 0;
}

/* clear_output([wait]): clears the cell's output (at the next output when wait is true) */
static int l_clear(lua_State *L) {
    int wait = lua_toboolean(L, 1);
    kio_flush();
    kw_publish(cur_header, "clear_output", json_pack("{s:b}", "wait", wait));
    return 0;
}

/* Calls helper.<name> with the n values on the stack top, leaving nres results. */
static int call_helper(lua_State *L, const char *name, int n, int nres) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, helper_ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    lua_insert(L, -(n + 1));
    return host_docall(L, n, nres);
}

static int is_not_found(const char *msg, const char *module) {
    char want[128];
    snprintf(want, sizeof want, "module '%s' not found", module);
    return msg && strncmp(msg, want, strlen(want)) == 0;
}

/* Globals like the REPL's (T, nn, optim, data, plot, help), display and clear_output. */
static int lua_setup(lua_State *L) {
    static const char *const mods[][2] = {
        {"T", "tdrl"}, {"nn", "tdrl.nn"}, {"optim", "tdrl.optim"}, {"data", "tdrl.data"}, {"plot", "tdrl.plot"},
        {"help", "tdrl.help"},
    };
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        lua_getglobal(L, "require");
        lua_pushstring(L, mods[i][1]);
        if (host_docall(L, 1, 1) == LUA_OK) {
            lua_setglobal(L, mods[i][0]);
        } else {
            const char *msg = lua_tostring(L, -1);
            if (i == 0 || !is_not_found(msg, mods[i][1]))
                kw_log("cannot load '%s': %s", mods[i][1], msg ? msg : "?");
            lua_pop(L, 1);
        }
    }
    if (luaL_loadbuffer(L, tdrl_kernel_lua, strlen(tdrl_kernel_lua), "=tdrl.kernel") != LUA_OK) {
        kw_log("internal error: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_newtable(L);
    lua_pushcfunction(L, l_publish);
    lua_setfield(L, -2, "publish");
    lua_pushcfunction(L, l_shell_pending);
    lua_setfield(L, -2, "shell_pending");
    kstdin_register(L);
    lua_pushcfunction(L, host_l_pretty);
    lua_setfield(L, -2, "pretty");
    if (host_docall(L, 1, 1) != LUA_OK) {
        kw_log("internal error: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, "display");
    lua_setglobal(L, "display");
    lua_pushcfunction(L, l_clear);
    lua_setglobal(L, "clear_output");
    helper_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ---- execution ------------------------------------------------------------------------------ */

/* Drops a SIGINT that arrived while no cell ran (it must not stop the next one). */
static void drop_pending_sigint(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&s, NULL, &zero) > 0) {
    }
}

/* Error content {ename, evalue, traceback} from the message on the stack top (popped). */
static json_t *error_content(lua_State *L, const char *ename) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (msg == NULL) {
        msg = "(error object is not a string)";
        len = strlen(msg);
    }
    json_t *tb = json_array();
    const char *p = msg, *end = msg + len;
    size_t first_len = strcspn(msg, "\n");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        /* the host's own frame at the bottom says nothing to a user */
        if (!(l == 10 && memcmp(p, "\t[C]: in ?", 10) == 0))
            json_array_append_new(tb, kw_string(p, l));
        p += l + (nl ? 1 : 0);
    }
    json_t *c = json_object();
    json_object_set_new(c, "ename", json_string(ename));
    json_object_set_new(c, "evalue", kw_string(msg, first_len));
    json_object_set_new(c, "traceback", tb);
    lua_pop(L, 1);
    return c;
}

static const char *runtime_ename(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    if (host_interrupted || (msg && strstr(msg, "interrupted"))) return "Interrupted";
    return "LuaError";
}

static void hist_add(long line, const char *code) {
    if (n_hist == cap_hist) {
        size_t cap = cap_hist ? cap_hist * 2 : 64;
        hist_entry *nh = realloc(hist, cap * sizeof *nh);
        if (nh == NULL) return;
        hist = nh;
        cap_hist = cap;
    }
    char *c = strdup(code);
    if (c == NULL) return;
    hist[n_hist].line = line;
    hist[n_hist].code = c;
    n_hist++;
}

/* {name: {status, data | ename...}} for the user_expressions of an execute_request */
static json_t *user_expressions(lua_State *L, json_t *exprs) {
    json_t *out = json_object();
    if (!json_is_object(exprs)) return out;
    const char *name;
    json_t *e;
    json_object_foreach(exprs, name, e) {
        const char *src = json_string_value(e);
        int top = lua_gettop(L);
        json_t *r;
        if (src == NULL) {
            r = json_pack("{s:s, s:s, s:s, s:[]}", "status", "error", "ename", "TypeError", "evalue",
                          "not a string", "traceback");
        } else {
            int status = kcell_load_expression(L, src, strlen(src), "=user_expression");
            if (status != LUA_OK) {
                lua_pop(L, 1);
                status = host_chunk_error(L, src, strlen(src), "=user_expression");
                if (status == LUA_OK) status = host_chunk_compile(L, src, strlen(src), "=user_expression");
                if (status == HOST_CHUNK_INCOMPLETE) status = host_chunk_error(L, src, strlen(src), "=user_expression");
            }
            if (status == LUA_OK) {
                status = host_docall(L, 0, LUA_MULTRET);
            }
            if (status == LUA_OK) status = call_helper(L, "results", lua_gettop(L) - top, 1);
            if (status == LUA_OK) {
                json_t *data = lua_istable(L, -1) ? bundle_json(L, -1) : json_object();
                r = json_pack("{s:s, s:o, s:{}}", "status", "ok", "data", data, "metadata");
            } else {
                r = error_content(L, status == LUA_ERRSYNTAX ? "SyntaxError" : "LuaError");
                json_object_set_new(r, "status", json_string("error"));
            }
        }
        json_object_set_new(out, name, r);
        lua_settop(L, top);
    }
    return out;
}

static void handle_shell(kmsg *m);

/* After an error with stop_on_error: execute requests already queued are answered "aborted". */
static void abort_queue(void) {
    for (;;) {
        kmsg m;
        char why[512];
        int r = kw_recv(kw.shell, &m, false, why, sizeof why);
        if (r == 0) break;
        if (r < 0) {
            kw_reply_malformed(kw.shell, &m, why);
        } else if (strcmp(m.msg_type, "execute_request") == 0) {
            kw_status(m.header, "busy");
            kw_send(kw.shell, &m, "execute_reply",
                    json_pack("{s:s, s:I}", "status", "aborted", "execution_count", (json_int_t)exec_count));
            kw_status(m.header, "idle");
        } else {
            handle_shell(&m);
        }
        kw_free(&m);
    }
}

static void execute(kmsg *m) {
    lua_State *L = KL;
    json_t *c = m->content;
    size_t len = 0;
    const char *code = json_string_value(json_object_get(c, "code"));
    if (code == NULL) {
        kw_send_error(kw.shell, m, "execute_reply", "MalformedMessage", "execute_request: 'code' is not a string");
        return;
    }
    len = json_string_length(json_object_get(c, "code"));
    int silent = json_is_true(json_object_get(c, "silent"));
    json_t *sh = json_object_get(c, "store_history");
    int store = sh ? json_is_true(sh) : !silent;
    if (silent || strspn(code, " \t\r\n") == len) store = 0; /* as IPython: a blank cell counts for nothing */
    json_t *soe = json_object_get(c, "stop_on_error");
    int stop_on_error = soe ? json_is_true(soe) : 1;
    if (store) {
        exec_count++;
        hist_add(exec_count, code);
        lua_rawgeti(KL, LUA_REGISTRYINDEX, helper_ref); /* helper.cells[n] = code, for inspect */
        if (lua_getfield(KL, -1, "cells") == LUA_TTABLE) {
            lua_pushlstring(KL, code, len);
            lua_rawseti(KL, -2, exec_count);
        }
        lua_pop(KL, 2);
    }
    if (!silent)
        kw_publish(m->header, "execute_input",
                   json_pack("{s:o, s:I}", "code", kw_string(code, len), "execution_count", (json_int_t)exec_count));
    char chunk[64];
    snprintf(chunk, sizeof chunk, "=In[%ld]", exec_count);
    int top = lua_gettop(L);
    const char *ename = "SyntaxError";
    int status = kcell_compile(L, code, len, chunk);
    if (status == LUA_OK) {
        drop_pending_sigint();
        kstdin_set_request(m, json_is_true(json_object_get(c, "allow_stdin")));
        status = host_docall(L, 0, LUA_MULTRET);
        kstdin_set_request(NULL, 0);
        ename = status == LUA_OK ? NULL : runtime_ename(L);
        int n = lua_gettop(L) - top;
        if (status == LUA_OK && n > 0 && !silent && !kcell_is_quiet(code, len)) {
            status = call_helper(L, "results", n, 1);
            if (status != LUA_OK) ename = runtime_ename(L);
            kio_flush();
            if (status == LUA_OK && lua_istable(L, -1)) {
                json_t *data = bundle_json(L, -1);
                kw_publish(m->header, "execute_result",
                           json_pack("{s:I, s:o, s:{}}", "execution_count", (json_int_t)exec_count, "data", data,
                                     "metadata"));
            }
        }
    }
    kio_flush();
    json_t *reply;
    if (status != LUA_OK) {
        json_t *err = error_content(L, ename);
        if (!silent) kw_publish(m->header, "error", json_deep_copy(err));
        reply = err;
        json_object_set_new(reply, "status", json_string("error"));
        json_object_set_new(reply, "execution_count", json_integer(exec_count));
    } else {
        lua_settop(L, top);
        reply = json_pack("{s:s, s:I, s:o, s:[]}", "status", "ok", "execution_count", (json_int_t)exec_count,
                          "user_expressions", user_expressions(L, json_object_get(c, "user_expressions")),
                          "payload");
    }
    lua_settop(L, top);
    kw_send(kw.shell, m, "execute_reply", reply);
    if (status != LUA_OK && stop_on_error) abort_queue();
}

/* ---- completion, inspection, is_complete, history ------------------------------------------- */

static int ident_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Where the cursor is on its line: 0 code, 1 inside a string literal (its start in *qs), 2 in
 * a comment. Long strings and comments ([[ ]]) are not followed. */
static int lexical_state(const char *code, size_t b, size_t *qs) {
    size_t s = b;
    while (s > 0 && code[s - 1] != '\n') s--;
    char q = 0;
    for (size_t i = s; i < b; i++) {
        char ch = code[i];
        if (q) {
            if (ch == '\\') i++;
            else if (ch == q) q = 0;
        } else if (ch == '"' || ch == '\'') {
            q = ch;
            *qs = i + 1;
        } else if (ch == '-' && i + 1 < b && code[i + 1] == '-') {
            return 2;
        }
    }
    return q ? 1 : 0;
}

static void complete(kmsg *m) {
    const char *code = json_string_value(json_object_get(m->content, "code"));
    json_t *cp = json_object_get(m->content, "cursor_pos");
    if (code == NULL) {
        kw_send_error(kw.shell, m, "complete_reply", "MalformedMessage", "complete_request: 'code' is not a string");
        return;
    }
    size_t len = strlen(code);
    size_t b = json_is_integer(cp) ? kw_cp_to_byte(code, len, (long)json_integer_value(cp)) : len;
    json_t *matches = json_array();
    size_t qs = 0, start = b;
    int state = lexical_state(code, b, &qs);
    char **found = NULL;
    if (state == 1) { /* file names inside a string */
        start = qs;
        char *text = strndup(code + start, b - start);
        if (text) found = rl_completion_matches(text, rl_filename_completion_function);
        free(text);
        if (found) { /* a directory gets its '/' */
            for (int i = 0; found[i]; i++) {
                struct stat st;
                size_t l = strlen(found[i]);
                if (l && found[i][l - 1] != '/' && stat(found[i], &st) == 0 && S_ISDIR(st.st_mode)) {
                    char *d = malloc(l + 2);
                    if (d) {
                        memcpy(d, found[i], l);
                        memcpy(d + l, "/", 2);
                        free(found[i]);
                        found[i] = d;
                    }
                }
            }
        }
    } else if (state == 0) {
        while (start > 0 && (ident_char((unsigned char)code[start - 1]) || code[start - 1] == '.' || code[start - 1] == ':'))
            start--;
        /* the REPL's completion; text before the cursor only, as a REPL line */
        char *line = strndup(code, b);
        if (line) found = host_complete(line, (int)start, (int)b);
        free(line);
    }
    if (found) {
        /* [0] is the common prefix when there are several */
        int first = found[1] ? 1 : 0;
        for (int i = first; found[i]; i++) json_array_append_new(matches, kw_string(found[i], strlen(found[i])));
        for (int i = 0; found[i]; i++) free(found[i]);
        free(found);
    }
    kw_send(kw.shell, m, "complete_reply",
            json_pack("{s:s, s:o, s:I, s:I, s:{}}", "status", "ok", "matches", matches, "cursor_start",
                      (json_int_t)kw_byte_to_cp(code, start), "cursor_end", (json_int_t)kw_byte_to_cp(code, b),
                      "metadata"));
}

static void inspect(kmsg *m) {
    lua_State *L = KL;
    const char *code = json_string_value(json_object_get(m->content, "code"));
    if (code == NULL) {
        kw_send_error(kw.shell, m, "inspect_reply", "MalformedMessage", "inspect_request: 'code' is not a string");
        return;
    }
    json_t *cp = json_object_get(m->content, "cursor_pos");
    json_t *dl = json_object_get(m->content, "detail_level");
    size_t len = strlen(code);
    size_t b = json_is_integer(cp) ? kw_cp_to_byte(code, len, (long)json_integer_value(cp)) : len;
    /* on a name, or just after "name(" */
    size_t s = b, e = b;
    if ((s == 0 || !ident_char((unsigned char)code[s - 1])) && (e >= len || !ident_char((unsigned char)code[e]))) {
        while (s > 0 && (code[s - 1] == ' ' || code[s - 1] == '(' || code[s - 1] == ',')) s--;
        e = s;
    }
    while (e < len && ident_char((unsigned char)code[e])) e++;
    while (s > 0 && (ident_char((unsigned char)code[s - 1]) || code[s - 1] == '.' || code[s - 1] == ':')) s--;
    json_t *data = json_object();
    int found = 0;
    if (e > s) {
        int top = lua_gettop(L);
        lua_pushlstring(L, code + s, e - s);
        lua_pushinteger(L, json_is_integer(dl) ? json_integer_value(dl) : 0);
        if (call_helper(L, "inspect", 2, 1) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *text = lua_tolstring(L, -1, &n);
            json_object_set_new(data, "text/plain", kw_string(text, n));
            found = 1;
        }
        lua_settop(L, top);
    }
    kw_send(kw.shell, m, "inspect_reply",
            json_pack("{s:s, s:b, s:o, s:{}}", "status", "ok", "found", found, "data", data, "metadata"));
}

/* The REPL's own test (chunk.c): what gets a continuation prompt there is "incomplete" here. */
static void is_complete(kmsg *m) {
    const char *code = json_string_value(json_object_get(m->content, "code"));
    if (code == NULL) {
        kw_send_error(kw.shell, m, "is_complete_reply", "MalformedMessage", "is_complete_request: 'code' is not a string");
        return;
    }
    const char *status = host_chunk_state(KL, code, strlen(code));
    json_t *c = json_pack("{s:s}", "status", status);
    if (strcmp(status, "incomplete") == 0) json_object_set_new(c, "indent", json_string("  "));
    kw_send(kw.shell, m, "is_complete_reply", c);
}

static json_t *hist_item(const hist_entry *h, int output) {
    if (output) return json_pack("[i, I, [s, n]]", 1, (json_int_t)h->line, h->code);
    return json_pack("[i, I, s]", 1, (json_int_t)h->line, h->code);
}

static void history(kmsg *m) {
    json_t *c = m->content;
    const char *type = json_string_value(json_object_get(c, "hist_access_type"));
    int output = json_is_true(json_object_get(c, "output"));
    json_t *list = json_array();
    json_int_t n = json_integer_value(json_object_get(c, "n"));
    if (type && strcmp(type, "range") == 0) {
        json_int_t start = json_integer_value(json_object_get(c, "start"));
        json_t *stop_j = json_object_get(c, "stop");
        json_int_t stop = json_is_integer(stop_j) ? json_integer_value(stop_j) : exec_count + 1;
        for (size_t i = 0; i < n_hist; i++)
            if (hist[i].line >= start && hist[i].line < stop) json_array_append_new(list, hist_item(&hist[i], output));
    } else if (type && strcmp(type, "search") == 0) {
        const char *pat = json_string_value(json_object_get(c, "pattern"));
        int unique = json_is_true(json_object_get(c, "unique"));
        if (pat == NULL) pat = "*";
        for (size_t i = n_hist; i-- > 0;) {
            if (n > 0 && (json_int_t)json_array_size(list) >= n) break;
            if (fnmatch(pat, hist[i].code, 0) != 0) continue;
            int dup = 0;
            for (size_t j = i + 1; unique && j < n_hist && !dup; j++)
                dup = fnmatch(pat, hist[j].code, 0) == 0 && strcmp(hist[j].code, hist[i].code) == 0;
            if (!dup) json_array_insert_new(list, 0, hist_item(&hist[i], output));
        }
    } else { /* tail (and anything else) */
        size_t first = n > 0 && (size_t)n < n_hist ? n_hist - (size_t)n : 0;
        for (size_t i = first; i < n_hist; i++) json_array_append_new(list, hist_item(&hist[i], output));
    }
    kw_send(kw.shell, m, "history_reply", json_pack("{s:s, s:o}", "status", "ok", "history", list));
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static void handle_shell(kmsg *m) {
    const char *t = m->msg_type;
    json_t *saved = cur_header;
    cur_header = m->header;
    kw_status(m->header, "busy");
    kio_set_parent(m->header);
    if (strcmp(t, "execute_request") == 0) {
        execute(m);
    } else if (strcmp(t, "kernel_info_request") == 0) {
        kw_send(kw.shell, m, "kernel_info_reply", kernel_info_content());
    } else if (strcmp(t, "complete_request") == 0) {
        complete(m);
    } else if (strcmp(t, "inspect_request") == 0) {
        inspect(m);
    } else if (strcmp(t, "is_complete_request") == 0) {
        is_complete(m);
    } else if (strcmp(t, "history_request") == 0) {
        history(m);
    } else if (strcmp(t, "comm_info_request") == 0) {
        kw_send(kw.shell, m, "comm_info_reply", json_pack("{s:s, s:{}}", "status", "ok", "comms"));
    } else if (strcmp(t, "shutdown_request") == 0) {
        int restart = json_is_true(json_object_get(m->content, "restart"));
        kw_send(kw.shell, m, "shutdown_reply", json_pack("{s:s, s:b}", "status", "ok", "restart", restart));
        kio_shutdown_restart = restart;
        kio_shutdown_requested = 1;
    } else if (strcmp(t, "interrupt_request") == 0) { /* nothing runs while we read the shell */
        kw_send(kw.shell, m, "interrupt_reply", json_pack("{s:s}", "status", "ok"));
    } else if (strcmp(t, "comm_open") == 0) { /* no comm targets: close it at once */
        json_t *id = json_object_get(m->content, "comm_id");
        kw_log("comm_open: no comm target '%s'", json_string_value(json_object_get(m->content, "target_name"))
                                                     ? json_string_value(json_object_get(m->content, "target_name"))
                                                     : "?");
        if (json_is_string(id)) kw_publish(m->header, "comm_close", json_pack("{s:O, s:{}}", "comm_id", id, "data"));
    } else {
        size_t l = strlen(t);
        if (l > 8 && l < 128 && strcmp(t + l - 8, "_request") == 0) {
            char reply[160], why[256];
            snprintf(reply, sizeof reply, "%.*s_reply", (int)(l - 8), t);
            snprintf(why, sizeof why, "unknown message type '%.100s'", t);
            kw_send_error(kw.shell, m, reply, "UnknownMessageType", why);
        } else {
            kw_log("shell: ignored a '%s' message", t);
        }
    }
    kio_flush();
    kw_status(m->header, "idle");
    cur_header = saved;
}

/* ---- entry ---------------------------------------------------------------------------------- */

static const char *connection_file(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "-f") == 0 || strcmp(a, "--f") == 0 || strcmp(a, "--connection-file") == 0) && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(a, "-f=", 3) == 0) return a + 3;
        if (strncmp(a, "--f=", 4) == 0) return a + 4;
        if (strncmp(a, "--connection-file=", 18) == 0) return a + 18;
        if (a[0] != '-') return a;
    }
    return NULL;
}

int host_kernel(lua_State *L, int argc, char **argv) {
    const char *path = connection_file(argc, argv);
    if (path == NULL) {
        fprintf(stderr, "usage: tdrl --kernel -f CONNECTION_FILE   (started by Jupyter; see scripts/install_kernel.sh)\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (kw_open(path) != 0) return 1;
    KL = L;
    if (kio_capture_start() != 0) {
        kw_close();
        return 1;
    }
    host_completion_init(L);
    if (lua_setup(L) != 0 || kio_threads_start(pthread_self()) != 0) {
        kw_close();
        return 1;
    }
    kio_flush(); /* what loading the modules printed, if anything */
    kw_status(NULL, "starting");
    kw_status(NULL, "idle");
    kw_log("ready (%s)", path);
    /* a kernel that Jupyter started as its child (JPY_PARENT_PID set: not an "independent" one)
     * exits when that parent is gone, as ipykernel does */
    pid_t parent = getenv("JPY_PARENT_PID") ? getppid() : 0;
    while (!kio_shutdown_requested) {
        zmq_pollitem_t items[2] = {{kw.shell, 0, ZMQ_POLLIN, 0}, {kw.stdin_sock, 0, ZMQ_POLLIN, 0}};
        int r = zmq_poll(items, 2, 500);
        if (parent && getppid() != parent) {
            kw_log("the process that started the kernel is gone: exiting");
            break;
        }
        if (r <= 0) continue;
        if (items[0].revents & ZMQ_POLLIN) {
            kmsg m;
            char why[512];
            int got = kw_recv(kw.shell, &m, false, why, sizeof why);
            if (got < 0)
                kw_reply_malformed(kw.shell, &m, why);
            else if (got > 0)
                handle_shell(&m);
            kw_free(&m);
        }
        if (items[1].revents & ZMQ_POLLIN) { /* a reply that came after its cell ended: drop it */
            kmsg m;
            char why[512];
            if (kw_recv(kw.stdin_sock, &m, false, why, sizeof why) != 0) kw_log("stdin: ignored a message");
            kw_free(&m);
        }
    }
    kio_threads_stop();
    kw_close();
    drop_pending_sigint();
    return 0;
}

#endif /* TDRL_KERNEL_ZMQ */
