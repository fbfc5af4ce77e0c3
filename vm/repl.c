/* The tdrl REPL: lua.c's loop (try `return <line>` first, "<eof>" at the end of a syntax error
 * means the chunk is incomplete, a traceback on errors, print every returned value) with
 * readline history in ~/.tdrl_history, metatable-aware tab completion (complete.c), a trailing
 * ';' that keeps a value quiet, and Ctrl-C that cancels the line at the prompt.
 *
 * Input uses readline's callback interface: the loop waits in ppoll() with SIGINT unblocked
 * (it is blocked everywhere else on the main thread outside Lua code), so a Ctrl-C at the
 * prompt reliably wakes it; the line is then dropped and a fresh prompt shown. No longjmp out
 * of readline, no readline signal handlers (rl_catch_signals = 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "../ops/tensor.h"
#include "host.h"

#define PROMPT "tdrl> "
#define PROMPT2 "  >> "
#define HISTORY_MAX 1000

/* ---- signals while waiting for input ------------------------------------------------------ */

static pthread_t repl_thread;
static volatile sig_atomic_t winch_pending = 0, cont_pending = 0;

static void on_terminal_signal(int sig) {
    int saved_errno = errno;
    if (!pthread_equal(pthread_self(), repl_thread))
        pthread_kill(repl_thread, sig);
    else if (sig == SIGWINCH)
        winch_pending = 1;
    else
        cont_pending = 1;
    errno = saved_errno;
}

/* The calling thread's mask with the host's signals let through: used while waiting. */
static void wait_mask(sigset_t *m) {
    pthread_sigmask(SIG_BLOCK, NULL, m);
    sigdelset(m, SIGINT);
    sigdelset(m, SIGWINCH);
    sigdelset(m, SIGCONT);
}

/* ---- history ------------------------------------------------------------------------------ */

static char history_path[PATH_MAX];
static int history_added = 0;
static int history_dirty = 0;

static void history_save(void) {
    if (!history_dirty || history_path[0] == '\0') return;
    history_dirty = 0;
    int n = history_added < history_length ? history_added : history_length;
    if (n <= 0) return;
    if (access(history_path, F_OK) != 0 || append_history(n, history_path) != 0)
        write_history(history_path);
    history_truncate_file(history_path, HISTORY_MAX);
}

static void history_init(void) {
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0') {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    using_history();
    stifle_history(HISTORY_MAX);
    history_comment_char = '#';     /* timestamps ("#<seconds>" lines) delimit entries ... */
    history_write_timestamps = 1;
    history_multiline_entries = 1;  /* ... so a multi-line chunk stays one entry */
    if (home == NULL) return;
    snprintf(history_path, sizeof history_path, "%s/.tdrl_history", home);
    read_history(history_path); /* a missing file is fine */
    atexit(history_save);       /* os.exit() from the REPL saves it too */
}

static void history_add(const char *chunk) {
    const char *p = chunk;
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (*p == '\0') return;
    if (history_length > 0) {
        HIST_ENTRY *last = history_get(history_base + history_length - 1);
        if (last && strcmp(last->line, chunk) == 0) return; /* skip duplicates */
    }
    add_history(chunk);
    history_added++;
    history_dirty = 1;
}

/* ---- reading lines ------------------------------------------------------------------------ */

static char *rl_line;
static int rl_line_ready;

static void on_line(char *line) {
    rl_line = line;
    rl_line_ready = 1;
    rl_callback_handler_remove();
}

/* Returns 1 with *out set (malloc'd, no newline), 0 at end of input, -1 when Ctrl-C
 * cancelled the line. */
