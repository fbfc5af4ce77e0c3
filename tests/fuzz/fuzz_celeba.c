/* libFuzzer target: CelebA's attribute list and partition list (the input split at its first
 * 0 byte; without one, the same text for both); never a crash or a leak. */
#include <string.h>

#include "../../ops/io/data.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *z = memchr(data, 0, size);
    size_t na = z ? (size_t)(z - data) : size;
    const char *attr = fuzz_file("list_attr_celeba.txt", data, na);
    const char *part = z ? fuzz_file("list_eval_partition.txt", z + 1, size - na - 1) : attr;
    for (int split = -1; split <= 2; split += 3) {
        td_celeba c;
        if (td_celeba_read(attr, part, split, &c) == 0) {
            volatile size_t sink = 0;
            for (int a = 0; a < c.nattr; a++) sink += strlen(c.attr_names[a]);
            for (int64_t i = 0; i < c.n; i++)
                sink += strlen(c.images[i]) + (c.nattr ? (size_t)c.labels[(int64_t)(c.nattr - 1) * c.n + i] : 0);
            (void)sink;
            td_celeba_free(&c);
        }
    }
    return 0;
}
