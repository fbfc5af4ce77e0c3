/* tdrl: the host binary. Command line handling follows lua.c (Lua 5.4): options -e -l -i -v -E
 * -W, a script with its `arg` table, stdin as a script when it is not a terminal; with no
 * script on a terminal, the REPL (repl.c), with --kernel the Jupyter kernel (kernel.c). Signals,
 * docall and error reports: host.c. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../ops/tensor.h"
#include "bind.h"
#include "host.h"
#include "kernel.h"

extern char *openblas_get_corename(void);

/* Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise some recent Xeons (a virtual
 * machine's "Intel Xeon Processor") and falls back to its Prescott kernels: sgemm runs 3-5x
 * slower than it could. It picks its kernels from OPENBLAS_CORETYPE in the library's
 * constructor, before main; so when it fell back on a CPU with AVX2/AVX-512, set the variable
 * and exec ourselves once more. A user's own OPENBLAS_CORETYPE is left alone. */
/* OpenMP's idle workers spin for a long while (libgomp: ~300k iterations) before sleeping; on a
 * 2-core machine they then take the core from another process and a parallel region waits out
 * whole scheduler ticks (4 ms): a tiny training step measured 6.7 s with such workers (and
 * OpenBLAS's own spinning threads, gone since td_gemm keeps OpenBLAS single-threaded) on a busy
 * machine, 1.7 s with sleeping ones. Sleeping at once (OMP_WAIT_POLICY=passive) costs a futex
 * wake-up per parallel region instead, which the heads' and MINE's back-to-back small GEMMs feel:
 * a short spin (GOMP_SPINCOUNT=10000 iterations) made the GRU epoch 1.2x and MINE
 * 1.25x faster than passive, and a tiny step on a machine with one core taken by another process
 * 11% slower (1.39 vs 1.25 s). Like OPENBLAS_CORETYPE this is read before main: set it (unless the
 * user chose OMP_WAIT_POLICY or GOMP_SPINCOUNT) and re-exec. */
static void env_check(char **argv) {
    bool changed = false;
    if (getenv("OMP_WAIT_POLICY") == NULL && getenv("GOMP_SPINCOUNT") == NULL) {
        setenv("GOMP_SPINCOUNT", "10000", 1);
        changed = true;
    }
    const char *core = openblas_get_corename();
    if (getenv("OPENBLAS_CORETYPE") == NULL && core != NULL && strcasecmp(core, "Prescott") == 0) {
        __builtin_cpu_init();
        const char *want = NULL;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
            want = "SkylakeX";
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            want = "Haswell";
        if (want != NULL) {
            setenv("OPENBLAS_CORETYPE", want, 1);
            changed = true;
        }
    }
    if (changed) execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
}

/* ---- library path ------------------------------------------------------------------------- */

/* Appends the search templates for directory `dir` (no trailing '/') to b. */
static void add_dir_templates(luaL_Buffer *b, const char *dir, size_t len) {
    luaL_addlstring(b, dir, len);
    luaL_addstring(b, "/?.lua;");
    luaL_addlstring(b, dir, len);
    luaL_addstring(b, "/?/init.lua;");
}

/* package.path = TDRL_PATH entries; <exedir>/lua; <exedir>/../share/tdrl/lua; <exedir>/../lua
 * (a binary in a build folder of the source tree); then Lua's own path.
 * A TDRL_PATH entry with a '?' is a template as in LUA_PATH; any other is a directory. */