static int read_line_tty(const char *prompt, char **out) {
    sigset_t m;
    wait_mask(&m);
    fflush(stdout);
    fflush(stderr);
    rl_line = NULL;
    rl_line_ready = 0;
    host_prompt_sigint = 0;
    cont_pending = 0; /* arrived while Lua ran: the terminal gets prepared afresh anyway */
    if (winch_pending) {
        winch_pending = 0;
        rl_reset_screen_size();
    }
    rl_callback_handler_install(prompt, on_line);
    while (!rl_line_ready) {
        struct pollfd p = {fileno(rl_instream), POLLIN, 0};
        int r = ppoll(&p, 1, NULL, &m);
        if (r < 0) {
            if (errno != EINTR) break;
            if (cont_pending) { /* back from Ctrl-Z: the shell may have reset the terminal */
                cont_pending = 0;
                rl_deprep_terminal();
                rl_prep_terminal(1);
                winch_pending = 1;
            }
            if (winch_pending) {
                winch_pending = 0;
                rl_resize_terminal();
            }
            if (host_prompt_sigint) {
                host_prompt_sigint = 0;
                rl_point = rl_end; /* show "^C" after the whole line, like a shell */
                rl_redisplay();
                fputs("^C\n", rl_outstream);
                fflush(rl_outstream);
                rl_free_line_state();
                rl_callback_sigcleanup();
                rl_replace_line("", 0);
                rl_callback_handler_remove();
                using_history();
                return -1;
            }
            continue;
        }
        if (p.revents & POLLNVAL) break;
        rl_callback_read_char();
    }
    if (!rl_line_ready) { /* poll failed: treat as end of input */
        rl_callback_handler_remove();
        return 0;
    }
    if (rl_line == NULL) {
        fputs("\n", rl_outstream); /* Ctrl-D: leave the prompt line */
        fflush(rl_outstream);
        return 0;
    }
    *out = rl_line;
    return 1;
}

/* stdin is not a terminal (tdrl -i < file, a pipe): no readline, unbuffered stdin, and no
 * prompt: the output holds the values only, as a script's would. */
static int read_line_plain(const char *prompt, char **out) {
    (void)prompt;
    sigset_t m;
    wait_mask(&m);
    fflush(stdout);
    fflush(stderr);
    host_prompt_sigint = 0;
    for (;;) {
        struct pollfd p = {STDIN_FILENO, POLLIN, 0};
        int r = ppoll(&p, 1, NULL, &m);
        if (r >= 0) break;
        if (errno != EINTR) return 0;
        if (host_prompt_sigint) {
            host_prompt_sigint = 0;
            fputs("\n", stdout);
            return -1;
        }
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, stdin);
    if (n < 0) {
        free(buf);
        return 0;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    *out = buf;
    return 1;
}

static int use_readline = 0;

static int read_line(const char *prompt, char **out) {
    return use_readline ? read_line_tty(prompt, out) : read_line_plain(prompt, out);
}

/* ---- compiling and running chunks --------------------------------------------------------- */

/* A chunk whose last non-blank character is ';' runs quietly. */
static int is_quiet(const char *buf, size_t len) {
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t' || buf[len - 1] == '\n' ||
                       buf[len - 1] == '\r'))
        len--;
    return len > 0 && buf[len - 1] == ';';
}

/* Prints the values above `base` with the global print (tostring / __tostring, tabs); a table
 * without its own __tostring prints its contents (pretty.c). */
static void print_results(lua_State *L, int base) {
    int n = lua_gettop(L) - base;
    if (n <= 0) return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    for (int i = base + 1; i <= base + n; i++) {
        if (lua_type(L, i) != LUA_TTABLE) continue;
        lua_pushcfunction(L, host_l_pretty);
        lua_pushvalue(L, i);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) lua_replace(L, i);
        else lua_pop(L, 1); /* a table whose traversal fails prints as before */
    }
    lua_getglobal(L, "print");
    lua_insert(L, base + 1);
    int status = host_docall(L, n, 0);
    if (status != LUA_OK) {
        lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1));
        lua_remove(L, -2);
        host_report(L, status, false);
    }
}

/* "x = 1; x" (and "x = 1; x;", quiet): the value of the last expression, as the kernel shows it.
 * Pushes the function and returns 1, or returns 0. */
static int last_expression(lua_State *L, const char *buf, size_t len) {
    if (is_quiet(buf, len)) {
        while (len > 0 && buf[len - 1] != ';') len--;
        len--;
    }
    return host_chunk_last_expression(L, buf, len, "=stdin", 0);
}

static char *append_line(char *buf, size_t *len, const char *line) {
    size_t l = strlen(line);
    char *nb = realloc(buf, *len + l + 2);
    if (nb == NULL) return NULL;
    nb[(*len)++] = '\n';
    memcpy(nb + *len, line, l + 1);
    *len += l;
    return nb;
}

