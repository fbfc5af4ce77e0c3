/* Minimal C test harness: CHECK(cond, fmt, ...) prints "ok - ..." or "not ok - ..." lines
 * that tests/run.sh counts. main() returns the number of failures. */
#ifndef TDRL_CHECK_H
#define TDRL_CHECK_H
#include <math.h>
#include <stdio.h>

static int check_failures = 0;
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            printf("ok - ");                                                  \
        } else {                                                              \
            printf("not ok - %s:%d: ", __FILE__, __LINE__);                   \
            check_failures++;                                                 \
        }                                                                     \
        printf(__VA_ARGS__);                                                  \
        printf("\n");                                                         \
        fflush(stdout);                                                       \
    } while (0)
#define CHECK_CLOSE(a, b, tol, name)                                                   \
    do {                                                                               \
        double ca_ = (a), cb_ = (b);                                                   \
        CHECK(fabs(ca_ - cb_) <= (tol) * (1 + fabs(cb_)), "%s (%g vs %g)", name, ca_, cb_); \
    } while (0)
#endif
