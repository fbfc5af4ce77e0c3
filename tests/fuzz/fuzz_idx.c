/* libFuzzer target: an IDX file (raw or gzip'd) read as a tensor and as an image source; never a
 * crash, a leak, or an allocation beyond what the file holds. */
#include "../../ops/io/data.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_file("idx", data, size);
    td_tensor *t = td_idx_load(p);
    if (t) {
        volatile double sink = 0;
        for (int64_t k = 0, n = td_numel(t); k < n; k++) sink += t->dtype == TD_F32 ? td_f32(t)[k] : (double)td_i64(t)[k];
        (void)sink;
        td_release(t);
    }
    /* the same bytes as images and as labels: exercises the source's checks of both */
    td_source *s = td_idx_source(p, p, 10);
    if (s) {
        uint8_t *px = malloc((size_t)s->c * s->h * s->w);
        for (int64_t i = 0; px && i < s->n && i < 4; i++) td_source_sample_u8(s, i, px);
        free(px);
        td_source_release(s);
    }
    return 0;
}