/* Reads one complete chunk and runs it. Returns 0 at end of input, 1 otherwise. */
static int repl_step(lua_State *L) {
    int base = lua_gettop(L);
    char *buf = NULL;
    int r = read_line(PROMPT, &buf);
    if (r == 0) return 0;
    if (r < 0) return 1;
    size_t len = strlen(buf);
    int status;
    for (;;) {
        status = host_chunk_compile(L, buf, len, "=stdin");
        if (status != LUA_OK && last_expression(L, buf, len)) {
            if (status != HOST_CHUNK_INCOMPLETE) lua_remove(L, -2); /* the message */
            status = LUA_OK;
        }
        if (status != HOST_CHUNK_INCOMPLETE) break;
        char *line = NULL;
        r = read_line(PROMPT2, &line);
        if (r < 0) { /* Ctrl-C drops the whole chunk */
            free(buf);
            return 1;
        }
        if (r == 0) { /* end of input inside a chunk: show why it is incomplete */
            status = luaL_loadbuffer(L, buf, len, "=stdin");
            if (status == LUA_OK) lua_pushliteral(L, "stdin: unexpected end of input");
            if (status == LUA_OK) status = LUA_ERRSYNTAX;
            break;
        }
        char *nb = append_line(buf, &len, line);
        free(line);
        if (nb == NULL) {
            free(buf);
            fputs("tdrl: out of memory\n", stderr);
            return 1;
        }
        buf = nb;
    }
    if (use_readline) history_add(buf);
    struct winsize ws; /* tensors print to the terminal's width, as it is now */
    if (use_readline && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) td_set_print_width(ws.ws_col);
    int quiet = is_quiet(buf, len);
    free(buf);
    if (status == LUA_OK) {
        status = host_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK && !quiet) print_results(L, base);
    }
    host_report(L, status, false);
    lua_settop(L, base);
    return 1;
}

/* ---- start-up: short globals and the banner ----------------------------------------------- */

static int is_not_found(const char *msg, const char *module) {
    char want[128];
    snprintf(want, sizeof want, "module '%s' not found", module);
    return msg && strncmp(msg, want, strlen(want)) == 0;
}

/* T = require 'tdrl'; nn, optim, data, plot, help when those modules exist. A global that is already
 * set (by a script run before -i) is left alone. Lists the short names besides T in `names`. */
static void preload(lua_State *L, char *names, size_t cap) {
    static const char *const mods[][2] = {
        {"T", "tdrl"}, {"nn", "tdrl.nn"}, {"optim", "tdrl.optim"},
        {"data", "tdrl.data"}, {"plot", "tdrl.plot"}, {"help", "tdrl.help"},
    };
    names[0] = '\0';
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        int t = lua_getglobal(L, mods[i][0]);
        lua_pop(L, 1);
        if (t != LUA_TNIL) continue;
        lua_getglobal(L, "require");
        lua_pushstring(L, mods[i][1]);
        int status = host_docall(L, 1, 1);
        if (status == LUA_OK) {
            lua_setglobal(L, mods[i][0]);
            size_t l = strlen(names);
            if (i > 0) snprintf(names + l, cap - l, "%s%s", l ? ", " : "", mods[i][0]);
        } else {
            const char *msg = lua_tostring(L, -1);
            if (i == 0 || !is_not_found(msg, mods[i][1]))
                fprintf(stderr, "tdrl: cannot load '%s': %s\n", mods[i][1], msg ? msg : "?");
            lua_pop(L, 1);
        }
    }
}

void host_repl(lua_State *L) {
    repl_thread = pthread_self();
    use_readline = isatty(STDIN_FILENO);
    if (use_readline) {
        rl_readline_name = "tdrl";
        rl_catch_signals = 0;
        rl_catch_sigwinch = 0;
        rl_instream = stdin;
        rl_outstream = stdout;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_terminal_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigaction(SIGWINCH, &sa, NULL);
        sigaction(SIGCONT, &sa, NULL);
        host_completion_init(L);
        history_init();
    } else {
        setvbuf(stdin, NULL, _IONBF, 0); /* ppoll must see every byte not yet read */
    }
    char names[128], version[256];
    preload(L, names, sizeof names);
    host_version_string(version, sizeof version);
    if (use_readline) /* on a pipe the output is the values alone */
        printf("%s  T = require 'tdrl'%s%s\n", version, names[0] ? "; also " : "", names);
    fflush(stdout);
    while (repl_step(L)) {
    }
    if (use_readline) history_save();
    fflush(stdout);
}
