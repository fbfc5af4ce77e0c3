/* Images: decoding (stb_image), structural checks that locate damage in a file, resizing (area
 * averaging when shrinking, bilinear when growing), PNG writing (stb_image_write), image grids.
 * Links Debian's libstb (stb_image and stb_image_write as one shared library). */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

/* ---- whole-file reading ------------------------------------------------------------------- */
static uint8_t *read_file(const char *op, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return td_fail("%s: %s: cannot open: %s", op, path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return td_fail("%s: %s: cannot seek: %s", op, path, strerror(errno));
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        return td_fail("%s: %s: not a regular file", op, path);
    }
    rewind(f);
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return td_fail("%s: %s: out of memory for %ld bytes", op, path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != (size_t)n) {
        free(buf);
        return td_fail("%s: %s: read error at byte offset %zu", op, path, got);
    }
    *len = (size_t)n;
    return buf;
}

/* ---- structure checks: find the byte offset where a file is damaged ----------------------- */
static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static uint32_t crc32_png(const uint8_t *p, size_t n) {
    pthread_once(&crc_once, crc_init); /* decoding runs in loader threads too */
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}
static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

enum { FMT_UNKNOWN, FMT_PNG, FMT_JPEG, FMT_BMP, FMT_OTHER };
static int sniff(const uint8_t *b, size_t n) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 8 && memcmp(b, png_sig, 8) == 0) return FMT_PNG;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return FMT_JPEG;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return FMT_BMP;
    if (n >= 4 && memcmp(b, "GIF8", 4) == 0) return FMT_OTHER;
    if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6') return FMT_OTHER;
    return FMT_UNKNOWN; /* TGA has no signature: left to stb_image */
}

/* Deflate turns at most 258 bytes into 2 bits (a ratio of 1032), so the image an IHDR claims
 * must fit in 1032 times its IDAT bytes: a few hundred bytes cannot announce a gigabyte. */
static int check_png_size(const char *what, const uint8_t *ihdr, uint64_t idat) {
    static const int chans[7] = {1, 0, 3, 1, 2, 0, 4}; /* by colour type; 0 = invalid */
    uint32_t w = be32(ihdr), h = be32(ihdr + 4);
    int depth = ihdr[8], ct = ihdr[9];
    if (w == 0 || h == 0 || ct > 6 || !chans[ct] || !(depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16))
        return td_fail_int("image: %s: corrupt PNG at byte offset 16: IHDR says %u x %u, bit depth %d, colour type %d",
                           what, w, h, depth, ct);
    uint64_t row = ((uint64_t)w * (uint64_t)chans[ct] * (uint64_t)depth + 7) / 8 + 1, raw = row * h;
    if (raw > 1032 * idat + 4096)
        return td_fail_int("image: %s: PNG truncated: IHDR (byte offset 16) claims %u x %u pixels (%llu bytes "
                           "unpacked), more than its %llu bytes of IDAT data can hold",
                           what, w, h, (unsigned long long)raw, (unsigned long long)idat);
    return 0;
}

