/* libFuzzer target: td_npy_parse on arbitrary bytes must never crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "../../ops/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    td_tensor *t = td_npy_parse(data, size, "fuzz");
    if (t) {
        volatile double sink = 0;
        int64_t ne = td_numel(t);
        for (int64_t k = 0; k < ne; k++) sink += t->dtype == TD_F32 ? (double)td_f32(t)[k] : (double)td_i64(t)[k];
        (void)sink;
        td_release(t);
    }
    return 0;
}