static void setup_path(lua_State *L, const char *argv0, bool noenv) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
    } else if (argv0 && strchr(argv0, '/') && realpath(argv0, exe)) {
        n = (ssize_t)strlen(exe);
    } else {
        exe[0] = '\0';
    }
    lua_getglobal(L, "package");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *env = noenv ? NULL : getenv("TDRL_PATH");
    if (env && *env) {
        const char *p = env;
        while (*p) {
            size_t len = strcspn(p, ";");
            const char *q = memchr(p, '?', len);
            if (q) {
                luaL_addlstring(&b, p, len);
                luaL_addchar(&b, ';');
            } else {
                /* a directory list may also use ':' */
                const char *s = p, *end = p + len;
                while (s < end) {
                    const char *c = memchr(s, ':', (size_t)(end - s));
                    size_t l = c ? (size_t)(c - s) : (size_t)(end - s);
                    while (l > 1 && s[l - 1] == '/') l--;
                    if (l > 0) add_dir_templates(&b, s, l);
                    s += l;
                    while (s < end && (*s == ':' || *s == '/')) s++;
                    if (c && s <= c) s = c + 1;
                }
            }
            p += len;
            if (*p == ';') p++;
        }
    }
    char *slash = exe[0] ? strrchr(exe, '/') : NULL;
    if (slash) {
        *slash = '\0'; /* exe is now the directory of the executable */
        char dir[PATH_MAX + 64], parent[PATH_MAX + 8];
        snprintf(dir, sizeof dir, "%s/lua", exe); /* ./tdrl in the source tree */
        add_dir_templates(&b, dir, strlen(dir));
        snprintf(parent, sizeof parent, "%s", exe);
        char *up = strrchr(parent, '/');
        if (up)
            *up = '\0'; /* PREFIX when installed as PREFIX/bin/tdrl */
        else
            snprintf(parent, sizeof parent, "%s/..", exe);
        snprintf(dir, sizeof dir, "%s/share/tdrl/lua", parent); /* make install */
        add_dir_templates(&b, dir, strlen(dir));
        snprintf(dir, sizeof dir, "%s/lua", parent); /* build-asan/tdrl, build-fuzz/tdrl */
        add_dir_templates(&b, dir, strlen(dir));
    }
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* ---- command line (lua.c) ----------------------------------------------------------------- */

static void print_usage(FILE *f, const char *badoption) {
    if (badoption) {
        if (badoption[1] == 'e' || badoption[1] == 'l')
            fprintf(f, "%s: '%s' needs argument\n", TDRL_PROGNAME, badoption);
        else
            fprintf(f, "%s: unrecognized option '%s'\n", TDRL_PROGNAME, badoption);
    }
    fprintf(f,
            "usage: %s [options] [script [args]]\n"
            "Available options are:\n"
            "  -e stmt   execute string 'stmt'\n"
            "  -i        enter the REPL after executing 'script'\n"
            "  -l mod    require library 'mod' into global 'mod' (its last dotted part)\n"
            "  -l g=mod  require library 'mod' into global 'g'\n"
            "  -v, --version  show version information\n"
            "  -E        ignore environment variables (TDRL_PATH, LUA_PATH, LUA_CPATH)\n"
            "  -W        turn warnings on\n"
            "  -h, --help     show this help\n"
            "  --        stop handling options\n"
            "  -         stop handling options and execute stdin\n"
            "  --kernel -f FILE  run as a Jupyter kernel (scripts/install_kernel.sh installs it)\n"
            "With no script: the REPL when stdin is a terminal, else stdin runs as a script.\n"
            "Exit status: 0, 1 on an error, 130 when stopped by Ctrl-C.\n",
            TDRL_PROGNAME);
    fflush(f);
}

#define HAS_ERROR 1
#define HAS_I 2
#define HAS_V 4
#define HAS_E 8
#define HAS_BIG_E 16
#define HAS_H 32

