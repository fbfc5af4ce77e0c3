/* Temporary files of atomic saves: PATH.tmp.<pid>, written, fsync'd, renamed over PATH. A save
 * killed part-way (SIGKILL, a crash, the machine going down) leaves its temporary file behind,
 * up to a whole checkpoint's size, and nothing else ever removes it: each save first removes
 * the temporary files of its own target whose writer is no longer running. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tensor.h"

/* The pid in "<base>.tmp.<pid>", or 0 when name is not one of base's temporary files. */
static long tmp_pid(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) return 0;
    char *end;
    long pid = strtol(name + n + 5, &end, 10);
    return *end == '\0' && pid > 0 ? pid : 0;
}

int td_remove_stale_tmp(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dl = slash ? (size_t)(slash - path) : 0;
    char dir[4096];
    if (dl + 2 > sizeof dir) return 0;
    if (slash) {
        memcpy(dir, path, dl ? dl : 1); /* "/x" lives in "/" */
        dir[dl ? dl : 1] = '\0';
    } else {
        strcpy(dir, ".");
    }
    DIR *d = opendir(dir);
    if (!d) return 0; /* the save itself reports an unusable folder */
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = tmp_pid(e->d_name, base);
        /* kill(pid, 0) fails with ESRCH when no such process exists: its writer is gone */
        if (pid == 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char full[4096 + 256];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (unlink(full) == 0) removed++;
    }
    closedir(d);
    return removed;
}
