/* CIFAR-10 / CIFAR-100 binary batches (the "-binary" downloads): fixed-size records, each the
 * label byte(s) then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32): already the
 * (C, H, W) layout of a source. CIFAR-10: 1 label byte (0..9), 3073-byte records; CIFAR-100:
 * coarse (0..19) then fine (0..99), 3074-byte records. */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CIFAR_PIXELS 3072

static int64_t file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return td_fail_int("cifar: %s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return td_fail_int("cifar: %s: cannot seek", path);
    }
    long n = ftell(f);
    fclose(f);
    if (n < 0) return td_fail_int("cifar: %s: not a regular file", path);
    return n;
}

td_source *td_cifar_source(const char *const *paths, int npaths, int variant) {
    if (variant != 10 && variant != 100) return td_fail("cifar: variant must be 10 or 100, not %d", variant);
    if (npaths < 1) return td_fail("cifar: no batch files given");
    int nl = variant == 10 ? 1 : 2;
    int64_t rec = nl + CIFAR_PIXELS, total = 0;
    for (int p = 0; p < npaths; p++) {
        int64_t sz = file_size(paths[p]);
        if (sz < 0) return NULL;
        if (sz == 0) return td_fail("cifar: %s: empty file (no %lld-byte CIFAR-%d records)", paths[p], (long long)rec, variant);
        if (sz % rec != 0)
            return td_fail("cifar: %s: truncated at byte offset %lld: record %lld (from byte offset %lld) needs %lld bytes, "
                           "the file holds %lld of them (CIFAR-%d records are %lld bytes)",
                           paths[p], (long long)sz, (long long)(sz / rec), (long long)(sz / rec * rec), (long long)rec,
                           (long long)(sz % rec), variant, (long long)rec);
        total += sz / rec;
    }
    td_source *s = td_source_new_bytes(total, 3, 32, 32, nl, paths[0]);
    if (!s) return NULL;
    uint8_t *buf = malloc((size_t)rec * 1024);
    if (!buf) {
        td_source_release(s);
        return td_fail("cifar: out of memory");
    }
    int64_t i = 0;
    for (int p = 0; p < npaths; p++) {
        FILE *f = fopen(paths[p], "rb");
        if (!f) {
            td_fail("cifar: %s: cannot open: %s", paths[p], strerror(errno));
            goto fail;
        }
        int64_t r = 0;
        for (;;) {
            size_t got = fread(buf, 1, (size_t)rec * 1024, f);
            if (got % (size_t)rec) {
                fclose(f);
                td_fail("cifar: %s: read error at byte offset %lld", paths[p], (long long)(r * rec + (int64_t)got));
                goto fail;
            }
            for (size_t k = 0; k < got / (size_t)rec; k++, r++, i++) {
                const uint8_t *b = buf + k * (size_t)rec;
                for (int t = 0; t < nl; t++) {
                    int lim = variant == 10 ? 10 : (t == 0 ? 20 : 100);
                    if (b[t] >= lim) {
                        fclose(f);
                        td_fail("cifar: %s: %s label %d at byte offset %lld (record %lld) is outside 0..%d", paths[p],
                                variant == 10 ? "the" : (t == 0 ? "coarse" : "fine"), b[t], (long long)(r * rec + t),
                                (long long)r, lim - 1);
                        goto fail;
                    }
                    s->labels[(int64_t)t * total + i] = b[t];
                }
                memcpy(s->pixels + i * CIFAR_PIXELS, b + nl, CIFAR_PIXELS);
            }
            if (got < (size_t)rec * 1024) break;
        }
        fclose(f);
    }
    free(buf);
    return s;
fail:
    free(buf);
    td_source_release(s);
    return NULL;
}