static int check_png(const char *what, const uint8_t *b, size_t n, size_t *data_at) {
    size_t pos = 8;
    int seen_ihdr = 0;
    uint64_t idat = 0;
    const uint8_t *ihdr = NULL;
    *data_at = 0;
    for (;;) {
        if (pos == n) return td_fail_int("image: %s: PNG ends at byte offset %zu without an IEND chunk", what, n);
        if (pos + 8 > n)
            return td_fail_int("image: %s: PNG truncated at byte offset %zu: chunk header cut short (file ends at %zu)",
                               what, pos, n);
        uint32_t len = be32(b + pos);
        char type[5] = {0};
        memcpy(type, b + pos + 4, 4);
        for (int k = 0; k < 4; k++)
            if (!((type[k] >= 'A' && type[k] <= 'Z') || (type[k] >= 'a' && type[k] <= 'z')))
                return td_fail_int("image: %s: corrupt PNG at byte offset %zu: bad chunk type", what, pos + 4);
        if (len > 0x7FFFFFFFu)
            return td_fail_int("image: %s: corrupt PNG at byte offset %zu: chunk '%s' length %u too large", what, pos,
                               type, len);
        if (!seen_ihdr && strcmp(type, "IHDR") != 0)
            return td_fail_int("image: %s: corrupt PNG at byte offset %zu: first chunk is '%s', not IHDR", what, pos,
                               type);
        seen_ihdr = 1;
        if ((uint64_t)pos + 12 + len > n)
            return td_fail_int("image: %s: PNG truncated at byte offset %zu: chunk '%s' at byte offset %zu needs %u "
                               "bytes, the file ends at %zu",
                               what, n, type, pos, len + 12, n);
        uint32_t want = be32(b + pos + 8 + len), got = crc32_png(b + pos + 4, (size_t)len + 4);
        if (want != got)
            return td_fail_int("image: %s: corrupt PNG at byte offset %zu: chunk '%s' fails its CRC check", what, pos,
                               type);
        if (!*data_at && strcmp(type, "IDAT") == 0) *data_at = pos;
        if (strcmp(type, "IDAT") == 0) idat += len;
        if (strcmp(type, "IHDR") == 0) {
            if (len != 13) return td_fail_int("image: %s: corrupt PNG at byte offset %zu: IHDR of %u bytes, not 13", what, pos, len);
            ihdr = b + pos + 8;
        }
        pos += 12 + (size_t)len;
        if (strcmp(type, "IEND") == 0) return check_png_size(what, ihdr, idat);
    }
}

/* stb_image (Debian 12's 2022 build) trusts the Huffman tables: a DC table whose symbols exceed 15
 * makes it shift and index by up to 255 bits (a fuzzed DHT read far out of bounds), and a scan
 * that names a table no DHT defined decodes with uninitialised memory. Check both before it runs:
 * huff[class][id] records the tables defined so far. */
static int check_dht(const char *what, const uint8_t *p, size_t len, size_t seg, uint8_t huff[2][4]) {
    for (size_t i = 0; i < len;) {
        if (i + 17 > len)
            return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: Huffman table header cut short", what, seg);
        unsigned tc = p[i] >> 4, th = p[i] & 15;
        if (tc > 1 || th > 3)
            return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: Huffman table class %u, id %u", what, seg, tc,
                               th);
        size_t count = 0;
        for (int k = 0; k < 16; k++) count += p[i + 1 + k];
        if (count > 256 || i + 17 + count > len)
            return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: Huffman table of %zu symbols in a %zu-byte "
                               "segment", what, seg, count, len);
        for (size_t k = 0; tc == 0 && k < count; k++)
            if (p[i + 17 + k] > 15)
                return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: DC Huffman symbol %u (at most 15)", what,
                                   seg, p[i + 17 + k]);
        huff[tc][th] = 1;
        i += 17 + count;
    }
    return 0;
}

/* a scan's components must name Huffman tables defined before it: DC tables when the scan codes
 * DC (spectral start 0), AC tables when it codes AC (spectral end above 0) */
static int check_sos(const char *what, const uint8_t *p, size_t len, size_t seg, uint8_t huff[2][4]) {
    if (len < 1 || len < 1 + 2 * (size_t)p[0] + 3)
        return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: scan header cut short", what, seg);
    unsigned ns = p[0], ss = p[1 + 2 * ns], se = p[2 + 2 * ns];
    for (unsigned c = 0; c < ns; c++) {
        unsigned td = p[2 + 2 * c] >> 4, ta = p[2 + 2 * c] & 15;
        if (td > 3 || ta > 3 || (ss == 0 && !huff[0][td]) || (se > 0 && !huff[1][ta]))
            return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: scan component %u names Huffman tables "
                               "DC %u / AC %u, not defined before it", what, seg, c + 1, td, ta);
    }
    return 0;
}

