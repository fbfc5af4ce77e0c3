/* The host's machinery that batch mode (main.c), the REPL (repl.c) and the Jupyter kernel
 * (kernel*.c) share: the signal handlers, calling Lua like lua.c's docall, reporting an error,
 * the version line.
 *
 * Signals: SIGINT is blocked in the main thread except while Lua code runs (host_docall) or the
 * REPL waits for a key (repl.c), so that its handler always runs on the main thread and can set
 * the interrupt hook on the running state. Threads created later (OpenMP) inherit the blocked
 * mask; threads created before main (OpenBLAS's pool) forward a SIGINT they receive.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "../ops/tensor.h"
#include "host.h"

extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);

volatile sig_atomic_t host_interrupted = 0;
volatile sig_atomic_t host_prompt_sigint = 0; /* repl.c: Ctrl-C while waiting for input */

static pthread_t main_thread;
static lua_State *volatile running_L = NULL; /* non-NULL while host_docall runs Lua code */
static volatile sig_atomic_t sigint_count = 0;
static struct timespec first_sigint;

/* ---- signals ------------------------------------------------------------------------------ */

/* Hook installed by the SIGINT handler: stops the running Lua code with an error. */
static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void on_sigint(int sig) {
    int saved_errno = errno;
    if (!pthread_equal(pthread_self(), main_thread)) { /* a pool thread got it: hand it on */
        pthread_kill(main_thread, sig);
        errno = saved_errno;
        return;
    }
    lua_State *L = running_L;
    if (L != NULL && td_interrupt_defer && !td_interrupt_pending) {
        td_interrupt_pending = 1; /* the job stops at its next step boundary */
        errno = saved_errno;
        return;
    }
    if (L != NULL) {
        td_interrupt_flag = 1; /* C kernels poll this */
        host_interrupted = 1;
        lua_sethook(L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
        /* Escape hatch for code that never returns to Lua nor polls the flag: a third
         * Ctrl-C, two seconds or more after the first, kills the process. */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ms = (long long)(now.tv_sec - first_sigint.tv_sec) * 1000 +
                       (now.tv_nsec - first_sigint.tv_nsec) / 1000000;
        if (sigint_count++ == 0) {
            first_sigint = now;
        } else if (sigint_count >= 3 && ms >= 2000) {
            signal(sig, SIG_DFL);
            raise(sig); /* delivered when this handler returns */
        }
    } else {
        host_prompt_sigint = 1;
    }
    errno = saved_errno;
}

/* SIGTERM, what a cluster scheduler sends before it kills a job: a job that defers interrupts
 * (the trainer) takes it as a deferred Ctrl-C, so it stops at its next step boundary and saves
 * its checkpoint, as on SIGINT; the process then exits 143 (128 + SIGTERM). Anything else, or a
 * second SIGTERM, terminates as by default. Not blocked with SIGINT: a REPL waiting for input
 * must still die of it. */
static volatile sig_atomic_t got_sigterm = 0;

static void on_sigterm(int sig) {
    int saved_errno = errno;
    if (!pthread_equal(pthread_self(), main_thread)) { /* a worker got it: the main thread decides */
        pthread_kill(main_thread, sig);
        errno = saved_errno;
        return;
    }
    if (running_L != NULL && td_interrupt_defer && !got_sigterm) {
        got_sigterm = 1;
        td_interrupt_pending = 1;
        errno = saved_errno;
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig); /* delivered when this handler returns */
    errno = saved_errno;
}

void host_signal_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGWINCH);
    sigaddset(set, SIGCONT);
}

void host_signals_init(void) {
    main_thread = pthread_self();
    sigset_t set;
    host_signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocking read in Lua code returns on Ctrl-C */
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- calling Lua -------------------------------------------------------------------------- */

static volatile sig_atomic_t user_stop = 0; /* the job stopped itself with "interrupted" */

/* lua.c's message handler: appends a traceback; turns non-string errors into a message. */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    /* a job that stopped cleanly on a Ctrl-C (error "interrupted", as the trainer raises): no traceback */
    if (strcmp(msg, "interrupted") == 0) user_stop = 1;
    if (user_stop) return 1;
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int host_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    sigset_t set; /* unblocked while Lua runs; also what programs it starts inherit */
    host_signal_set(&set);
    host_interrupted = 0;
    user_stop = 0;
    sigint_count = 0;
    td_interrupt_flag = 0;
    td_interrupt_defer = td_interrupt_pending = 0;
    running_L = L;
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    int status = lua_pcall(L, narg, nres, base);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    running_L = NULL;
    td_interrupt_flag = 0;
    if (lua_gethook(L) == lstop) /* the interrupt came too late to fire: drop it */
        lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

/* "tdrl", or "tdrl (rank 1 of 2)" under mpirun (lua_dist.c sets it) */
static const char *progname = TDRL_PROGNAME;

void host_set_progname(const char *name) { progname = name; }

int host_report(lua_State *L, int status, bool with_progname) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL) msg = "(error object is not a string)";
        fflush(stdout);
        if (with_progname) fprintf(stderr, "%s: ", progname);
        fprintf(stderr, "%s\n", msg);
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

void host_version_string(char *buf, size_t n) {
    /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": keep name and version, add the core */
    const char *config = openblas_get_config(), *core = openblas_get_corename();
    int vlen = 0;
    if (config) {
        const char *sp = strchr(config, ' ');
        vlen = sp ? (int)(strcspn(sp + 1, " ") + (size_t)(sp + 1 - config)) : (int)strlen(config);
    }
    int threads = td_get_num_threads();
    snprintf(buf, n, "tdrl %s (%s, %.*s %s, %d thread%s)", TDRL_VERSION, LUA_RELEASE, vlen,
             config ? config : "", core ? core : "", threads, threads == 1 ? "" : "s");
}

int host_failure_status(void) {
    if (!host_interrupted && !user_stop) return 1;
    return got_sigterm ? 128 + SIGTERM : TDRL_EXIT_INTERRUPTED;
}

