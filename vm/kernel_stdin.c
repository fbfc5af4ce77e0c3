/* Input from the notebook: io.read() in a cell sends an input_request on the stdin channel
 * (when the execute_request allowed it: allow_stdin) and waits for the input_reply, as Python's
 * input() does under ipykernel. Without allow_stdin (nbconvert, a client without stdin), the
 * cell's stdin is /dev/null and io.read() gets end of input (nil), as before. */
#define _GNU_SOURCE
#define TDRL_KERNEL_INTERNAL
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "kernel.h"

#ifdef TDRL_KERNEL_ZMQ
#include <zmq.h>

static const kmsg *request = NULL; /* the execute_request being served */
static int allowed = 0;

void kstdin_set_request(const kmsg *m, int allow_stdin) {
    request = m;
    allowed = m != NULL && allow_stdin;
}

/* K.stdin_allowed() -> boolean */
static int l_allowed(lua_State *L) {
    lua_pushboolean(L, allowed);
    return 1;
}

/* K.input(prompt [, password]) -> the line the user typed (no newline), or nil when the
 * request did not allow stdin. Ctrl-C / an interrupt_request while waiting stops the cell. */
static int l_input(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "");
    int password = lua_toboolean(L, 2);
    if (!allowed || request == NULL) {
        lua_pushnil(L);
        return 1;
    }
    kio_flush(); /* what the cell printed comes before the prompt */
    kmsg drop;
    char why[256];
    while (kw_recv(kw.stdin_sock, &drop, false, why, sizeof why) != 0) kw_free(&drop); /* stale replies */
    kw_send(kw.stdin_sock, request, "input_request", json_pack("{s:s, s:b}", "prompt", prompt, "password", password));
    for (;;) {
        if (host_interrupted) return luaL_error(L, "io.read: interrupted while waiting for input");
        if (kio_shutdown_requested) return luaL_error(L, "io.read: the kernel is shutting down");
        zmq_pollitem_t it = {kw.stdin_sock, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, 200);
        if (r < 0 && zmq_errno() != EINTR) return luaL_error(L, "io.read: %s", zmq_strerror(zmq_errno()));
        if (r <= 0) continue;
        kmsg m;
        int got = kw_recv(kw.stdin_sock, &m, false, why, sizeof why);
        if (got < 0) kw_log("stdin: malformed message: %s", why);
        if (got <= 0) {
            if (got < 0) kw_free(&m);
            continue;
        }
        if (strcmp(m.msg_type, "input_reply") != 0) {
            kw_log("stdin: ignored a '%s' message", m.msg_type);
            kw_free(&m);
            continue;
        }
        const char *value = json_string_value(json_object_get(m.content, "value"));
        if (value == NULL) lua_pushnil(L);
        else lua_pushstring(L, value);
        kw_free(&m);
        return 1;
    }
}

void kstdin_register(lua_State *L) {
    lua_pushcfunction(L, l_input);
    lua_setfield(L, -2, "input");
    lua_pushcfunction(L, l_allowed);
    lua_setfield(L, -2, "stdin_allowed");
}
#else
typedef int kernel_stdin_needs_zmq; /* built without ZeroMQ: see kernel.c */
#endif
