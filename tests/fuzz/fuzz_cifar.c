/* libFuzzer target: a CIFAR-10 or CIFAR-100 binary batch (the first byte's parity picks the
 * variant); never a crash or a leak. */
#include "../../ops/io/data.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_file("cifar.bin", data, size);
    const char *paths[2] = {p, p};
    td_source *s = td_cifar_source(paths, size && (data[0] & 1) ? 2 : 1, size && (data[0] & 2) ? 100 : 10);
    if (s) {
        uint8_t px[3 * 32 * 32];
        for (int64_t i = 0; i < s->n && i < 4; i++) td_source_sample_u8(s, i, px);
        td_source_release(s);
    }
    return 0;
}