static int check_jpeg(const char *what, const uint8_t *b, size_t n, size_t *data_at) {
    uint8_t huff[2][4] = {{0}};
    size_t pos = 2;
    *data_at = 0;
    for (;;) {
        if (pos + 2 > n)
            return td_fail_int("image: %s: JPEG truncated at byte offset %zu: no end-of-image marker", what, n);
        if (b[pos] != 0xFF)
            return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: expected a marker, found 0x%02X", what, pos,
                               b[pos]);
        uint8_t m = b[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD9) return 0; /* EOI */
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) {
            pos += 2;
            continue;
        }
        if (pos + 4 > n)
            return td_fail_int("image: %s: JPEG truncated at byte offset %zu: segment length cut short", what, n);
        size_t len = (size_t)b[pos + 2] << 8 | b[pos + 3];
        if (len < 2)
            return td_fail_int("image: %s: corrupt JPEG at byte offset %zu: segment 0x%02X length %zu", what, pos, m,
                               len);
        if (pos + 2 + len > n)
            return td_fail_int("image: %s: JPEG truncated at byte offset %zu: segment 0x%02X at byte offset %zu needs "
                               "%zu bytes",
                               what, n, m, pos, len + 2);
        size_t seg = pos;
        pos += 2 + len;
        if (m == 0xC4 && check_dht(what, b + seg + 4, len - 2, seg, huff)) return -1;
        if (m == 0xDA && check_sos(what, b + seg + 4, len - 2, seg, huff)) return -1;
        if (m == 0xDA) { /* start of scan: entropy-coded data up to the next real marker */
            if (!*data_at) *data_at = seg;
            for (;;) {
                const uint8_t *ff = pos < n ? memchr(b + pos, 0xFF, n - pos) : NULL;
                if (!ff || (size_t)(ff - b) + 1 >= n)
                    return td_fail_int("image: %s: JPEG truncated at byte offset %zu: scan data at byte offset %zu "
                                       "has no end-of-image marker",
                                       what, n, seg);
                pos = (size_t)(ff - b);
                uint8_t nx = b[pos + 1];
                if (nx == 0x00 || (nx >= 0xD0 && nx <= 0xD7) || nx == 0xFF) {
                    pos += (nx == 0xFF) ? 1 : 2;
                    continue;
                }
                break; /* a marker: back to the segment walk */
            }
        }
    }
}

static int32_t le32s(const uint8_t *p) { return (int32_t)le32(p); }
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[1] << 8 | p[0]; }

/* BMP pixels are stored uncompressed (stb_image reads no RLE): the rows the header claims must
 * be in the file. A truncated BMP loaded as zeros, and one flipped byte in the height of a
 * 198-byte file took 43 s and 1.5 GB. */
static int check_bmp(const char *what, const uint8_t *b, size_t n, size_t *data_at) {
    if (n < 26) return td_fail_int("image: %s: BMP truncated at byte offset %zu: header needs 26 bytes", what, n);
    uint32_t off = le32(b + 10), hsize = le32(b + 14);
    *data_at = off;
    if (off >= n)
        return td_fail_int("image: %s: BMP truncated at byte offset %zu: pixel data should start at byte offset %u",
                           what, n, off);
    int64_t w, h;
    uint32_t bpp, comp = 0;
    if (hsize == 12) { /* OS/2 BITMAPCOREHEADER */
        w = le16(b + 18);
        h = le16(b + 20);
        bpp = le16(b + 24);
    } else {
        if (n < 34 || hsize < 40)
            return td_fail_int("image: %s: corrupt BMP at byte offset 14: header size %u (12, or 40 and more)", what, hsize);
        w = le32s(b + 18);
        h = le32s(b + 22);
        bpp = le16(b + 28);
        comp = le32(b + 30);
    }
    if (h < 0) h = -h; /* top-down rows */
    if (w < 1 || h < 1 || !(bpp == 1 || bpp == 4 || bpp == 8 || bpp == 16 || bpp == 24 || bpp == 32))
        return td_fail_int("image: %s: corrupt BMP at byte offset 18: %lld x %lld pixels at %u bits", what, (long long)w,
                           (long long)h, bpp);
    if (comp != 0 && comp != 3 && comp != 6)
        return td_fail_int("image: %s: BMP compression %u at byte offset 30 is not supported (uncompressed only)", what,
                           comp);
    uint64_t row = ((uint64_t)w * bpp + 31) / 32 * 4, need = row * (uint64_t)h;
    if (need > n - off)
        return td_fail_int("image: %s: BMP truncated at byte offset %zu: %lld x %lld pixels at %u bits need %llu bytes "
                           "from byte offset %u",
                           what, n, (long long)w, (long long)h, bpp, (unsigned long long)need, off);
    return 0;
}

