/* The Jupyter kernel's tests, run by tests/run.sh with the other C tests: the protocol test
 * (tests/kernel/protocol_test.py drives `tdrl --kernel` with jupyter_client) and the headless
 * execution of every notebook (tests/kernel/run_notebooks.py, `jupyter nbconvert --execute`).
 * Both are Python programs of Debian's python3 (/usr/bin/python3); their "ok" / "not ok"
 * lines pass through. When a package is missing, one "not ok" line gives the apt-get command.
 *
 * Environment: BIN (the binary, default ./tdrl); TDRL_KERNEL_TESTS = all (default), protocol or
 * notebooks. The time limits are failure bounds for a suite that hangs, far above what the
 * suites take on a busy machine. Under AddressSanitizer (ASAN_OPTIONS set, as `make asan` does) only the protocol
 * test runs: the notebooks' training would take far longer than their time limit. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

#define PYTHON "/usr/bin/python3"
#define APT_PY                                                                                                   \
    "apt-get install -y --no-install-recommends python3-zmq python3-jupyter-client python3-nbformat "          \
    "python3-nbclient python3-nbconvert jupyter-nbconvert"
#define APT_BUILD "apt-get install -y --no-install-recommends libzmq3-dev libssl-dev && make"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs argv with its output (stdout and stderr) read line by line: passed through, and its
 * "not ok" lines counted into *not_ok. Killed (its process group) after timeout_s. Returns the
 * exit status, 128 + signal, or -1 when it could not start. */
static int run(char *const argv[], double timeout_s, int *not_ok, int quiet) {
    int p[2];
    if (pipe(p) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        return -1;
    }
    FILE *f = fdopen(p[0], "r");
    double deadline = now() + timeout_s;
    int killed = 0;
    char line[8192];
    /* a reader that blocks: the timeout is enforced by a watchdog process instead */
    fflush(stdout);
    pid_t dog = fork();
    if (dog == 0) {
        while (now() < deadline) {
            if (kill(pid, 0) != 0) _exit(0);
            usleep(200000);
        }
        kill(-pid, SIGTERM);
        sleep(3);
        kill(-pid, SIGKILL);
        _exit(1);
    }
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "not ok - ", 9) == 0) ++*not_ok;
        if (!quiet) {
            fputs(line, stdout);
            fflush(stdout);
        }
    }
    if (f) fclose(f);
    int st = 0;
    waitpid(pid, &st, 0);
    if (dog > 0) {
        kill(dog, SIGKILL);
        int ds = 0;
        waitpid(dog, &ds, 0);
        killed = WIFEXITED(ds) && WEXITSTATUS(ds) == 1;
    }
    if (killed) return 124;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Does `bin --kernel` exist in this build (or was it built without ZeroMQ)? */
static int kernel_built(const char *bin) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' --kernel -f /nonexistent/tdrl-kernel-test.json 2>&1", bin);
    FILE *f = popen(cmd, "r");
    if (f == NULL) return 0;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    pclose(f);
    return strstr(buf, "connection file") != NULL && strstr(buf, "built without") == NULL;
}

static void suite(const char *name, char *const argv[], double timeout_s) {
    int not_ok = 0;
    double t0 = now();
    int st = run(argv, timeout_s, &not_ok, 0);
    if (st == 124)
        CHECK(0, "%s: stopped after %.0f s (time limit)", name, timeout_s);
    else if (st != 0 && not_ok == 0)
        CHECK(0, "%s exited with status %d and no failed check (%.0f s)", name, st, now() - t0);
    check_failures += not_ok;
}

int main(void) {
    const char *bin_env = getenv("BIN");
    char bin[4096];
    if (realpath(bin_env && *bin_env ? bin_env : "./tdrl", bin) == NULL) {
        CHECK(0, "kernel: no tdrl binary at %s (run make first)", bin_env ? bin_env : "./tdrl");
        return 1;
    }
    const char *which = getenv("TDRL_KERNEL_TESTS");
    if (which == NULL || *which == '\0') which = "all";
    if (!kernel_built(bin)) {
        CHECK(0, "kernel: %s was built without the Jupyter kernel (ZeroMQ, OpenSSL). Run as root: %s", bin,
              APT_BUILD);
        return 1;
    }
    if (access(PYTHON, X_OK) != 0) {
        CHECK(0, "kernel: the tests need Debian's " PYTHON " and Jupyter's packages. Run as root: " APT_PY);
        return 1;
    }
    char *probe[] = {PYTHON, "-c", "import zmq, jupyter_client, nbformat, nbclient, nbconvert", NULL};
    int dummy = 0;
    if (run(probe, 60, &dummy, 1) != 0) {
        CHECK(0, "kernel: Jupyter's Python packages are missing. Run as root: " APT_PY);
        return 1;
    }
    if (strcmp(which, "all") == 0 || strcmp(which, "protocol") == 0) {
        char *argv[] = {PYTHON, "tests/kernel/protocol_test.py", bin, NULL};
        suite("tests/kernel/protocol_test.py", argv, 900);
    }
    if (strcmp(which, "all") == 0 || strcmp(which, "notebooks") == 0) {
        if (getenv("ASAN_OPTIONS") != NULL && strcmp(which, "notebooks") != 0) {
            printf("# notebooks not executed under AddressSanitizer (TDRL_KERNEL_TESTS=notebooks forces them)\n");
        } else {
            char *argv[] = {PYTHON, "tests/kernel/run_notebooks.py", bin, NULL};
            suite("tests/kernel/run_notebooks.py", argv, 4 * 900 + 600);
        }
    }
    return check_failures ? 1 : 0;
}