/* Returns the option flags; *first = index of the script (0 if none; the bad option on error). */
static int collectargs(char **argv, int *first) {
    int args = 0;
    int i;
    for (i = 1; argv[i] != NULL; i++) {
        *first = i;
        if (argv[i][0] != '-') return args; /* the script */
        switch (argv[i][1]) {
        case '-':
            /* the long spellings every other program takes */
            if (strcmp(argv[i], "--help") == 0) {
                args |= HAS_H;
                break;
            }
            if (strcmp(argv[i], "--version") == 0) {
                args |= HAS_V;
                break;
            }
            if (argv[i][2] != '\0') return HAS_ERROR;
            *first = i + 1;
            return args;
        case '\0':
            return args; /* script "-": stdin */
        case 'E':
            if (argv[i][2] != '\0') return HAS_ERROR;
            args |= HAS_BIG_E;
            break;
        case 'W':
            if (argv[i][2] != '\0') return HAS_ERROR;
            break;
        case 'h':
            if (argv[i][2] != '\0') return HAS_ERROR;
            args |= HAS_H;
            break;
        case 'i':
            if (argv[i][2] != '\0') return HAS_ERROR;
            args |= HAS_I;
            break;
        case 'v':
            if (argv[i][2] != '\0') return HAS_ERROR;
            args |= HAS_V;
            break;
        case 'e':
            args |= HAS_E;
            /* fallthrough */
        case 'l':
            if (argv[i][2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') return HAS_ERROR;
            }
            break;
        default:
            return HAS_ERROR;
        }
    }
    *first = 0;
    return args;
}

static void createargtable(lua_State *L, char **argv, int argc, int script) {
    if (script == argc) script = 0;
    int narg = argc - (script + 1);
    lua_createtable(L, narg > 0 ? narg : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
    if (status == LUA_OK) status = host_docall(L, 0, 0);
    return host_report(L, status, true);
}

static int dostring(lua_State *L, const char *s, const char *name) {
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod, -l g=mod: global = require(mod). Without '=', the global is the last dotted part of
 * the module name (tdrl.nn -> nn). */
static int dolibrary(lua_State *L, const char *spec) {
    const char *eq = strchr(spec, '=');
    const char *modname;
    if (eq) {
        lua_pushlstring(L, spec, (size_t)(eq - spec));
        modname = eq + 1;
    } else {
        const char *dot = strrchr(spec, '.');
        lua_pushstring(L, dot ? dot + 1 : spec);
        modname = spec;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, modname);
    int status = host_docall(L, 1, 1);
    if (status == LUA_OK) {
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1);
        return LUA_OK;
    }
    lua_remove(L, -2);
    return host_report(L, status, true);
}

static int runargs(lua_State *L, char **argv, int n) {
    for (int i = 1; i < n; i++) {
        int option = argv[i][1];
        switch (option) {
        case 'e':
        case 'l': {
            const char *extra = argv[i] + 2;
            if (*extra == '\0') extra = argv[++i];
            int status = option == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
            if (status != LUA_OK) return 0;
            break;
        }
        case 'W':
            lua_warning(L, "@on", 0);
            break;
        }
    }
    return 1;
}

static int pushargs(lua_State *L) {
    if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    int i;
    for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -i);
    return n;
}

static int handle_script(lua_State *L, char **argv) {
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = host_docall(L, n, LUA_MULTRET);
    }
    return host_report(L, status, true);
}

struct run_result {
    int exit_status;
};

static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    struct run_result *res = (struct run_result *)lua_touserdata(L, 3);
    int script = 0;
    int kernel = argc >= 2 && strcmp(argv[1], "--kernel") == 0; /* Jupyter kernel (kernel.c) */
    int args = kernel ? 0 : collectargs(argv, &script);
    int optlim = script > 0 ? script : argc;
    luaL_checkversion(L);
    res->exit_status = 1;
    if (args == HAS_ERROR) {
        print_usage(stderr, argv[script]);
        return 0;
    }
    if (args & HAS_H) {
        print_usage(stdout, NULL);
        res->exit_status = 0;
        return 0;
    }
    if (args & HAS_V) {
        char v[512];
        host_version_string(v, sizeof v);
        printf("%s\n", v);
        fflush(stdout);
    }
    if (args & HAS_BIG_E) {
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    host_wrap_execute(L);
    struct winsize ws; /* printed tensors wrap at the terminal's width (80 on a pipe) */
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) td_set_print_width(ws.ws_col);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_tdrl_core);
    lua_setfield(L, -2, "tdrl.core");
    lua_pop(L, 1);
    setup_path(L, argv[0], (args & HAS_BIG_E) != 0);
    if (kernel) {
        res->exit_status = host_kernel(L, argc - 2, argv + 2);
        return 0;
    }
    createargtable(L, argv, argc, script);
    if (!runargs(L, argv, optlim)) {
        goto failed;
    }
    if (script > 0 && handle_script(L, argv + script) != LUA_OK) {
        goto failed;
    }
    if (args & HAS_I) {
        host_repl(L);
    } else if (script < 1 && !(args & (HAS_E | HAS_V))) {
        if (isatty(STDIN_FILENO)) {
            host_repl(L);
        } else if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) {
            goto failed;
        }
    }
    res->exit_status = 0;
    return 0;
failed:
    res->exit_status = host_failure_status();
    return 0;
}

int main(int argc, char **argv) {
    env_check(argv);
    host_signals_init(); /* before any thread exists */
    td_threads_init();
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create state: not enough memory\n", TDRL_PROGNAME);
        return 1;
    }
    struct run_result res = {1};
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    lua_pushlightuserdata(L, &res);
    int status = lua_pcall(L, 3, 0, 0);
    host_report(L, status, true);
    if (status != LUA_OK) res.exit_status = 1;
    lua_close(L);
    fflush(stdout);
    if (host_dist_exit) host_dist_exit(res.exit_status);
    return res.exit_status;
}