/* Baseline JPEG spends at least 2 bits on every 8 x 8 block of every component: a frame header
 * (SOF0/SOF1) may not claim more than 256 pixels per byte of the file. (Progressive frames can
 * run blocks of zeros together; the overall pixel cap bounds them.) */
static int check_jpeg_size(const char *what, const uint8_t *b, size_t n) {
    for (size_t pos = 2; pos + 9 <= n;) {
        if (b[pos] != 0xFF) break;
        uint8_t m = b[pos + 1];
        if (m == 0xFF) {
            pos++;
            continue;
        }
        size_t len = (size_t)b[pos + 2] << 8 | b[pos + 3];
        if (m == 0xC0 || m == 0xC1) {
            uint64_t h = (uint64_t)b[pos + 5] << 8 | b[pos + 6], w = (uint64_t)b[pos + 7] << 8 | b[pos + 8];
            if (w * h > 256 * (uint64_t)n + 65536)
                return td_fail_int("image: %s: JPEG truncated: the frame header at byte offset %zu claims %llu x %llu "
                                   "pixels, more than %zu bytes can encode",
                                   what, pos, (unsigned long long)w, (unsigned long long)h, n);
            return 0;
        }
        if (m == 0xDA || m == 0xD9) break;
        pos += 2 + len;
    }
    return 0;
}

/* Decodes buf; what names it in messages. */
uint8_t *td_image_decode_mem(const void *buf, size_t len, const char *what, int channels, int *h, int *w,
                             int *c_out) {
    if (channels != 0 && channels != 1 && channels != 3)
        return td_fail("image: %s: channels must be 1 (grey), 3 (RGB) or 0 (as stored), not %d", what, channels);
    const uint8_t *b = buf;
    if (len == 0) return td_fail("image: %s: empty file (0 bytes)", what);
    if (len > 0x7FFFFFFF) return td_fail("image: %s: file too large (%zu bytes)", what, len);
    size_t data_at = 0;
    int fmt = sniff(b, len);
    int rc = 0;
    if (fmt == FMT_PNG) rc = check_png(what, b, len, &data_at);
    else if (fmt == FMT_JPEG) rc = check_jpeg(what, b, len, &data_at) || check_jpeg_size(what, b, len);
    else if (fmt == FMT_BMP) rc = check_bmp(what, b, len, &data_at);
    if (rc) return NULL;
    /* the formats tdrl documents (PNG, JPEG, BMP): stb_image's others check nothing (a 17-byte
     * TGA, which has no signature, claimed 14591 x 18175 pixels and decoded to 1.3 GB of zeros) */
    if (fmt != FMT_PNG && fmt != FMT_JPEG && fmt != FMT_BMP)
        return td_fail("image: %s: not a PNG, JPEG or BMP file: first bytes at byte offset 0 are %02X %02X %02X %02X",
                       what, b[0], len > 1 ? b[1] : 0, len > 2 ? b[2] : 0, len > 3 ? b[3] : 0);
    int x, y, comp;
    if (!stbi_info_from_memory(b, (int)len, &x, &y, &comp)) {
        if (fmt == FMT_UNKNOWN)
            return td_fail("image: %s: not an image stb_image reads (PNG, JPEG, BMP, GIF, TGA, PNM): first bytes at "
                           "byte offset 0 are %02X %02X %02X %02X",
                           what, b[0], len > 1 ? b[1] : 0, len > 2 ? b[2] : 0, len > 3 ? b[3] : 0);
        return td_fail("image: %s: corrupt header near byte offset 0 (stb_image: %s)", what, stbi_failure_reason());
    }
    if ((int64_t)x * y > (int64_t)1 << 28)
        return td_fail("image: %s: %d x %d pixels is too large", what, x, y);
    int want = channels ? channels : (comp <= 2 ? 1 : 3);
    uint8_t *px = stbi_load_from_memory(b, (int)len, &x, &y, &comp, want);
    if (!px)
        return td_fail("image: %s: corrupt image data at byte offset %zu (stb_image: %s)", what, data_at,
                       stbi_failure_reason());
    /* stb's buffer comes from its own malloc: copy into ours so callers free() it */
    size_t nb = (size_t)x * y * want;
    uint8_t *out = malloc(nb ? nb : 1);
    if (!out) {
        stbi_image_free(px);
        return td_fail("image: %s: out of memory", what);
    }
    memcpy(out, px, nb);
    stbi_image_free(px);
    *h = y;
    *w = x;
    if (c_out) *c_out = want;
    return out;
}

