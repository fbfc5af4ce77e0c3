/* libFuzzer target: image bytes through tdrl's own checks and stb_image (PNG, JPEG, BMP), as
 * stored and as grey and RGB; never a crash, a leak, or memory beyond what the file can hold
 * (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch a decoder that trusts a header). */
#include <stdlib.h>

#include "../../ops/io/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int channels[3] = {0, 1, 3};
    for (int k = 0; k < 3; k++) {
        int h, w, c;
        uint8_t *px = td_image_decode_mem(data, size, "fuzz", channels[k], &h, &w, &c);
        if (px) {
            volatile unsigned sink = px[0] + px[(size_t)h * w * c - 1];
            (void)sink;
            free(px);
        }
    }
    return 0;
}
