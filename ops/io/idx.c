/* IDX files (MNIST, Fashion-MNIST): big-endian header "00 00 TYPE NDIM", NDIM big-endian uint32
 * sizes, then the data, big-endian. Read through zlib's gz* functions, which read gzip and raw
 * files alike (so it links zlib). Every failure names the file and the byte offset (of the
 * decompressed content). */
#include "data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../checked.h"


static const char *type_name(int t) {
    switch (t) {
    case TD_IDX_U8: return "ubyte";
    case TD_IDX_I8: return "byte";
    case TD_IDX_I16: return "short";
    case TD_IDX_I32: return "int";
    case TD_IDX_F32: return "float";
    case TD_IDX_F64: return "double";
    default: return NULL;
    }
}
static size_t type_size(int t) {
    switch (t) {
    case TD_IDX_U8: case TD_IDX_I8: return 1;
    case TD_IDX_I16: return 2;
    case TD_IDX_I32: case TD_IDX_F32: return 4;
    case TD_IDX_F64: return 8;
    default: return 0;
    }
}

/* Reads up to n bytes; returns the count read (short at end of file) or -1 on a gzip error. */
static int64_t gz_read_all(gzFile f, void *dst, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
        int r = gzread(f, (char *)dst + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (int64_t)got;
}

/* Reads up to n bytes into *dst, allocated here and grown by doubling from 1 MB as the bytes
 * come; returns the count read (short at the end of the data), -1 on a gzip error; *dst is NULL
 * when memory ran out. */
static int64_t read_growing(gzFile f, void **dst, size_t n) {
    size_t cap = n < ((size_t)1 << 20) ? n : (size_t)1 << 20, got = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    while (buf && got < n) {
        if (got == cap) {
            size_t c2 = cap * 2 < n ? cap * 2 : n;
            uint8_t *b2 = realloc(buf, c2);
            if (!b2) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b2;
            cap = c2;
        }
        int64_t r = gz_read_all(f, buf + got, cap - got);
        if (r < 0) {
            *dst = buf;
            return -1;
        }
        got += (size_t)r;
        if (got < cap) break; /* the end of the data */
    }
    *dst = buf;
    return (int64_t)got;
}

static size_t fsize_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

static int gz_fail(gzFile f, const char *path, size_t at) {
    int errnum = 0;
    const char *msg = gzerror(f, &errnum);
    td_fail_int("idx: %s: corrupt gzip stream after byte offset %zu of the content (zlib: %s)", path, at,
                errnum == Z_ERRNO ? strerror(errno) : msg);
    gzclose(f);
    return -1;
}

int td_idx_read(const char *path, td_idx *out) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f) return td_fail_int("idx: %s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    gzbuffer(f, 1 << 17);
    const char *gz = gzdirect(f) ? "" : " (decompressed)";
    uint8_t hdr[4 + 4 * TD_MAX_DIMS];
    int64_t got = gz_read_all(f, hdr, 4);
    if (got < 0) return gz_fail(f, path, 0);
    if (got < 4) {
        gzclose(f);
        return td_fail_int("idx: %s: truncated at byte offset %lld: the header needs 4 bytes%s", path, (long long)got, gz);
    }
    uint32_t magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    int type = hdr[2], ndim = hdr[3];
    if (hdr[0] != 0 || hdr[1] != 0 || !type_name(type) || ndim < 1 || ndim > TD_MAX_DIMS) {
        gzclose(f);
        return td_fail_int("idx: %s: bad magic number 0x%08X at byte offset 0%s (expected 0x0000TTNN: type TT "
                           "08/09/0B/0C/0D/0E, 1 <= NN <= %d dimensions)",
                           path, magic, gz, TD_MAX_DIMS);
    }
    size_t hlen = 4 + 4 * (size_t)ndim;
    got = gz_read_all(f, hdr + 4, 4 * (size_t)ndim);
    if (got < 0) return gz_fail(f, path, 4);
    if (got < 4 * ndim) {
        gzclose(f);
        return td_fail_int("idx: %s: truncated at byte offset %lld%s: the header of %d dimensions needs %zu bytes",
                           path, (long long)(4 + got), gz, ndim, hlen);
    }
    uint64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        const uint8_t *p = hdr + 4 + 4 * d;
        uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        out->dims[d] = v;
        if (__builtin_mul_overflow(count, (uint64_t)v, &count) || count > (uint64_t)TD_MAX_NUMEL) {
            gzclose(f);
            return td_fail_int("idx: %s: sizes in the header (byte offsets 4..%zu) give more than 2^40 elements", path,
                               hlen - 1);
        }
    }
    out->type = (td_idx_type)type;
    out->ndim = ndim;
    size_t es = type_size(type);
    out->nbytes = (size_t)count * es;
    /* What the header claims is not trusted with memory (57 bytes announced 2^40 elements): a
     * plain file must be that long, and the data, gzip'd or not, is read into a buffer that grows
     * as it arrives, so a lie costs at most twice what the file really holds. */
    size_t fsize = fsize_of(path);
    if (gzdirect(f) && fsize >= hlen && fsize - hlen < out->nbytes) {
        char sb[TD_SHAPE_BUF];
        td_dims_str(ndim, out->dims, sb, sizeof sb);
        gzclose(f);
        return td_fail_int("idx: %s: truncated at byte offset %zu: the header (%s %s) announces %zu data bytes from "
                           "byte offset %zu, the file ends after %zu",
                           path, fsize, sb, type_name(type), out->nbytes, hlen, fsize - hlen);
    }
    got = read_growing(f, &out->data, out->nbytes);
    if (!out->data) {
        gzclose(f);
        return td_fail_int("idx: %s: out of memory reading %zu bytes", path, out->nbytes);
    }
    if (got < 0) {
        td_idx_free(out);
        return gz_fail(f, path, hlen);
    }
    if ((size_t)got < out->nbytes) {
        char sb[TD_SHAPE_BUF];
        td_dims_str(ndim, out->dims, sb, sizeof sb);
        td_fail_int("idx: %s: truncated at byte offset %zu%s: the header (%s %s) announces %zu data bytes from byte "
                    "offset %zu, the file ends after %lld",
                    path, hlen + (size_t)got, gz, sb, type_name(type), out->nbytes, hlen, (long long)got);
        td_idx_free(out);
        gzclose(f);
        return -1;
    }
    uint8_t extra[64];
    got = gz_read_all(f, extra, sizeof extra);
    if (got < 0) {
        td_idx_free(out);
        return gz_fail(f, path, hlen + out->nbytes);
    }
    if (got > 0) {
        char sb[TD_SHAPE_BUF];
        td_dims_str(ndim, out->dims, sb, sizeof sb);
        td_fail_int("idx: %s: sizes disagree: the header (%s %s) ends the data at byte offset %zu%s but the file goes "
                    "on",
                    path, sb, type_name(type), hlen + out->nbytes, gz);
        td_idx_free(out);
        gzclose(f);
        return -1;
    }
    gzclose(f);
    /* big-endian to host */
    if (es > 1) {
        uint8_t *b = out->data;
        for (size_t i = 0; i < out->nbytes; i += es)
            for (size_t k = 0; k < es / 2; k++) {
                uint8_t t = b[i + k];
                b[i + k] = b[i + es - 1 - k];
                b[i + es - 1 - k] = t;
            }
    }
    return 0;
}