uint8_t *td_image_decode(const char *path, int channels, int *h, int *w, int *c_out) {
    size_t len;
    uint8_t *buf = read_file("image", path, &len);
    if (!buf) return NULL;
    uint8_t *px = td_image_decode_mem(buf, len, path, channels, h, w, c_out);
    free(buf);
    return px;
}

int td_image_info(const char *path, int *h, int *w, int *c) {
    size_t len;
    uint8_t *buf = read_file("image", path, &len);
    if (!buf) return -1;
    int x, y, comp, ok = len > 0 && len <= 0x7FFFFFFF && stbi_info_from_memory(buf, (int)len, &x, &y, &comp);
    free(buf);
    if (!ok) return td_fail_int("image: %s: not a readable image (header at byte offset 0)", path);
    *h = y;
    *w = x;
    *c = comp;
    return 0;
}

/* ---- resizing ---------------------------------------------------------------------------- */
/* For each output index j along one axis: taps start[j] .. start[j] + count[j] - 1 with
 * weights w[j * maxc + t] (summing to 1). */
typedef struct {
    int *start, *count, maxc;
    float *w;
} axis_weights;

static void axis_free(axis_weights *a) {
    free(a->start);
    free(a->count);
    free(a->w);
}

static int axis_build(int in, int out, axis_weights *a) {
    a->maxc = in > out ? (in + out - 1) / out + 1 : 2;
    a->start = malloc(sizeof(int) * (size_t)out);
    a->count = malloc(sizeof(int) * (size_t)out);
    a->w = calloc((size_t)out * (size_t)a->maxc, sizeof(float));
    if (!a->start || !a->count || !a->w) {
        axis_free(a);
        return td_fail_int("resize: out of memory");
    }
    double scale = (double)in / out;
    for (int j = 0; j < out; j++) {
        float *w = a->w + (size_t)j * a->maxc;
        if (in == out) {
            a->start[j] = j;
            a->count[j] = 1;
            w[0] = 1;
        } else if (in > out) { /* area: the input span [lo, hi) this output pixel covers */
            double lo = j * scale, hi = (j + 1) * scale;
            int k0 = (int)floor(lo), k1 = (int)ceil(hi) - 1;
            if (k1 > in - 1) k1 = in - 1;
            a->start[j] = k0;
            a->count[j] = k1 - k0 + 1;
            for (int k = k0; k <= k1; k++) {
                double ov = fmin(hi, k + 1.0) - fmax(lo, (double)k);
                w[k - k0] = (float)(ov > 0 ? ov / scale : 0);
            }
        } else { /* bilinear, half-pixel centres, clamped at the borders */
            double x = (j + 0.5) * scale - 0.5;
            if (x < 0) x = 0;
            int k0 = (int)floor(x);
            if (k0 > in - 1) k0 = in - 1;
            double f = x - k0;
            a->start[j] = k0;
            if (k0 + 1 < in && f > 0) {
                a->count[j] = 2;
                w[0] = (float)(1 - f);
                w[1] = (float)f;
            } else {
                a->count[j] = 1;
                w[0] = 1;
            }
        }
    }
    return 0;
}

static int check_sizes(int sh, int sw, int c, int dh, int dw) {
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || c < 1)
        return td_fail_int("resize: sizes must be positive: %dx%d (%d channels) -> %dx%d", sh, sw, c, dh, dw);
    return 0;
}

