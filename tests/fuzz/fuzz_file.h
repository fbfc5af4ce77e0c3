/* The file readers take paths: each input goes to one scratch file per fuzzer process (its
 * pid in the name, so that parallel fuzzers do not share one), rewritten every run. */
#ifndef TDRL_FUZZ_FILE_H
#define TDRL_FUZZ_FILE_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[8][256];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(path[k], sizeof path[k], "/tmp/tdrl_fuzz_%ld_%s", (long)getpid(), name);
    FILE *f = fopen(path[k], "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path[k];
}
#endif