void td_idx_free(td_idx *x) {
    if (!x) return;
    free(x->data);
    x->data = NULL;
    x->nbytes = 0;
}

td_tensor *td_idx_load(const char *path) {
    td_idx x;
    if (td_idx_read(path, &x)) return NULL;
    int fl = x.type == TD_IDX_F32 || x.type == TD_IDX_F64;
    td_tensor *t = td_empty(fl ? TD_F32 : TD_I64, x.ndim, x.dims);
    if (t) {
        int64_t n = td_numel(t);
        for (int64_t i = 0; i < n; i++) {
            switch (x.type) {
            case TD_IDX_U8: td_i64(t)[i] = ((uint8_t *)x.data)[i]; break;
            case TD_IDX_I8: td_i64(t)[i] = ((int8_t *)x.data)[i]; break;
            case TD_IDX_I16: td_i64(t)[i] = ((int16_t *)x.data)[i]; break;
            case TD_IDX_I32: td_i64(t)[i] = ((int32_t *)x.data)[i]; break;
            case TD_IDX_F32: td_f32(t)[i] = ((float *)x.data)[i]; break;
            case TD_IDX_F64: td_f32(t)[i] = (float)((double *)x.data)[i]; break;
            }
        }
    }
    td_idx_free(&x);
    return t;
}

