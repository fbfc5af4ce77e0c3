/* libFuzzer target: td_safetensors_parse on arbitrary bytes must never crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "../../ops/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    td_named *ts = NULL;
    td_kv *kv = NULL;
    int n = 0, nm = 0;
    if (td_safetensors_parse(data, size, "fuzz", &ts, &n, &kv, &nm) == 0) {
        /* Touch every element so a wrong size or offset shows up under ASan. */
        volatile double sink = 0;
        for (int i = 0; i < n; i++) {
            int64_t ne = td_numel(ts[i].t);
            for (int64_t k = 0; k < ne; k++)
                sink += ts[i].t->dtype == TD_F32 ? (double)td_f32(ts[i].t)[k] : (double)td_i64(ts[i].t)[k];
        }
        for (int i = 0; i < nm; i++) sink += (double)(kv[i].key[0] + kv[i].value[0]);
        (void)sink;
        td_named_free(ts, n);
        td_kv_free(kv, nm);
    } else if (ts || n || kv || nm) {
        __builtin_trap(); /* a failed parse must leave empty outputs */
    }
    return 0;
}
