/* Wall time per backward function, for finding what dominates a training step (the Lua module
 * tdrl.profile times the forward calls and reads these). Off unless asked for: td_backward then
 * reads the clock around each node's backward. Entries are keyed by the node's name, a static
 * string; backward runs on one thread, so the table takes no lock. */
#include <string.h>
#include <time.h>

#include "tensor.h"

#define PROFILE_MAX 256 /* distinct names; more are not counted */
static struct {
    const char *name;
    uint64_t calls;
    double seconds;
} table[PROFILE_MAX];
static int n_entries;
static bool enabled;

bool td_profile_enable(bool on) {
    bool prev = enabled;
    enabled = on;
    return prev;
}

bool td_profile_enabled(void) { return enabled; }

double td_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void td_profile_add(const char *name, double seconds) {
    int i = 0;
    while (i < n_entries && table[i].name != name && strcmp(table[i].name, name) != 0) i++;
    if (i == n_entries) {
        if (n_entries == PROFILE_MAX) return;
        table[n_entries++].name = name;
    }
    table[i].calls++;
    table[i].seconds += seconds;
}

int td_profile_count(void) { return n_entries; }

const char *td_profile_entry(int i, uint64_t *calls, double *seconds) {
    if (i < 0 || i >= n_entries) return NULL;
    *calls = table[i].calls;
    *seconds = table[i].seconds;
    return table[i].name;
}

void td_profile_reset(void) { n_entries = 0; }