/* src (sh, sw, c) interleaved -> dst (dh, dw, c): rows first, then columns. */
int td_resize_f32(const float *src, int sh, int sw, int c, float *dst, int dh, int dw) {
    if (check_sizes(sh, sw, c, dh, dw)) return -1;
    if (sh == dh && sw == dw) {
        memcpy(dst, src, sizeof(float) * (size_t)sh * sw * c);
        return 0;
    }
    axis_weights ax, ay;
    if (axis_build(sw, dw, &ax)) return -1;
    if (axis_build(sh, dh, &ay)) {
        axis_free(&ax);
        return -1;
    }
    float *tmp = malloc(sizeof(float) * (size_t)sh * dw * c);
    if (!tmp) {
        axis_free(&ax);
        axis_free(&ay);
        return td_fail_int("resize: out of memory");
    }
    for (int y = 0; y < sh; y++) { /* horizontal pass: (sh, sw, c) -> (sh, dw, c) */
        const float *row = src + (size_t)y * sw * c;
        float *o = tmp + (size_t)y * dw * c;
        for (int j = 0; j < dw; j++) {
            const float *w = ax.w + (size_t)j * ax.maxc;
            const float *p = row + (size_t)ax.start[j] * c;
            for (int ch = 0; ch < c; ch++) {
                float s = 0;
                for (int t = 0; t < ax.count[j]; t++) s += w[t] * p[(size_t)t * c + ch];
                o[(size_t)j * c + ch] = s;
            }
        }
    }
    size_t rowlen = (size_t)dw * c;
    for (int i = 0; i < dh; i++) { /* vertical pass: (sh, dw, c) -> (dh, dw, c) */
        float *o = dst + (size_t)i * rowlen;
        const float *w = ay.w + (size_t)i * ay.maxc;
        for (size_t k = 0; k < rowlen; k++) o[k] = 0;
        for (int t = 0; t < ay.count[i]; t++) {
            const float *r = tmp + (size_t)(ay.start[i] + t) * rowlen;
            float wt = w[t];
            for (size_t k = 0; k < rowlen; k++) o[k] += wt * r[k];
        }
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return 0;
}

int td_resize_u8(const uint8_t *src, int sh, int sw, int c, uint8_t *dst, int dh, int dw) {
    if (check_sizes(sh, sw, c, dh, dw)) return -1;
    if (sh == dh && sw == dw) {
        memcpy(dst, src, (size_t)sh * sw * c);
        return 0;
    }
    size_t ni = (size_t)sh * sw * c, no = (size_t)dh * dw * c;
    float *a = malloc(sizeof(float) * (ni + no));
    if (!a) return td_fail_int("resize: out of memory");
    float *b = a + ni;
    for (size_t k = 0; k < ni; k++) a[k] = src[k];
    int rc = td_resize_f32(a, sh, sw, c, b, dh, dw);
    if (rc == 0)
        for (size_t k = 0; k < no; k++) {
            float v = b[k] + 0.5f;
            dst[k] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
        }
    free(a);
    return rc;
}

/* Reference: each output pixel straight from the definition, in double. Area: the mean of the
 * input over the output pixel's footprint (a rectangle in input coordinates). Bilinear: the
 * four-neighbour formula. Mixed (one axis shrinks, the other grows) combine per axis. */
static double ref_axis(int in, int out, int j, int k) { /* weight of input k for output j */
    if (in == out) return k == j;
    double scale = (double)in / out;
    if (in > out) {
        double lo = j * scale, hi = (j + 1) * scale;
        double ov = fmin(hi, k + 1.0) - fmax(lo, (double)k);
        return ov > 0 ? ov / scale : 0;
    }
    double x = (j + 0.5) * scale - 0.5;
    if (x < 0) x = 0;
    if (x > in - 1) x = in - 1;
    double d = fabs(x - k);
    return d < 1 ? 1 - d : 0;
}

int td_resize_f32_ref(const float *src, int sh, int sw, int c, float *dst, int dh, int dw) {
    if (check_sizes(sh, sw, c, dh, dw)) return -1;
    for (int i = 0; i < dh; i++)
        for (int j = 0; j < dw; j++)
            for (int ch = 0; ch < c; ch++) {
                double s = 0;
                for (int y = 0; y < sh; y++) {
                    double wy = ref_axis(sh, dh, i, y);
                    if (wy == 0) continue;
                    for (int x = 0; x < sw; x++) {
                        double wx = ref_axis(sw, dw, j, x);
                        if (wx != 0) s += wy * wx * src[((size_t)y * sw + x) * c + ch];
                    }
                }
                dst[((size_t)i * dw + j) * c + ch] = (float)s;
            }
    return 0;
}

/* ---- tensors ------------------------------------------------------------------------------ */
td_tensor *td_image_load(const char *path, int channels, int h, int w) {
    if (h < 0 || w < 0 || (h == 0) != (w == 0))
        return td_fail("image_load: %s: size must be given as both height and width (got %d x %d)", path, h, w);
    int ih, iw, c;
    uint8_t *px = td_image_decode(path, channels, &ih, &iw, &c);
    if (!px) return NULL;
    if (h == 0) {
        h = ih;
        w = iw;
    }
    uint8_t *rs = px;
    if (h != ih || w != iw) {
        rs = malloc((size_t)h * w * c);
        if (!rs) {
            free(px);
            return td_fail("image_load: out of memory");
        }
        int rc = td_resize_u8(px, ih, iw, c, rs, h, w);
        free(px);
        if (rc) {
            free(rs);
            return NULL;
        }
    }
    int64_t shape[3] = {c, h, w};
    td_tensor *t = td_empty(TD_F32, 3, shape);
    if (t) {
        float *o = td_f32(t);
        size_t plane = (size_t)h * w;
        for (size_t p = 0; p < plane; p++)
            for (int ch = 0; ch < c; ch++) o[ch * plane + p] = rs[p * c + ch] * (1.0f / 255);
    }
    free(rs);
    return t;
}

td_tensor *td_image_resize(td_tensor *img, int64_t h, int64_t w) {
    char sb[TD_SHAPE_BUF];
    if (img->dtype != TD_F32 || (img->ndim != 3 && img->ndim != 4))
        return td_fail("image_resize: expects a float (C, H, W) or (B, C, H, W) tensor, got %s %s",
                       td_dtype_name(img->dtype), td_shape_str(img, sb, sizeof sb));
    if (h < 1 || w < 1 || h > 1 << 16 || w > 1 << 16)
        return td_fail("image_resize: target size %lld x %lld out of range", (long long)h, (long long)w);
    int64_t H = img->shape[img->ndim - 2], W = img->shape[img->ndim - 1];
    if (H < 1 || W < 1) return td_fail("image_resize: empty image %s", td_shape_str(img, sb, sizeof sb));
    td_tensor *src = td_contiguous(img);
    if (!src) return NULL;
    int64_t shape[4];
    memcpy(shape, img->shape, sizeof(int64_t) * (size_t)img->ndim);
    shape[img->ndim - 2] = h;
    shape[img->ndim - 1] = w;
    td_tensor *out = td_empty(TD_F32, img->ndim, shape);
    if (!out) {
        td_release(src);
        return NULL;
    }
    int64_t planes = td_numel(img) / (H * W);
    int rc = 0;
    for (int64_t p = 0; p < planes && rc == 0; p++)
        rc = td_resize_f32(td_f32(src) + p * H * W, (int)H, (int)W, 1, td_f32(out) + p * h * w, (int)h, (int)w);
    td_release(src);
    if (rc) {
        td_release(out);
        return NULL;
    }
    return out;
}

static void write_fn(void *ctx, void *data, int size) {
    FILE *f = ctx;
    if (fwrite(data, 1, (size_t)size, f) != (size_t)size) { /* noted by ferror below */
    }
}

int td_image_save_png(const char *path, td_tensor *img) {
    char sb[TD_SHAPE_BUF];
    if (img->dtype != TD_F32 || (img->ndim != 2 && img->ndim != 3))
        return td_fail_int("save_png: %s: expects a float (C, H, W) or (H, W) tensor, got %s %s", path,
                           td_dtype_name(img->dtype), td_shape_str(img, sb, sizeof sb));
    int c = img->ndim == 3 ? (int)img->shape[0] : 1;
    int64_t h = img->shape[img->ndim - 2], w = img->shape[img->ndim - 1];
    if (c != 1 && c != 3 && c != 4)
        return td_fail_int("save_png: %s: %d channels (1, 3 or 4 can be written), shape %s", path, c,
                           td_shape_str(img, sb, sizeof sb));
    if (h < 1 || w < 1 || h > 1 << 15 || w > 1 << 15)
        return td_fail_int("save_png: %s: image size %s out of range", path, td_shape_str(img, sb, sizeof sb));
    td_tensor *src = td_contiguous(img);
    if (!src) return -1;
    size_t plane = (size_t)h * w;
    uint8_t *px = malloc(plane * c);
    if (!px) {
        td_release(src);
        return td_fail_int("save_png: out of memory");
    }
    const float *s = td_f32(src);
    for (size_t p = 0; p < plane; p++)
        for (int ch = 0; ch < c; ch++) {
            float v = s[ch * plane + p];
            v = v != v ? 0 : v; /* NaN -> 0 */
            v = v * 255 + 0.5f;
            px[p * c + ch] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
        }
    td_release(src);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(px);
        return td_fail_int("save_png: out of memory");
    }
    snprintf(tmp, plen + 32, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        td_fail_int("save_png: %s: cannot write: %s", path, strerror(errno));
        free(px);
        free(tmp);
        return -1;
    }
    int ok = stbi_write_png_to_func(write_fn, f, (int)w, (int)h, c, px, (int)(w * c));
    ok = ok && !ferror(f);
    ok = (fclose(f) == 0) && ok;
    free(px);
    if (!ok || rename(tmp, path) != 0) {
        td_fail_int("save_png: %s: write failed: %s", path, strerror(errno ? errno : EIO));
        remove(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool failed;
} png_buf;

static void append_fn(void *ctx, void *data, int size) { /* stb writes the file in pieces */
    png_buf *b = ctx;
    if (b->failed) return;
    if (b->len + (size_t)size > b->cap) {
        size_t cap = 2 * (b->len + (size_t)size);
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, data, (size_t)size);
    b->len += (size_t)size;
}

uint8_t *td_png_encode(const uint8_t *px, int w, int h, int c, size_t *len) {
    if (w < 1 || h < 1 || w > 1 << 15 || h > 1 << 15 || c < 1 || c > 4)
        return td_fail("png_encode: %dx%d pixels of %d channels (1 to 32768 a side, 1 to 4 channels)", w, h, c);
    png_buf b = {0};
    if (!stbi_write_png_to_func(append_fn, &b, w, h, c, px, w * c) || b.failed) {
        free(b.p);
        return td_fail("png_encode: out of memory");
    }
    *len = b.len;
    return b.p;
}

td_tensor *td_image_grid(td_tensor *imgs, int nrow, int pad, float pad_value) {
    char sb[TD_SHAPE_BUF];
    if (imgs->dtype != TD_F32 || imgs->ndim != 4)
        return td_fail("image_grid: expects a float (B, C, H, W) tensor, got %s %s", td_dtype_name(imgs->dtype),
                       td_shape_str(imgs, sb, sizeof sb));
    int64_t B = imgs->shape[0], C = imgs->shape[1], H = imgs->shape[2], W = imgs->shape[3];
    if (B < 1 || C < 1 || H < 1 || W < 1)
        return td_fail("image_grid: empty batch %s", td_shape_str(imgs, sb, sizeof sb));
    if (nrow < 1 || pad < 0) return td_fail("image_grid: nrow must be >= 1 and padding >= 0 (got %d, %d)", nrow, pad);
    int64_t cols = nrow < B ? nrow : B, rows = (B + cols - 1) / cols;
    int64_t GH = rows * (H + pad) + pad, GW = cols * (W + pad) + pad;
    int64_t shape[3] = {C, GH, GW};
    td_tensor *src = td_contiguous(imgs);
    if (!src) return NULL;
    td_tensor *g = td_full(TD_F32, 3, shape, pad_value);
    if (!g) {
        td_release(src);
        return NULL;
    }
    const float *s = td_f32(src);
    float *o = td_f32(g);
    for (int64_t b = 0; b < B; b++) {
        int64_t r = b / cols, q = b % cols, y0 = pad + r * (H + pad), x0 = pad + q * (W + pad);
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++)
                memcpy(o + (c * GH + y0 + y) * GW + x0, s + ((b * C + c) * H + y) * W, sizeof(float) * (size_t)W);
    }
    td_release(src);
    return g;
}