td_source *td_idx_source(const char *images, const char *labels, int64_t nclasses) {
    td_idx im, lb;
    if (td_idx_read(images, &im)) return NULL;
    char sb[TD_SHAPE_BUF];
    if (im.type != TD_IDX_U8 || (im.ndim != 3 && im.ndim != 4)) {
        td_dims_str(im.ndim, im.dims, sb, sizeof sb);
        td_idx_free(&im);
        return td_fail("idx: %s: images must be ubyte (N, H, W) or (N, H, W, C), the header at byte offset 0 says %s "
                       "%s",
                       images, type_name(im.type), sb);
    }
    int64_t c = im.ndim == 4 ? im.dims[3] : 1;
    if (im.dims[1] < 1 || im.dims[2] < 1 || im.dims[1] > 65535 || im.dims[2] > 65535 || c < 1 || c > 4) {
        td_dims_str(im.ndim, im.dims, sb, sizeof sb);
        td_idx_free(&im);
        return td_fail("idx: %s: unusable image size %s (header at byte offset 4)", images, sb);
    }
    if (td_idx_read(labels, &lb)) {
        td_idx_free(&im);
        return NULL;
    }
    if (lb.type != TD_IDX_U8 || lb.ndim != 1) {
        td_dims_str(lb.ndim, lb.dims, sb, sizeof sb);
        td_idx_free(&im);
        td_idx_free(&lb);
        return td_fail("idx: %s: labels must be ubyte (N), the header at byte offset 0 says %s %s", labels,
                       type_name(lb.type), sb);
    }
    if (lb.dims[0] != im.dims[0]) {
        td_fail("idx: sizes disagree: %s holds %lld labels (byte offset 4) but %s holds %lld images (byte offset 4)",
                labels, (long long)lb.dims[0], images, (long long)im.dims[0]);
        td_idx_free(&im);
        td_idx_free(&lb);
        return NULL;
    }
    const uint8_t *l = lb.data;
    if (nclasses > 0)
        for (int64_t i = 0; i < lb.dims[0]; i++)
            if (l[i] >= nclasses) {
                td_fail("idx: %s: label %d at byte offset %lld (sample %lld) is outside 0..%lld", labels, l[i],
                        (long long)(8 + i), (long long)i, (long long)nclasses - 1);
                td_idx_free(&im);
                td_idx_free(&lb);
                return NULL;
            }
    int64_t n = im.dims[0], h = im.dims[1], w = im.dims[2];
    td_source *s = td_source_new_bytes(n, (int)c, (int)h, (int)w, 1, images);
    if (s) {
        if (c == 1) memcpy(s->pixels, im.data, (size_t)(n * h * w));
        else { /* (N, H, W, C) -> (N, C, H, W) */
            const uint8_t *p = im.data;
            for (int64_t i = 0; i < n; i++)
                for (int64_t q = 0; q < h * w; q++)
                    for (int64_t ch = 0; ch < c; ch++)
                        s->pixels[(i * c + ch) * h * w + q] = p[(i * h * w + q) * c + ch];
        }
        for (int64_t i = 0; i < n; i++) s->labels[i] = l[i];
    }
    td_idx_free(&im);
    td_idx_free(&lb);
    return s;
}
