/* The `tdrl` host: command line (main.c), REPL (repl.c), tab completion (complete.c), Jupyter
 * kernel (kernel*.c). The pieces of lua.c's machinery they share live in host.c (signals, docall,
 * report, version), chunk.c (compiling typed code), os_execute.c and pretty.c. */
#ifndef TDRL_HOST_H
#define TDRL_HOST_H

#include <lua.h>
#include <signal.h>
#include <stdbool.h>

#ifndef TDRL_VERSION
#define TDRL_VERSION "0.1.0"
#endif

#define TDRL_PROGNAME "tdrl"

/* Exit status of a batch run stopped by Ctrl-C (128 + SIGINT, as a shell reports it). */
#define TDRL_EXIT_INTERRUPTED 130

/* Set by the SIGINT handler when it interrupted running Lua code (cleared by the caller). */
extern volatile sig_atomic_t host_interrupted;
/* Set by the SIGINT handler when no Lua code runs (the REPL waits for input). */
extern volatile sig_atomic_t host_prompt_sigint;

/* The signals the host handles on the main thread: SIGINT (Ctrl-C), SIGWINCH (terminal
 * resized) and SIGCONT (resumed after Ctrl-Z; the REPL puts the terminal back in shape). They
 * are blocked on the main thread except while Lua code runs or the REPL waits for a key. */
void host_signal_set(sigset_t *set);

/* Installs the process-wide SIGINT handler and blocks SIGINT in the calling (main) thread;
 * call once, before any thread is created (td_threads_init, OpenMP). Worker threads inherit
 * the blocked mask; a SIGINT delivered to any other thread anyway is forwarded to main. */
void host_signals_init(void);

/* Calls the function below `narg` arguments on the stack like lua.c's docall: with a traceback
 * message handler, SIGINT unblocked and turned into an "interrupted!" error (plus
 * td_interrupt_flag = 1 for C kernels). Afterwards SIGINT is blocked again, the flag and the
 * interrupt hook are cleared. Returns the lua_pcall status. */
int host_docall(lua_State *L, int narg, int nres);

/* Prints the error message on the stack top to stderr (prefixed "tdrl: " when progname) and
 * pops it. Returns status. */
int host_report(lua_State *L, int status, bool progname);

/* The exit status of a batch run whose last host_docall failed: 130 when Ctrl-C stopped it (143
 * for SIGTERM), else 1. */
int host_failure_status(void);

/* Under mpirun (vm/lua_dist.c): errors are reported as "tdrl (rank 1 of 2): ...", and a run that
 * ends in an error aborts every rank of the job (the others would wait for it), else MPI is
 * finalised. Weak: the fuzzers link the bindings without this host. */
void host_set_progname(const char *name) __attribute__((weak));
void host_dist_exit(int status) __attribute__((weak));

/* One line: "tdrl <version> (Lua 5.4.x, OpenBLAS ...)". */
void host_version_string(char *buf, size_t n);

/* Compiling typed code (chunk.c), for the REPL and the kernel alike. */
#define HOST_CHUNK_INCOMPLETE (-1)
/* Compiles `return <buf>`, else `<buf>`. Pushes the function and returns LUA_OK; returns
 * HOST_CHUNK_INCOMPLETE (nothing pushed) when either form ends early (more lines would
 * complete it); else pushes the syntax error that says more and returns its status. */
int host_chunk_compile(lua_State *L, const char *buf, size_t len, const char *name);
/* The syntax error of code that does not compile, incomplete or not: pushes the message of
 * the statement form, or of the return form when the code cannot start a statement ("{1,"),
 * and returns its status; LUA_OK with nothing pushed when the code compiles. */
int host_chunk_error(lua_State *L, const char *buf, size_t len, const char *name);
/* Compiles `<code before at>return <code from at>` (the values through a call; see chunk.c).
 * Pushes the function or the message (the wrapper's); returns the status. */
int host_chunk_load_return(lua_State *L, const char *code, size_t len, size_t at, const char *name);
/* The chunk with its last statement(s) as `return ...`: tries the splits after each ';' and at
 * each line start, from the end. With `ident_only` (the chunk compiles as it is) only a suffix
 * that starts with a name is tried: there no split can change how the code before it parses.
 * Pushes the function and returns 1, or returns 0 with the stack unchanged. */
int host_chunk_last_expression(lua_State *L, const char *code, size_t len, const char *name, int ident_only);
/* "complete", "incomplete" or "invalid", as the REPL treats the code. */
const char *host_chunk_state(lua_State *L, const char *buf, size_t len);

/* Replaces os.execute with one that flushes stdout first and raises an "interrupted" error
 * when the program was stopped by Ctrl-C (os_execute.c). */
void host_wrap_execute(lua_State *L);

/* pretty(v) -> string (pretty.c): a value's text at the REPL and as a cell's result; a table
 * shows its contents (nested, cut short) rather than "table: 0x...". */
int host_l_pretty(lua_State *L);

/* REPL (repl.c). Runs until EOF (Ctrl-D) or os.exit. Preloads T, nn, optim, data, plot. */
void host_repl(lua_State *L);

/* Tab completion (complete.c): hooks itself into readline. */
void host_completion_init(lua_State *L);
/* The completions of line[start, end) (readline's format: [0] the common part when several,
 * NULL-terminated, malloc'd), as TAB gives them at the REPL; NULL when none. */
char **host_complete(const char *line, int start, int end);

#endif
