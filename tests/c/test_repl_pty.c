/* Drives the real tdrl binary (env BIN, default ./tdrl) through a pseudo-terminal, as a user
 * would: auto-print, multi-line chunks, errors, ';', tab completion, Ctrl-C at the prompt,
 * during a Lua loop and during a long C kernel, Ctrl-D, and the history file. HOME is a
 * temporary folder. Every read has a timeout and an alarm bounds the whole run: failure bounds
 * only, generous enough for a machine whose cores are all busy. Nothing is timed: a Ctrl-C is
 * sent once the running code has printed a marker, not after a delay. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define PROMPT "tdrl> "
#define PROMPT2 "  >> "

static const char *bin;
static char home[256];
static pid_t child = -1;
static int master = -1;
static char out[1 << 20];
static size_t out_len = 0;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "not ok - test_repl_pty: overall timeout (600 s)\n";
    if (write(STDOUT_FILENO, msg, sizeof msg - 1) < 0) {
    }
    if (child > 0) kill(child, SIGKILL);
    _exit(1);
}

/* Reads what is available within `timeout` seconds (stops early once `needle`, if given,
 * appears at or after position `from`). Returns 1 when the needle was seen. */
static int read_until(const char *needle, size_t from, double timeout) {
    double end = now() + timeout;
    for (;;) {
        out[out_len] = '\0';
        if (needle && strstr(out + from, needle)) return 1;
        double left = end - now();
        if (left <= 0) return 0;
        struct pollfd p = {master, POLLIN, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        if (out_len + 4096 >= sizeof out) return 0;
        ssize_t n = read(master, out + out_len, 4096);
        if (n <= 0) { /* EIO: the child closed the terminal */
            out[out_len] = '\0';
            return needle && strstr(out + from, needle) != NULL;
        }
        out_len += (size_t)n;
    }
}

static void send_str(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(master, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Sends `line` + Enter and waits for the next primary prompt. Returns the output between the
 * end of the echoed line and that prompt, '\r' removed (static buffer), or NULL on timeout. */
static const char *eval_t(const char *line, double timeout) {
    static char resp[1 << 16];
    size_t from = out_len;
    send_str(line);
    send_str("\r");
    /* the prompt that follows the echoed line and the response */
    double end = now() + timeout;
    const char *nl = NULL, *pr = NULL;
    while (now() < end) {
        read_until("\n", from, end - now());
        nl = strchr(out + from, '\n');
        if (nl) {
            read_until(PROMPT, (size_t)(nl - out), end - now());
            nl = strchr(out + from, '\n'); /* out may have grown, not moved */
            pr = strstr(nl, PROMPT);
            if (pr) break;
        }
    }
    if (!nl || !pr) return NULL;
    size_t k = 0;
    for (const char *p = nl + 1; p < pr && k + 1 < sizeof resp; p++)
        if (*p != '\r') resp[k++] = *p;
    resp[k] = '\0';
    return resp;
}

#define WAIT 60.0 /* seconds: the failure bound of every wait */

static const char *eval(const char *line) { return eval_t(line, WAIT); }

static int eval_is(const char *line, const char *want) {
    const char *r = eval(line);
    if (r == NULL || strcmp(r, want) != 0) {
        printf("# %s -> %s (want %s)\n", line, r ? r : "(timeout)", want);
        return 0;
    }
    return 1;
}

static int eval_has(const char *line, const char *want) {
    const char *r = eval(line);
    if (r == NULL || strstr(r, want) == NULL) {
        printf("# %s -> %s (want it to contain %s)\n", line, r ? r : "(timeout)", want);
        return 0;
    }
    return 1;
}

static int start(void) {
    struct winsize ws = {.ws_row = 40, .ws_col = 200};
    out_len = 0;
    child = forkpty(&master, NULL, NULL, &ws);
    if (child < 0) return 0;
    if (child == 0) {
        char inputrc[300];
        snprintf(inputrc, sizeof inputrc, "%s/inputrc", home);
        setenv("HOME", home, 1);
        setenv("TERM", "dumb", 1);
        setenv("INPUTRC", inputrc, 1);
        setenv("TDRL_TRACE_LONG_OPS", "1", 1); /* "tdrl: matmul started" once a long kernel runs */
        execl(bin, bin, (char *)NULL);
        perror("exec");
        _exit(127);
    }
    return read_until(PROMPT, 0, WAIT);
}

/* Ctrl-D at an empty prompt; returns the exit status (or -1 on timeout). */
static int finish(void) {
    send_str("\x04");
    read_until(NULL, 0, 0.2);
    double end = now() + WAIT;
    int st;
    while (now() < end) {
        pid_t r = waitpid(child, &st, WNOHANG);
        if (r == child) {
            close(master);
            child = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        read_until(NULL, 0, 0.05);
    }
    kill(child, SIGKILL);
    waitpid(child, &st, 0);
    close(master);
    child = -1;
    return -1;
}

/* Starts `line`, waits until it printed `marker` (built in the line by concatenation, so that
 * the echo does not contain it), sends Ctrl-C; returns seconds until the prompt is back (or -1
 * when the marker or the prompt did not come), and whether "interrupted" was printed. */
static double interrupt_at(const char *line, const char *marker, int *said_interrupted) {
    size_t from = out_len;
    send_str(line);
    send_str("\r");
    *said_interrupted = 0;
    if (!read_until(marker, from, WAIT)) return -1;
    size_t mark = out_len;
    send_str("\x03");
    double t0 = now();
    int ok = read_until(PROMPT, mark, WAIT);
    double dt = now() - t0;
    *said_interrupted = strstr(out + from, "interrupted") != NULL;
    return ok ? dt : -1;
}

int main(void) {
    bin = getenv("BIN");
    if (bin == NULL || *bin == '\0') bin = "./tdrl";
    signal(SIGALRM, on_alarm);
    alarm(600);
    snprintf(home, sizeof home, "/tmp/tdrl_pty_XXXXXX");
    if (mkdtemp(home) == NULL) {
        CHECK(0, "mkdtemp");
        return 1;
    }
    char path[400];
    snprintf(path, sizeof path, "%s/inputrc", home);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("set enable-bracketed-paste off\nset bell-style none\n", f);
        fclose(f);
    }

    CHECK(start(), "REPL starts and shows the prompt");
    CHECK(strstr(out, "T = require 'tdrl'") != NULL, "banner names T = require 'tdrl'");

    CHECK(eval_is("1+1", "2\n"), "1+1 prints 2");
    CHECK(eval_is("nil", "nil\n"), "an expression yielding nil prints nil");
    CHECK(eval_is("x0 = 1", ""), "a statement prints nothing");
    CHECK(eval_is("1, 'a', nil", "1\ta\tnil\n"), "several values print tab separated");

    /* multi-line chunk */
    size_t from = out_len;
    send_str("function f(x)\r");
    int p2 = read_until(PROMPT2, from, WAIT);
    from = out_len;
    send_str("return x*2\r");
    p2 = p2 && read_until(PROMPT2, from, WAIT);
    CHECK(p2, "an incomplete chunk gets the continuation prompt");
    CHECK(eval_is("end", ""), "the chunk completes on 'end'");
    CHECK(eval_is("f(21)", "42\n"), "the multi-line function works: f(21) = 42");
    from = out_len;
    send_str("{1,\r");
    CHECK(read_until(PROMPT2, from, WAIT), "an incomplete expression gets the continuation prompt");
    CHECK(eval_is("2}", "{1, 2}\n"), "a multi-line expression prints its value (a table, readably)");

    CHECK(eval_is("r1 = 4; r1", "4\n"), "stmt; expr shows the expression's value (as the kernel does)");
    CHECK(eval_is("r1 = 5; r1;", ""), "... and stmt; expr; keeps it quiet");
    CHECK(eval_is("r1", "5\n"), "... after running it");
    /* errors */
    const char *r = eval("error('boom')");
    CHECK(r && strstr(r, "boom") && strstr(r, "stack traceback"), "an error prints a traceback with its message");
    CHECK(eval_is("1+2", "3\n"), "the REPL goes on after an error");
    CHECK(eval_has("1 +* 2", "unexpected symbol"), "a syntax error is reported");

    /* ';' */
    CHECK(eval_is("1+1;", ""), "a trailing ';' keeps the value quiet");
    CHECK(eval_is("q = 7;", ""), "a statement with ';' runs");
    CHECK(eval_is("q", "7\n"), "... and its effect stays");

    /* Ctrl-C at the prompt */
    from = out_len;
    send_str("abc");
    read_until("abc", from, WAIT);
    send_str("\x03");
    CHECK(read_until(PROMPT, from + 3, WAIT), "Ctrl-C at the prompt gives a fresh prompt");
    CHECK(eval_is("1+3", "4\n"), "the cancelled line is dropped");
    from = out_len;
    send_str("function g()\r");
    read_until(PROMPT2, from, WAIT);
    from = out_len;
    send_str("\x03");
    CHECK(read_until(PROMPT, from, WAIT), "Ctrl-C at the continuation prompt drops the chunk");
    CHECK(eval_is("type(g)", "nil\n"), "... and nothing of it ran");

    /* tab completion */
    CHECK(eval_is("aa = {bb = {cccc = 7}}", ""), "nested table for completion");
    from = out_len;
    send_str("aa.bb.cc\t");
    CHECK(read_until("cccc", from, WAIT), "a.b.c<TAB> completes a nested field");
    CHECK(eval_is("", "7\n"), "... to aa.bb.cccc");
    CHECK(eval_is("obj = setmetatable({}, {__index = {foobar = 9}})", ""), "object with an __index table");
    send_str("obj.foo\t");
    CHECK(eval_is("", "9\n"), "fields reached through __index complete (obj.foobar)");
    CHECK(eval_is("str = 'abc'", ""), "str = 'abc'");
    send_str("str:up\t");
    CHECK(eval_is("()", "ABC\n"), "string methods complete after ':' (str:upper)");
    /* T has zeros, zero_, zero_grad: the first TAB gives their common prefix, the second
     * lists them (by their last name) */
    from = out_len;
    send_str("z = T.ze\t\t");
    CHECK(read_until("zeros", from, WAIT) && strstr(out + from, "zero_grad"), "T.ze<TAB><TAB> lists T's zero* fields");
    CHECK(!strstr(out + from, "T.zeros"), "... by their last name");
    send_str("s");
    CHECK(eval_is("(3)", ""), "T.ze<TAB>s completes to T.zeros");
    CHECK(eval_is("type(z)", "userdata\n"), "... and T.zeros(3) made a tensor");
    CHECK(eval_is("x = T.zeros(2)", ""), "x = T.zeros(2)");
    send_str("w = x:resh\t");
    CHECK(eval_is("(1,2)", ""), "x:resh<TAB> completes to x:reshape (tensor method via __methods)");
    CHECK(eval_is("type(w)", "userdata\n"), "... and x:reshape(1,2) made a tensor");
    send_str("retu\t");
    CHECK(eval_is("1", "1\n"), "keywords complete (retu -> return )");
    CHECK(eval_is("lst = {{name = 'n1'}, cfg = {['k'] = {deep = 3}}}", ""), "a list of tables");
    send_str("lst[1].na\t");
    CHECK(eval_is("", "n1\n"), "after a subscript the chain goes on: lst[1].na<TAB> -> lst[1].name");
    send_str("lst.cfg['k'].de\t");
    CHECK(eval_is("", "3\n"), "... with a string key too: lst.cfg['k'].de<TAB> -> .deep");
    from = out_len;
    send_str("x:size():\t\t");
    read_until("x:size():", from, WAIT);
    send_str("\x03");
    read_until(PROMPT, from, WAIT);
    CHECK(!strstr(out + from, "print") && !strstr(out + from, "collectgarbage"),
          "after a call (x:size():<TAB>) the globals are not offered");
    CHECK(eval_is("xg = T.zeros(2):requires_grad_(true)", ""), "a tensor that requires grad");
    send_str("xg.requires_g\t");
    CHECK(eval_is("", "true\n"), "tensor fields complete: xg.requires_g<TAB> -> xg.requires_grad");
    send_str("nosuchthing.ab\t");
    CHECK(eval_has("", "nosuchthing"), "completing on a nil chain is harmless");

    /* Ctrl-C while Lua code runs */
    CHECK(eval_is("y = 5", ""), "y = 5");
    int said = 0;
    double dt = interrupt_at("print('in-'..'loop') for i=1,1e12 do end", "in-loop", &said);
    CHECK(dt >= 0, "Ctrl-C stops a Lua loop (%.3f s)", dt);
    CHECK(said, "... saying interrupted");
    CHECK(eval_is("y", "5\n"), "... and the session keeps its globals (y = 5)");

    /* Ctrl-C while a loop runs programs: the child dies of it, and so does the loop */
    dt = interrupt_at("for i = 1, 4 do os.execute('echo in-ch\"\"ild; exec tail -f /dev/null') end", "in-child", &said);
    CHECK(dt >= 0, "Ctrl-C stops a loop that runs programs (%.3f s)", dt);
    CHECK(said, "... saying interrupted");
    CHECK(eval_is("y", "5\n"), "... and the session goes on");

    /* Ctrl-C during a long C kernel */
    from = out_len;
    dt = interrupt_at("a = T.zeros(8192, 8192); c = a:matmul(a)", "matmul started", &said);
    CHECK(dt >= 0, "Ctrl-C stops a long C kernel (%.3f s)", dt);
    CHECK(said && strstr(out + from, "matmul: interrupted"), "... saying 'matmul: interrupted'");
    CHECK(eval_is("y + 1", "6\n"), "... and the session survives");
    CHECK(eval_is("1+4", "5\n"), "last line of the session");

    if (getenv("PTY_DEBUG")) printf("%s", out);
    int st = finish();
    CHECK(st == 0, "Ctrl-D at an empty prompt exits 0 (status %d)", st);

    /* history */
    snprintf(path, sizeof path, "%s/.tdrl_history", home);
    char hist[1 << 16] = "";
    f = fopen(path, "r");
    if (f) {
        size_t n = fread(hist, 1, sizeof hist - 1, f);
        hist[n] = '\0';
        fclose(f);
    }
    CHECK(f != NULL, "history file written at exit");
    CHECK(strstr(hist, "1+1\n") && strstr(hist, "f(21)\n"), "history holds the lines entered");
    CHECK(strstr(hist, "function f(x)\nreturn x*2\nend\n") != NULL, "a multi-line chunk is one history entry");

    /* a new session reads it back: Ctrl-P recalls the last line (1+4) */
    CHECK(start(), "second session starts");
    send_str("\x10");
    CHECK(eval_is("", "5\n"), "history is read at start (Ctrl-P recalls 1+4)");
    if (getenv("PTY_DEBUG")) printf("%s", out);
    CHECK(finish() == 0, "second session exits 0");

    snprintf(path, sizeof path, "rm -rf '%s'", home);
    if (system(path) != 0) {
    }
    return check_failures;
}
