/* libFuzzer target: a data-set cache file (safetensors with U8 images and I64 labels, mmap'd);
 * every sample of the opened set is read, so that a size check that passes a wrong layout
 * shows up under ASan; never a crash or a leak. */
#include <stdlib.h>

#include "../../ops/io/data.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_file("cache.safetensors", data, size);
    td_kv *meta = NULL;
    int nm = 0;
    td_source *s = td_source_open(p, &meta, &nm);
    if (s) {
        uint8_t *px = malloc((size_t)s->c * s->h * s->w);
        volatile uint64_t sink = 0; /* unsigned: the labels are the file's, any value */
        for (int64_t i = 0; px && i < s->n; i++) {
            td_source_sample_u8(s, i, px);
            for (int t = 0; t < s->ntasks; t++) sink ^= (uint64_t)s->labels[(int64_t)t * s->n + i];
        }
        (void)sink;
        free(px);
        td_source_release(s);
        td_kv_free(meta, nm);
    }
    return 0;
}
